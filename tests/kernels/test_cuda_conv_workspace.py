"""The CUDA conv algorithms (cuBLAS GEMM + col2im, direct gather) and the device-resident
ascent (``AscentWorkspace``).

Shared cases, the check and the skip: cuda_common.py."""

from __future__ import annotations

import numpy as np
import pytest
from cuda_common import (
    CONV_CASES,
    DTYPES,
    C,
    ascent_case,
    check,
    conv_case,
    same,
)

import pydevis.kernels as K
from pydevis.kernels import _reference as R

pytestmark = pytest.mark.cuda


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
