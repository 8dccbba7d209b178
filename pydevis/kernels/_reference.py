"""Naive numpy statements of the backward kernels (the oracle of the tests) and of a few forwards.

Every function here is a direct, slow transcription of ``docs/kernels.md``: loops over output
positions and kernel taps, numpy only across the batch/channel axes. Nothing in the package calls
this module at run time; the tests compare every backend against it, and use the forwards
(:func:`conv2d_forward`, :func:`max_pool2d_forward`, :func:`avg_pool2d_forward`,
:func:`lrn_forward`) for adjointness and finite-difference checks without ONNX Runtime.

Arithmetic is done in float64 and the result is cast to ``grad_out``'s dtype, so that the float32
results of the backends are compared with a more accurate value, not with another rounding.

Conv, Relu/Clip and LRN are here; the pools in ``_reference_pool``, the ascent kernels in
``_reference_ascent``; this module has every name (the tests pass it as a backend).
"""

from __future__ import annotations

import math

import numpy as np

from ._reference_ascent import (  # noqa: F401 (this module has every kernel's name)
    ascent_step,
    ascent_update,
    clamp_channels,
    clip_small_contribution,
    clip_small_norm,
    gaussian_blur,
)
from ._reference_pool import (
    avg_pool2d_backward,
    avg_pool2d_forward,
    global_avg_pool_backward,
    max_pool2d_backward,
    max_pool2d_forward,
    pool_out_size,
    window_taps,
)

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
# output size
# --------------------------------------------------------------------------------------------
def conv_out_size(size: int, k: int, stride: int, pad_begin: int, pad_end: int,
                  dilation: int = 1) -> int:
    """ONNX Conv output length along one axis (explicit pads)."""
    return (size + pad_begin + pad_end - dilation * (k - 1) - 1) // stride + 1


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
                for kh, kw, ih, iw in window_taps(oh, ow, (kh_, kw_), strides, pads, dilations,
                                                  (h_, w_)):
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
    g64 = g.astype(np.float64)
    w64 = w.astype(np.float64)
    gi_ = np.zeros((n_, c_, h_, w_), np.float64)
    for gi in range(group):
        ms = slice(gi * mg, (gi + 1) * mg)
        cs = slice(gi * cg, (gi + 1) * cg)
        for oh in range(ho):
            for ow in range(wo):
                for kh, kw, ih, iw in window_taps(oh, ow, (kh_, kw_), strides, pads, dilations,
                                                  (h_, w_)):
                    # (N, Mg) @ (Mg, Cg)
                    gi_[:, cs, ih, iw] += g64[:, ms, oh, ow] @ w64[ms, :, kh, kw]
    return gi_.astype(g.dtype)


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
