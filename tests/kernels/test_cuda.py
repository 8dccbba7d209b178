"""The CUDA backend (``pydevis._cuda``) against the numpy oracle, with host and device inputs.

``test_parity.py`` already runs every backend through :mod:`pydevis.kernels` on hypothesis
shapes; this module checks what is particular to CUDA: the extension called directly with numpy
arrays (copied to the GPU and back) and with device arrays (``__cuda_array_interface__`` from
cupy or numba.cuda, result a ``DeviceArray`` left on the GPU), mixed host/device arguments,
grid-stride loops past one full grid, inputs left untouched, and the argument checks (a
``ValueError`` naming the argument, before any memory is touched). The ascent kernels are checked
here too (bit for bit against the oracle where numpy's result is exact: clip_small_*,
clamp_channels, ascent_update), and the routing of device arrays by :mod:`pydevis.kernels`.

Skipped as a whole unless ``pydevis.kernels.available()["cuda"] is None`` (the extension is built
and a CUDA device answers); with ``PYDEVIS_REQUIRE_CUDA=1`` (tests/gpu/run.sh) that is an error
instead. Also here: both conv algorithms (cuBLAS GEMM + col2im, direct gather) and the
device-resident ascent (``AscentWorkspace``).
"""

from __future__ import annotations

import math
import os
import re
import warnings

import numpy as np
import pytest

import pydevis.kernels as K
from pydevis.kernels import _reference as R

_REASON = K.available()["cuda"]
if _REASON is not None and os.environ.get("PYDEVIS_REQUIRE_CUDA") == "1":  # tests/gpu/run.sh
    raise RuntimeError(f"PYDEVIS_REQUIRE_CUDA=1 but the CUDA backend is unavailable: {_REASON}")
if _REASON is not None:
    pytest.skip(f"CUDA backend unavailable: {_REASON}", allow_module_level=True)

pytestmark = pytest.mark.cuda

from pydevis import _cuda as C  # noqa: E402  (only importable where the module did not skip)

RTOL = {np.float32: 1e-4, np.float64: 1e-10}
DTYPES = [np.float32, np.float64]


def check(actual, expected: np.ndarray, dtype) -> None:
    """Same shape and dtype; values to rtol, with atol = rtol * max|expected|."""
    if isinstance(actual, C.DeviceArray):
        actual = actual.to_host()
    assert isinstance(actual, np.ndarray)
    assert actual.shape == expected.shape
    assert actual.dtype == np.dtype(dtype)
    rtol = RTOL[dtype]
    scale = float(np.abs(expected.astype(np.float64)).max(initial=0.0))
    np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64),
                               rtol=rtol, atol=rtol * max(scale, 1e-30))


# ---------------------------------------------------------------------------------------------
# device arrays from cupy or numba.cuda, whichever is importable and sees the GPU
# ---------------------------------------------------------------------------------------------
def _cupy():
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
        return cupy
    except Exception:
        return None


def _numba_cuda():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from numba import cuda

            return cuda if cuda.is_available() else None
    except Exception:
        return None


class DeviceLib:
    """to(host array) -> device array; back(device array or DeviceArray) -> numpy."""

    def __init__(self, name: str):
        self.name = name
        self.mod = _cupy() if name == "cupy" else _numba_cuda()
        if self.mod is None:
            pytest.skip(f"{name} is not importable or sees no GPU")
        try:  # a library that imports but cannot allocate (driver/toolkit mismatch) is skipped
            self.back(self.to(np.zeros(1, np.float32)))
        except Exception as exc:
            pytest.skip(f"{name} cannot use the GPU: {type(exc).__name__}: {exc}")

    def to(self, a: np.ndarray):
        if self.name == "cupy":
            return self.mod.asarray(a)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.mod.to_device(a)

    def wrap(self, d):
        """A DeviceArray seen through the library, without a copy."""
        if self.name == "cupy":
            return self.mod.asarray(d)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.mod.as_cuda_array(d)

    def back(self, d) -> np.ndarray:
        if isinstance(d, C.DeviceArray):
            return d.to_host()
        if self.name == "cupy":
            return self.mod.asnumpy(d)
        return d.copy_to_host()


@pytest.fixture(params=["cupy", "numba"])
def dev(request) -> DeviceLib:
    return DeviceLib(request.param)


# ---------------------------------------------------------------------------------------------
# cases (small: the oracle is a Python loop)
# ---------------------------------------------------------------------------------------------
def conv_case(n, c, m, group, hw, k, strides, pads, dilations, dtype, seed):
    rng = np.random.default_rng(seed)
    ho = R.conv_out_size(hw[0], k[0], strides[0], pads[0], pads[2], dilations[0])
    wo = R.conv_out_size(hw[1], k[1], strides[1], pads[1], pads[3], dilations[1])
    g = rng.standard_normal((n, m, ho, wo)).astype(dtype)
    w = rng.standard_normal((m, c // group, *k)).astype(dtype)
    return g, w, (tuple(hw), tuple(strides), tuple(pads), tuple(dilations), group)


CONV_CASES = {
    "dense_3x3_pad1": (2, 3, 5, 1, (9, 7), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    "grouped_strided_dilated": (3, 4, 6, 2, (11, 8), (3, 2), (2, 3), (2, 0, 1, 3), (2, 1)),
    "depthwise_stride2": (2, 6, 6, 6, (9, 10), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
    "depthwise_multiplier": (1, 3, 6, 3, (7, 8), (3, 3), (1, 2), (0, 1, 2, 1), (2, 2)),
    "pointwise": (1, 3, 7, 1, (5, 6), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),
    "alexnet_11x11_s4": (2, 3, 4, 1, (23, 19), (11, 11), (4, 4), (2, 2, 2, 2), (1, 1)),
    "unreached_rows": (2, 5, 3, 1, (10, 9), (2, 2), (3, 3), (0, 0, 0, 0), (1, 1)),
    "wide_channels": (1, 24, 16, 4, (6, 5), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
}


POOL_CASES = {
    "overlap_3x3_s2_ceil": (2, 3, (9, 7), (3, 3), (2, 2), (0, 0, 0, 0), (1, 1), True),
    "padded_asym": (3, 2, (8, 11), (3, 3), (2, 2), (1, 0, 0, 1), (1, 1), False),
    "dilated_stride_gt_kernel": (1, 5, (10, 9), (2, 2), (3, 3), (0, 0, 0, 0), (2, 1), True),
    "2x2_s2": (2, 4, (8, 6), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False),
}

def maxpool_case(n, c, hw, k, strides, pads, dilations, ceil_mode, dtype, seed, ties=False):
    """x, grad_out, the forward's switches and the (kernel_shape, strides, pads, dilations) of
    max_pool2d_backward; with ``ties`` x holds ReLU'd integers, so windows hold equal maxima."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, *hw))
    if ties:
        x = np.maximum(np.round(x * 2), 0)
    x = x.astype(dtype)
    _, idx = R.max_pool2d_forward(x, k, strides, pads, dilations, ceil_mode)
    g = rng.standard_normal(idx.shape).astype(dtype)
    return x, g, idx, (k, strides, pads, dilations)


def scatter_switches(g, idx, in_shape) -> np.ndarray:
    """``grad_in.flat[idx[i]] += g.flat[i]`` in float64: MaxPool's backward through the
    forward's switches (flat offsets into the input, ONNX's ``Indices``)."""
    out = np.zeros(int(np.prod(in_shape)), np.float64)
    np.add.at(out, idx.ravel(), g.astype(np.float64).ravel())
    return out.reshape(in_shape).astype(g.dtype)


def cpp_max_pool2d_backward(g, x, *args):
    """The C++ kernel's result (the CUDA kernel must match it bit for bit), None without it."""
    if K.available()["cpp"] is not None:
        return None
    return K.get("cpp")._C.max_pool2d_backward(g, x, *args)


AVG_CASES = {
    "3x3_s2_pad1_ceil": ((2, 3, 9, 7), (3, 3), (2, 2), (1, 1, 1, 1), True),
    "rect_asym_ceil": ((3, 2, 8, 11), (3, 2), (2, 3), (1, 0, 0, 1), True),
    "stride_gt_kernel": ((1, 4, 7, 6), (2, 2), (3, 3), (0, 0, 0, 0), False),
    "2x2_s2": ((2, 3, 8, 6), (2, 2), (2, 2), (0, 0, 0, 0), False),
    "7x7_s1_pad3": ((1, 2, 7, 7), (7, 7), (1, 1), (3, 3, 3, 3), False),
}


def avg_case(in_shape, k, strides, pads, ceil_mode, dtype, seed):
    _, _, h, w = in_shape
    ho = R.pool_out_size(h, k[0], strides[0], pads[0], pads[2], 1, ceil_mode)
    wo = R.pool_out_size(w, k[1], strides[1], pads[1], pads[3], 1, ceil_mode)
    g = np.random.default_rng(seed).standard_normal((*in_shape[:2], ho, wo)).astype(dtype)
    return g, (in_shape, k, strides, pads)


def rect_case(shape, lo, hi, dtype, seed):
    rng = np.random.default_rng(seed)
    g = rng.standard_normal(shape).astype(dtype)
    y = np.round(rng.standard_normal(shape) * 2) / 2  # out == lo / out == hi occur
    if math.isfinite(hi):
        y = np.minimum(y, hi)
    if math.isfinite(lo):
        y = np.maximum(y, lo)
    return g, y.astype(dtype)


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


# ---------------------------------------------------------------------------------------------
# device arrays in, DeviceArray out
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_kernel_with_device_inputs(dev, dtype):
    # conv
    g, w, args = conv_case(*CONV_CASES["grouped_strided_dilated"], dtype, seed=1)
    dg, dw = dev.to(g), dev.to(w)
    got = C.conv2d_backward_data(dg, dw, *args)
    assert isinstance(got, C.DeviceArray)
    check(got, R.conv2d_backward_data(g, w, *args), dtype)
    np.testing.assert_array_equal(dev.back(dg), g)  # inputs untouched
    np.testing.assert_array_equal(dev.back(dw), w)
    # max pool from the forward input: device g and x, and either one on the host
    x, g, _, args = maxpool_case(*POOL_CASES["dilated_stride_gt_kernel"], dtype, seed=2,
                                 ties=True)
    expected = R.max_pool2d_backward(g, x, *args)
    dx = dev.to(x)
    for a, b in ((dev.to(g), dx), (g, dx), (dev.to(g), x)):
        got = C.max_pool2d_backward(a, b, *args)
        assert isinstance(got, C.DeviceArray)
        check(got, expected, dtype)
    np.testing.assert_array_equal(dev.back(dx), x)  # inputs untouched
    # rectifier
    for mode in (0, 1, 2):
        g, y = rect_case((2, 3, 5, 4), 0.0, 6.0, dtype, seed=mode)
        check(C.rectifier_backward(dev.to(g), dev.to(y), mode, 0.0, 6.0),
              R.rectifier_backward(g, y, mode, 0.0, 6.0), dtype)
    # lrn
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 7, 5, 3)).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    check(C.lrn_backward(dev.to(g), dev.to(x), 5, 1e-4, 0.75, 1.0),
          R.lrn_backward(g, x, 5, 1e-4, 0.75, 1.0), dtype)
    # average pools
    g, args = avg_case(*AVG_CASES["3x3_s2_pad1_ceil"], dtype, seed=4)
    for cip in (False, True):
        check(C.avg_pool2d_backward(dev.to(g), *args, cip), R.avg_pool2d_backward(g, *args, cip),
              dtype)
    g = rng.standard_normal((2, 3, 1, 1)).astype(dtype)
    check(C.global_avg_pool_backward(dev.to(g), (2, 3, 7, 5)),
          R.global_avg_pool_backward(g, (2, 3, 7, 5)), dtype)


def test_device_array_interface(dev):
    g = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2) - 10
    y = np.ones_like(g)
    out = C.rectifier_backward(dev.to(g), dev.to(y), 1, 0.0, math.inf)
    assert isinstance(out, C.DeviceArray)
    assert out.shape == (2, 3, 2, 2) and out.dtype == "float32" and out.ndim == 4
    assert out.size == 24 and out.nbytes == 96 and out.device >= 0 and out.ptr != 0
    cai = out.__cuda_array_interface__
    assert cai["version"] == 3 and cai["typestr"] == "<f4" and cai["shape"] == (2, 3, 2, 2)
    assert cai["data"] == (out.ptr, False) and cai["strides"] is None
    assert "DeviceArray" in repr(out)
    expected = np.maximum(g, 0)
    np.testing.assert_array_equal(out.to_host(), expected)
    wrapped = dev.wrap(out)  # zero-copy view; keeps `out` alive
    np.testing.assert_array_equal(dev.back(wrapped), expected)
    del out
    np.testing.assert_array_equal(dev.back(wrapped), expected)


def test_device_array_chains_into_the_next_kernel(dev):
    """A DeviceArray is itself a valid device input (it exposes __cuda_array_interface__)."""
    g, w, args = conv_case(*CONV_CASES["dense_3x3_pad1"], np.float64, seed=8)
    y = np.random.default_rng(8).standard_normal((2, 3, 9, 7))
    gi = C.conv2d_backward_data(dev.to(g), dev.to(w), *args)
    out = C.rectifier_backward(gi, dev.to(y), 2, 0.0, math.inf)
    assert isinstance(out, C.DeviceArray)
    expected = R.rectifier_backward(R.conv2d_backward_data(g, w, *args), y, 2, 0.0, math.inf)
    check(out, expected, np.float64)


def test_mixed_host_and_device_arguments(dev):
    """A numpy argument next to a device one is copied over; the result stays on the device."""
    g, w, args = conv_case(*CONV_CASES["depthwise_stride2"], np.float32, seed=6)
    expected = R.conv2d_backward_data(g, w, *args)
    for a, b in ((dev.to(g), w), (g, dev.to(w))):
        got = C.conv2d_backward_data(a, b, *args)
        assert isinstance(got, C.DeviceArray)
        check(got, expected, np.float32)


def test_empty_arrays():
    for x in (np.zeros((0,), np.float32), np.zeros((2, 0, 3), np.float64)):
        got = C.rectifier_backward(x, x, 0, 0.0, math.inf)
        assert isinstance(got, np.ndarray) and got.shape == x.shape and got.dtype == x.dtype
    g = np.zeros((0, 3, 2, 2), np.float32)
    args = ((2, 2), (2, 2), (0, 0, 0, 0), (1, 1))
    got = C.max_pool2d_backward(g, np.zeros((0, 3, 4, 4), np.float32), *args)
    assert isinstance(got, np.ndarray) and got.shape == (0, 3, 4, 4)
    # no window (grad_out of width 0): nothing routed, an all-zero gradient
    got = C.max_pool2d_backward(np.zeros((1, 3, 2, 0)), np.ones((1, 3, 4, 4)), *args)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, np.zeros((1, 3, 4, 4)))


def test_empty_device_arrays(dev):
    g = np.zeros((0, 3, 2, 2), np.float32)
    args = ((2, 2), (2, 2), (0, 0, 0, 0), (1, 1))
    got = C.max_pool2d_backward(dev.to(g), dev.to(np.zeros((0, 3, 4, 4), np.float32)), *args)
    assert isinstance(got, C.DeviceArray) and got.to_host().shape == (0, 3, 4, 4)


# ---------------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------------
F4 = np.zeros((1, 2, 3, 3), np.float32)
W4 = np.zeros((2, 1, 1, 1), np.float32)
CONV = ((3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1)
X6 = np.zeros((1, 2, 6, 6), np.float32)  # pooled 2x2 stride 2 into F4
MAXP = ((2, 2), (2, 2), (0, 0, 0, 0), (1, 1))

BAD_CALLS = {
    "grad_out int dtype": (lambda: C.conv2d_backward_data(F4.astype(np.int32), W4, *CONV),
                           "grad_out: dtype int32 is not float32/float64"),
    "weight dtype differs": (lambda: C.conv2d_backward_data(F4, W4.astype(np.float64), *CONV),
                             "weight: dtype float64 differs from grad_out"),
    "grad_out rank": (lambda: C.conv2d_backward_data(F4[0], W4, *CONV),
                      "grad_out: expected a 4-D array"),
    "grad_out non-contiguous": (lambda: C.conv2d_backward_data(F4[:, :, ::2], W4, *CONV),
                                "grad_out: array must be C-contiguous"),
    "not an array": (lambda: C.conv2d_backward_data(F4.tolist(), W4, *CONV),
                     "grad_out: expected a numpy array or an object with"),
    "weight channels": (lambda: C.conv2d_backward_data(F4, np.zeros((3, 1, 1, 1), np.float32),
                                                       *CONV), "weight: shape"),
    "group divides": (lambda: C.conv2d_backward_data(F4, W4, (3, 3), (1, 1), (0, 0, 0, 0),
                                                     (1, 1), 3), "group: 3 does not divide"),
    "conv output": (lambda: C.conv2d_backward_data(F4, W4, (4, 3), (1, 1), (0, 0, 0, 0),
                                                   (1, 1), 1), "grad_out: shape"),
    "strides length": (lambda: C.conv2d_backward_data(F4, W4, (3, 3), (1,), (0, 0, 0, 0),
                                                      (1, 1), 1), "strides: expected 2"),
    "negative pad": (lambda: C.conv2d_backward_data(F4, W4, (3, 3), (1, 1), (0, -1, 0, 0),
                                                    (1, 1), 1), "pads: every entry"),
    "rectifier shapes": (lambda: C.rectifier_backward(F4, F4[0], 0, 0.0, 1.0), "out: shape"),
    "rectifier mode": (lambda: C.rectifier_backward(F4, F4, 5, 0.0, 1.0), "mode: expected"),
    "lrn size": (lambda: C.lrn_backward(F4, F4, 0, 1e-4, 0.75, 1.0), "size: must be >= 1"),
    "lrn x shape": (lambda: C.lrn_backward(F4, np.zeros((1, 2, 3, 4), np.float32), 3, 1e-4,
                                           0.75, 1.0), "x: shape"),
    "avg output": (lambda: C.avg_pool2d_backward(F4, (1, 2, 4, 4), (2, 2), (2, 2),
                                                 (0, 0, 0, 0), False), "grad_out: shape"),
    "avg kernel": (lambda: C.avg_pool2d_backward(F4, (1, 2, 2, 2), (3, 3), (1, 1),
                                                 (0, 0, 0, 0), False), "kernel_shape:"),
    "maxpool x dtype": (lambda: C.max_pool2d_backward(F4, X6.astype(np.float64), *MAXP),
                        "x: dtype float64 differs from grad_out dtype float32"),
    "maxpool x rank": (lambda: C.max_pool2d_backward(F4, X6[0], *MAXP), "x: expected a 4-D"),
    "maxpool x channels": (lambda: C.max_pool2d_backward(F4, np.zeros((1, 3, 6, 6), np.float32),
                                                         *MAXP), "x: shape (1, 3, 6, 6) does"),
    "maxpool output": (lambda: C.max_pool2d_backward(F4, X6[:, :, :4, :4].copy(), *MAXP),
                       "grad_out: shape (1, 2, 3, 3) is larger than the MaxPool output"),
    "maxpool kernel": (lambda: C.max_pool2d_backward(F4, X6, (7, 2), (2, 2), (0, 0, 0, 0),
                                                     (1, 1)), "kernel_shape: dilated kernel 7x2"),
    "maxpool dilation": (lambda: C.max_pool2d_backward(F4, X6, (2, 2), (2, 2), (0, 0, 0, 0),
                                                       (0, 1)), "dilations: every entry"),
    "maxpool taps": (lambda: C.max_pool2d_backward(F4, X6, (2**16, 2**16), (1, 1),
                                                   (0, 0, 0, 0), (1, 1)),
                     "kernel_shape: (65536, 65536) has more than 2^31 - 1 taps"),
    "gap shape": (lambda: C.global_avg_pool_backward(F4, (1, 2, 6, 6)), "grad_out: shape"),
    "gap in_shape": (lambda: C.global_avg_pool_backward(F4[:, :, :1, :1].copy(), (1, 3, 6, 6)),
                     "grad_out: shape"),
    # ascent kernels
    "update g shape": (lambda: C.ascent_update(F4, F4[:, :1], np.zeros(1), 0.0),
                       "g: shape (1, 1, 3, 3) != v shape (1, 2, 3, 3)"),
    "update g dtype": (lambda: C.ascent_update(F4, F4.astype(np.float64), np.zeros(1), 0.0),
                       "g: dtype float64 differs from v"),
    "update eta length": (lambda: C.ascent_update(F4, F4, np.zeros(2), 0.0),
                          "eta: shape (2,) is not (1,)"),
    "update eta dtype": (lambda: C.ascent_update(F4, F4, np.zeros(1, np.float32), 0.0),
                         "eta: dtype float32 is not float64"),
    "blur rank": (lambda: C.gaussian_blur(F4[0], 1.0), "v: expected a 4-D array"),
    "blur sigma nan": (lambda: C.gaussian_blur(F4, math.nan), "sigma: must be finite"),
    "blur sigma huge": (lambda: C.gaussian_blur(F4, 1e12), "sigma: 1e+12 is too large"),
    "norm pct": (lambda: C.clip_small_norm(F4, 100.5), "pct: must be <= 100"),
    "norm pct nan": (lambda: C.clip_small_norm(F4, math.nan), "pct: must be <= 100"),
    "norm int dtype": (lambda: C.clip_small_norm(F4.astype(np.int64), 50),
                       "v: dtype int64 is not float32/float64"),
    "contribution g shape": (lambda: C.clip_small_contribution(F4, F4[:, :, :2].copy(), 50),
                             "g: shape"),
    "clamp lo length": (lambda: C.clamp_channels(F4, np.zeros(3), np.ones(2)),
                        "lo: shape (3,) is not (2,)"),
    "clamp hi rank": (lambda: C.clamp_channels(F4, np.zeros(2), np.ones((2, 1))),
                      "hi: expected a 1-D array"),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_rejects_bad_arguments(name):
    call, message = BAD_CALLS[name]
    with pytest.raises(ValueError, match=r"^" + re.escape(message)) as info:
        call()
    assert "\n" not in str(info.value)


class _Interface:
    """An object exposing a hand-made __cuda_array_interface__."""

    def __init__(self, **iface):
        self.__cuda_array_interface__ = iface


def test_rejects_bad_device_arrays(dev):
    base = dev.to(np.zeros((1, 2, 4, 4), np.float32))
    real = dict(base.__cuda_array_interface__)
    ok = dict(shape=(1, 2, 4, 4), typestr="<f4", data=real["data"], version=3)
    assert C.global_avg_pool_backward(
        _Interface(**{**ok, "shape": (1, 2, 1, 1)}), (1, 2, 3, 3)).shape == (1, 2, 3, 3)
    cases = [
        ({**ok, "typestr": "<i4"}, "grad_out: dtype int32 is not float32/float64"),
        ({**ok, "strides": (128, 64, 4, 16)}, "grad_out: array must be C-contiguous"),
        ({**ok, "mask": ok["data"]}, "grad_out: masked device arrays are not supported"),
        ({**ok, "data": (0, False)}, "grad_out: __cuda_array_interface__ has a null pointer"),
        ({**ok, "data": (ok["data"][0] + 2, False)}, "grad_out: array must be aligned"),
    ]
    host = np.zeros((1, 2, 4, 4), np.float32)
    cases.append(({**ok, "data": (host.ctypes.data, False)}, "grad_out: __cuda_array_interface__"
                  " pointer is not device memory"))
    for iface, message in cases:
        with pytest.raises(ValueError, match="^" + re.escape(message)):
            C.lrn_backward(_Interface(**iface), base, 3, 1e-4, 0.75, 1.0)
    # C strides given explicitly are accepted
    explicit = _Interface(**{**ok, "strides": (128, 64, 16, 4)})
    assert C.lrn_backward(explicit, explicit, 3, 1e-4, 0.75, 1.0).shape == (1, 2, 4, 4)


# ---------------------------------------------------------------------------------------------
# ascent kernels (docs/kernels.md, "Ascent kernels"): clip_small_* and clamp_channels must zero /
# clip exactly what numpy does, ascent_update is computed like numpy (double, once-rounded)
# ---------------------------------------------------------------------------------------------
ASCENT_SHAPES = [(3, 2, 11, 7), (2, 3, 1, 1), (1, 1, 5, 1), (2, 4, 16, 16), (1, 3, 9, 13)]
PCTS = [0.5, 10, 20, 33.3, 50, 90, 99.9, 100]


def ascent_case(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    v = (rng.standard_normal(shape) * 30).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    return v, g


def same(actual, expected: np.ndarray) -> None:
    """Bit-for-bit the oracle (NaN where it has NaN), same shape and dtype."""
    if isinstance(actual, C.DeviceArray):
        actual = actual.to_host()
    assert isinstance(actual, np.ndarray)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ASCENT_SHAPES)
def test_ascent_update_host(shape, dtype):
    v, g = ascent_case(shape, dtype, seed=1)
    eta = np.random.default_rng(2).standard_normal(shape[0])
    before = (v.copy(), g.copy())
    for decay in (0.0, 0.01, 1.0):
        same(C.ascent_update(v, g, eta, decay), R.ascent_update(v, g, eta, decay))
    np.testing.assert_array_equal(v, before[0])
    np.testing.assert_array_equal(g, before[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sigma", [0.3, 0.5, 1.0, 2.3, 7.0])
@pytest.mark.parametrize("shape", ASCENT_SHAPES)
def test_gaussian_blur_host(shape, sigma, dtype):
    v, _ = ascent_case(shape, dtype, seed=3)
    check(C.gaussian_blur(v, sigma), R.gaussian_blur(v, sigma), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ASCENT_SHAPES)
def test_clip_small_host(shape, dtype):
    v, g = ascent_case(shape, dtype, seed=4)
    for pct in PCTS:
        same(C.clip_small_norm(v, pct), R.clip_small_norm(v, pct))
        same(C.clip_small_contribution(v, g, pct), R.clip_small_contribution(v, g, pct))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ASCENT_SHAPES)
def test_clamp_channels_host(shape, dtype):
    v, _ = ascent_case(shape, dtype, seed=5)
    rng = np.random.default_rng(6)
    lo = rng.standard_normal(shape[1]) * 10
    hi = lo + np.abs(rng.standard_normal(shape[1])) * 20
    same(C.clamp_channels(v, lo, hi), R.clamp_channels(v, lo, hi))
    same(C.clamp_channels(v, hi, lo), R.clamp_channels(v, hi, lo))  # lo > hi: hi wins


@pytest.mark.parametrize("dtype", DTYPES)
def test_ascent_copies(dtype):
    """sigma <= 0 and pct <= 0 return a copy."""
    v, g = ascent_case((2, 3, 5, 4), dtype, seed=7)
    for out in (C.gaussian_blur(v, 0.0), C.gaussian_blur(v, -1.0), C.clip_small_norm(v, 0.0),
                C.clip_small_norm(v, -5.0), C.clip_small_contribution(v, g, 0.0)):
        same(out, v)


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_small_ties_nan_and_inf(dtype):
    """Many equal scores (integer images), and numpy's NaN / infinity rules of the percentile:
    a NaN score makes the threshold NaN (nothing zeroed), inf - inf interpolates to NaN."""
    rng = np.random.default_rng(8)
    v = np.round(rng.standard_normal((3, 2, 37, 29)) * 2).astype(dtype)
    g = np.round(rng.standard_normal(v.shape)).astype(dtype)
    w = v.copy()
    w[0, 1, 3, 4] = np.nan
    w[1, 0, 5, 5] = np.inf
    w[2, :, :, :3] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's own inf arithmetic
        for pct in (0.1, 12.5, 25, 50, 75, 99, 100):
            for x in (v, w):
                same(C.clip_small_norm(x, pct), R.clip_small_norm(x, pct))
                same(C.clip_small_contribution(x, g, pct), R.clip_small_contribution(x, g, pct))
        lo, hi = np.array([-1.0, np.nan]), np.array([np.inf, 2.0])
        same(C.clamp_channels(w, lo, hi), R.clamp_channels(w, lo, hi))


def test_clip_small_larger_images():
    """A 60000-pixel image: a 65536-entry sort row (136 bitonic stages)."""
    v, g = ascent_case((2, 3, 300, 200), np.float32, seed=9)
    for pct in (1, 50, 97.5):
        same(C.clip_small_norm(v, pct), R.clip_small_norm(v, pct))
        same(C.clip_small_contribution(v, g, pct), R.clip_small_contribution(v, g, pct))


def test_ascent_empty_arrays():
    for shape in [(0, 2, 3, 3), (2, 0, 3, 3), (2, 2, 0, 3)]:
        e = np.zeros(shape, np.float32)
        for out in (C.ascent_update(e, e, np.zeros(shape[0]), 0.1), C.gaussian_blur(e, 1.0),
                    C.clip_small_norm(e, 50), C.clip_small_contribution(e, e, 50),
                    C.clamp_channels(e, np.zeros(shape[1]), np.ones(shape[1]))):
            assert isinstance(out, np.ndarray) and out.shape == shape and out.dtype == e.dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_ascent_kernels_with_device_inputs(dev, dtype):
    v, g = ascent_case((3, 2, 11, 7), dtype, seed=10)
    eta = np.array([0.5, 2.0, 0.0])
    lo, hi = np.array([-10.0, -20.0]), np.array([5.0, 30.0])
    dv, dg = dev.to(v), dev.to(g)
    results = {
        "update": (C.ascent_update(dv, dg, dev.to(eta), 0.01), R.ascent_update(v, g, eta, 0.01)),
        "update, host eta": (C.ascent_update(dv, dg, eta, 0.01),
                             R.ascent_update(v, g, eta, 0.01)),
        "norm": (C.clip_small_norm(dv, 30), R.clip_small_norm(v, 30)),
        "contribution": (C.clip_small_contribution(dv, dg, 70),
                         R.clip_small_contribution(v, g, 70)),
        "contribution, host g": (C.clip_small_contribution(dv, g, 70),
                                 R.clip_small_contribution(v, g, 70)),
        "norm copy": (C.clip_small_norm(dv, 0.0), v),
        "clamp": (C.clamp_channels(dv, dev.to(lo), dev.to(hi)), R.clamp_channels(v, lo, hi)),
    }
    for name, (got, expected) in results.items():
        assert isinstance(got, C.DeviceArray), name
        same(got, expected)
    blurred = C.gaussian_blur(dv, 1.3)
    assert isinstance(blurred, C.DeviceArray)
    check(blurred, R.gaussian_blur(v, 1.3), dtype)
    np.testing.assert_array_equal(dev.back(dv), v)  # inputs untouched
    np.testing.assert_array_equal(dev.back(dg), g)


def test_ascent_chain_stays_on_the_device(dev):
    """update -> blur -> clip -> clamp, each result the next input, never leaving the GPU."""
    v, g = ascent_case((2, 3, 9, 8), np.float64, seed=11)
    eta = np.array([0.1, 0.2])
    lo, hi = np.full(3, -20.0), np.full(3, 20.0)
    x = C.ascent_update(dev.to(v), dev.to(g), eta, 0.01)
    x = C.clamp_channels(C.clip_small_norm(C.gaussian_blur(x, 0.8), 25), lo, hi)
    assert isinstance(x, C.DeviceArray)
    ref = R.clamp_channels(R.clip_small_norm(R.gaussian_blur(R.ascent_update(v, g, eta, 0.01),
                                                             0.8), 25), lo, hi)
    check(x, ref, np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_ascent_step_composes_the_kernels(dev, dtype):
    """No fused CUDA kernel: the front runs the CUDA kernels one after the other, with numpy
    arrays (numpy out) and with device arrays (kept on the device), the same result bit for bit."""
    v, g = ascent_case((3, 2, 11, 7), dtype, seed=13)
    eta, lo, hi = np.array([0.5, 2.0, 0.0]), np.array([-10.0, -20.0]), np.array([5.0, 30.0])
    cuda = K.get("cuda")
    assert not hasattr(cuda, "ascent_step")
    for sigma, norm_pct, contrib_pct in [(0.0, 0.0, 0.0), (0.5, 50.0, 0.0), (1.3, 20.0, 90.0)]:
        args = (eta, 0.01, sigma, norm_pct, contrib_pct, lo, hi)
        x = C.ascent_update(v, g, eta, 0.01)
        x = C.clip_small_contribution(C.clip_small_norm(C.gaussian_blur(x, sigma), norm_pct), g,
                                      contrib_pct)
        want = C.clamp_channels(x, lo, hi)
        same(K.ascent_step(v, g, *args, module=cuda), want)
        got = K.ascent_step(dev.to(v), dev.to(g), *args)  # routed by the device array
        assert isinstance(got, C.DeviceArray)
        same(got, want)
        check(got, R.ascent_step(v, g, *args), dtype)


# ---------------------------------------------------------------------------------------------
# the public front routes device arrays to this backend, whatever the host backend is
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("forced", ["", "cpp", "numba"])
def test_front_routes_device_arrays_to_cuda(dev, forced, monkeypatch):
    monkeypatch.setenv("PYDEVIS_BACKEND", forced)
    v, g = ascent_case((2, 3, 6, 5), np.float32, seed=12)
    dv = dev.to(v)
    out = K.clip_small_norm(dv, 40)  # no module=: the first array decides
    assert isinstance(out, C.DeviceArray)
    same(out, R.clip_small_norm(v, 40))
    out = K.ascent_update(dv, g, 0.5, 0.01)  # host g and a scalar eta are converted and staged
    assert isinstance(out, C.DeviceArray)
    same(out, R.ascent_update(v, g, np.full(2, 0.5), 0.01))
    out = K.clamp_channels(dv, -1.0, 1.0)
    same(out, R.clamp_channels(v, np.full(3, -1.0), np.full(3, 1.0)))
    gi, w, args = conv_case(*CONV_CASES["dense_3x3_pad1"], np.float32, seed=12)
    out = K.conv2d_backward_data(dev.to(gi), w, *args)
    assert isinstance(out, C.DeviceArray)
    check(out, R.conv2d_backward_data(gi, w, *args), np.float32)
    x, gp, _, args = maxpool_case(*POOL_CASES["overlap_3x3_s2_ceil"], np.float32, seed=12)
    out = K.max_pool2d_backward(dev.to(gp), x, *args)  # the CUDA kernel, no host fallback
    assert isinstance(out, C.DeviceArray)
    check(out, R.max_pool2d_backward(gp, x, *args), np.float32)
    # numpy in: the host backend, numpy out, as before
    assert isinstance(K.rectifier_backward(v, v), np.ndarray)


# ---------------------------------------------------------------------------------------------
# conv2d_backward_data: GEMM + col2im (cuBLAS) and the direct gather, both against the oracle
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def conv_algorithm():
    before = C.conv_algorithm()
    yield C.conv_algorithm
    C.conv_algorithm(before)


@pytest.mark.parametrize("algorithm", ["gemm", "direct"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CONV_CASES))
def test_conv_algorithms(conv_algorithm, algorithm, name, dtype):
    if algorithm == "gemm" and not C.has_cublas:
        pytest.skip("this build of pydevis._cuda has no cuBLAS")
    conv_algorithm(algorithm)
    g, w, args = conv_case(*CONV_CASES[name], dtype, seed=len(name) + 1)
    got = C.conv2d_backward_data(g, w, *args)
    check(got, R.conv2d_backward_data(g, w, *args), dtype)
    if K.available()["cpp"] is None:
        check(got, K.get("cpp")._C.conv2d_backward_data(g, w, *args), dtype)


def test_conv_gemm_chunks_and_groups(conv_algorithm):
    """More images than one cols chunk (256 MiB: 2 images of 64x3x3 on 128x128 here) and
    several groups: the GEMM path's loops."""
    if not C.has_cublas:
        pytest.skip("this build of pydevis._cuda has no cuBLAS")
    rng = np.random.default_rng(21)
    g = rng.standard_normal((5, 64, 128, 128)).astype(np.float32)
    w = rng.standard_normal((64, 32, 3, 3)).astype(np.float32)
    args = ((128, 128), (1, 1), (1, 1, 1, 1), (1, 1), 2)
    conv_algorithm("gemm")
    gemm = C.conv2d_backward_data(g, w, *args)
    conv_algorithm("direct")
    check(gemm, C.conv2d_backward_data(g, w, *args), np.float32)
    with pytest.raises(ValueError, match="conv_algorithm: expected"):
        C.conv_algorithm("fast")


# ---------------------------------------------------------------------------------------------
# the device-resident ascent: AscentWorkspace
# ---------------------------------------------------------------------------------------------
PIXEL_MAPS = {  # (A, center, mean, std) as pydevis.export.ort_ascent.pixel_map gives them
    "RGB": (np.eye(3), [120.0, 115.0, 100.0], [120.0, 115.0, 100.0], [60.0, 58.0, 57.0]),
    "BGR": (np.eye(3)[::-1], [104.0, 117.0, 123.0], [104.0, 117.0, 123.0], [1.0, 1.0, 1.0]),
    "L": (np.array([[0.299, 0.587, 0.114]]), [0.0, 0.0, 0.0], [0.5], [0.25]),
}


def _map_args(name):
    a, center, mean, std = PIXEL_MAPS[name]
    return ([float(x) for x in np.ravel(a)], center, mean, std)


def _to_input(v, a, center, mean, std, dy, dx):
    """pydevis.preprocess.Spec.to_input of the rolled image, in float32 as numpy does it."""
    a = np.asarray(a, np.float32).reshape(-1, 3)
    p = np.roll(v, (dy, dx), axis=(2, 3)) + np.asarray(center, np.float32)[None, :, None, None]
    x = np.einsum("ck,nkhw->nchw", a, p).astype(np.float32)
    m, s = (np.asarray(t, np.float32)[None, :, None, None] for t in (mean, std))
    return (x - m) / s


def _from_input(gx, a, std, dy, dx):
    a = np.asarray(a, np.float32).reshape(-1, 3)
    g = gx / np.asarray(std, np.float32)[None, :, None, None]
    return np.roll(np.einsum("ck,nchw->nkhw", a, g).astype(np.float32), (-dy, -dx), axis=(2, 3))


@pytest.mark.parametrize("name", list(PIXEL_MAPS))
def test_workspace_pixel_map_and_jitter(name):
    rng = np.random.default_rng(30)
    v = rng.uniform(-100, 100, (2, 3, 9, 7)).astype(np.float32)
    lo, hi = np.full(3, -120.0), np.full(3, 135.0)
    ws = C.AscentWorkspace(v.shape, lo, hi)
    ws.set_pixel_map(*_map_args(name))
    ws.image().copy_from(v)
    a, center, mean, std = PIXEL_MAPS[name]
    channels = len(mean)
    for dy, dx in [(0, 0), (2, -3), (-4, 1)]:
        x = C.to_device(np.zeros((2, channels, 9, 7), np.float32))
        ws.to_input(x, dy, dx)
        want = _to_input(v, a, center, mean, std, dy, dx)
        if name == "L":  # a weighted sum: numpy's einsum may add in another order
            check(x, want, np.float32)
        else:  # a channel permutation: numpy's float32 result bit for bit
            same(x, want)
        gx = rng.standard_normal((2, channels, 9, 7)).astype(np.float32)
        ws.grad_from_input(C.to_device(gx), dy, dx)
        same(ws.grad(), _from_input(gx, a, std, dy, dx))
    with pytest.raises(ValueError, match="x: must be a device array"):
        ws.to_input(np.zeros((2, channels, 9, 7), np.float32))
    with pytest.raises(ValueError, match="x: shape"):
        ws.to_input(C.to_device(np.zeros((2, channels, 9, 8), np.float32)))


@pytest.mark.parametrize("pieces", [(0.0, 0.0, 0.0), (0.5, 50.0, 0.0), (1.3, 20.0, 90.0)])
def test_workspace_step_is_the_ascent_step(pieces):
    """step() on the device state equals the stateless CUDA kernels' ascent_step bit for bit on
    the active rows, leaves the inactive rows alone, and keep_best/restore_best copy rows."""
    sigma, norm_pct, contrib_pct = pieces
    v, g = ascent_case((3, 3, 11, 7), np.float32, seed=31)
    eta, lo, hi = np.array([0.5, 2.0, 1.0]), np.array([-10.0, -20.0, -5.0]), np.full(3, 30.0)
    ws = C.AscentWorkspace(v.shape, lo, hi)
    ws.set_pixel_map(*_map_args("RGB"))
    ws.image().copy_from(v)
    ws.keep_best([True] * 3)
    ws.grad().copy_from(g)
    np.testing.assert_allclose(ws.grad_sumsq(), (g.astype(np.float64) ** 2).sum(axis=(1, 2, 3)),
                               rtol=1e-12)  # another summation order than numpy's
    active = [True, False, True]
    ws.step(eta, 0.01, sigma, norm_pct, contrib_pct, active)
    want = K.ascent_step(v, g, eta, 0.01, sigma, norm_pct, contrib_pct, lo, hi,
                         module=K.get("cuda"))
    got = ws.image().to_host()
    same(got[[0, 2]], want[[0, 2]])
    same(got[1], v[1])
    same(ws.best().to_host(), v)
    ws.keep_best([False, False, True])
    same(ws.best().to_host()[2], got[2])
    ws.restore_best([True, True, True])
    same(ws.image().to_host()[0], v[0])


def test_device_array_copies():
    a = np.arange(12, dtype=np.float64).reshape(3, 4)
    d = C.to_device(a)
    assert isinstance(d, C.DeviceArray) and d.shape == (3, 4)
    same(d, a)
    d.copy_from(a * 2)
    same(d, a * 2)
    d.copy_from(C.to_device(a + 1))
    same(d, a + 1)
    with pytest.raises(ValueError, match="src: float32"):
        d.copy_from(a.astype(np.float32))
