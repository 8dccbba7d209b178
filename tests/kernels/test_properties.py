"""Properties of the backward kernels that do not depend on the oracle's own loops.

Each is checked for every available backend *and* for ``_reference.py`` (the oracle of the
parity tests must itself be right), in float64, with the reference forwards:
- Conv and AveragePool: the backward is the adjoint of the forward, <F(x), y> == <x, F*(y)>;
- max-pool backward puts mass only on the switches and preserves its sum;
- guided == deconvnet · mask, gradient == g · mask (mask = [lo < out < hi]);
- LRN backward == a central finite difference of the LRN forward along a random direction.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pydevis.kernels as K
from pydevis.kernels import _reference as R

_EXAMPLES = int(os.environ.get("PYDEVIS_KERNEL_EXAMPLES", "25"))
SETTINGS = settings(deadline=None, max_examples=_EXAMPLES, derandomize=_EXAMPLES <= 25,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
seeds = st.integers(0, 2**32 - 1)


@pytest.fixture(scope="session",
                params=["cpp", "numba", pytest.param("cuda", marks=pytest.mark.cuda),
                        "reference"])
def impl(request):
    """The module whose backward is checked: each available backend, then the reference."""
    if request.param == "reference":
        return R
    reason = K.available()[request.param]
    if reason is not None:
        pytest.skip(f"backend {request.param} unavailable: {reason}")
    return K.get(request.param)


def host(a) -> np.ndarray:
    if hasattr(a, "get"):
        return a.get()
    if hasattr(a, "copy_to_host"):
        return a.copy_to_host()
    return np.asarray(a)


def vdot(a, b) -> float:
    return float(np.dot(np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)))


def assert_adjoint(lhs: float, rhs: float, scale: float) -> None:
    """<F x, y> == <x, F* y> to 1e-10 of the sum of |terms| (``scale``)."""
    assert abs(lhs - rhs) <= 1e-10 * max(scale, 1e-300), (lhs, rhs)


# ---------------------------------------------------------------------------------------------
# Conv: adjointness
# ---------------------------------------------------------------------------------------------
@st.composite
def conv_cases(draw):
    group = draw(st.integers(1, 4))
    cg = draw(st.integers(1, 3))
    mg = draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    pads = tuple(draw(st.integers(0, 3)) for _ in range(4))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - pads[0] - pads[2]), 11))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - pads[1] - pads[3]), 10))
    return dict(n=draw(st.integers(1, 3)), c=cg * group, m=mg * group, group=group, hw=(h, w),
                k=(kh, kw), strides=(sh, sw), pads=pads, dilations=(dh, dw), seed=draw(seeds))


@SETTINGS
@given(case=conv_cases())
def test_conv2d_backward_data_is_the_adjoint_of_conv(impl, case):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c"], *case["hw"]))
    w = rng.standard_normal((case["m"], case["c"] // case["group"], *case["k"]))
    fx = R.conv2d_forward(x, w, case["strides"], case["pads"], case["dilations"], case["group"])
    y = rng.standard_normal(fx.shape)
    gx = host(K.conv2d_backward_data(y, w, case["hw"], case["strides"], case["pads"],
                                     case["dilations"], case["group"], module=impl))
    assert gx.shape == x.shape and gx.dtype == np.float64
    scale = vdot(np.abs(fx), np.abs(y)) + vdot(np.abs(x), np.abs(gx)) + 1.0
    assert_adjoint(vdot(fx, y), vdot(x, gx), scale)


# ---------------------------------------------------------------------------------------------
# AveragePool: adjointness (ceil_mode and count_include_pad both ways)
# ---------------------------------------------------------------------------------------------
@st.composite
def avg_cases(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    pads = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)),
            draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))
    h = draw(st.integers(max(1, kh - pads[0] - pads[2]), 11))
    w = draw(st.integers(max(1, kw - pads[1] - pads[3]), 10))
    return dict(n=draw(st.integers(1, 3)), c=draw(st.integers(1, 4)), hw=(h, w), k=(kh, kw),
                strides=(draw(st.integers(1, 3)), draw(st.integers(1, 3))), pads=pads,
                ceil_mode=draw(st.booleans()), count_include_pad=draw(st.booleans()),
                seed=draw(seeds))


@SETTINGS
@given(case=avg_cases())
def test_avg_pool2d_backward_is_the_adjoint_of_avg_pool(impl, case):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c"], *case["hw"]))
    fx = R.avg_pool2d_forward(x, case["k"], case["strides"], case["pads"],
                              case["count_include_pad"], case["ceil_mode"])
    y = rng.standard_normal(fx.shape)
    gx = host(K.avg_pool2d_backward(y, x.shape, case["k"], case["strides"], case["pads"],
                                    case["count_include_pad"], module=impl))
    scale = vdot(np.abs(fx), np.abs(y)) + vdot(np.abs(x), np.abs(gx)) + 1.0
    assert_adjoint(vdot(fx, y), vdot(x, gx), scale)


@SETTINGS
@given(n=st.integers(1, 3), c=st.integers(1, 4), h=st.integers(1, 9), w=st.integers(1, 8),
       seed=seeds)
def test_global_avg_pool_backward_is_the_adjoint_of_the_mean(impl, n, c, h, w, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    y = rng.standard_normal((n, c, 1, 1))
    gx = host(K.global_avg_pool_backward(y, x.shape, module=impl))
    fx = x.mean(axis=(2, 3), keepdims=True)
    assert_adjoint(vdot(fx, y), vdot(x, gx), vdot(np.abs(x), np.abs(gx)) + 1.0)


# ---------------------------------------------------------------------------------------------
# MaxPool switches: the backward routes mass to the switches only, and keeps its sum
# ---------------------------------------------------------------------------------------------
@st.composite
def maxpool_cases(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    pads = (draw(st.integers(0, eh // 2)), draw(st.integers(0, ew // 2)),
            draw(st.integers(0, eh // 2)), draw(st.integers(0, ew // 2)))
    return dict(n=draw(st.integers(1, 3)), c=draw(st.integers(1, 4)),
                hw=(draw(st.integers(eh, 11)), draw(st.integers(ew, 10))), k=(kh, kw),
                strides=(draw(st.integers(1, 3)), draw(st.integers(1, 3))), pads=pads,
                dilations=(dh, dw), ceil_mode=draw(st.booleans()), seed=draw(seeds))


@SETTINGS
@given(case=maxpool_cases())
def test_max_pool2d_backward_puts_mass_on_the_switches_only(impl, case):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c"], *case["hw"]))
    _, idx = R.max_pool2d_forward(x, case["k"], case["strides"], case["pads"],
                                  case["dilations"], case["ceil_mode"])
    g = np.abs(rng.standard_normal(idx.shape)) + 0.1  # positive: no cancellation at a switch
    gx = host(K.max_pool2d_backward(g, x, case["k"], case["strides"], case["pads"],
                                    case["dilations"], module=impl))
    switches = np.zeros(x.size, bool)
    switches[idx.ravel()] = True
    assert np.all(gx.ravel()[~switches] == 0)
    assert np.all(gx.ravel()[switches] > 0)
    np.testing.assert_allclose(gx.sum(), g.sum(), rtol=1e-12)
    # per plane too: no mass crosses from one (n, c) plane to another
    np.testing.assert_allclose(gx.sum(axis=(2, 3)), g.sum(axis=(2, 3)), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Relu / Clip: the three modes
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple),
       bounds=st.sampled_from([(0.0, math.inf), (0.0, 6.0), (-0.5, 0.5), (-math.inf, 1.0)]),
       dtype=st.sampled_from([np.float32, np.float64]), seed=seeds)
def test_rectifier_modes(impl, shape, bounds, dtype, seed):
    rng = np.random.default_rng(seed)
    lo, hi = bounds
    g = rng.standard_normal(shape).astype(dtype)
    out = np.clip(np.round(rng.standard_normal(shape) * 2) / 2, lo, hi).astype(dtype)
    mask = (out > lo) & (out < hi)
    grad = host(K.rectifier_backward(g, out, "gradient", lo, hi, module=impl))
    deconv = host(K.rectifier_backward(g, out, "deconvnet", lo, hi, module=impl))
    guided = host(K.rectifier_backward(g, out, "guided", lo, hi, module=impl))
    np.testing.assert_array_equal(grad, np.where(mask, g, 0))
    np.testing.assert_array_equal(deconv, np.maximum(g, 0))
    np.testing.assert_array_equal(guided, deconv * mask)
    np.testing.assert_array_equal(guided, np.maximum(grad, 0))
    assert grad.dtype == guided.dtype == deconv.dtype == np.dtype(dtype)


# ---------------------------------------------------------------------------------------------
# LRN: backward against a central finite difference of the forward
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(n=st.integers(1, 2), c=st.integers(1, 8), h=st.integers(1, 4), w=st.integers(1, 5),
       size=st.integers(1, 7), alpha=st.sampled_from([1e-4, 0.1, 1.0, 3.0]),
       beta=st.sampled_from([0.75, 0.5, 1.0]), bias=st.sampled_from([1.0, 2.0, 0.5]),
       seed=seeds)
def test_lrn_backward_matches_finite_difference(impl, n, c, h, w, size, alpha, beta, bias, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)) * 1.5
    g = rng.standard_normal(x.shape)
    u = rng.standard_normal(x.shape)
    eps = 1e-5

    def f(z):
        return vdot(g, R.lrn_forward(z, size, alpha, beta, bias))

    fd = (f(x + eps * u) - f(x - eps * u)) / (2 * eps)
    gx = host(K.lrn_backward(g, x, size, alpha, beta, bias, module=impl))
    scale = vdot(np.abs(gx), np.abs(u)) + 1e-3
    assert abs(vdot(gx, u) - fd) <= 1e-7 * scale, (vdot(gx, u), fd)
