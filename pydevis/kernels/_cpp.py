"""The C++ backend: re-exports ``pydevis._C`` (CPU kernels, OpenMP + OpenBLAS).

Signatures and semantics are those of ``docs/kernels.md``; :mod:`pydevis.kernels` validates and
converts arguments before calling here, and ``pydevis._C`` checks them again (``ValueError``).
"""

from __future__ import annotations

from types import ModuleType

NAME = "cpp"

__all__ = [
    "NAME",
    "avg_pool2d_backward",
    "conv2d_backward_data",
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
