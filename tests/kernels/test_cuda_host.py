"""The CUDA backend called directly with numpy arrays (copied to the GPU and back): device
queries, every backward kernel against the numpy oracle, the grid-stride loops.

Shared cases, the check and the skip: cuda_common.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
from cuda_common import (
    AVG_CASES,
    CONV_CASES,
    DTYPES,
    POOL_CASES,
    RTOL,
    C,
    avg_case,
    check,
    conv_case,
    cpp_max_pool2d_backward,
    maxpool_case,
    rect_case,
    same,
    scatter_switches,
)

import pydevis.kernels as K
from pydevis.kernels import _reference as R

pytestmark = pytest.mark.cuda




# ---------------------------------------------------------------------------------------------
# device queries
# ---------------------------------------------------------------------------------------------
def test_device_queries():
    assert C.device_count() >= 1
    assert C.device_error() is None
    assert isinstance(C.device_name(0), str) and C.device_name(0)
    assert C.runtime_version() >= 11000
    with pytest.raises(ValueError, match="device"):
        C.device_name(C.device_count())
    assert K.get("cuda").NAME == "cuda"


# ---------------------------------------------------------------------------------------------
# numpy in, numpy out
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CONV_CASES))
def test_conv2d_backward_data_host(name, dtype):
    g, w, args = conv_case(*CONV_CASES[name], dtype, seed=len(name))
    before = (g.copy(), w.copy())
    got = C.conv2d_backward_data(g, w, *args)
    check(got, R.conv2d_backward_data(g, w, *args), dtype)
    np.testing.assert_array_equal(g, before[0])
    np.testing.assert_array_equal(w, before[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("name", list(POOL_CASES))
def test_max_pool2d_backward_host(name, ties, dtype):
    """Overlapping 3x3/2 (ceil_mode), asymmetric pads, dilation with stride > kernel, 2x2/2;
    with ties the first maximum in (kh, kw) order wins. Bit for bit the C++ kernel (same switches,
    same summation order), and the oracle's and ONNX's switches."""
    x, g, idx, args = maxpool_case(*POOL_CASES[name], dtype, seed=len(name), ties=ties)
    before = (g.copy(), x.copy())
    got = C.max_pool2d_backward(g, x, *args)
    check(got, R.max_pool2d_backward(g, x, *args), dtype)
    check(got, scatter_switches(g, idx, x.shape), dtype)
    want = cpp_max_pool2d_backward(g, x, *args)
    if want is not None:
        same(got, want)
    np.testing.assert_array_equal(g, before[0])
    np.testing.assert_array_equal(x, before[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool2d_backward_repeated_switches_accumulate(dtype):
    x = np.zeros((2, 3, 9, 7), dtype)
    x[:, :, 2, 2] = 5.0  # picked by the four windows around it
    x[0, 1] += np.arange(63, dtype=dtype).reshape(9, 7) * 1e-3  # ties elsewhere broken
    g = np.random.default_rng(7).standard_normal((2, 3, 4, 3)).astype(dtype)
    args = ((3, 3), (2, 2), (0, 0, 0, 0), (1, 1))
    got = C.max_pool2d_backward(g, x, *args)
    check(got, R.max_pool2d_backward(g, x, *args), dtype)
    np.testing.assert_allclose(got[0, 0, 2, 2], g[0, 0, :2, :2].sum(), rtol=RTOL[dtype])
    want = cpp_max_pool2d_backward(g, x, *args)
    if want is not None:
        same(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool2d_backward_nan_inf_and_ties(dtype):
    """ONNX Runtime's rule: NaN and -inf never win (a window of them routes nothing), the lowest
    finite value does not either, +inf does; equal maxima: the first tap wins."""
    x = np.zeros((1, 4, 4, 5), dtype)
    x[0, 0, :2, :2] = [[np.nan, -np.inf], [3.0, 3.0]]  # window (0, 0): the first 3.0
    x[0, 1, :2, :2] = -np.inf  # window (0, 0) of plane 1: no switch, nothing routed
    x[0, 2] = np.finfo(dtype).min  # plane 2: nothing routed at all
    x[0, 3, :2, :2] = [[-0.0, 0.0], [np.inf, np.nan]]  # -0.0 == 0.0: first wins; then +inf
    g = np.arange(1, 17, dtype=dtype).reshape(1, 4, 2, 2)
    args = ((2, 2), (2, 2), (0, 0, 0, 0), (1, 1))
    got = C.max_pool2d_backward(g, x, *args)
    check(got, R.max_pool2d_backward(g, x, *args), dtype)
    assert got[0, 0, 1, 0] == 1 and got[0, 0, 1, 1] == 0
    assert not got[0, 1, :2, :2].any() and not got[0, 2].any()
    assert got[0, 3, 1, 0] == 13 and got[0, 3, 0, 0] == 0
    want = cpp_max_pool2d_backward(g, x, *args)
    if want is not None:
        same(got, want)


def test_max_pool2d_backward_larger():
    """More input elements than one grid (65536 blocks x 256 threads): the grid-stride loops;
    ResNet's 3x3/2 pad 1 on a map with ties (ReLU zeros), bit for bit the C++ kernel."""
    if K.available()["cpp"] is not None:
        pytest.skip("needs the C++ backend as the reference at this size")
    rng = np.random.default_rng(10)
    x = np.maximum(rng.standard_normal((2, 96, 300, 300)), 0).astype(np.float32)
    g = rng.standard_normal((2, 96, 150, 150)).astype(np.float32)
    args = ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1))
    same(C.max_pool2d_backward(g, x, *args), cpp_max_pool2d_backward(g, x, *args))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize("bounds", [(0.0, math.inf), (0.0, 6.0), (-0.5, 0.5), (-math.inf, 1.0)])
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 5, 4)])
def test_rectifier_backward_host(shape, bounds, mode, dtype):
    g, y = rect_case(shape, *bounds, dtype, seed=mode)
    got = C.rectifier_backward(g, y, mode, *bounds)
    check(got, R.rectifier_backward(g, y, mode, *bounds), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size,c", [(1, 4), (2, 5), (3, 3), (4, 6), (5, 7), (5, 2), (6, 9)])
def test_lrn_backward_host(size, c, dtype):
    rng = np.random.default_rng(size * 10 + c)
    shape = (2, c, 5, 3)
    x = (rng.standard_normal(shape) * 2).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    for alpha, beta, bias in [(1e-4, 0.75, 1.0), (0.5, 0.75, 2.0), (1.0, 0.3, 0.5)]:
        got = C.lrn_backward(g, x, size, alpha, beta, bias)
        check(got, R.lrn_backward(g, x, size, alpha, beta, bias), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("count_include_pad", [False, True])
@pytest.mark.parametrize("name", list(AVG_CASES))
def test_avg_pool2d_backward_host(name, count_include_pad, dtype):
    g, args = avg_case(*AVG_CASES[name], dtype, seed=len(name))
    got = C.avg_pool2d_backward(g, *args, count_include_pad)
    check(got, R.avg_pool2d_backward(g, *args, count_include_pad), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("in_shape", [(2, 3, 7, 5), (1, 1, 1, 1), (3, 16, 13, 13)])
def test_global_avg_pool_backward_host(in_shape, dtype):
    g = np.random.default_rng(5).standard_normal((*in_shape[:2], 1, 1)).astype(dtype)
    got = C.global_avg_pool_backward(g, in_shape)
    check(got, R.global_avg_pool_backward(g, in_shape), dtype)


def test_through_the_front_end():
    """pydevis.kernels with module=<cuda backend> gives the same as the oracle."""
    cuda = K.get("cuda")
    g, w, args = conv_case(*CONV_CASES["grouped_strided_dilated"], np.float32, seed=3)
    check(K.conv2d_backward_data(g, w, *args, module=cuda), R.conv2d_backward_data(g, w, *args),
          np.float32)
    g, y = rect_case((2, 3, 4, 4), 0.0, math.inf, np.float64, seed=4)
    check(K.rectifier_backward(g, y, "guided", module=cuda), R.rectifier_backward(g, y, 2),
          np.float64)
    x, g, _, args = maxpool_case(*POOL_CASES["padded_asym"], np.float32, seed=5, ties=True)
    check(K.max_pool2d_backward(g, x, *args, module=cuda), R.max_pool2d_backward(g, x, *args),
          np.float32)


# ---------------------------------------------------------------------------------------------
# beyond one grid (65536 blocks x 256 threads): the grid-stride loops; vectorised expectations
# ---------------------------------------------------------------------------------------------
def test_grid_stride_loops_cover_large_arrays():
    n = (1 << 24) + 12345
    rng = np.random.default_rng(0)
    g = rng.standard_normal(n).astype(np.float32)
    y = rng.standard_normal(n).astype(np.float32)
    got = C.rectifier_backward(g, y, 2, 0.0, math.inf)
    np.testing.assert_array_equal(got, np.where(y > 0, np.maximum(g, 0), 0).astype(np.float32))

    in_shape = (1, 3, 2400, 2400)  # 17.28 M elements
    gg = rng.standard_normal((1, 3, 1, 1))
    got = C.global_avg_pool_backward(gg, in_shape)
    np.testing.assert_allclose(got, np.broadcast_to(gg / (2400 * 2400), in_shape), rtol=1e-15)


def test_conv2d_backward_data_larger():
    rng = np.random.default_rng(9)
    n, c, m, h, w = 2, 32, 48, 37, 41
    g = rng.standard_normal((n, m, h, w)).astype(np.float32)
    wt = rng.standard_normal((m, c, 3, 3)).astype(np.float32)
    args = ((h, w), (1, 1), (1, 1, 1, 1), (1, 1), 1)
    check(C.conv2d_backward_data(g, wt, *args), R.conv2d_backward_data(g, wt, *args), np.float32)
