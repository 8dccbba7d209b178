"""Public kernel functions of the backward path; one signature, three backends.

The argument conventions are in ``docs/kernels.md``. Each function checks its arguments here
(shapes, dtypes), makes them C-contiguous, and calls the backend chosen by
:mod:`pydevis.kernels._dispatch` (``PYDEVIS_BACKEND=cpp|numba|cuda`` forces one).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._dispatch import available, backend, get, host_backend

__all__ = [
    "available",
    "avg_pool2d_backward",
    "backend",
    "conv2d_backward_data",
    "get",
    "global_avg_pool_backward",
    "lrn_backward",
    "max_unpool2d",
    "rectifier_backward",
    "MODES",
    "ascent_update",
    "clamp_channels",
    "clip_small_contribution",
    "clip_small_norm",
    "gaussian_blur",
]

MODES = {"gradient": 0, "deconvnet": 1, "guided": 2}
_FLOATS = (np.float32, np.float64)


def _float(a: np.ndarray, name: str, ndim: int | None = None, dtype=None) -> np.ndarray:
    a = np.asarray(a)
    if dtype is None and a.dtype.type not in _FLOATS:
        raise ValueError(f"{name}: dtype {a.dtype} is not float32/float64")
    if dtype is not None and a.dtype != dtype:
        a = a.astype(dtype)
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim}-D, got shape {a.shape}")
    return np.ascontiguousarray(a)


def _ints(v: Sequence[int], n: int, name: str) -> tuple[int, ...]:
    t = tuple(int(i) for i in v)
    if len(t) != n:
        raise ValueError(f"{name}: expected {n} integers, got {t}")
    return t


def conv2d_backward_data(grad_out, weight, in_hw, strides=(1, 1), pads=(0, 0, 0, 0),
                         dilations=(1, 1), group=1, *, module=None) -> np.ndarray:
    """dL/dX of ONNX Conv (the transposed convolution). See docs/kernels.md."""
    g = _float(grad_out, "grad_out", 4)
    w = _float(weight, "weight", 4, dtype=g.dtype)
    mod = module or host_backend()
    return mod.conv2d_backward_data(g, w, _ints(in_hw, 2, "in_hw"), _ints(strides, 2, "strides"),
                                    _ints(pads, 4, "pads"), _ints(dilations, 2, "dilations"),
                                    int(group))


def max_unpool2d(grad_out, indices, in_shape, *, module=None) -> np.ndarray:
    """Route grad_out to the MaxPool switches (flat int64 indices into the input)."""
    g = _float(grad_out, "grad_out", 4)
    idx = np.ascontiguousarray(np.asarray(indices, dtype=np.int64))
    mod = module or host_backend()
    return mod.max_unpool2d(g, idx, _ints(in_shape, 4, "in_shape"))


def rectifier_backward(grad_out, out, mode="gradient", lo=0.0, hi=float("inf"), *,
                       module=None) -> np.ndarray:
    """Relu/Clip backward in mode gradient (g·mask), deconvnet (max(g,0)), guided (both)."""
    g = _float(grad_out, "grad_out")
    y = _float(out, "out", dtype=g.dtype)
    if y.shape != g.shape:
        raise ValueError(f"out shape {y.shape} != grad_out shape {g.shape}")
    m = MODES[mode] if isinstance(mode, str) else int(mode)
    mod = module or host_backend()
    return mod.rectifier_backward(g, y, m, float(lo), float(hi))


def lrn_backward(grad_out, x, size, alpha=1e-4, beta=0.75, bias=1.0, *, module=None) -> np.ndarray:
    """dL/dX of ONNX LRN given the forward input x."""
    g = _float(grad_out, "grad_out", 4)
    xx = _float(x, "x", 4, dtype=g.dtype)
    mod = module or host_backend()
    return mod.lrn_backward(g, xx, int(size), float(alpha), float(beta), float(bias))


def avg_pool2d_backward(grad_out, in_shape, kernel_shape, strides=(1, 1), pads=(0, 0, 0, 0),
                        count_include_pad=False, *, module=None) -> np.ndarray:
    """dL/dX of ONNX AveragePool (2-D)."""
    g = _float(grad_out, "grad_out", 4)
    mod = module or host_backend()
    return mod.avg_pool2d_backward(g, _ints(in_shape, 4, "in_shape"),
                                   _ints(kernel_shape, 2, "kernel_shape"),
                                   _ints(strides, 2, "strides"), _ints(pads, 4, "pads"),
                                   bool(count_include_pad))


def global_avg_pool_backward(grad_out, in_shape, *, module=None) -> np.ndarray:
    """dL/dX of ONNX GlobalAveragePool: g / (H·W) broadcast over the map."""
    g = _float(grad_out, "grad_out", 4)
    mod = module or host_backend()
    return mod.global_avg_pool_backward(g, _ints(in_shape, 4, "in_shape"))


# ---- ascent kernels ----------------------------------------------------------------------------
def ascent_update(v, g, eta, decay=0.0, *, module=None) -> np.ndarray:
    """(v + eta[n]·g)·(1 − decay): the gradient step and L2 decay in one pass."""
    vv = _float(v, "v", 4)
    gg = _float(g, "g", 4, dtype=vv.dtype)
    if gg.shape != vv.shape:
        raise ValueError(f"g shape {gg.shape} != v shape {vv.shape}")
    e = np.ascontiguousarray(np.broadcast_to(np.asarray(eta, np.float64), (vv.shape[0],)))
    return (module or host_backend()).ascent_update(vv, gg, e, float(decay))


def gaussian_blur(v, sigma, *, module=None) -> np.ndarray:
    """Per-channel separable Gaussian blur of width sigma (reflect boundary)."""
    return (module or host_backend()).gaussian_blur(_float(v, "v", 4), float(sigma))


def clip_small_norm(v, pct, *, module=None) -> np.ndarray:
    """Zero the pixels whose channel norm is below the pct-th percentile of their image."""
    return (module or host_backend()).clip_small_norm(_float(v, "v", 4), float(pct))


def clip_small_contribution(v, g, pct, *, module=None) -> np.ndarray:
    """Zero the pixels whose |Σ_c g·(−v)| is below the pct-th percentile of their image."""
    vv = _float(v, "v", 4)
    gg = _float(g, "g", 4, dtype=vv.dtype)
    if gg.shape != vv.shape:
        raise ValueError(f"g shape {gg.shape} != v shape {vv.shape}")
    return (module or host_backend()).clip_small_contribution(vv, gg, float(pct))


def clamp_channels(v, lo, hi, *, module=None) -> np.ndarray:
    """Clip channel c of v to [lo[c], hi[c]]."""
    vv = _float(v, "v", 4)
    lo_ = np.ascontiguousarray(np.broadcast_to(np.asarray(lo, np.float64), (vv.shape[1],)))
    hi_ = np.ascontiguousarray(np.broadcast_to(np.asarray(hi, np.float64), (vv.shape[1],)))
    return (module or host_backend()).clamp_channels(vv, lo_, hi_)
