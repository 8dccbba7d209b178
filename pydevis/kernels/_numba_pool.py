"""numba MaxPool, AveragePool and GlobalAveragePool backward kernels; conventions as in
``_numba.py``'s doc."""

from __future__ import annotations

import numpy as np

from ._numba_base import _JIT, _SER, _arr, _serial, _tuple, njit, prange


# --------------------------------------------------------------------------------------------
# MaxPool backward from the forward input (switches found here, as ONNX Runtime picks them)
# --------------------------------------------------------------------------------------------
@njit(**_SER)
def _max_pool_rows(g, x, out, kh_, kw_, sh, sw, pt, pl, dh, dw, p0, p1):
    # planes [p0, p1) of (P, H, W) / (P, Ho, Wo). Per output row: a running maximum and tap per
    # column, updated tap by tap with the columns innermost (first strict maximum wins). The
    # plane is first split into sw column phases, so that each tap reads contiguous memory, and
    # the inner loop runs over zero-based slices with an int32 tap: LLVM vectorises it (3.3x).
    h_, w_ = x.shape[1], x.shape[2]
    ho, wo = g.shape[1], g.shape[2]
    wp = (w_ + sw - 1) // sw
    nph = min(sw, w_)  # phases r >= W hold no pixel and are never read (no stride-sized buffer)
    lowest = np.finfo(x.dtype).min
    best = np.empty(wo, x.dtype)
    tap = np.empty(wo, np.int32)
    phases = np.empty((nph, h_, wp), x.dtype)
    lo_ = np.empty(kw_, np.int64)
    hi_ = np.empty(kw_, np.int64)
    r_ = np.empty(kw_, np.int64)
    q_ = np.empty(kw_, np.int64)
    for kw in range(kw_):  # tap column iw = ow*sw + off = (ow + q)*sw + r
        off = kw * dw - pl
        r_[kw] = off % sw
        q_[kw] = (off - r_[kw]) // sw
        lo_[kw] = 0 if off >= 0 else (-off + sw - 1) // sw
        hi_[kw] = 0 if off >= w_ else min(wo, (w_ - off + sw - 1) // sw)
        if r_[kw] >= nph:  # already empty: its taps lie beyond W
            hi_[kw] = lo_[kw]
    zero = g.dtype.type(0)
    for p in range(p0, p1):
        o = out[p]
        xp = x[p]
        for ih in range(h_):
            row = xp[ih]
            for r in range(nph):
                ph = phases[r, ih]
                for j in range((w_ - r + sw - 1) // sw):
                    ph[j] = row[j * sw + r]
        o[:, :] = zero
        for oh in range(ho):
            best[:] = lowest
            tap[:] = -1
            hs = oh * sh - pt
            for kh in range(kh_):
                ih = hs + kh * dh
                if ih < 0 or ih >= h_:
                    continue
                for kw in range(kw_):
                    lo = lo_[kw]
                    n = hi_[kw] - lo
                    src = phases[r_[kw], ih, lo + q_[kw]:lo + q_[kw] + n]
                    bs = best[lo:lo + n]
                    ts = tap[lo:lo + n]
                    k = np.int32(kh * kw_ + kw)
                    for i in range(n):
                        v = src[i]
                        cur = bs[i]
                        take = v > cur
                        bs[i] = v if take else cur
                        ts[i] = k if take else ts[i]
            for ow in range(wo):
                k = tap[ow]
                if k >= 0:
                    kh = k // kw_
                    kw = k - kh * kw_
                    o[hs + kh * dh, ow * sw - pl + kw * dw] += g[p, oh, ow]


@njit(**_JIT)
def _max_pool_par(g, x, out, kh_, kw_, sh, sw, pt, pl, dh, dw):
    for p in prange(g.shape[0]):
        _max_pool_rows(g, x, out, kh_, kw_, sh, sw, pt, pl, dh, dw, p, p + 1)


def max_pool2d_backward(g, x, kernel_shape, strides, pads, dilations):
    """dL/dX of ONNX MaxPool from its forward input: g to the first strict maximum per window."""
    g = _arr(g, "grad_out", 4)
    x = _arr(x, "x", 4, dtype=g.dtype)
    kh_, kw_ = _tuple(kernel_shape, 2, "kernel_shape", 1)
    sh, sw = _tuple(strides, 2, "strides", 1)
    pt, pl, pb, pr = _tuple(pads, 4, "pads", 0)
    dh, dw = _tuple(dilations, 2, "dilations", 1)
    n_, c_, h_, w_ = x.shape
    if g.shape[:2] != (n_, c_):
        raise ValueError(f"grad_out shape {g.shape} does not match N, C of x {x.shape}")
    ekh, ekw = dh * (kh_ - 1) + 1, dw * (kw_ - 1) + 1
    ph, pw = h_ + pt + pb, w_ + pl + pr
    if ph < ekh or pw < ekw:
        raise ValueError(f"kernel_shape: dilated kernel {ekh}x{ekw} is larger than the padded "
                         f"input {ph}x{pw}")
    if g.shape[2] > -(-(ph - ekh) // sh) + 1 or g.shape[3] > -(-(pw - ekw) // sw) + 1:
        raise ValueError(f"grad_out shape {g.shape} is larger than the MaxPool output")
    out = np.empty(x.shape, g.dtype)
    if out.size == 0:
        return out
    planes = n_ * c_
    args = (g.reshape(planes, *g.shape[2:]), x.reshape(planes, h_, w_),
            out.reshape(planes, h_, w_), kh_, kw_, sh, sw, pt, pl, dh, dw)
    if _serial(g.size * kh_ * kw_ + out.size):
        _max_pool_rows(*args, 0, planes)
    else:
        _max_pool_par(*args)
    return out


# --------------------------------------------------------------------------------------------
# AveragePool / GlobalAveragePool
# --------------------------------------------------------------------------------------------
@njit(**_SER)
def _avg_pool_rows(g, out, kh_, kw_, sh, sw, pt, pl, pb, pr, include_pad, p0, p1):
    n_, c_, ho, wo = g.shape
    h_, w_ = out.shape[2], out.shape[3]
    zero = g.dtype.type(0)
    for p in range(p0, p1):
        n = p // c_
        c = p - n * c_
        o = out[n, c]
        for ih in range(h_):
            for iw in range(w_):
                o[ih, iw] = zero
        for oh in range(ho):
            hs = oh * sh - pt
            he = min(hs + kh_, h_ + pb)
            h0 = max(hs, 0)
            h1 = min(he, h_)
            if h1 <= h0:
                continue
            for ow in range(wo):
                ws = ow * sw - pl
                we = min(ws + kw_, w_ + pr)
                w0 = max(ws, 0)
                w1 = min(we, w_)
                if w1 <= w0:
                    continue
                if include_pad:
                    div = (he - hs) * (we - ws)
                else:
                    div = (h1 - h0) * (w1 - w0)
                v = g[n, c, oh, ow] / div
                for ih in range(h0, h1):
                    for iw in range(w0, w1):
                        o[ih, iw] += v


@njit(**_JIT)
def _avg_pool_par(g, out, kh_, kw_, sh, sw, pt, pl, pb, pr, include_pad):
    for p in prange(g.shape[0] * g.shape[1]):
        _avg_pool_rows(g, out, kh_, kw_, sh, sw, pt, pl, pb, pr, include_pad, p, p + 1)


def avg_pool2d_backward(g, in_shape, kernel_shape, strides, pads, count_include_pad):
    """dL/dX of ONNX AveragePool (2-D, no dilation)."""
    g = _arr(g, "grad_out", 4)
    n_, c_, h_, w_ = _tuple(in_shape, 4, "in_shape", 0)
    kh_, kw_ = _tuple(kernel_shape, 2, "kernel_shape", 1)
    sh, sw = _tuple(strides, 2, "strides", 1)
    pt, pl, pb, pr = _tuple(pads, 4, "pads", 0)
    if g.shape[:2] != (n_, c_):
        raise ValueError(f"grad_out shape {g.shape} does not match in_shape {(n_, c_, h_, w_)}")
    out = np.empty((n_, c_, h_, w_), g.dtype)
    if out.size:
        args = (g, out, kh_, kw_, sh, sw, pt, pl, pb, pr, bool(count_include_pad))
        if _serial(g.size * kh_ * kw_ + out.size):
            _avg_pool_rows(*args, 0, n_ * c_)
        else:
            _avg_pool_par(*args)
    return out


@njit(**_SER)
def _global_avg_rows(g, out, p0, p1):
    hw = out.shape[1]
    for p in range(p0, p1):
        v = g[p] / hw
        for i in range(hw):
            out[p, i] = v


@njit(**_JIT)
def _global_avg_par(g, out):
    for p in prange(out.shape[0]):
        _global_avg_rows(g, out, p, p + 1)


def global_avg_pool_backward(g, in_shape):
    """(N, C, 1, 1) -> (N, C, H, W) filled with ``g / (H*W)``."""
    g = _arr(g, "grad_out", 4)
    n_, c_, h_, w_ = _tuple(in_shape, 4, "in_shape", 0)
    if g.shape != (n_, c_, 1, 1):
        raise ValueError(f"grad_out shape {g.shape}, expected {(n_, c_, 1, 1)}")
    out = np.empty((n_ * c_, h_ * w_), g.dtype)
    if out.size:
        if _serial(out.size):
            _global_avg_rows(g.reshape(-1), out, 0, n_ * c_)
        else:
            _global_avg_par(g.reshape(-1), out)
    return out.reshape(n_, c_, h_, w_)
