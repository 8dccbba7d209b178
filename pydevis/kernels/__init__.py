"""Public kernel functions of the backward path; one signature, three backends.

The argument conventions are in ``docs/kernels.md``. Each function checks its arguments here
(shapes, dtypes), makes them C-contiguous, and calls the backend chosen by
:mod:`pydevis.kernels._dispatch` (``PYDEVIS_BACKEND=cpp|numba|cuda`` forces one).

A call whose first array argument is a CUDA device array (it exposes
``__cuda_array_interface__``: cupy, numba.cuda, ``pydevis._cuda.DeviceArray``) goes to the CUDA
backend whatever the host backend is, with its device arrays left on the GPU, and returns a
``pydevis._cuda.DeviceArray``; a ``BackendError`` says why when CUDA is unavailable.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import numpy as np

from . import _winograd
from ._dispatch import available, backend, get, host_backend

__all__ = [
    "add",
    "available",
    "avg_pool2d_backward",
    "backend",
    "conv2d_backward_data",
    "get",
    "global_avg_pool_backward",
    "linear_backward_data",
    "lrn_backward",
    "max_pool2d_backward",
    "rectifier_backward",
    "MODES",
    "mode_code",
    "ascent_step",
    "ascent_update",
    "clamp_channels",
    "clip_small_contribution",
    "clip_small_norm",
    "gaussian_blur",
    "park_workers",
]

#: The signal modes, the one definition (``pydevis.MODES`` is this tuple): gradient (Simonyan et
#: al. 2013), deconvnet (Zeiler & Fergus 2014), guided (Springenberg et al. 2015). A mode's index
#: is the code the kernels take (:func:`mode_code`).
MODES = ("gradient", "deconvnet", "guided")
_FLOATS = (np.float32, np.float64)


def park_workers() -> None:
    """The C++ backend's idle pool workers stop spinning and sleep now, so that the next thread
    pool on these cores (ONNX Runtime's forward: ``pydevis/session.py`` calls this before each
    run) has them; the next kernel wakes them (``csrc/common/parallel.h``). A no-op when the
    C++ backend has not been loaded."""
    cpp = sys.modules.get("pydevis.kernels._cpp")
    if cpp is not None and cpp._C is not None:
        cpp._C.park_workers()


def _on_device(a) -> bool:
    """True for a CUDA device array (anything exposing ``__cuda_array_interface__``)."""
    return hasattr(a, "__cuda_array_interface__")


def _route(first, module=None):
    """(backend, keep_device) for a call whose first array argument is ``first``.

    ``module`` when given; else the CUDA backend when ``first`` is a device array, whatever the
    host backend (``BackendError`` when CUDA is unavailable); else the host backend.
    ``keep_device``: the backend is CUDA, which takes device arrays as they are and checks them
    itself; any other backend gets numpy arrays.
    """
    mod = module or (get("cuda") if _on_device(first) else host_backend())
    return mod, getattr(mod, "NAME", None) == "cuda"


def _shape(a) -> tuple[int, ...]:
    return tuple(a.__cuda_array_interface__["shape"]) if _on_device(a) else a.shape


def _dtype(a) -> np.dtype:
    return np.dtype(a.__cuda_array_interface__["typestr"]) if _on_device(a) else a.dtype


def _float(a, name: str, ndim: int | None = None, dtype=None, keep_device: bool = False):
    """``a`` as a C-contiguous float numpy array (cast to ``dtype`` when given) of ``ndim``
    dimensions; with ``keep_device`` a device array is returned as it is once its rank is checked
    (the CUDA backend checks its dtype and layout)."""
    on_device = keep_device and _on_device(a)
    if not on_device:
        a = np.asarray(a)
        if dtype is None and a.dtype.type not in _FLOATS:
            raise ValueError(f"{name}: dtype {a.dtype} is not float32/float64")
        if dtype is not None and a.dtype != dtype:
            a = a.astype(dtype)
    if ndim is not None and len(_shape(a)) != ndim:
        raise ValueError(f"{name}: expected {ndim}-D, got shape {_shape(a)}")
    return a if on_device else _contiguous(a)


def _contiguous(a: np.ndarray) -> np.ndarray:
    """``a`` C-contiguous: itself, or a copy. A large float view (a Concat backward's channel
    slice at batch > 1: SqueezeNet's expand rectifiers, 16 copies of up to 6 MB per step at
    batch 8) is copied on the C++ backend's thread pool when that is the host backend; numpy
    copies on one core."""
    if a.flags.c_contiguous:
        return a
    if a.size >= 1 << 18 and a.dtype.type in _FLOATS and a.dtype.isnative and a.flags.aligned:
        mod = host_backend()
        if getattr(mod, "NAME", None) == "cpp":
            return mod.contiguous(a)
    return np.ascontiguousarray(a)


def _f64_vector(x, n: int, keep_device: bool = False):
    """A scalar or n values as a C-contiguous float64 (n,) array (eta, lo, hi)."""
    if keep_device and _on_device(x):
        return x
    return np.ascontiguousarray(np.broadcast_to(np.asarray(x, np.float64), (n,)))


def _ints(v: Sequence[int], n: int, name: str) -> tuple[int, ...]:
    t = tuple(int(i) for i in v)
    if len(t) != n:
        raise ValueError(f"{name}: expected {n} integers, got {t}")
    return t


def conv2d_backward_data(grad_out, weight, in_hw, strides=(1, 1), pads=(0, 0, 0, 0),
                         dilations=(1, 1), group=1, *, constant_weight: bool = False,
                         rectify: str | None = None, y=None, lo: float = 0.0,
                         hi: float = float("inf"), module=None) -> np.ndarray:
    """dL/dX of ONNX Conv (the transposed convolution). See docs/kernels.md.

    ``constant_weight``: the caller promises that ``weight`` (a host array) never changes while
    it lives (a model's initializer); the C++ backend then keeps its Winograd transform
    (:mod:`._winograd`) instead of redoing it on every call.
    ``rectify`` (a mode of :data:`MODES`): X is ``y``, the output of a Relu (or of a Clip with
    bounds ``lo``, ``hi``), and that rectifier's backward in this mode follows,
    ``rectifier_backward(result, y, rectify, lo, hi)``, the same numbers; the C++ backend
    applies it to each task's planes while they are in cache.
    """
    mod, dev = _route(grad_out, module)
    g = _float(grad_out, "grad_out", 4, keep_device=dev)
    w = _float(weight, "weight", 4, dtype=_dtype(g), keep_device=dev)
    args = (_ints(in_hw, 2, "in_hw"), _ints(strides, 2, "strides"), _ints(pads, 4, "pads"),
            _ints(dilations, 2, "dilations"))
    cpp = getattr(mod, "NAME", None) == "cpp"
    u = None
    if constant_weight and w is weight and cpp:
        u = _winograd.prepared(mod, g, w, args, int(group))
    if rectify is None:
        if cpp:
            return mod.conv2d_backward_data(g, w, *args, int(group), u)
        return mod.conv2d_backward_data(g, w, *args, int(group))
    code, bounds = mode_code(rectify), (float(lo), float(hi))
    yy = _float(y, "y", 4, dtype=_dtype(g), keep_device=dev)
    if cpp:
        return mod.conv2d_backward_data(g, w, *args, int(group), u, yy, code, *bounds)
    gi = mod.conv2d_backward_data(g, w, *args, int(group))
    return mod.rectifier_backward(gi, yy, code, *bounds)


#: Largest batch N that the C++ backend's linear_backward_data kernel (W streamed once) takes, by
#: the vector code the CPU runs it with (``pydevis._C.linear_isa_level``: 2 AVX-512, 1 AVX2 + FMA,
#: 0 neither); larger N go through the GEMM of conv2d_backward_data. Measured against that GEMM,
#: one thread, W 4096×4096 float32, ms (Xeon, AVX-512): AVX-512 8.8 vs 11.9 at N = 32, 12.9 vs
#: 14.8 at 48, 17.0 vs 18.3 at 64, 24.7 vs 24.2 at 96; AVX2 6.9 vs 9.3 at 16, 10.4 vs 11.0 at 24,
#: 13.2 vs 11.9 at 32; baseline (SSE2, no FMA) 3.9 vs 7.3 at 4, 7.3 vs 7.8 at 8, 10.9 vs 9.3 at 12.
#: Each limit keeps a margin of >= 10 %.
LINEAR_MAX_N = {2: 48, 1: 16, 0: 4}


def add(a, b, *, module=None) -> np.ndarray:
    """``a + b`` for two host arrays of one float dtype and shape (the backward walk's sums where
    a tensor fans out); any other pair: numpy's ``a + b``.

    Host arrays only. On the C++ backend on the thread pool past 2^18 elements (numpy adds on
    one core: ResNet-18's eight skip sums at batch 8 take 3-5 ms of a one-core backward, which
    a team of 16 would wait through); other backends: numpy. The same bits either way.
    """
    mod = module or host_backend()
    if (getattr(mod, "NAME", None) == "cpp" and isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray) and a.shape == b.shape and a.dtype == b.dtype
            and a.dtype.type in _FLOATS and a.size >= 1 << 18):
        return mod.add(np.ascontiguousarray(a), np.ascontiguousarray(b))
    return a + b


def linear_backward_data(grad_out, weight, *, module=None) -> np.ndarray:
    """dL/dX of ``Y = X·Wᵀ`` (ONNX Gemm with transB=1, W of shape (M, K)): ``G·W``, (N, K).

    Host arrays only. On the C++ backend, for N up to :data:`LINEAR_MAX_N`, a kernel that reads
    W once, straight into register-blocked FMAs, split by rows across the thread pool (the op is
    memory-bound at small N), skipping the rows whose G column is zero; above, the 1×1
    transposed convolution of G laid out as one (M, 1, N) image: one GEMM, split over the thread
    pool with OpenBLAS single-threaded.
    numpy's product would run numpy's own multi-threaded OpenBLAS, whose workers spin after the
    call on the cores the next kernels need (measured on 2 busy cores, N=8, 4096×4096: 74 ms vs
    15; 1 thread: 10 vs 11). The numba backend does the same when its conv takes its OpenBLAS
    path for that 1×1 conv (measured: ResNet-18 backward at batch 1, 2 threads, 52 ms with
    numpy's product, 29 ms without). Other backends: numpy.
    """
    mod = module or host_backend()
    g = _float(grad_out, "grad_out", 2)
    w = _float(weight, "weight", 2, dtype=g.dtype)
    (n, m), k = g.shape, w.shape[1]
    if w.shape[0] != m:
        raise ValueError(f"weight shape {w.shape} does not match grad_out shape {g.shape}")
    name = getattr(mod, "NAME", None)
    if name == "cpp" and n <= LINEAR_MAX_N.get(mod.linear_isa_level, 0):
        return mod.linear_backward_data(g, w)
    if (name not in ("cpp", "numba") or g.size == 0 or w.size == 0
            or name == "numba" and mod._conv_path((1, m, 1, n), (m, k, 1, 1), (1, n), 1) != "gemm"):
        return g @ w
    gi = mod.conv2d_backward_data(np.ascontiguousarray(g.T).reshape(1, m, 1, n),
                                  w.reshape(m, k, 1, 1), (1, n), (1, 1), (0, 0, 0, 0), (1, 1), 1)
    return np.ascontiguousarray(gi.reshape(k, n).T)


def max_pool2d_backward(grad_out, x, kernel_shape, strides=(1, 1), pads=(0, 0, 0, 0),
                        dilations=(1, 1), *, rectify: str | None = None,
                        module=None) -> np.ndarray:
    """dL/dX of ONNX MaxPool from its forward input x (the switches are found, not passed).

    ``rectify`` (a mode of :data:`MODES`): x is the output of a Relu and that Relu's backward in
    this mode follows, ``rectifier_backward(result, x, rectify)``, the same numbers; the C++
    backend applies it to each plane while it is in cache (one pass over memory fewer).
    """
    mod, dev = _route(grad_out, module)
    g = _float(grad_out, "grad_out", 4, keep_device=dev)
    xx = _float(x, "x", 4, dtype=_dtype(g), keep_device=dev)
    args = (g, xx, _ints(kernel_shape, 2, "kernel_shape"), _ints(strides, 2, "strides"),
            _ints(pads, 4, "pads"), _ints(dilations, 2, "dilations"))
    if rectify is None:
        return mod.max_pool2d_backward(*args)
    code = mode_code(rectify)
    if getattr(mod, "NAME", None) == "cpp":
        return mod.max_pool2d_backward(*args, code)
    return mod.rectifier_backward(mod.max_pool2d_backward(*args), xx, code, 0.0, float("inf"))


def rectifier_backward(grad_out, out, mode="gradient", lo=0.0, hi=float("inf"), *,
                       module=None) -> np.ndarray:
    """Relu/Clip backward in mode gradient (g·mask), deconvnet (max(g,0)), guided (both)."""
    mod, dev = _route(grad_out, module)
    g = _float(grad_out, "grad_out", keep_device=dev)
    y = _float(out, "out", dtype=_dtype(g), keep_device=dev)
    if _shape(y) != _shape(g):
        raise ValueError(f"out shape {_shape(y)} != grad_out shape {_shape(g)}")
    return mod.rectifier_backward(g, y, mode_code(mode), float(lo), float(hi))


def mode_code(mode: str | int) -> int:
    """The kernels' integer code of a signal mode: its index in :data:`MODES` (an int passes)."""
    if isinstance(mode, str):
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        return MODES.index(mode)
    return int(mode)


_MAX_SIZE = 2**31 - 1  # csrc/common/checks.h kMaxSize
_MAX_BLUR_RADIUS = 65536  # csrc/common/checks.h kMaxBlurRadius


def _check_lrn(size: int, alpha: float, beta: float, bias: float) -> None:
    """The C++ bindings' LRN checks, for every backend (numba would return NaNs)."""
    if not 1 <= size <= _MAX_SIZE:
        raise ValueError(f"size: must be >= 1 and <= {_MAX_SIZE} (2^31 - 1), got {size}")
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha: must be finite and >= 0, got {alpha}")
    if not math.isfinite(beta):
        raise ValueError(f"beta: must be finite, got {beta}")
    if not (math.isfinite(bias) and bias > 0):
        raise ValueError(f"bias: must be finite and > 0 (the base of s^-beta), got {bias}")


def _check_sigma(sigma: float, name: str = "sigma") -> None:
    if not math.isfinite(sigma):
        raise ValueError(f"{name}: must be finite, got {sigma}")
    if 4.0 * sigma + 0.5 >= _MAX_BLUR_RADIUS + 1:
        raise ValueError(f"{name}: {sigma} is too large (blur radius int(4 * sigma + 0.5) above "
                         f"{_MAX_BLUR_RADIUS})")


def _check_pct(pct: float, name: str = "pct") -> None:
    """The C++ bindings' percentile check, for every backend (numba's selection would index
    out of range, or never end on NaN)."""
    if not pct <= 100:  # NaN fails too
        raise ValueError(f"{name}: must be <= 100 (a percentile), got {pct}")


def lrn_backward(grad_out, x, size, alpha=1e-4, beta=0.75, bias=1.0, *, module=None) -> np.ndarray:
    """dL/dX of ONNX LRN given the forward input x."""
    _check_lrn(int(size), float(alpha), float(beta), float(bias))
    mod, dev = _route(grad_out, module)
    g = _float(grad_out, "grad_out", 4, keep_device=dev)
    xx = _float(x, "x", 4, dtype=_dtype(g), keep_device=dev)
    return mod.lrn_backward(g, xx, int(size), float(alpha), float(beta), float(bias))


def avg_pool2d_backward(grad_out, in_shape, kernel_shape, strides=(1, 1), pads=(0, 0, 0, 0),
                        count_include_pad=False, *, module=None) -> np.ndarray:
    """dL/dX of ONNX AveragePool (2-D)."""
    mod, dev = _route(grad_out, module)
    g = _float(grad_out, "grad_out", 4, keep_device=dev)
    return mod.avg_pool2d_backward(g, _ints(in_shape, 4, "in_shape"),
                                   _ints(kernel_shape, 2, "kernel_shape"),
                                   _ints(strides, 2, "strides"), _ints(pads, 4, "pads"),
                                   bool(count_include_pad))


def global_avg_pool_backward(grad_out, in_shape, *, module=None) -> np.ndarray:
    """dL/dX of ONNX GlobalAveragePool: g / (H·W) broadcast over the map."""
    mod, dev = _route(grad_out, module)
    g = _float(grad_out, "grad_out", 4, keep_device=dev)
    return mod.global_avg_pool_backward(g, _ints(in_shape, 4, "in_shape"))


# ---- ascent kernels ----------------------------------------------------------------------------
def _v_and_g(v, g, dev: bool):
    """The image v (4-D float) and the gradient g (cast to v's dtype, of v's shape)."""
    vv = _float(v, "v", 4, keep_device=dev)
    gg = _float(g, "g", 4, dtype=_dtype(vv), keep_device=dev)
    if _shape(gg) != _shape(vv):
        raise ValueError(f"g shape {_shape(gg)} != v shape {_shape(vv)}")
    return vv, gg


def ascent_update(v, g, eta, decay=0.0, *, module=None) -> np.ndarray:
    """(v + eta[n]·g)·(1 − decay): the gradient step and L2 decay in one pass."""
    mod, dev = _route(v, module)
    vv, gg = _v_and_g(v, g, dev)
    e = _f64_vector(eta, _shape(vv)[0], keep_device=dev)
    return mod.ascent_update(vv, gg, e, float(decay))


def gaussian_blur(v, sigma, *, module=None) -> np.ndarray:
    """Per-channel separable Gaussian blur of width sigma (reflect boundary)."""
    _check_sigma(float(sigma))
    mod, dev = _route(v, module)
    return mod.gaussian_blur(_float(v, "v", 4, keep_device=dev), float(sigma))


def clip_small_norm(v, pct, *, module=None) -> np.ndarray:
    """Zero the pixels whose channel norm is below the pct-th percentile of their image."""
    _check_pct(float(pct))
    mod, dev = _route(v, module)
    return mod.clip_small_norm(_float(v, "v", 4, keep_device=dev), float(pct))


def clip_small_contribution(v, g, pct, *, module=None) -> np.ndarray:
    """Zero the pixels whose |Σ_c g·(−v)| is below the pct-th percentile of their image."""
    _check_pct(float(pct))
    mod, dev = _route(v, module)
    vv, gg = _v_and_g(v, g, dev)
    return mod.clip_small_contribution(vv, gg, float(pct))


def clamp_channels(v, lo, hi, *, module=None) -> np.ndarray:
    """Clip channel c of v to [lo[c], hi[c]]."""
    mod, dev = _route(v, module)
    vv = _float(v, "v", 4, keep_device=dev)
    channels = _shape(vv)[1]
    return mod.clamp_channels(vv, _f64_vector(lo, channels, keep_device=dev),
                              _f64_vector(hi, channels, keep_device=dev))


def ascent_step(v, g, eta, decay, blur_sigma, norm_pct, contrib_pct, lo, hi, *,
                module=None) -> np.ndarray:
    """One ascent step after the backward pass, in one call: ``clamp_channels(
    clip_small_contribution(clip_small_norm(gaussian_blur(ascent_update(v, g, eta, decay),
    blur_sigma), norm_pct), g, contrib_pct), lo, hi)``, bit for bit what that composition gives
    on the same backend (``blur_sigma <= 0``, ``pct <= 0``: that piece is skipped).

    A backend without the fused kernel (CUDA) runs the composition of its own kernels, device
    arrays staying on the device.
    """
    decay, sigma, norm_pct, contrib_pct = (float(decay), float(blur_sigma), float(norm_pct),
                                           float(contrib_pct))
    _check_sigma(sigma, "blur_sigma")
    _check_pct(norm_pct, "norm_pct")
    _check_pct(contrib_pct, "contrib_pct")
    mod, dev = _route(v, module)
    vv, gg = _v_and_g(v, g, dev)
    n, c = _shape(vv)[:2]
    e = _f64_vector(eta, n, keep_device=dev)
    lo, hi = _f64_vector(lo, c, keep_device=dev), _f64_vector(hi, c, keep_device=dev)
    fused = getattr(mod, "ascent_step", None)
    if fused is not None:
        return fused(vv, gg, e, decay, sigma, norm_pct, contrib_pct, lo, hi)
    out = mod.ascent_update(vv, gg, e, decay)
    if sigma > 0:
        out = mod.gaussian_blur(out, sigma)
    if norm_pct > 0:
        out = mod.clip_small_norm(out, norm_pct)
    if contrib_pct > 0:
        out = mod.clip_small_contribution(out, gg, contrib_pct)
    return mod.clamp_channels(out, lo, hi)
