"""numba versions of the ascent kernels (docs/kernels.md, "Ascent kernels")."""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

# Below this many multiply-adds a kernel runs on the calling thread (as in ``_numba.py``).
_MIN_PARALLEL_WORK = 1 << 18


@njit(cache=True, parallel=True)
def ascent_update(v, g, eta, decay):
    out = np.empty_like(v)
    n = v.shape[0]
    for i in prange(n):
        e = eta[i]
        k = 1.0 - decay
        vi, gi, oi = v[i].ravel(), g[i].ravel(), out[i].ravel()
        for j in range(vi.size):
            oi[j] = (vi[j] + e * gi[j]) * k
    return out


@njit(cache=True)
def _reflect(i, n):
    if n == 1:
        return 0
    period = 2 * n
    i = i % period
    return i if i < n else period - 1 - i


@njit(cache=True, nogil=True)
def _blur_planes(v, w, r, out, p0, p1):
    """Separable blur of planes [p0, p1) of (P, H, W): a horizontal pass over a reflected copy
    of each row, then a vertical pass over whole rows, every inner loop running along x
    (contiguous, vectorised); accumulated in float64 tap by tap, as the C++ kernel does."""
    h, wd = v.shape[1], v.shape[2]
    taps = 2 * r + 1
    tmp = np.empty((h, wd), np.float64)
    row = np.empty(wd + 2 * r, np.float64)
    acc = np.empty(wd, np.float64)
    for p in range(p0, p1):
        src = v[p]
        for y in range(h):
            s = src[y]
            for i in range(wd + 2 * r):
                row[i] = s[_reflect(i - r, wd)]
            t = tmp[y]
            t[:] = 0.0
            for k in range(taps):
                wk = w[k]
                seg = row[k:k + wd]
                for x in range(wd):
                    t[x] += wk * seg[x]
        dst = out[p]
        for y in range(h):
            acc[:] = 0.0
            for k in range(taps):
                wk = w[k]
                t = tmp[_reflect(y + k - r, h)]
                for x in range(wd):
                    acc[x] += wk * t[x]
            d = dst[y]
            for x in range(wd):
                d[x] = acc[x]


@njit(cache=True, parallel=True, nogil=True)
def _blur_par(v, w, r, out):
    for p in prange(v.shape[0]):
        _blur_planes(v, w, r, out, p, p + 1)


def _blur_into(v, sigma, out):
    """Blur v (N, C, H, W), sigma > 0, into out (which may be v: each plane is read whole
    before it is written)."""
    r = int(4 * sigma + 0.5)
    k = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-k * k / (2 * sigma * sigma))
    w /= w.sum()
    n, c, h, wd = v.shape
    planes = (np.ascontiguousarray(v).reshape(n * c, h, wd), w, r, out.reshape(n * c, h, wd))
    if n * c * h * wd * (2 * r + 1) < _MIN_PARALLEL_WORK or numba.get_num_threads() == 1:
        _blur_planes(*planes, 0, n * c)
    else:
        _blur_par(*planes)


def gaussian_blur(v, sigma):
    if sigma <= 0:
        return v.copy()
    out = np.empty_like(v)
    _blur_into(v, sigma, out)
    return out


@njit(cache=True)
def _percentile(a, pct):
    """numpy's default (linear) percentile of a 1-D array, by selection (O(n)), not a sort."""
    pos = pct / 100.0 * (a.size - 1)
    lo = int(np.floor(pos))
    part = np.partition(a, lo)
    a_lo = part[lo]
    if lo + 1 >= a.size:
        return a_lo
    return a_lo + (part[lo + 1:].min() - a_lo) * (pos - lo)


@njit(cache=True, nogil=True)
def _scores(v, g):
    """The pixel scores (H, W) of one image v (C, H, W): the channel norm sqrt(Σ_c v²) when g
    is None, else the contribution |Σ_c g·(−v)|; in float64, summed over c in order (as
    numpy's sum over the channel axis)."""
    score = np.zeros(v.shape[1:], np.float64)
    s = score.ravel()
    for ch in range(v.shape[0]):
        src = v[ch].ravel()
        if g is None:
            for j in range(s.size):
                x = np.float64(src[j])
                s[j] += x * x
        else:
            gc = g[ch].ravel()
            for j in range(s.size):
                s[j] += np.float64(gc[j]) * -np.float64(src[j])
    for j in range(s.size):
        s[j] = np.sqrt(s[j]) if g is None else np.abs(s[j])
    return score


@njit(cache=True, nogil=True)
def _zero_below_one(v, score, pct, out):
    """One image of the clips: v, out (C, H, W), score (H, W); the pixels whose score is
    below its pct-th percentile are zeroed."""
    c = v.shape[0]
    thr = _percentile(score.ravel(), pct)
    keep = (score >= thr).ravel()
    for ch in range(c):
        src, dst = v[ch].ravel(), out[ch].ravel()
        for j in range(keep.size):
            dst[j] = src[j] if keep[j] else 0


@njit(cache=True, nogil=True)
def _clip_one(v, g, pct, out):
    """Image i of clip_small_norm (g None) or clip_small_contribution: v, g, out (C, H, W);
    out may be v."""
    _zero_below_one(v, _scores(v, g), pct, out)


@njit(cache=True, parallel=True, nogil=True)
def _clip_par(v, g, pct, out):
    for i in prange(v.shape[0]):
        if g is None:
            _clip_one(v[i], None, pct, out[i])
        else:
            _clip_one(v[i], g[i], pct, out[i])


def _serial(n):
    """Whether n images run on the calling thread: one image does (the parallel launch cost
    more than the work, 5.8 ms against 1.3 ms at 1x3x224x224), and so does a one-thread team."""
    return n == 1 or numba.get_num_threads() == 1


def _clip(v, g, pct):
    """Zero, per image, the pixels whose score is below the pct-th percentile (one thread per
    image)."""
    v = np.ascontiguousarray(v)
    out = np.empty_like(v)
    if _serial(v.shape[0]):
        for i in range(v.shape[0]):
            _clip_one(v[i], None if g is None else g[i], pct, out[i])
    else:
        _clip_par(v, g, pct, out)
    return out


def clip_small_norm(v, pct):
    if pct <= 0:
        return v.copy()
    return _clip(v, None, pct)


def clip_small_contribution(v, g, pct):
    if pct <= 0:
        return v.copy()
    return _clip(v, np.ascontiguousarray(g), pct)


@njit(cache=True, nogil=True)
def _clamp_plane(v, a, b, out):
    """One (H, W) plane of clamp_channels into out (which may be v)."""
    src, dst = v.ravel(), out.ravel()
    for j in range(src.size):
        x = src[j]
        dst[j] = a if x < a else (b if x > b else x)


@njit(cache=True, parallel=True)
def clamp_channels(v, lo, hi):
    out = np.empty_like(v)
    n, c = v.shape[0], v.shape[1]
    for p in prange(n * c):
        i, ch = p // c, p % c
        _clamp_plane(v[i, ch], lo[ch], hi[ch], out[i, ch])
    return out


@njit(cache=True, nogil=True)
def _step_one(a, b, g, norm_pct, contrib_pct, lo, hi):
    """Image i of ascent_step after the update and blur: a (C, H, W) holds it, b is free. Each
    piece reads one of the two and writes the other (a piece that reads and writes one array
    does not vectorize: 4x slower), so the result is in b after an even number of clips, in a
    after an odd one."""
    if norm_pct > 0:
        _clip_one(a, None, norm_pct, b)
        a, b = b, a
    if contrib_pct > 0:
        _clip_one(a, g, contrib_pct, b)
        a, b = b, a
    for ch in range(a.shape[0]):
        _clamp_plane(a[ch], lo[ch], hi[ch], b[ch])


@njit(cache=True, parallel=True, nogil=True)
def _step_par(a, b, g, norm_pct, contrib_pct, lo, hi):
    for i in prange(a.shape[0]):
        _step_one(a[i], b[i], g[i], norm_pct, contrib_pct, lo, hi)


def ascent_step(v, g, eta, decay, blur_sigma, norm_pct, contrib_pct, lo, hi):
    """The composition clamp ∘ clip_contribution ∘ clip_norm ∘ blur ∘ update of the kernels
    above, with two arrays where the composition allocates one a kernel: the update allocates
    the first and the blur works in place in it, then each image goes back and forth between it
    and the second, clipped and clamped by one thread while it is in cache."""
    a = ascent_update(v, g, eta, decay)
    if blur_sigma > 0:
        _blur_into(a, blur_sigma, a)
    b = np.empty_like(a)
    g = np.ascontiguousarray(g)
    if _serial(a.shape[0]):
        for i in range(a.shape[0]):
            _step_one(a[i], b[i], g[i], norm_pct, contrib_pct, lo, hi)
    else:
        _step_par(a, b, g, norm_pct, contrib_pct, lo, hi)
    return a if (norm_pct > 0) != (contrib_pct > 0) else b
