"""Shared fixtures."""

from __future__ import annotations

import pytest


# --- torch oracle zoo (tests/nets.py, used by test_backward_torch.py) ---------------------------
def import_nets():
    """``tests/nets.py`` whichever way pytest put ``tests`` on the path (one module object)."""
    try:
        from tests import nets
    except ImportError:
        import nets
    return nets


@pytest.fixture(scope="session")
def torch_zoo(tmp_path_factory):
    """An :class:`nets.ExportCache`: ``torch_zoo.get(name, fixed_batch=False)`` exports a zoo
    net to ONNX once per session and returns its torch model, path and probe tensor name."""
    pytest.importorskip("torch")
    return import_nets().ExportCache(tmp_path_factory.mktemp("zoo"))
