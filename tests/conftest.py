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


# --- kernel backends (tests/kernels) ------------------------------------------------------------
BACKEND_NAMES = ("cpp", "numba", "cuda")


def available_backends() -> list[str]:
    """Names of the kernel backends that can run here (``pydevis.kernels.available()``)."""
    import pydevis.kernels as kernels

    return [name for name, why in kernels.available().items() if why is None]


@pytest.fixture
def rng():
    """A fresh, seeded generator per test."""
    import numpy as np

    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def backends() -> list[str]:
    """The available kernel backends, by name."""
    return available_backends()


@pytest.fixture(scope="session",
                params=[pytest.param(n, marks=pytest.mark.cuda) if n == "cuda" else n
                        for n in BACKEND_NAMES])
def backend(request):
    """Each kernel backend module in turn (``pydevis.kernels.get(name)``); skipped, with the
    backend's own reason, where it cannot run. Session-scoped: hypothesis tests can use it."""
    import pydevis.kernels as kernels

    reason = kernels.available()[request.param]
    if reason is not None:
        pytest.skip(f"backend {request.param} unavailable: {reason}")
    return kernels.get(request.param)


# --- which pydevis and which backend is under test ----------------------------------------------
def pytest_report_header(config):
    import pydevis
    import pydevis.kernels as kernels

    return [f"pydevis {pydevis.__version__} from {pydevis.__file__}",
            f"kernel backends: {kernels.available()}; in use: {kernels.backend()}"]


def pytest_sessionstart(session):
    """With PYDEVIS_REQUIRE_CPP=1 (CI) a missing C++ extension fails the run instead of
    silently testing the numba fallback twice; PYDEVIS_REQUIRE_CUDA=1 (tests/gpu/run.sh) does
    the same for the CUDA backend, whose tests would otherwise skip."""
    import os

    import pydevis.kernels as kernels

    for name, var in (("cpp", "PYDEVIS_REQUIRE_CPP"), ("cuda", "PYDEVIS_REQUIRE_CUDA")):
        if os.environ.get(var) == "1":  # CI; tests/gpu/run.sh for CUDA
            reason = kernels.available()[name]
            if reason is not None:
                pytest.exit(f"{var}=1 but the {name} backend is unavailable: {reason}",
                            returncode=3)
