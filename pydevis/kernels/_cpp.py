"""The C++ backend: re-exports ``pydevis._C`` (CPU kernels, OpenMP + OpenBLAS).

Signatures and semantics are those of ``docs/kernels.md``; :mod:`pydevis.kernels` validates and
converts arguments before calling here, and ``pydevis._C`` checks them again (``ValueError``).
"""

from __future__ import annotations

from types import ModuleType

NAME = "cpp"

__all__ = [
    "NAME",
    "ascent_update",
    "avg_pool2d_backward",
    "clamp_channels",
    "clip_small_contribution",
    "clip_small_norm",
    "conv2d_backward_data",
    "gaussian_blur",
    "global_avg_pool_backward",
    "lrn_backward",
    "max_unpool2d",
    "rectifier_backward",
    "unavailable_reason",
]


def _import() -> tuple[ModuleType | None, str | None]:
    try:
        # Loads libscipy_openblas with RTLD_GLOBAL; the extension's RPATH finds it too.
        import scipy_openblas32  # noqa: F401
    except ImportError as exc:
        return None, f"scipy-openblas32 is not installed ({exc})"
    try:
        from .. import _C
    except ImportError as exc:
        return None, f"pydevis._C is not built or cannot load ({exc})"
    return _C, None


_C, _reason = _import()


def unavailable_reason() -> str | None:
    """None when the C++ extension is usable, else why it is not."""
    return _reason


def conv2d_backward_data(grad_out, weight, in_hw, strides, pads, dilations, group):
    """dL/dX of ONNX Conv (the transposed convolution), (N, C, H, W)."""
    return _C.conv2d_backward_data(grad_out, weight, in_hw, strides, pads, dilations, group)


def max_unpool2d(grad_out, indices, in_shape):
    """Scatter-add grad_out to the MaxPool switches (flat int64 indices), shape in_shape."""
    return _C.max_unpool2d(grad_out, indices, in_shape)


def rectifier_backward(grad_out, out, mode, lo, hi):
    """Relu/Clip backward: mode 0 gradient, 1 deconvnet, 2 guided."""
    return _C.rectifier_backward(grad_out, out, mode, lo, hi)


def lrn_backward(grad_out, x, size, alpha, beta, bias):
    """dL/dX of ONNX LRN given its forward input x."""
    return _C.lrn_backward(grad_out, x, size, alpha, beta, bias)


def avg_pool2d_backward(grad_out, in_shape, kernel_shape, strides, pads, count_include_pad):
    """dL/dX of ONNX AveragePool (2-D)."""
    return _C.avg_pool2d_backward(grad_out, in_shape, kernel_shape, strides, pads,
                                  count_include_pad)


def global_avg_pool_backward(grad_out, in_shape):
    """dL/dX of ONNX GlobalAveragePool."""
    return _C.global_avg_pool_backward(grad_out, in_shape)


# ---- ascent kernels (docs/kernels.md, "Ascent kernels") --------------------------------------
def ascent_update(v, g, eta, decay):
    """(v + eta[n]·g)·(1 − decay) in float64, rounded once to v's dtype; eta float64 (N,)."""
    return _C.ascent_update(v, g, eta, decay)


def gaussian_blur(v, sigma):
    """Separable Gaussian of each (n, c) plane, radius int(4·sigma + 0.5), reflect boundary."""
    return _C.gaussian_blur(v, sigma)


def clip_small_norm(v, pct):
    """Zero the pixels whose channel norm is below the pct-th percentile of their image."""
    return _C.clip_small_norm(v, pct)


def clip_small_contribution(v, g, pct):
    """Zero the pixels whose |Σ_c g·(−v)| is below the pct-th percentile of their image."""
    return _C.clip_small_contribution(v, g, pct)


def clamp_channels(v, lo, hi):
    """Clip channel c of v to [lo[c], hi[c]]; lo, hi float64 (C,)."""
    return _C.clamp_channels(v, lo, hi)
