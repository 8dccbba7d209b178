"""numba conv2d_backward_data (dL/dX of ONNX Conv): the polyphase direct kernel, and the choice
between it and ``_numba_gemm``'s GEMM + col2im path and depthwise scatter (:func:`_conv_path`).
Conventions as in ``_numba.py``'s doc."""

from __future__ import annotations

import numpy as np

from . import _numba_gemm
from ._numba_base import _JIT, _SER, _arr, _serial, _threads, _tuple, njit, prange

_CHUNK_BYTES = 4096  # per stream: 2 accumulators + 4 grad_out windows stay in L1
_MIN_TASKS_PER_THREAD = 4  # conv: fewer images per task until there are this many tasks/thread
_GEMM_MIN_MG = 8  # conv: GEMM path from this many output channels per group (_conv_path)


@njit(**_SER)
def _conv_pad_rows(g, gbuf, front, pitch, plane, p0, p1):
    # gbuf[m, front + n*plane + oh*pitch + ow] = g[n, m, oh, ow]; everything else zero
    n_, m_, ho, wo = g.shape
    zero = g.dtype.type(0)
    for p in range(p0, p1):
        m = p // n_
        n = p - m * n_
        b = gbuf[m]
        lo = front + n * plane
        hi = lo + plane
        if n == 0:
            lo = 0
        if n == n_ - 1:
            hi = b.shape[0]
        for i in range(lo, hi):
            b[i] = zero
        for oh in range(ho):
            row = b[front + n * plane + oh * pitch:front + n * plane + oh * pitch + wo]
            src = g[n, m, oh]
            for ow in range(wo):
                row[ow] = src[ow]


@njit(**_JIT)
def _conv_pad_par(g, gbuf, front, pitch, plane):
    for p in prange(g.shape[0] * g.shape[1]):
        _conv_pad_rows(g, gbuf, front, pitch, plane, p, p + 1)


@njit(cache=True, fastmath=False, nogil=True)
def _madd4x2(o0, o1, v0, v1, v2, v3, a0, a1, a2, a3, c0, c1, c2, c3):
    for i in range(o0.shape[0]):
        x0 = v0[i]
        x1 = v1[i]
        x2 = v2[i]
        x3 = v3[i]
        o0[i] += (a0 * x0 + a1 * x1) + (a2 * x2 + a3 * x3)
        o1[i] += (c0 * x0 + c1 * x1) + (c2 * x2 + c3 * x3)


@njit(cache=True, fastmath=False, nogil=True)
def _madd4x1(o0, v0, v1, v2, v3, a0, a1, a2, a3):
    for i in range(o0.shape[0]):
        o0[i] += (a0 * v0[i] + a1 * v1[i]) + (a2 * v2[i] + a3 * v3[i])


@njit(cache=True, fastmath=False, nogil=True)
def _madd1x2(o0, o1, v0, a0, c0):
    for i in range(o0.shape[0]):
        o0[i] += a0 * v0[i]
        o1[i] += c0 * v0[i]


@njit(cache=True, fastmath=False, nogil=True)
def _madd1x1(o0, v0, a0):
    for i in range(o0.shape[0]):
        o0[i] += a0 * v0[i]


@njit(cache=True, fastmath=False, nogil=True)
def _unphase(q, o, sh, sw, pt, pl, pitch):
    # o[ih, iw] = q[phase of (ih + pt, iw + pl), its position in the phase plane]
    h_, w_ = o.shape
    rw0 = pl % sw
    bq0 = pl // sw
    for ih in range(h_):
        a = ih + pt
        rh = a % sh
        qrow = q[rh * sw:rh * sw + sw, (a // sh) * pitch:(a // sh + 1) * pitch]
        orow = o[ih]
        rw = rw0
        bq = bq0
        for iw in range(w_):
            orow[iw] = qrow[rw, bq]
            rw += 1
            if rw == sw:
                rw = 0
                bq += 1


@njit(**_SER)
def _conv_bwd_rows(gbuf, w, out, sh, sw, pt, pl, group, rows, pitch, front, nb,
                   tap_kh, tap_kw, tap_shift, tap_ptr, chunk, p0, p1):
    # Polyphase form. With ih + pt = oh*sh + kh*dh = (oh + qh)*sh + rh (rh = kh*dh mod sh, and
    # likewise along w), tap (kh, kw) adds W * grad_out[oh, ow] to the phase plane (rh, rw) at
    # (oh + qh, ow + qw). In flat planes of row pitch `pitch` that is one contiguous shifted
    # multiply-add, q[u] += W * gbuf[m, u - shift + front], over the whole plane, and over the
    # planes of `nb` images laid end to end: gbuf holds grad_out with that pitch, zero columns
    # and rows after each image and a zero margin in front, so that no tap needs clipping and
    # a shift never reaches the data of another image. A task is `nb` images and two input
    # channels of a group; the (output channel, tap) terms of a phase are taken four at a time,
    # so that each load of grad_out feeds two multiply-adds and each load/store of q four.
    m_ = gbuf.shape[0]
    n_ = out.shape[0]
    cg = w.shape[1]
    mg = m_ // group
    plane = rows * pitch
    nphase = sh * sw
    npair = (cg + 1) // 2
    for p in range(p0, p1):
        blk = p // (group * npair)
        r = p - blk * (group * npair)
        gi = r // npair
        cp = 2 * (r - gi * npair)
        two = cp + 1 < cg
        m0 = gi * mg
        n0 = blk * nb
        nimg = min(nb, n_ - n0)
        span = nimg * plane
        base = front + n0 * plane
        q = np.zeros((2, nphase, span), gbuf.dtype)
        for ph in range(nphase):
            t0 = tap_ptr[ph]
            nt = tap_ptr[ph + 1] - t0
            nterms = nt * mg
            for u0 in range(0, span, chunk):
                u1 = min(u0 + chunk, span)
                ln = u1 - u0
                o0 = q[0, ph, u0:u1]
                o1 = q[1, ph, u0:u1]
                b0 = base + u0
                t = 0
                while t + 4 <= nterms:
                    m = m0 + t // nt
                    k = t0 + t % nt
                    a0 = w[m, cp, tap_kh[k], tap_kw[k]]
                    c0 = w[m, cp + two, tap_kh[k], tap_kw[k]]
                    v0 = gbuf[m, b0 - tap_shift[k]:b0 - tap_shift[k] + ln]
                    m = m0 + (t + 1) // nt
                    k = t0 + (t + 1) % nt
                    a1 = w[m, cp, tap_kh[k], tap_kw[k]]
                    c1 = w[m, cp + two, tap_kh[k], tap_kw[k]]
                    v1 = gbuf[m, b0 - tap_shift[k]:b0 - tap_shift[k] + ln]
                    m = m0 + (t + 2) // nt
                    k = t0 + (t + 2) % nt
                    a2 = w[m, cp, tap_kh[k], tap_kw[k]]
                    c2 = w[m, cp + two, tap_kh[k], tap_kw[k]]
                    v2 = gbuf[m, b0 - tap_shift[k]:b0 - tap_shift[k] + ln]
                    m = m0 + (t + 3) // nt
                    k = t0 + (t + 3) % nt
                    a3 = w[m, cp, tap_kh[k], tap_kw[k]]
                    c3 = w[m, cp + two, tap_kh[k], tap_kw[k]]
                    v3 = gbuf[m, b0 - tap_shift[k]:b0 - tap_shift[k] + ln]
                    if two:
                        _madd4x2(o0, o1, v0, v1, v2, v3, a0, a1, a2, a3, c0, c1, c2, c3)
                    else:
                        _madd4x1(o0, v0, v1, v2, v3, a0, a1, a2, a3)
                    t += 4
                while t < nterms:
                    m = m0 + t // nt
                    k = t0 + t % nt
                    a0 = w[m, cp, tap_kh[k], tap_kw[k]]
                    c0 = w[m, cp + two, tap_kh[k], tap_kw[k]]
                    v0 = gbuf[m, b0 - tap_shift[k]:b0 - tap_shift[k] + ln]
                    if two:
                        _madd1x2(o0, o1, v0, a0, c0)
                    else:
                        _madd1x1(o0, v0, a0)
                    t += 1
        # interleave the phase planes into the input-gradient planes
        for j in range(1 + two):
            for e in range(nimg):
                _unphase(q[j, :, e * plane:(e + 1) * plane], out[n0 + e, gi * cg + cp + j],
                         sh, sw, pt, pl, pitch)


@njit(**_JIT)
def _conv_bwd_par(gbuf, w, out, sh, sw, pt, pl, group, rows, pitch, front, nb,
                  tap_kh, tap_kw, tap_shift, tap_ptr, chunk, tasks):
    for p in prange(tasks):
        _conv_bwd_rows(gbuf, w, out, sh, sw, pt, pl, group, rows, pitch, front, nb,
                       tap_kh, tap_kw, tap_shift, tap_ptr, chunk, p, p + 1)


def conv2d_backward_data(g, w, in_hw, strides, pads, dilations, group):
    """dL/dX of ONNX Conv: (N, M, Ho, Wo), (M, C/group, kH, kW) -> (N, C, H, W)."""
    g = _arr(g, "grad_out", 4)
    w = _arr(w, "weight", 4, dtype=g.dtype)
    h_, w_ = _tuple(in_hw, 2, "in_hw", 0)
    sh, sw = _tuple(strides, 2, "strides", 1)
    pt, pl, _pb, _pr = _tuple(pads, 4, "pads", 0)
    dh, dw = _tuple(dilations, 2, "dilations", 1)
    group = int(group)
    n_, m_, ho, wo = g.shape
    if group < 1 or m_ % group != 0:
        raise ValueError(f"group {group} does not divide the {m_} output channels")
    if w.shape[0] != m_:
        raise ValueError(f"weight has {w.shape[0]} output channels, grad_out has {m_}")
    if min(w.shape[1:]) < 1:
        raise ValueError(f"weight shape {w.shape} is empty")
    out = np.empty((n_, w.shape[1] * group, h_, w_), g.dtype)
    if out.size == 0:
        return out
    if g.size == 0:
        out[...] = 0
        return out
    if _conv_path(g.shape, w.shape, (h_, w_), group) != "direct":
        serial = _serial(n_ * m_ * ho * wo * w.shape[1] * w.shape[2] * w.shape[3])
        return _numba_gemm.conv2d_backward_data(g, w, out, (sh, sw), (pt, pl), (dh, dw), group,
                                                1 if serial else _threads())
    kh_, kw_ = w.shape[2], w.shape[3]
    qh, qw = (kh_ - 1) * dh // sh, (kw_ - 1) * dw // sw
    # phase planes: columns ow + qw < pitch and rows oh + qh < rows, also covering every
    # (ih + pt) // sh; then at least one zero row after each image's grad_out when qw > 0, so
    # that the largest shift, qh*pitch + qw, reads only zeros of the image before
    pitch = max(wo + qw, (w_ - 1 + pl) // sw + 1)
    rows = max(ho + qh + (1 if qw else 0), (h_ - 1 + pt) // sh + 1)
    plane = rows * pitch
    taps = sorted(((kh * dh % sh) * sw + kw * dw % sw, kh, kw) for kh in range(kh_)
                  for kw in range(kw_))
    tap_kh = np.array([t[1] for t in taps], np.int64)
    tap_kw = np.array([t[2] for t in taps], np.int64)
    tap_shift = (tap_kh * dh // sh) * pitch + tap_kw * dw // sw
    tap_ptr = np.searchsorted(np.array([t[0] for t in taps], np.int64),
                              np.arange(sh * sw + 1), side="left").astype(np.int64)
    front = int(tap_shift.max())
    # images per task: long rows for small maps, but enough tasks for every thread
    chunk = _CHUNK_BYTES // g.dtype.itemsize
    tasks_per_img = group * ((w.shape[1] + 1) // 2)
    serial = _serial(n_ * m_ * ho * wo * w.shape[1] * kh_ * kw_)  # multiply-adds
    threads = 1 if serial else _threads()
    nb = max(1, min(n_, chunk // plane))
    while nb > 1 and -(-n_ // nb) * tasks_per_img < _MIN_TASKS_PER_THREAD * threads:
        nb = (nb + 1) // 2
    tasks = -(-n_ // nb) * tasks_per_img
    gbuf = np.empty((m_, front + n_ * plane), g.dtype)
    args = (gbuf, w, out, sh, sw, pt, pl, group, rows, pitch, front, nb, tap_kh, tap_kw,
            tap_shift, tap_ptr, chunk)
    if serial:
        _conv_pad_rows(g, gbuf, front, pitch, plane, 0, n_ * m_)
        _conv_bwd_rows(*args, 0, tasks)
    else:
        _conv_pad_par(g, gbuf, front, pitch, plane)
        _conv_bwd_par(*args, tasks)
    return out


def _conv_path(g_shape, w_shape, in_hw, group) -> str:
    """Which kernel ``conv2d_backward_data`` runs, for grad_out and weight shapes already checked:
    "gemm" (OpenBLAS GEMM + col2im, ``_numba_gemm``), "depthwise" (``_numba_gemm``'s BLAS-free
    scatter, C/group = M/group = 1) or "direct" (the polyphase kernel above).

    The direct kernel keeps the convs with fewer than ``_GEMM_MIN_MG`` output channels per group
    Mg and more than one input channel per group, and every conv when scipy-openblas32 cannot be
    loaded or a BLAS dimension would overflow its int32. Measured (1 and 2 threads, float32 and
    float64, 3x3 convs): with Mg >= 8 the GEMM path was 1.0-1.7x faster than the direct kernel
    (one float64 batch-1 case at Mg = 8: 0.88x; 2-7x on wide layers: 512 channels at 7x7, 1x1),
    with Mg = 2..4 from 0.7x (float64) to 1.5x, with Mg = 1 0.6-0.95x; with one input channel
    per group it was 1.4-3.4x faster for Mg = 2..4 (depthwise with a channel multiplier) and the
    depthwise scatter (Mg = 1) 1.9-3.2x.
    """
    if _numba_gemm.unavailable_reason() is not None:
        return "direct"
    if not _numba_gemm.fits(g_shape, w_shape, in_hw):
        return "direct"
    mg = w_shape[0] // group
    if w_shape[1] == 1:
        return "depthwise" if mg == 1 else "gemm"
    return "gemm" if mg >= _GEMM_MIN_MG else "direct"
