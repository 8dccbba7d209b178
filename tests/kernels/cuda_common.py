"""What the CUDA tests (test_cuda_*.py) share: the skip, the check (parity.py's), the device-array
libraries (``DeviceLib``; the ``dev`` fixture is in conftest.py) and the cases. The CUDA backend
(``pydevis._cuda``) is tested against the numpy oracle, with host and device inputs.

``test_parity.py`` already runs every backend through :mod:`pydevis.kernels` on hypothesis
shapes; these modules check what is particular to CUDA: the extension called directly with numpy
arrays (copied to the GPU and back) and with device arrays (``__cuda_array_interface__`` from
cupy or numba.cuda, result a ``DeviceArray`` left on the GPU), mixed host/device arguments,
grid-stride loops past one full grid, inputs left untouched, and the argument checks (a
``ValueError`` naming the argument, before any memory is touched). The ascent kernels are checked
here too (bit for bit against the oracle where numpy's result is exact: clip_small_*,
clamp_channels, ascent_update), and the routing of device arrays by :mod:`pydevis.kernels`.

Every test_cuda_*.py imports this module, so each is skipped as a whole unless
``pydevis.kernels.available()["cuda"] is None`` (the extension is built and a CUDA device
answers); with ``PYDEVIS_REQUIRE_CUDA=1`` (tests/gpu/run.sh, and tests/conftest.py's check) that
is an error instead. The tests, by family: test_cuda_host.py (numpy in, numpy out),
test_cuda_device.py (device arrays, routing), test_cuda_checks.py (argument checks),
test_cuda_ascent.py (ascent kernels),
test_cuda_conv_workspace.py (both conv algorithms, ``AscentWorkspace``).
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest

import pydevis.kernels as K
from parity import RTOL, check  # noqa: F401  (re-exported for the test_cuda_*.py)
from pydevis.kernels import _reference as R

_REASON = K.available()["cuda"]
if _REASON is not None and os.environ.get("PYDEVIS_REQUIRE_CUDA") == "1":  # tests/gpu/run.sh
    raise RuntimeError(f"PYDEVIS_REQUIRE_CUDA=1 but the CUDA backend is unavailable: {_REASON}")
if _REASON is not None:
    pytest.skip(f"CUDA backend unavailable: {_REASON}", allow_module_level=True)

from pydevis import _cuda as C  # noqa: E402  (only importable where the module did not skip)

DTYPES = [np.float32, np.float64]


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
