"""What the engine's fusion tests share (tests/test_fuse_*.py): the op types of a plan's walk,
and one backward pass with the fused walk and one with the graph's own steps."""

from __future__ import annotations

import numpy as np

import pydevis
from pydevis.backward import engine


def walk_ops(model, target: str = "logits") -> list[str]:
    """The op types of the steps the engine walks (Plan.walk)."""
    return [n.op_type for n, _ in model.plan(target).walk]


def fused_and_unfused(path, x: np.ndarray, targets, mode: str, monkeypatch, **load_kw):
    """(fused model, unfused model, fused input gradient, unfused input gradient): the model at
    ``path`` loaded as is, then with ``engine.FUSE`` off, each running one backward pass of
    ``x`` to ``targets`` in ``mode``. The unfused gradient is checked to be nonzero, so that a
    bit-for-bit comparison of the two means something."""
    fused = pydevis.load(path, **load_kw)
    got = fused.backward_pass(x, targets, mode).grad
    monkeypatch.setattr(engine, "FUSE", False)
    plain = pydevis.load(path, **load_kw)
    want = plain.backward_pass(x, targets, mode).grad
    assert np.any(want != 0)
    return fused, plain, got, want
