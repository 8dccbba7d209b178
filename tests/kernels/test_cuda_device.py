"""The CUDA backend with device arrays (``__cuda_array_interface__`` from cupy or numba.cuda),
mixed host/device arguments, and the routing of device arrays by :mod:`pydevis.kernels`.

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
    C,
    ascent_case,
    avg_case,
    check,
    conv_case,
    maxpool_case,
    rect_case,
    same,
)

import pydevis.kernels as K
from pydevis.kernels import _reference as R

pytestmark = pytest.mark.cuda


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
