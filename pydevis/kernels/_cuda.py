"""The CUDA backend: re-exports ``pydevis._cuda`` (CUDA kernels, built when nvcc was found).

Signatures and semantics are those of ``docs/kernels.md`` (the same as ``pydevis._C``). Each
array argument may be a numpy array (copied to the GPU; the result comes back as numpy) or any
object exposing ``__cuda_array_interface__`` (cupy, numba.cuda device arrays; used in place). When
an argument lives on the GPU the result stays there too, as a ``pydevis._cuda.DeviceArray``
(``__cuda_array_interface__`` v3, ``.to_host()`` gives numpy; ``cupy.asarray`` wraps it without a
copy).

The backend is usable only when the extension imports *and* the CUDA runtime sees a device: a
build on a machine without a GPU (or a driver) imports fine and reports why it cannot run.
"""

from __future__ import annotations

from types import ModuleType

NAME = "cuda"

__all__ = [
    "NAME",
    "AscentWorkspace",
    "DeviceArray",
    "ascent_update",
    "avg_pool2d_backward",
    "clamp_channels",
    "clip_small_contribution",
    "clip_small_norm",
    "conv2d_backward_data",
    "device_count",
    "device_name",
    "gaussian_blur",
    "global_avg_pool_backward",
    "lrn_backward",
    "max_pool2d_backward",
    "rectifier_backward",
    "unavailable_reason",
]


def _import() -> tuple[ModuleType | None, str | None]:
    try:
        from .. import _cuda
    except ImportError as exc:
        return None, f"pydevis._cuda not built or cannot load ({exc})"
    return _cuda, None


_cuda, _import_error = _import()
DeviceArray = getattr(_cuda, "DeviceArray", None)
#: The device-resident state of one batched ascent (csrc/cuda/workspace.cpp), used by the ort
#: backend's bound ascent on the CUDA provider (pydevis/export/ort_ascent.py).
AscentWorkspace = getattr(_cuda, "AscentWorkspace", None)


def device_count() -> int:
    """Number of CUDA devices the runtime sees (0 without the extension, a driver or a GPU)."""
    return 0 if _cuda is None else int(_cuda.device_count())


def device_name(device: int = 0) -> str:
    """Name of a CUDA device, e.g. ``"NVIDIA H100 80GB HBM3"``."""
    if _cuda is None:
        raise RuntimeError(_import_error)
    return _cuda.device_name(device)


def _ext() -> ModuleType:
    """The extension; a kernel called without it says why it is missing."""
    if _cuda is None:
        raise RuntimeError(_import_error)
    return _cuda


def unavailable_reason() -> str | None:
    """None when the CUDA extension is built and a CUDA device answers, else why not."""
    if _cuda is None:
        return _import_error
    try:
        if _cuda.device_count() > 0:
            return None
        detail = _cuda.device_error() or "cudaGetDeviceCount: 0 devices"
    except Exception as exc:  # a broken driver must be a refusal, never a crash
        detail = f"{type(exc).__name__}: {exc}"
    return f"no CUDA device: {detail}"


def conv2d_backward_data(grad_out, weight, in_hw, strides, pads, dilations, group):
    """dL/dX of ONNX Conv (the transposed convolution), (N, C, H, W)."""
    return _ext().conv2d_backward_data(grad_out, weight, in_hw, strides, pads, dilations, group)


def max_pool2d_backward(grad_out, x, kernel_shape, strides, pads, dilations):
    """dL/dX of ONNX MaxPool from its forward input x (switches: first strict maximum)."""
    return _ext().max_pool2d_backward(grad_out, x, kernel_shape, strides, pads, dilations)


def rectifier_backward(grad_out, out, mode, lo, hi):
    """Relu/Clip backward: mode 0 gradient, 1 deconvnet, 2 guided."""
    return _ext().rectifier_backward(grad_out, out, mode, lo, hi)


def lrn_backward(grad_out, x, size, alpha, beta, bias):
    """dL/dX of ONNX LRN given its forward input x."""
    return _ext().lrn_backward(grad_out, x, size, alpha, beta, bias)


def avg_pool2d_backward(grad_out, in_shape, kernel_shape, strides, pads, count_include_pad):
    """dL/dX of ONNX AveragePool (2-D)."""
    return _ext().avg_pool2d_backward(grad_out, in_shape, kernel_shape, strides, pads,
                                      count_include_pad)


def global_avg_pool_backward(grad_out, in_shape):
    """dL/dX of ONNX GlobalAveragePool."""
    return _ext().global_avg_pool_backward(grad_out, in_shape)


# ---- ascent kernels (docs/kernels.md, "Ascent kernels") ----------------------------------------
def ascent_update(v, g, eta, decay):
    """(v + eta[n]·g)·(1 − decay); eta float64 (N,)."""
    return _ext().ascent_update(v, g, eta, decay)


def gaussian_blur(v, sigma):
    """Separable Gaussian of each (n, c) plane, reflect boundary (a copy for sigma <= 0)."""
    return _ext().gaussian_blur(v, sigma)


def clip_small_norm(v, pct):
    """Zero the pixels whose channel norm is below the pct-th percentile of their image."""
    return _ext().clip_small_norm(v, pct)


def clip_small_contribution(v, g, pct):
    """Zero the pixels whose |Σ_c g·(−v)| is below the pct-th percentile of their image."""
    return _ext().clip_small_contribution(v, g, pct)


def clamp_channels(v, lo, hi):
    """Clip channel c of v to [lo[c], hi[c]]; lo, hi float64 (C,)."""
    return _ext().clamp_channels(v, lo, hi)
