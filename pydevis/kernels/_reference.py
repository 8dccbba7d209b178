"""Naive numpy statements of the backward kernels (the oracle of the tests) and of a few forwards.

Every function here is a direct, slow transcription of ``docs/kernels.md``: loops over output
positions and kernel taps, numpy only across the batch/channel axes. Nothing in the package calls
this module at run time; the tests compare every backend against it, and use the forwards
(:func:`conv2d_forward`, :func:`max_pool2d_forward`, :func:`avg_pool2d_forward`,
:func:`lrn_forward`) for adjointness and finite-difference checks without ONNX Runtime.

Arithmetic is done in float64 and the result is cast to ``grad_out``'s dtype, so that the float32
results of the backends are compared with a more accurate value, not with another rounding.
"""

from __future__ import annotations

import math

import numpy as np

NAME = "reference"

__all__ = [
    "avg_pool2d_backward",
    "avg_pool2d_forward",
    "conv2d_backward_data",
    "conv2d_forward",
    "conv_out_size",
    "global_avg_pool_backward",
    "lrn_backward",
    "lrn_forward",
    "max_pool2d_forward",
    "max_pool2d_backward",
    "pool_out_size",
    "rectifier_backward",
]


def unavailable_reason() -> None:
    """The reference is always usable (numpy only)."""
    return None


# --------------------------------------------------------------------------------------------
# output sizes
# --------------------------------------------------------------------------------------------
def conv_out_size(size: int, k: int, stride: int, pad_begin: int, pad_end: int,
                  dilation: int = 1) -> int:
    """ONNX Conv output length along one axis (explicit pads)."""
    return (size + pad_begin + pad_end - dilation * (k - 1) - 1) // stride + 1


def pool_out_size(size: int, k: int, stride: int, pad_begin: int, pad_end: int,
                  dilation: int = 1, ceil_mode: bool = False) -> int:
    """ONNX MaxPool/AveragePool output length along one axis.

    With ``ceil_mode`` the last window is dropped when it would start beyond the input and its
    begin padding (ONNX >= 19 / ONNX Runtime / PyTorch rule), so every window sees the input or
    its begin padding.
    """
    span = size + pad_begin + pad_end - dilation * (k - 1) - 1
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= size + pad_begin:
        out -= 1
    return out


# --------------------------------------------------------------------------------------------
# Conv
# --------------------------------------------------------------------------------------------
def conv2d_forward(x, weight, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1),
                   group=1) -> np.ndarray:
    """ONNX Conv without bias: ``Y[n,m,oh,ow] = sum W[m,c',kh,kw] X[n,c,oh*sh-pt+kh*dh, ...]``."""
    x = np.asarray(x)
    w = np.asarray(weight)
    n_, c_, h_, w_ = x.shape
    m_, cg, kh_, kw_ = w.shape
    assert cg * group == c_ and m_ % group == 0
    mg = m_ // group
    sh, sw = strides
    pt, pl, pb, pr = pads
    dh, dw = dilations
    ho = conv_out_size(h_, kh_, sh, pt, pb, dh)
    wo = conv_out_size(w_, kw_, sw, pl, pr, dw)
    x64 = x.astype(np.float64)
    w64 = w.astype(np.float64)
    y = np.zeros((n_, m_, ho, wo), np.float64)
    for gi in range(group):
        ms = slice(gi * mg, (gi + 1) * mg)
        cs = slice(gi * cg, (gi + 1) * cg)
        for oh in range(ho):
            for ow in range(wo):
                for kh in range(kh_):
                    ih = oh * sh - pt + kh * dh
                    if not 0 <= ih < h_:
                        continue
                    for kw in range(kw_):
                        iw = ow * sw - pl + kw * dw
                        if not 0 <= iw < w_:
                            continue
                        # (N, Cg) @ (Cg, Mg)
                        y[:, ms, oh, ow] += x64[:, cs, ih, iw] @ w64[ms, :, kh, kw].T
    return y.astype(x.dtype)


def conv2d_backward_data(grad_out, weight, in_hw, strides=(1, 1), pads=(0, 0, 0, 0),
                         dilations=(1, 1), group=1) -> np.ndarray:
    """``grad_in[n,c,ih,iw] = sum_{m,oh,ow,kh,kw : ih = oh*sh-pt+kh*dh, iw = ...}
    W[m,c',kh,kw] * grad_out[n,m,oh,ow]``."""
    g = np.asarray(grad_out)
    w = np.asarray(weight)
    n_, m_, ho, wo = g.shape
    m2, cg, kh_, kw_ = w.shape
    assert m2 == m_ and m_ % group == 0
    mg = m_ // group
    c_ = cg * group
    h_, w_ = in_hw
    sh, sw = strides
    pt, pl, _pb, _pr = pads
    dh, dw = dilations
    g64 = g.astype(np.float64)
    w64 = w.astype(np.float64)
    gi_ = np.zeros((n_, c_, h_, w_), np.float64)
    for gi in range(group):
        ms = slice(gi * mg, (gi + 1) * mg)
        cs = slice(gi * cg, (gi + 1) * cg)
        for oh in range(ho):
            for ow in range(wo):
                for kh in range(kh_):
                    ih = oh * sh - pt + kh * dh
                    if not 0 <= ih < h_:
                        continue
                    for kw in range(kw_):
                        iw = ow * sw - pl + kw * dw
                        if not 0 <= iw < w_:
                            continue
                        # (N, Mg) @ (Mg, Cg)
                        gi_[:, cs, ih, iw] += g64[:, ms, oh, ow] @ w64[ms, :, kh, kw]
    return gi_.astype(g.dtype)


# --------------------------------------------------------------------------------------------
# MaxPool
# --------------------------------------------------------------------------------------------
def max_pool2d_forward(x, kernel_shape, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1),
                       ceil_mode=False) -> tuple[np.ndarray, np.ndarray]:
    """ONNX MaxPool: values and ``Indices`` (flat offsets ``((n*C+c)*H+h)*W+w`` into X).

    Padding never wins (it is -inf); on ties the first tap in (kh, kw) order wins.
    """
    x = np.asarray(x)
    n_, c_, h_, w_ = x.shape
    kh_, kw_ = kernel_shape
    sh, sw = strides
    pt, pl, pb, pr = pads
    dh, dw = dilations
    ho = pool_out_size(h_, kh_, sh, pt, pb, dh, ceil_mode)
    wo = pool_out_size(w_, kw_, sw, pl, pr, dw, ceil_mode)
    y = np.empty((n_, c_, ho, wo), x.dtype)
    idx = np.empty((n_, c_, ho, wo), np.int64)
    for n in range(n_):
        for c in range(c_):
            for oh in range(ho):
                for ow in range(wo):
                    best, arg = -np.inf, -1
                    for kh in range(kh_):
                        ih = oh * sh - pt + kh * dh
                        if not 0 <= ih < h_:
                            continue
                        for kw in range(kw_):
                            iw = ow * sw - pl + kw * dw
                            if not 0 <= iw < w_:
                                continue
                            v = x[n, c, ih, iw]
                            if arg < 0 or v > best:
                                best, arg = v, ((n * c_ + c) * h_ + ih) * w_ + iw
                    assert arg >= 0, "a pooling window saw no input"
                    y[n, c, oh, ow] = best
                    idx[n, c, oh, ow] = arg
    return y, idx


def max_pool2d_backward(grad_out, x, kernel_shape, strides=(1, 1), pads=(0, 0, 0, 0),
                        dilations=(1, 1)) -> np.ndarray:
    """dL/dX of MaxPool from its input x: each ``grad_out`` element goes to its window's switch,
    the first tap in (kh, kw) order strictly greater than every earlier one and than the lowest
    finite value (ONNX Runtime's rule: NaN and -inf never win); padding taps are skipped."""
    g = np.asarray(grad_out)
    x = np.asarray(x)
    n_, c_, h_, w_ = x.shape
    ho, wo = g.shape[2:]
    kh_, kw_ = kernel_shape
    sh, sw = strides
    pt, pl = pads[0], pads[1]
    dh, dw = dilations
    out = np.zeros(x.shape, np.float64)
    lowest = np.finfo(x.dtype).min
    for n in range(n_):
        for c in range(c_):
            for oh in range(ho):
                for ow in range(wo):
                    best, arg = lowest, None
                    for kh in range(kh_):
                        ih = oh * sh - pt + kh * dh
                        for kw in range(kw_):
                            iw = ow * sw - pl + kw * dw
                            if 0 <= ih < h_ and 0 <= iw < w_ and x[n, c, ih, iw] > best:
                                best, arg = x[n, c, ih, iw], (ih, iw)
                    if arg is not None:
                        out[n, c, arg[0], arg[1]] += g[n, c, oh, ow]
    return out.astype(g.dtype)


# --------------------------------------------------------------------------------------------
# Relu / Clip
# --------------------------------------------------------------------------------------------
def rectifier_backward(grad_out, out, mode=0, lo=0.0, hi=math.inf) -> np.ndarray:
    """mode 0: ``g*[lo<out<hi]``; 1: ``max(g,0)``; 2: ``max(g,0)*[lo<out<hi]``."""
    g = np.asarray(grad_out)
    y = np.asarray(out)
    assert y.shape == g.shape
    lo_t, hi_t = g.dtype.type(lo), g.dtype.type(hi)
    res = np.empty(g.size, g.dtype)
    gf, yf = g.ravel(), y.ravel()
    for i in range(g.size):
        mask = lo_t < yf[i] < hi_t
        if mode == 0:
            res[i] = gf[i] if mask else 0
        elif mode == 1:
            res[i] = gf[i] if gf[i] > 0 else 0
        elif mode == 2:
            res[i] = gf[i] if (mask and gf[i] > 0) else 0
        else:
            raise ValueError(f"mode {mode} is not 0, 1 or 2")
    return res.reshape(g.shape)


# --------------------------------------------------------------------------------------------
# LRN
# --------------------------------------------------------------------------------------------
def _lrn_window(c: int, c_: int, size: int) -> range:
    """Channels summed for channel c: [c - floor((size-1)/2), c + ceil((size-1)/2)] ∩ [0, C)."""
    lo = c - (size - 1) // 2
    hi = c + -(-(size - 1) // 2)
    return range(max(lo, 0), min(hi, c_ - 1) + 1)


def _lrn_scale(x64: np.ndarray, size: int, alpha: float, bias: float) -> np.ndarray:
    c_ = x64.shape[1]
    s = np.empty_like(x64)
    for c in range(c_):
        acc = np.zeros_like(x64[:, 0])
        for j in _lrn_window(c, c_, size):
            acc += x64[:, j] ** 2
        s[:, c] = bias + alpha / size * acc
    return s


def lrn_forward(x, size, alpha=1e-4, beta=0.75, bias=1.0) -> np.ndarray:
    """ONNX LRN: ``y = x * (bias + alpha/size * sum_window x²) ** -beta``."""
    x = np.asarray(x)
    x64 = x.astype(np.float64)
    s = _lrn_scale(x64, size, alpha, bias)
    return (x64 * s ** -beta).astype(x.dtype)


def lrn_backward(grad_out, x, size, alpha=1e-4, beta=0.75, bias=1.0) -> np.ndarray:
    """``gx[c] = g[c] s[c]^-b - (2ab/size) x[c] sum_{j : c in window(j)} g[j] x[j] s[j]^(-b-1)``."""
    g = np.asarray(grad_out)
    x = np.asarray(x)
    assert x.shape == g.shape
    g64 = g.astype(np.float64)
    x64 = x.astype(np.float64)
    c_ = x.shape[1]
    s = _lrn_scale(x64, size, alpha, bias)
    t = g64 * x64 * s ** (-beta - 1.0)
    gx = g64 * s ** -beta
    for c in range(c_):
        acc = np.zeros_like(x64[:, 0])
        for j in range(c_):
            if c in _lrn_window(j, c_, size):
                acc += t[:, j]
        gx[:, c] -= 2.0 * alpha * beta / size * x64[:, c] * acc
    return gx.astype(g.dtype)


# --------------------------------------------------------------------------------------------
# AveragePool / GlobalAveragePool
# --------------------------------------------------------------------------------------------
def _avg_windows(in_hw, out_hw, kernel_shape, strides, pads, count_include_pad):
    """Yield (oh, ow, h0, h1, w0, w1, divisor) of each output, window clipped to the input."""
    h_, w_ = in_hw
    ho, wo = out_hw
    kh_, kw_ = kernel_shape
    sh, sw = strides
    pt, pl, pb, pr = pads
    for oh in range(ho):
        hs = oh * sh - pt
        he = min(hs + kh_, h_ + pb)
        h0, h1 = max(hs, 0), min(he, h_)
        for ow in range(wo):
            ws = ow * sw - pl
            we = min(ws + kw_, w_ + pr)
            w0, w1 = max(ws, 0), min(we, w_)
            if count_include_pad:
                div = (he - hs) * (we - ws)
            else:
                div = max(h1 - h0, 0) * max(w1 - w0, 0)
            yield oh, ow, h0, h1, w0, w1, div


def avg_pool2d_forward(x, kernel_shape, strides=(1, 1), pads=(0, 0, 0, 0),
                       count_include_pad=False, ceil_mode=False) -> np.ndarray:
    """ONNX AveragePool (2-D, no dilation), the window rule of docs/kernels.md."""
    x = np.asarray(x)
    n_, c_, h_, w_ = x.shape
    kh_, kw_ = kernel_shape
    ho = pool_out_size(h_, kh_, strides[0], pads[0], pads[2], 1, ceil_mode)
    wo = pool_out_size(w_, kw_, strides[1], pads[1], pads[3], 1, ceil_mode)
    x64 = x.astype(np.float64)
    y = np.zeros((n_, c_, ho, wo), np.float64)
    for oh, ow, h0, h1, w0, w1, div in _avg_windows((h_, w_), (ho, wo), kernel_shape, strides,
                                                    pads, count_include_pad):
        if div > 0 and h1 > h0 and w1 > w0:
            y[:, :, oh, ow] = x64[:, :, h0:h1, w0:w1].sum(axis=(2, 3)) / div
    return y.astype(x.dtype)


def avg_pool2d_backward(grad_out, in_shape, kernel_shape, strides=(1, 1), pads=(0, 0, 0, 0),
                        count_include_pad=False) -> np.ndarray:
    """Every input pixel of output (oh, ow)'s clipped window receives ``g / divisor``."""
    g = np.asarray(grad_out)
    n_, c_, h_, w_ = in_shape
    assert g.shape[:2] == (n_, c_)
    g64 = g.astype(np.float64)
    out = np.zeros((n_, c_, h_, w_), np.float64)
    for oh, ow, h0, h1, w0, w1, div in _avg_windows((h_, w_), g.shape[2:], kernel_shape, strides,
                                                    pads, count_include_pad):
        if div <= 0:
            continue  # a window that lies in the padding only: nothing to route
        for ih in range(h0, h1):
            for iw in range(w0, w1):
                out[:, :, ih, iw] += g64[:, :, oh, ow] / div
    return out.astype(g.dtype)


def global_avg_pool_backward(grad_out, in_shape) -> np.ndarray:
    """(N, C, 1, 1) -> (N, C, H, W) filled with ``g / (H*W)``."""
    g = np.asarray(grad_out)
    n_, c_, h_, w_ = in_shape
    assert g.shape == (n_, c_, 1, 1)
    out = np.empty((n_, c_, h_, w_), np.float64)
    for n in range(n_):
        for c in range(c_):
            out[n, c] = float(g[n, c, 0, 0]) / (h_ * w_)
    return out.astype(g.dtype)


# ---- ascent kernels (see docs/kernels.md, "Ascent kernels") -----------------------------------
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
