"""The C++ backend's Winograd weights transformed once (``pydevis.kernels._winograd``): the
``constant_weight`` path against the float64 reference, the cache's lifetime, and the checks of
``winograd_u``."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import pydevis.kernels as K
from pydevis.kernels import _reference as R
from pydevis.kernels import _winograd

cpp = K.available()["cpp"]
pytestmark = pytest.mark.skipif(cpp is not None, reason=f"backend cpp unavailable: {cpp}")


def _case(n, c, m, hw, pads, group=1, seed=0):
    rng = np.random.default_rng(seed)
    ho = hw[0] + pads[0] + pads[2] - 2
    wo = hw[1] + pads[1] + pads[3] - 2
    g = rng.standard_normal((n, m, ho, wo)).astype(np.float32)
    w = rng.standard_normal((m, c // group, 3, 3)).astype(np.float32)
    return g, w, (hw, (1, 1), pads, (1, 1), group)


# Convs that take Winograd: F(2×2) (13×13 over 3 samples, unequal sides, groups) and F(4×4)
# (>= 28×28 and >= 2048 pixels); n, c, m, (h, w), pads[, group]
CASES = [
    (3, 32, 48, (13, 13), (1, 1, 1, 1)),
    (1, 16, 24, (28, 31), (0, 1, 2, 1)),
    (3, 24, 16, (28, 28), (1, 1, 1, 1)),
    (2, 32, 32, (26, 26), (1, 1, 1, 1), 2),
    (1, 16, 16, (56, 57), (1, 1, 1, 1)),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_prepared_matches_float64_reference(case):
    g, w, args = _case(*case)
    mod = K.get("cpp")
    variant = mod.winograd_variant(g, w, *args)
    assert variant in (2, 4)  # every case takes Winograd
    got = K.conv2d_backward_data(g, w, *args, constant_weight=True, module=mod)
    ref = R.conv2d_backward_data(g.astype(np.float64), w.astype(np.float64), *args)
    err = float(np.abs(got - ref).max()) / float(np.abs(ref).max())
    assert err <= (3e-5 if variant == 4 else 1e-5), err


@pytest.mark.parametrize("case", [CASES[0], CASES[2]], ids=str)
def test_prepared_equals_per_call_transform(case):
    """Same numbers: the cached transform is the per-call one."""
    g, w, args = _case(*case)
    mod = K.get("cpp")
    a = K.conv2d_backward_data(g, w, *args, module=mod)
    b = K.conv2d_backward_data(g, w, *args, constant_weight=True, module=mod)
    np.testing.assert_array_equal(a, b)


def test_cache_is_kept_while_the_weights_live_and_dropped_after():
    g, w, args = _case(*CASES[0])
    before = _winograd.cached_bytes()
    K.conv2d_backward_data(g, w, *args, constant_weight=True, module=K.get("cpp"))
    held = _winograd.cached_bytes() - before
    assert held >= 16 * 48 * 32 * 4  # 16 planes of M × C floats
    K.conv2d_backward_data(g, w, *args, constant_weight=True, module=K.get("cpp"))
    assert _winograd.cached_bytes() - before == held  # reused, not transformed again
    del w
    gc.collect()
    assert _winograd.cached_bytes() == before


def test_not_cached_without_the_promise_or_for_a_converted_copy():
    g, w, args = _case(*CASES[0])
    before = _winograd.cached_bytes()
    K.conv2d_backward_data(g, w, *args, module=K.get("cpp"))
    # float64 weights are cast for float32 grads: the cast copy is no constant
    K.conv2d_backward_data(g, w.astype(np.float64), *args, constant_weight=True,
                           module=K.get("cpp"))
    assert _winograd.cached_bytes() == before


def test_winograd_u_is_checked():
    mod = K.get("cpp")
    g, w, args = _case(*CASES[0])
    u = mod.winograd_weights(w, 1, mod.winograd_variant(g, w, *args))
    with pytest.raises(ValueError, match="winograd_u"):
        mod.conv2d_backward_data(g, w, *args, u[:-1])  # wrong size
    with pytest.raises(ValueError, match="winograd_u"):
        mod.conv2d_backward_data(g, w, *args, u.astype(np.float64))
    g5 = np.zeros((3, 48, 11, 11), np.float32)  # 5×5 kernels: no Winograd
    w5 = np.zeros((48, 32, 5, 5), np.float32)
    assert mod.winograd_variant(g5, w5, *args) == 0
    with pytest.raises(ValueError, match="winograd_u"):
        mod.conv2d_backward_data(g5, w5, *args, u)
    with pytest.raises(ValueError, match="variant"):
        mod.winograd_weights(w, 1, 3)
    with pytest.raises(ValueError, match="3x3"):
        mod.winograd_weights(w5, 1, 2)
    with pytest.raises(ValueError, match="group"):
        mod.winograd_weights(w, 5, 2)
