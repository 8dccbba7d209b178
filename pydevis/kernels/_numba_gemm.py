"""GEMM path of the numba ``conv2d_backward_data``: OpenBLAS called from nopython code.

The scheme is the C++ backend's (``csrc/cpu/conv.cpp``, see its header comment): per group g,
``grad X_g = col2im(W_gᵀ · G_g)``, split into independent tasks (sample n, group, block of input
channels) that a ``prange`` spreads over numba's thread team. A task owns its output planes (no
write race); it runs one single-threaded GEMM per tile of Ho rows into its own col buffer (about
512 KB, so it is still in cache for the scatter), then scatter-adds the col rows into its planes
(col2im, dropping what fell in the padding). 1×1 unit-stride unpadded convs GEMM straight into
grad_in (a GEMV when Ho·Wo = 1); channel blocks only exist to give every thread tasks when N·group
is small.

BLAS is the OpenBLAS of the ``scipy-openblas32`` wheel (the C++ extension's; numpy has its own),
whose symbols carry a ``scipy_`` prefix. Its functions are registered with LLVM under names of
our own (``llvmlite.binding.add_symbol``) and declared as numba ``ExternalFunction`` s: unlike a
ctypes function object, a call by symbol name keeps ``cache=True`` working (numba does not cache
code holding a ctypes pointer). While a kernel runs, OpenBLAS is held single-threaded
(:func:`single_threaded`): its pthreads pool would otherwise serialise the team's concurrent
calls on its level-3 lock and spin on the cores the team needs.

``unavailable_reason()`` is None when the library loaded; otherwise the numba backend keeps its
direct kernel for every conv (``_numba.conv2d_backward_data``).
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from contextlib import contextmanager

import numpy as np

from ._numba_base import _IMPORT_ERROR, _JIT, _SER, njit, prange

# The col tile (per task, reused over its Ho-row tiles) and the channel blocks: as in conv.cpp.
_MIN_BLOCK_ROWS = 64  # GEMM rows per channel block, at least
_TILE_BYTES = 512 * 1024  # col tile target (half an L2)
_MIN_TILE_COLS = 256  # but GEMM tiles at least this wide
_INT32_MAX = 2**31 - 1  # scipy-openblas32 takes 32-bit dimensions
# CBLAS enums
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112

_SYMBOLS = ("cblas_sgemm", "cblas_dgemm", "cblas_sgemv", "cblas_dgemv")


def _find_library() -> ctypes.CDLL:
    """The scipy-openblas32 shared library: the instance that importing the package loaded (the
    C++ extension's too), found as ``scipy_openblas32.get_openblas_config`` finds it."""
    import scipy_openblas32

    lib_dir = scipy_openblas32.get_lib_dir()
    names = sorted(f for f in os.listdir(lib_dir)
                   if (f.endswith(".dll") if sys.platform == "win32" else f.startswith("libscipy")))
    if not names:
        raise OSError(f"no scipy-openblas library in {lib_dir}")
    return ctypes.CDLL(os.path.join(lib_dir, names[0]))


def _load() -> tuple[ctypes.CDLL | None, str | None]:
    """(library, None) with its BLAS functions registered for the kernels, or (None, why not)."""
    if _IMPORT_ERROR is not None:  # pragma: no cover - exercised only without numba
        return None, f"numba is unavailable ({_IMPORT_ERROR})"
    try:
        from llvmlite import binding

        lib = _find_library()
        addresses = {s: ctypes.cast(getattr(lib, "scipy_" + s), ctypes.c_void_p).value
                     for s in _SYMBOLS}
        for name in ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"):
            getattr(lib, name)
    except Exception as exc:  # no wheel, no library, or an OpenBLAS without these symbols
        return None, f"scipy-openblas32 is unusable here ({type(exc).__name__}: {exc})"
    for s, address in addresses.items():
        binding.add_symbol("pydevis_" + s, address)
    lib.scipy_openblas_get_num_threads.restype = ctypes.c_int
    lib.scipy_openblas_set_num_threads.argtypes = [ctypes.c_int]
    lib.scipy_openblas_set_num_threads.restype = None
    return lib, None


_LIB, _REASON = _load()


def unavailable_reason() -> str | None:
    """None when the GEMM path can run, else why not (the direct kernel then does every conv)."""
    return _REASON


# --------------------------------------------------------------------------------------------
# OpenBLAS single-threaded while a kernel runs (the C++ extension's BlasSingleThread)
# --------------------------------------------------------------------------------------------
_lock = threading.Lock()
_users = 0
_saved = 1


@contextmanager
def single_threaded():
    """OpenBLAS runs single-threaded inside; the last caller out restores its thread count."""
    global _users, _saved
    lib = _LIB
    if lib is None:  # no OpenBLAS loaded (then no kernel here calls it): nothing to pin
        yield
        return
    with _lock:
        if _users == 0:
            _saved = lib.scipy_openblas_get_num_threads()
            if _saved != 1:
                lib.scipy_openblas_set_num_threads(1)
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _saved != 1:
                lib.scipy_openblas_set_num_threads(_saved)


# --------------------------------------------------------------------------------------------
# BLAS entry points, by symbol name (row-major CBLAS; pointers as void*, dimensions int32)
# --------------------------------------------------------------------------------------------
def _declare():
    from numba import types

    i, p = types.int32, types.voidptr
    gemm = {t: types.ExternalFunction(f"pydevis_cblas_{c}gemm",
                                      types.void(i, i, i, i, i, i, t, p, i, p, i, t, p, i))
            for c, t in (("s", types.float32), ("d", types.float64))}
    gemv = {t: types.ExternalFunction(f"pydevis_cblas_{c}gemv",
                                      types.void(i, i, i, i, t, p, i, p, i, t, p, i))
            for c, t in (("s", types.float32), ("d", types.float64))}
    return gemm[types.float32], gemm[types.float64], gemv[types.float32], gemv[types.float64]


try:
    _sgemm, _dgemm, _sgemv, _dgemv = _declare()
except Exception:  # pragma: no cover - only without numba, where the backend is unavailable
    _sgemm = _dgemm = _sgemv = _dgemv = None


@njit(**_SER)
def _gemm_tn(m, n, k, a, ia, lda, b, ib, ldb, c, ic, ldc):
    # row-major c[ic:] (m × n, ldc) = a[ia:]ᵀ · b[ib:], a stored (k × m, lda), b (k × n, ldb)
    i = np.int32
    if a.itemsize == 4:
        _sgemm(i(_ROW_MAJOR), i(_TRANS), i(_NO_TRANS), i(m), i(n), i(k), np.float32(1),
               a[ia:].ctypes.data, i(lda), b[ib:].ctypes.data, i(ldb), np.float32(0),
               c[ic:].ctypes.data, i(ldc))
    else:
        _dgemm(i(_ROW_MAJOR), i(_TRANS), i(_NO_TRANS), i(m), i(n), i(k), np.float64(1),
               a[ia:].ctypes.data, i(lda), b[ib:].ctypes.data, i(ldb), np.float64(0),
               c[ic:].ctypes.data, i(ldc))


@njit(**_SER)
def _gemv_t(m, k, a, ia, lda, x, ix, incx, y, iy, incy):
    # y[iy::incy] (m) = a[ia:]ᵀ · x[ix::incx], a stored (k × m, lda)
    i = np.int32
    if a.itemsize == 4:
        _sgemv(i(_ROW_MAJOR), i(_TRANS), i(k), i(m), np.float32(1), a[ia:].ctypes.data, i(lda),
               x[ix:].ctypes.data, i(incx), np.float32(0), y[iy:].ctypes.data, i(incy))
    else:
        _dgemv(i(_ROW_MAJOR), i(_TRANS), i(k), i(m), np.float64(1), a[ia:].ctypes.data, i(lda),
               x[ix:].ctypes.data, i(incx), np.float64(0), y[iy:].ctypes.data, i(incy))


# --------------------------------------------------------------------------------------------
# the tasks
# --------------------------------------------------------------------------------------------
@njit(**_SER)
def _scatter_tap(src, oh0, oh1, dst, h_, w_, wo, kh, kw, sh, sw, pt, pl, dh, dw, scale):
    # dst (one H×W plane, flat) += scale * src (output rows [oh0, oh1) of Wo, flat) at tap
    # (kh, kw): src[oh, ow] goes to (oh*sh - pt + kh*dh, ow*sw - pl + kw*dw) when inside
    off = kw * dw - pl  # iw = ow*sw + off; valid ow in [lo, hi)
    lo = 0 if off >= 0 else (-off + sw - 1) // sw
    hi = 0 if off >= w_ else (w_ - off + sw - 1) // sw
    lo = min(lo, wo)
    hi = min(max(hi, lo), wo)
    n = hi - lo
    if n <= 0:
        return
    for oh in range(oh0, oh1):
        ih = oh * sh - pt + kh * dh
        if ih < 0 or ih >= h_:
            continue
        s = src[(oh - oh0) * wo + lo:(oh - oh0) * wo + hi]
        d0 = ih * w_ + lo * sw + off
        # zero-based slices (a contiguous one when sw = 1): LLVM vectorises the loop
        if sw == 1:
            d = dst[d0:d0 + n]
            for j in range(n):
                d[j] += scale * s[j]
        else:
            ds = dst[d0:d0 + (n - 1) * sw + 1:sw]
            for j in range(n):
                ds[j] += scale * s[j]


@njit(**_SER)
def _col2im(col, cols, oh0, oh1, dst, h_, w_, wo, kh_, kw_, sh, sw, pt, pl, dh, dw):
    # dst (rows/kk planes of H×W, flat) += col2im of col (rows × cols) for output rows [oh0, oh1)
    kk = kh_ * kw_
    hw = h_ * w_
    one = col.dtype.type(1)
    for r in range(col.shape[0] // cols):
        c = r // kk
        kh = (r - c * kk) // kw_
        _scatter_tap(col[r * cols:(r + 1) * cols], oh0, oh1, dst[c * hw:(c + 1) * hw], h_, w_,
                     wo, kh, r - c * kk - kh * kw_, sh, sw, pt, pl, dh, dw, one)


@njit(**_SER)
def _depthwise_rows(g, w, out, c_, h_, w_, ho, wo, kh_, kw_, sh, sw, pt, pl, dh, dw, p0, p1):
    # depthwise (C/group = M/group = 1): planes p = (n, c) in [p0, p1), each a sum of kH·kW
    # scaled shifts of grad_out[n, c]; no BLAS (a GEMM of inner dimension 1 gains nothing)
    kk = kh_ * kw_
    hw = h_ * w_
    howo = ho * wo
    zero = out.dtype.type(0)
    for p in range(p0, p1):
        c = p % c_
        dst = out[p * hw:(p + 1) * hw]
        for i in range(hw):
            dst[i] = zero
        src = g[p * howo:(p + 1) * howo]
        for kh in range(kh_):
            for kw in range(kw_):
                _scatter_tap(src, 0, ho, dst, h_, w_, wo, kh, kw, sh, sw, pt, pl, dh, dw,
                             w[c * kk + kh * kw_ + kw])


@njit(**_JIT)
def _depthwise_par(g, w, out, c_, h_, w_, ho, wo, kh_, kw_, sh, sw, pt, pl, dh, dw, planes):
    for p in prange(planes):
        _depthwise_rows(g, w, out, c_, h_, w_, ho, wo, kh_, kw_, sh, sw, pt, pl, dh, dw, p, p + 1)


@njit(**_SER)
def _conv_gemm_rows(g, w, out, n_, c_, h_, w_, m_, ho, wo, kh_, kw_, sh, sw, pt, pl, dh, dw,
                    group, blocks, tile_oh, direct, t0, t1):
    # tasks [t0, t1): task t = (sample n, group gi, channel block b); g, w, out flat
    cg = c_ // group
    mg = m_ // group
    kk = kh_ * kw_
    hw = h_ * w_
    howo = ho * wo
    zero = out.dtype.type(0)
    col = np.empty(0, out.dtype)
    for t in range(t0, t1):
        ng = t // blocks
        b = t - ng * blocks
        n = ng // group
        gi = ng - n * group
        c0 = cg * b // blocks
        c1 = cg * (b + 1) // blocks
        rows = (c1 - c0) * kk
        ig = (n * m_ + gi * mg) * howo  # G_g: (Mg × HoWo)
        iw = gi * mg * cg * kk + c0 * kk  # columns c0*kk.. of W_g (Mg × Cg·kk)
        io = (n * c_ + gi * cg + c0) * hw
        if direct:  # 1×1, unit stride, no padding: grad_in rows are the GEMM output
            if howo == 1:
                _gemv_t(rows, mg, w, iw, cg * kk, g, ig, howo, out, io, hw)
            else:
                _gemm_tn(rows, howo, mg, w, iw, cg * kk, g, ig, howo, out, io, hw)
            continue
        dst = out[io:io + (c1 - c0) * hw]
        for i in range(dst.shape[0]):
            dst[i] = zero
        if col.shape[0] < rows * tile_oh * wo:
            col = np.empty(rows * tile_oh * wo, out.dtype)
        for oh0 in range(0, ho, tile_oh):
            oh1 = min(ho, oh0 + tile_oh)
            cols = (oh1 - oh0) * wo
            _gemm_tn(rows, cols, mg, w, iw, cg * kk, g, ig + oh0 * wo, howo, col, 0, cols)
            _col2im(col[:rows * cols], cols, oh0, oh1, dst, h_, w_, wo, kh_, kw_, sh, sw, pt,
                    pl, dh, dw)


@njit(**_JIT)
def _conv_gemm_par(g, w, out, n_, c_, h_, w_, m_, ho, wo, kh_, kw_, sh, sw, pt, pl, dh, dw,
                   group, blocks, tile_oh, direct, tasks):
    for t in prange(tasks):
        _conv_gemm_rows(g, w, out, n_, c_, h_, w_, m_, ho, wo, kh_, kw_, sh, sw, pt, pl, dh, dw,
                        group, blocks, tile_oh, direct, t, t + 1)


def fits(g_shape, w_shape, in_hw) -> bool:
    """Every BLAS dimension and leading dimension of this conv fits scipy-openblas32's int32."""
    _n, m_, ho, wo = g_shape
    cg, kh_, kw_ = w_shape[1:]
    return max(cg * kh_ * kw_, ho * wo, in_hw[0] * in_hw[1], m_) <= _INT32_MAX


def conv2d_backward_data(g, w, out, strides, pads, dilations, group, threads):
    """out = dL/dX by the GEMM scheme; g, w, out C-contiguous and non-empty, shapes checked.

    ``threads`` is 1 for the serial path (the calling thread runs every task), else the size of
    numba's team (which sets how many channel blocks each (n, group) is cut into).
    """
    n_, m_, ho, wo = g.shape
    c_, h_, w_ = out.shape[1:]
    cg, kh_, kw_ = w.shape[1:]
    sh, sw = strides
    pt, pl = pads[0], pads[1]
    dh, dw = dilations
    if cg == 1 and m_ == group:  # depthwise: no BLAS
        dw_args = (g.reshape(-1), w.reshape(-1), out.reshape(-1), c_, h_, w_, ho, wo, kh_, kw_,
                   sh, sw, pt, pl, dh, dw)
        if threads == 1:
            _depthwise_rows(*dw_args, 0, n_ * c_)
        else:
            _depthwise_par(*dw_args, n_ * c_)
        return out
    kk = kh_ * kw_
    direct = (kh_ == 1 and kw_ == 1 and sh == 1 and sw == 1 and pt == 0 and pl == 0
              and ho == h_ and wo == w_)
    # tasks: (n, group, channel block); split channels only when N·group leaves threads idle
    base = n_ * group
    blocks = 1
    if threads > 1 and base % threads != 0 and base < 4 * threads:
        blocks = min(-(-4 * threads // base), cg, max(1, cg * kk // _MIN_BLOCK_ROWS))
    rows_max = -(-cg // blocks) * kk
    tile_cols = max(_MIN_TILE_COLS, _TILE_BYTES // (g.itemsize * max(rows_max, 1)))
    tile_oh = min(max(tile_cols // wo, 1), ho)
    args = (g.reshape(-1), w.reshape(-1), out.reshape(-1), n_, c_, h_, w_, m_, ho, wo, kh_, kw_,
            sh, sw, pt, pl, dh, dw, group, blocks, tile_oh, direct)
    with single_threaded():
        if threads == 1:
            _conv_gemm_rows(*args, 0, base * blocks)
        else:
            _conv_gemm_par(*args, base * blocks)
    return out
