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
"""

from __future__ import annotations

import numpy as np

NAME = "numba"

try:  # numba is a hard dependency, but an environment without it must still import pydevis
    from numba import njit, prange

    _IMPORT_ERROR: str | None = None
except Exception as exc:  # pragma: no cover - exercised only without numba
    _IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

    def njit(*_args, **_kwargs):  # type: ignore[no-redef]
        def wrap(fn):
            return fn

        return wrap

    prange = range  # type: ignore[assignment]


def unavailable_reason() -> str | None:
    """None when numba imports, else why this backend cannot run."""
    return _IMPORT_ERROR


_JIT = dict(cache=True, parallel=True, fastmath=False, nogil=True)
_SER = dict(cache=True, fastmath=False, nogil=True)
_FLOATS = (np.float32, np.float64)
# Below this many element operations a kernel runs on the calling thread (see the module doc).
# Measured on 2 busy cores (load 3.5): a 2^18-element Relu backward took 0.5 ms serially and
# 6-16 ms through the 2-thread team; idle, the team would save at most ~0.2 ms there.
_MIN_PARALLEL_WORK = 1 << 18
_POINTWISE_CHUNK = 1 << 14  # elements per parallel task of the pointwise kernels


def _serial(work: int) -> bool:
    """Run serially: too little work to pay for waking the thread team, or one thread."""
    return work < _MIN_PARALLEL_WORK or _threads() == 1


# --------------------------------------------------------------------------------------------
# argument checks shared by the wrappers
# --------------------------------------------------------------------------------------------
def _arr(a, name: str, ndim: int | None = None, dtype=None) -> np.ndarray:
    a = np.asarray(a)
    if dtype is None and a.dtype.type not in _FLOATS:
        raise ValueError(f"{name}: dtype {a.dtype} is not float32/float64")
    if dtype is not None and a.dtype != dtype:
        raise ValueError(f"{name}: dtype {a.dtype}, expected {np.dtype(dtype)}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim}-D, got shape {a.shape}")
    return np.ascontiguousarray(a)


def _tuple(v, n: int, name: str, minimum: int) -> tuple[int, ...]:
    t = tuple(int(i) for i in v)
    if len(t) != n:
        raise ValueError(f"{name}: expected {n} integers, got {t}")
    if any(i < minimum for i in t):
        raise ValueError(f"{name}: values must be >= {minimum}, got {t}")
    return t


# --------------------------------------------------------------------------------------------
# Conv: dL/dX
# --------------------------------------------------------------------------------------------
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


def _threads() -> int:
    try:
        import numba

        return int(numba.get_num_threads())
    except Exception:  # pragma: no cover
        return 1


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


# the conv's GEMM path (it imports njit & co from here); ascent kernels in their own module
# (docs/kernels.md, "Ascent kernels")
from . import _numba_gemm  # noqa: E402
from ._numba_ascent import (  # noqa: E402,F401
    ascent_step,
    ascent_update,
    clamp_channels,
    clip_small_contribution,
    clip_small_norm,
    gaussian_blur,
)
