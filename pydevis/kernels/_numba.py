"""numba backend of the backward kernels (same functions and argument orders as ``pydevis._C``).

See ``docs/kernels.md`` for the semantics; ``_reference.py`` states each kernel as a naive loop.
The Python wrappers check shapes and index ranges (raising ``ValueError`` before anything is
written) and call ``@njit(parallel=True)`` kernels that run a ``prange`` over batch×channel
planes (or element chunks): each iteration writes only its own output plane, so there is no write
race. Each kernel body is a serial ``*_rows(..., p0, p1)`` function over planes [p0, p1); the
parallel driver ``prange``s over it, and below ``_MIN_PARALLEL_WORK`` element operations (or with
one thread) the wrapper calls the body directly: waking the thread team costs ~10 µs on an idle
machine, but milliseconds (whole scheduler ticks) when the other cores are busy. Every kernel
is compiled for float32 and float64 only (all integer arguments are passed as int64, all scalars
in the array's dtype), which keeps JIT specialisations to two per kernel; ``cache=True`` keeps the
machine code between processes.

The kernels live by op family: conv in ``_numba_conv`` (its GEMM path in ``_numba_gemm``), the
pools in ``_numba_pool``, the ascent kernels in ``_numba_ascent``; Relu/Clip and LRN here. This
module is the backend the dispatcher loads: every public kernel is an attribute of it.
"""

from __future__ import annotations

import numpy as np

from ._numba_ascent import (  # noqa: F401 (this module is the backend: it has every name)
    ascent_step,
    ascent_update,
    clamp_channels,
    clip_small_contribution,
    clip_small_norm,
    gaussian_blur,
)
from ._numba_base import (
    _IMPORT_ERROR,
    _JIT,
    _POINTWISE_CHUNK,
    _SER,
    _arr,
    _serial,
    njit,
    prange,
)
from ._numba_conv import _conv_path, conv2d_backward_data  # noqa: F401 (front: _conv_path)
from ._numba_pool import (  # noqa: F401
    avg_pool2d_backward,
    global_avg_pool_backward,
    max_pool2d_backward,
)

NAME = "numba"


def unavailable_reason() -> str | None:
    """None when numba imports, else why this backend cannot run."""
    return _IMPORT_ERROR


# --------------------------------------------------------------------------------------------
# Relu / Clip
# --------------------------------------------------------------------------------------------
@njit(**_SER)
def _rectifier_rows(g, y, out, mode, lo, hi, i0, i1):
    # elements [i0, i1) of the flat arrays. Zero-based slices and non-short-circuit `&` let LLVM
    # vectorise the loops (2x faster than indexing from i0 with `and`, bench/kernels.py).
    zero = g.dtype.type(0)
    gs = g[i0:i1]
    ys = y[i0:i1]
    os_ = out[i0:i1]
    if mode == 0:
        for i in range(gs.size):
            yi = ys[i]
            os_[i] = gs[i] if (yi > lo) & (yi < hi) else zero
    elif mode == 1:
        for i in range(gs.size):
            gi = gs[i]
            os_[i] = gi if gi > zero else zero
    else:
        for i in range(gs.size):
            gi = gs[i]
            yi = ys[i]
            os_[i] = gi if (gi > zero) & (yi > lo) & (yi < hi) else zero


@njit(**_JIT)
def _rectifier_par(g, y, out, mode, lo, hi, chunk):
    n = g.size
    for c in prange((n + chunk - 1) // chunk):
        _rectifier_rows(g, y, out, mode, lo, hi, c * chunk, min(n, (c + 1) * chunk))


def rectifier_backward(g, y, mode, lo, hi):
    """Relu/Clip backward: mode 0 ``g*[lo<y<hi]``, 1 ``max(g,0)``, 2 ``max(g,0)*[lo<y<hi]``."""
    g = _arr(g, "grad_out")
    y = _arr(y, "out", dtype=g.dtype)
    if y.shape != g.shape:
        raise ValueError(f"out shape {y.shape} != grad_out shape {g.shape}")
    mode = int(mode)
    if mode not in (0, 1, 2):
        raise ValueError(f"mode {mode} is not 0 (gradient), 1 (deconvnet) or 2 (guided)")
    t = g.dtype.type
    out = np.empty_like(g)
    if g.size:
        args = (g.reshape(-1), y.reshape(-1), out.reshape(-1), mode, t(lo), t(hi))
        if _serial(g.size):
            _rectifier_rows(*args, 0, g.size)
        else:
            _rectifier_par(*args, _POINTWISE_CHUNK)
    return out


# --------------------------------------------------------------------------------------------
# LRN
# --------------------------------------------------------------------------------------------
@njit(**_SER)
def _lrn_pass1_rows(g, x, gs, t, size, alpha, beta, bias, p0, p1):
    # gs = g * s^-beta, t = g * x * s^(-beta-1), per (n, c) plane
    n_, c_, hw = x.shape
    lo_half = (size - 1) // 2
    hi_half = size - 1 - lo_half
    a = alpha / size
    nb1 = -beta - 1
    for p in range(p0, p1):
        n = p // c_
        c = p - n * c_
        j0 = max(c - lo_half, 0)
        j1 = min(c + hi_half, c_ - 1)
        for i in range(hw):
            acc = x[n, j0, i] * x[n, j0, i]
            for j in range(j0 + 1, j1 + 1):
                acc += x[n, j, i] * x[n, j, i]
            s = bias + a * acc
            r = s ** nb1  # one pow: s^-beta = s^(-beta-1) * s
            gs[n, c, i] = g[n, c, i] * (r * s)
            t[n, c, i] = g[n, c, i] * x[n, c, i] * r


@njit(**_SER)
def _lrn_pass2_rows(x, gs, t, out, size, alpha, beta, p0, p1):
    # out[c] = gs[c] - 2ab/size * x[c] * sum_{j : c in window(j)} t[j]
    n_, c_, hw = x.shape
    lo_half = (size - 1) // 2
    hi_half = size - 1 - lo_half
    k = 2 * alpha * beta / size
    for p in range(p0, p1):
        n = p // c_
        c = p - n * c_
        # window(j) = [j - lo_half, j + hi_half] contains c  <=>  c - hi_half <= j <= c + lo_half
        j0 = max(c - hi_half, 0)
        j1 = min(c + lo_half, c_ - 1)
        for i in range(hw):
            acc = t[n, j0, i]
            for j in range(j0 + 1, j1 + 1):
                acc += t[n, j, i]
            out[n, c, i] = gs[n, c, i] - k * x[n, c, i] * acc


@njit(**_JIT)
def _lrn_par(g, x, gs, t, out, size, alpha, beta, bias):
    planes = x.shape[0] * x.shape[1]
    for p in prange(planes):
        _lrn_pass1_rows(g, x, gs, t, size, alpha, beta, bias, p, p + 1)
    for p in prange(planes):
        _lrn_pass2_rows(x, gs, t, out, size, alpha, beta, p, p + 1)


def lrn_backward(g, x, size, alpha, beta, bias):
    """dL/dX of ONNX LRN given the forward input x (N, C, H, W)."""
    g = _arr(g, "grad_out", 4)
    x = _arr(x, "x", 4, dtype=g.dtype)
    if x.shape != g.shape:
        raise ValueError(f"x shape {x.shape} != grad_out shape {g.shape}")
    size = int(size)
    if size < 1:
        raise ValueError(f"LRN size {size} < 1")
    t_ = g.dtype.type
    out = np.empty_like(g)
    if g.size == 0:
        return out
    n_, c_, h_, w_ = g.shape
    g3 = g.reshape(n_, c_, h_ * w_)
    x3 = x.reshape(n_, c_, h_ * w_)
    gs = np.empty_like(g3)
    t = np.empty_like(g3)
    o3 = out.reshape(n_, c_, h_ * w_)
    a, b, k = t_(alpha), t_(beta), t_(bias)
    if _serial(g.size * (2 * min(size, c_) + 4)):
        _lrn_pass1_rows(g3, x3, gs, t, size, a, b, k, 0, n_ * c_)
        _lrn_pass2_rows(x3, gs, t, o3, size, a, b, 0, n_ * c_)
    else:
        _lrn_par(g3, x3, gs, t, o3, size, a, b, k)
    return out
