"""Each ascent kernel / regularizer against a plain numpy statement of its definition, through
every available backend."""

from __future__ import annotations

import numpy as np
import pytest

import pydevis.kernels as K
from pydevis.methods import regularizers as R

SHAPE = (3, 2, 11, 7)  # N != C != H != W


def _ref_percentile_zero(v, score, pct):
    out = v.copy()
    for n in range(v.shape[0]):
        thr = np.percentile(score[n], pct)
        out[n][:, score[n] < thr] = 0
    return out


def _scipy_like_blur(v, sigma):
    """Separable Gaussian, truncate 4σ, mirror ('reflect') boundary, via np.pad."""
    r = int(4 * sigma + 0.5)
    k = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * sigma**2))
    k /= k.sum()
    p = np.pad(v.astype(np.float64), ((0, 0), (0, 0), (0, 0), (r, r)), mode="symmetric")
    a = sum(k[i] * p[..., i:i + v.shape[3]] for i in range(2 * r + 1))
    p = np.pad(a, ((0, 0), (0, 0), (r, r), (0, 0)), mode="symmetric")
    return sum(k[i] * p[:, :, i:i + v.shape[2]] for i in range(2 * r + 1))


@pytest.fixture
def vg(rng):
    return (rng.standard_normal(SHAPE).astype(np.float32) * 30,
            rng.standard_normal(SHAPE).astype(np.float32))


def test_ascent_update(backend, vg):
    v, g = vg
    eta = np.array([0.5, 2.0, 0.0])
    out = K.ascent_update(v, g, eta, 0.01, module=backend)
    ref = (v + eta[:, None, None, None] * g) * 0.99
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.3])
def test_gaussian_blur(backend, vg, sigma):
    v, _ = vg
    np.testing.assert_allclose(K.gaussian_blur(v, sigma, module=backend),
                               _scipy_like_blur(v, sigma), rtol=1e-5, atol=1e-4)


def test_blur_zero_sigma_is_copy(backend, vg):
    v, _ = vg
    np.testing.assert_array_equal(K.gaussian_blur(v, 0.0, module=backend), v)


@pytest.mark.parametrize("pct", [20, 50, 90])
def test_clip_small_norm(backend, vg, pct):
    v, _ = vg
    norm = np.sqrt((v.astype(np.float64) ** 2).sum(axis=1))
    np.testing.assert_array_equal(K.clip_small_norm(v, pct, module=backend),
                                  _ref_percentile_zero(v, norm, pct))


@pytest.mark.parametrize("pct", [10, 90])
def test_clip_small_contribution(backend, vg, pct):
    v, g = vg
    contrib = np.abs((g.astype(np.float64) * -v).sum(axis=1))
    np.testing.assert_array_equal(K.clip_small_contribution(v, g, pct, module=backend),
                                  _ref_percentile_zero(v, contrib, pct))


def test_clamp_channels(backend, vg):
    v, _ = vg
    lo, hi = np.array([-10.0, -20.0]), np.array([5.0, 30.0])
    ref = np.clip(v, lo[None, :, None, None], hi[None, :, None, None])
    np.testing.assert_array_equal(K.clamp_channels(v, lo, hi, module=backend), ref)


def test_total_variation_gradient_matches_finite_difference(rng):
    v = rng.standard_normal((1, 3, 6, 5))
    for beta in (2.0, 1.5):
        tv = R.TotalVariation(0.7, beta)

        def value(z, beta=beta):
            dx = np.zeros_like(z)
            dy = np.zeros_like(z)
            dx[..., :, :-1] = z[..., :, 1:] - z[..., :, :-1]
            dy[..., :-1, :] = z[..., 1:, :] - z[..., :-1, :]
            return 0.7 * ((dx**2 + dy**2 + 1e-8) ** (beta / 2)).sum()

        u = rng.standard_normal(v.shape)
        fd = (value(v + 1e-6 * u) - value(v - 1e-6 * u)) / 2e-6
        assert float((tv.grad(v) * u).sum()) == pytest.approx(fd, rel=1e-5)


def test_alpha_norm_gradient(rng):
    v = rng.standard_normal((1, 3, 4, 4))
    a = R.AlphaNorm(0.3, 6.0)
    u = rng.standard_normal(v.shape)
    fd = (0.3 * (np.abs(v + 1e-6 * u) ** 6).sum() - 0.3 * (np.abs(v - 1e-6 * u) ** 6).sum()) / 2e-6
    assert float((a.grad(v) * u).sum()) == pytest.approx(fd, rel=1e-5)


@pytest.mark.parametrize("t", [0, 1, 4])
@pytest.mark.parametrize("sigma, every, norm_pct, contrib_pct", [(0.5, 4, 50, 0), (0.5, 4, 0, 90),
                                                                 (1.0, 1, 20, 30), (0, 0, 0, 0)])
def test_ascent_step_is_the_step_then_r(backend, vg, t, sigma, every, norm_pct, contrib_pct):
    """kernels.ascent_step, as the ascent calls it, is r(x + eta g) of the pieces, bit for bit."""
    v, g = vg
    eta, lo, hi = np.array([0.5, 2.0, 0.0]), np.array([-10.0, -20.0]), np.array([5.0, 30.0])
    r = R.compose([R.blur(sigma, every), R.clip_norm(norm_pct), R.clip_contribution(contrib_pct),
                   R.clamp(lo, hi)])
    want = r(R.State(K.ascent_update(v, g, eta, 1e-4, module=backend), g, t))
    got = K.ascent_step(v, g, eta, 1e-4, R.blur_sigma_at(sigma, every, t), norm_pct, contrib_pct,
                        lo, hi, module=backend)
    np.testing.assert_array_equal(got, want)


def test_blur_sigma_at():
    assert [R.blur_sigma_at(0.5, 4, t) for t in range(6)] == [0.5, 0, 0, 0, 0.5, 0]
    assert R.blur_sigma_at(0.5, 0, 0) == 0 and R.blur_sigma_at(0.0, 4, 0) == 0


def test_compose_applies_in_order(rng):
    v = rng.standard_normal(SHAPE).astype(np.float32)
    s = R.State(v, np.zeros_like(v), 0)
    r = R.compose([R.blur(1.0, 4), R.clamp(np.array([-0.1, -0.1]), np.array([0.1, 0.1]))])
    out = r(s)
    np.testing.assert_allclose(out, np.clip(_scipy_like_blur(v, 1.0), -0.1, 0.1), atol=1e-5)
    s2 = R.State(v, np.zeros_like(v), 1)  # blur skipped when t % every != 0
    np.testing.assert_array_equal(R.blur(1.0, 4)(s2), v)
