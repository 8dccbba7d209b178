"""Naive numpy statements of the pooling backward kernels and forwards (MaxPool, AveragePool,
GlobalAveragePool) and the pools' output size; part of the oracle, see ``_reference.py``."""

from __future__ import annotations

import numpy as np


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


def window_taps(oh: int, ow: int, kernel_shape, strides, pads, dilations, in_hw):
    """Yield (kh, kw, ih, iw) of each tap of output (oh, ow)'s window (conv or pool) that falls
    on the input, in (kh, kw) order; taps on the padding are skipped."""
    kh_, kw_ = kernel_shape
    sh, sw = strides
    pt, pl = pads[0], pads[1]
    dh, dw = dilations
    h_, w_ = in_hw
    for kh in range(kh_):
        ih = oh * sh - pt + kh * dh
        if not 0 <= ih < h_:
            continue
        for kw in range(kw_):
            iw = ow * sw - pl + kw * dw
            if 0 <= iw < w_:
                yield kh, kw, ih, iw


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
                    for _, _, ih, iw in window_taps(oh, ow, kernel_shape, strides, pads,
                                                    dilations, (h_, w_)):
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
    out = np.zeros(x.shape, np.float64)
    lowest = np.finfo(x.dtype).min
    for n in range(n_):
        for c in range(c_):
            for oh in range(ho):
                for ow in range(wo):
                    best, arg = lowest, None
                    for _, _, ih, iw in window_taps(oh, ow, kernel_shape, strides, pads,
                                                    dilations, (h_, w_)):
                        if x[n, c, ih, iw] > best:
                            best, arg = x[n, c, ih, iw], (ih, iw)
                    if arg is not None:
                        out[n, c, arg[0], arg[1]] += g[n, c, oh, ow]
    return out.astype(g.dtype)


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
