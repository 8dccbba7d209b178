"""The CUDA ascent kernels against the oracle (bit for bit where numpy's result is exact:
clip_small_*, clamp_channels, ascent_update), host and device inputs.

Shared cases, the check and the skip: cuda_common.py."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from cuda_common import (
    ASCENT_SHAPES,
    DTYPES,
    PCTS,
    C,
    ascent_case,
    check,
    same,
)

import pydevis.kernels as K
from pydevis.kernels import _reference as R

pytestmark = pytest.mark.cuda


# ---------------------------------------------------------------------------------------------
# ascent kernels (docs/kernels.md, "Ascent kernels"): clip_small_* and clamp_channels must zero /
# clip exactly what numpy does, ascent_update is computed like numpy (double, once-rounded)
# ---------------------------------------------------------------------------------------------

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
