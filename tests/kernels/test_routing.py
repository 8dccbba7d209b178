"""Routing of device arrays by the public front :mod:`pydevis.kernels` (no GPU needed).

A call whose first array argument exposes ``__cuda_array_interface__`` goes to the CUDA backend,
whatever the host backend is, with its device arrays passed on unconverted; numpy calls are
unchanged. The same routing on a real GPU is checked in ``test_cuda_device.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

import pydevis.kernels as K
from pydevis.errors import BackendError


class FakeDeviceArray:
    """Looks like a device array to the front; holds no memory."""

    def __init__(self, shape=(1, 2, 3, 3), typestr="<f4"):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr,
                                         "data": (0, False), "version": 3}


F4 = np.zeros((1, 2, 3, 3), np.float32)

# Every front function, called with `a` as its first array argument.
CALLS = {
    "conv2d_backward_data": lambda a: K.conv2d_backward_data(
        a, np.zeros((2, 2, 1, 1), np.float32), (3, 3)),
    "max_pool2d_backward": lambda a: K.max_pool2d_backward(a, np.zeros((1, 2, 6, 6), np.float32),
                                                           (2, 2), (2, 2)),
    "rectifier_backward": lambda a: K.rectifier_backward(a, F4),
    "lrn_backward": lambda a: K.lrn_backward(a, F4, 3),
    "avg_pool2d_backward": lambda a: K.avg_pool2d_backward(a, (1, 2, 6, 6), (2, 2), (2, 2)),
    "global_avg_pool_backward": lambda a: K.global_avg_pool_backward(a, (1, 2, 6, 6)),
    "ascent_update": lambda a: K.ascent_update(a, F4, 0.5, 0.01),
    "gaussian_blur": lambda a: K.gaussian_blur(a, 1.0),
    "clip_small_norm": lambda a: K.clip_small_norm(a, 50),
    "clip_small_contribution": lambda a: K.clip_small_contribution(a, F4, 50),
    "clamp_channels": lambda a: K.clamp_channels(a, -1.0, 1.0),
    "ascent_step": lambda a: K.ascent_step(a, F4, 0.5, 0.01, 1.0, 50, 90, -1.0, 1.0),
}


class RecordingCuda:
    """Stands in for the CUDA backend: records each call and its arguments."""

    NAME = "cuda"

    def __init__(self):
        self.calls: list[tuple[str, tuple]] = []

    def __getattr__(self, name):
        def call(*args):
            self.calls.append((name, args))
            return name

        return call


@pytest.mark.parametrize("forced", ["", "cpp", "numba"])
@pytest.mark.parametrize("name", list(CALLS))
def test_device_array_goes_to_cuda_unconverted(name, forced, monkeypatch):
    monkeypatch.setenv("PYDEVIS_BACKEND", forced)
    cuda = RecordingCuda()
    monkeypatch.setattr(K, "get", lambda backend: cuda if backend == "cuda" else None)
    fake = FakeDeviceArray()
    assert CALLS[name](fake) == name
    ((called, args),) = cuda.calls
    assert called == name
    assert isinstance(args[0], FakeDeviceArray)  # the device array itself, not a numpy copy
    for a in args[1:]:  # host companions: converted as for the host backends
        if isinstance(a, np.ndarray):
            assert a.flags.c_contiguous
    if name == "ascent_update":
        np.testing.assert_array_equal(args[2], [0.5])  # eta broadcast to (N,) from the interface
        assert args[2].dtype == np.float64
    if name == "clamp_channels":
        np.testing.assert_array_equal(args[1], [-1.0, -1.0])  # lo broadcast to (C,)


class ComposingCuda(RecordingCuda):
    """The CUDA backend as it is: no fused ``ascent_step``; each call returns its first argument
    (a chain of calls stays on the "device")."""

    def __getattr__(self, name):
        if name == "ascent_step":
            raise AttributeError(name)

        def call(*args):
            self.calls.append((name, args))
            return args[0]

        return call


@pytest.mark.parametrize("forced", ["", "cpp", "numba"])
def test_ascent_step_on_device_composes_the_cuda_kernels(forced, monkeypatch):
    monkeypatch.setenv("PYDEVIS_BACKEND", forced)
    cuda = ComposingCuda()
    monkeypatch.setattr(K, "get", lambda backend: cuda if backend == "cuda" else None)
    v, g = FakeDeviceArray(), FakeDeviceArray()
    assert K.ascent_step(v, g, 0.5, 0.01, 1.0, 50, 90, -1.0, 1.0) is v
    assert [name for name, _ in cuda.calls] == ["ascent_update", "gaussian_blur",
                                                "clip_small_norm", "clip_small_contribution",
                                                "clamp_channels"]
    assert all(args[0] is v for _, args in cuda.calls)  # never converted to numpy
    _, g_arg, eta, decay = cuda.calls[0][1]
    assert g_arg is g and decay == 0.01
    np.testing.assert_array_equal(eta, [0.5])  # eta broadcast to (N,)
    assert cuda.calls[1][1][1:] == (1.0,) and cuda.calls[2][1][1:] == (50.0,)
    assert cuda.calls[3][1][1:] == (g, 90.0)  # the step's own gradient
    np.testing.assert_array_equal(cuda.calls[4][1][1], [-1.0, -1.0])  # lo broadcast to (C,)
    cuda.calls.clear()
    K.ascent_step(v, F4, 0.5, 0.0, 0.0, 0.0, -1.0, -1.0, 1.0)  # pieces switched off: skipped
    assert [name for name, _ in cuda.calls] == ["ascent_update", "clamp_channels"]


def test_device_companions_are_not_converted(monkeypatch):
    cuda = RecordingCuda()
    monkeypatch.setattr(K, "get", lambda backend: cuda)
    v, g, lo = FakeDeviceArray(), FakeDeviceArray(), FakeDeviceArray((2,), "<f8")
    K.clip_small_contribution(v, g, 10)
    K.clamp_channels(v, lo, lo)
    K.max_pool2d_backward(v, FakeDeviceArray(), (2, 2))
    for _, args in cuda.calls:
        assert all(isinstance(a, FakeDeviceArray) for a in args[:2])


def test_device_array_rank_is_checked_by_the_front(monkeypatch):
    monkeypatch.setattr(K, "get", lambda backend: RecordingCuda())
    with pytest.raises(ValueError, match=r"^v: expected 4-D, got shape \(2, 3\)$"):
        K.clamp_channels(FakeDeviceArray((2, 3)), 0.0, 1.0)


def test_numpy_arrays_stay_on_the_host_backend(monkeypatch):
    def no_cuda(backend):
        raise AssertionError(f"numpy input routed to backend {backend}")

    monkeypatch.setattr(K, "get", no_cuda)
    g = np.arange(-3.0, 3.0).reshape(1, 1, 2, 3)
    np.testing.assert_array_equal(K.rectifier_backward(g, g, "deconvnet"), np.maximum(g, 0))
    assert isinstance(K.global_avg_pool_backward(g[:, :, :1, :1], (1, 1, 2, 2)), np.ndarray)


@pytest.mark.parametrize("forced", ["", "cpp", "numba"])
@pytest.mark.parametrize("name", list(CALLS))
def test_device_array_without_cuda_raises_backend_error(name, forced, monkeypatch):
    reason = K.available()["cuda"]
    if reason is None:
        pytest.skip("the CUDA backend is available here (test_cuda_device.py checks the routing)")
    monkeypatch.setenv("PYDEVIS_BACKEND", forced)
    with pytest.raises(BackendError, match=r"^backend cuda is unavailable: ") as info:
        CALLS[name](FakeDeviceArray())
    assert reason in str(info.value)


def test_max_pool2d_backward_with_device_arrays_goes_to_the_cuda_kernel(monkeypatch):
    """CUDA has its own ``max_pool2d_backward`` (no host fallback): a device grad_out and a
    device x both reach it unconverted, a numpy x next to them is made C-contiguous."""
    cuda = RecordingCuda()
    monkeypatch.setattr(K, "get", lambda backend: cuda if backend == "cuda" else None)
    g, x = FakeDeviceArray(), FakeDeviceArray((1, 2, 6, 6))
    assert K.max_pool2d_backward(g, x, (2, 2), (2, 2)) == "max_pool2d_backward"
    host_x = np.zeros((1, 2, 12, 6), np.float32)[:, :, ::2]
    K.max_pool2d_backward(g, host_x, [3, 3], [2, 2], [1, 1, 1, 1], [1, 1])
    (n1, a1), (n2, a2) = cuda.calls
    assert n1 == n2 == "max_pool2d_backward"
    assert a1[0] is g and a1[1] is x and a1[2:] == ((2, 2), (2, 2), (0, 0, 0, 0), (1, 1))
    assert a2[0] is g and isinstance(a2[1], np.ndarray) and a2[1].flags.c_contiguous
    assert a2[2:] == ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1))
