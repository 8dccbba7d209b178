"""Naive numpy statements of the ascent kernels (docs/kernels.md, "Ascent kernels"); part of
the oracle, see ``_reference.py``."""

from __future__ import annotations

import numpy as np


def ascent_update(v, g, eta, decay):
    out = np.empty_like(v)
    for n in range(v.shape[0]):
        out[n] = (v[n] + eta[n] * g[n]) * (1 - decay)
    return out


def _gauss_weights(sigma):
    r = int(4 * sigma + 0.5)
    k = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-k * k / (2 * sigma * sigma))
    return w / w.sum(), r


def _reflect(i, n):
    """Half-sample symmetric index (scipy.ndimage 'reflect') for any integer i."""
    if n == 1:
        return 0
    period = 2 * n
    i %= period
    return i if i < n else period - 1 - i


def gaussian_blur(v, sigma):
    if sigma <= 0:
        return v.copy()
    w, r = _gauss_weights(sigma)
    n, c, h, wd = v.shape
    tmp = np.zeros_like(v, dtype=np.float64)
    out = np.zeros_like(v)
    for i in range(n):
        for ch in range(c):
            plane = v[i, ch].astype(np.float64)
            for y in range(h):
                for x in range(wd):
                    tmp[i, ch, y, x] = sum(w[k + r] * plane[y, _reflect(x + k, wd)]
                                           for k in range(-r, r + 1))
            for y in range(h):
                for x in range(wd):
                    out[i, ch, y, x] = sum(w[k + r] * tmp[i, ch, _reflect(y + k, h), x]
                                           for k in range(-r, r + 1))
    return out


def clip_small_norm(v, pct):
    if pct <= 0:
        return v.copy()
    out = v.copy()
    for n in range(v.shape[0]):
        norm = np.sqrt((v[n].astype(np.float64) ** 2).sum(axis=0))
        small = norm < np.percentile(norm, pct)
        out[n][:, small] = 0
    return out


def clip_small_contribution(v, g, pct):
    if pct <= 0:
        return v.copy()
    out = v.copy()
    for n in range(v.shape[0]):
        contrib = np.abs((g[n].astype(np.float64) * -v[n]).sum(axis=0))
        small = contrib < np.percentile(contrib, pct)
        out[n][:, small] = 0
    return out


def clamp_channels(v, lo, hi):
    out = v.copy()
    for c in range(v.shape[1]):
        out[:, c] = np.minimum(np.maximum(v[:, c], lo[c]), hi[c])
    return out


def ascent_step(v, g, eta, decay, blur_sigma, norm_pct, contrib_pct, lo, hi):
    """One step of the ascent after the backward pass: the composition of the five kernels
    above, which is its definition."""
    out = ascent_update(v, g, eta, decay)
    out = gaussian_blur(out, blur_sigma)
    out = clip_small_norm(out, norm_pct)
    out = clip_small_contribution(out, g, contrib_pct)
    return clamp_channels(out, lo, hi)
