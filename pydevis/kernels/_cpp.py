"""The C++ backend: re-exports ``pydevis._C`` (CPU kernels, own thread pool + OpenBLAS).

Signatures and semantics are those of ``docs/kernels.md``; :mod:`pydevis.kernels` validates and
converts arguments before calling here, and ``pydevis._C`` checks them again (``ValueError``).
"""

from __future__ import annotations

from types import ModuleType

NAME = "cpp"

__all__ = [
    "NAME",
    "add",
    "ascent_step",
    "ascent_update",
    "avg_pool2d_backward",
    "clamp_channels",
    "clip_small_contribution",
    "clip_small_norm",
    "contiguous",
    "conv2d_backward_data",
    "gaussian_blur",
    "global_avg_pool_backward",
    "linear_backward_data",
    "linear_isa_level",
    "lrn_backward",
    "max_pool2d_backward",
    "rectifier_backward",
    "unavailable_reason",
    "winograd_variant",
    "winograd_weights",
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


if _C is not None:  # the extension's functions are the backend's, unwrapped
    from .._C import (
        add,
        ascent_step,
        ascent_update,
        avg_pool2d_backward,
        clamp_channels,
        clip_small_contribution,
        clip_small_norm,
        contiguous,
        conv2d_backward_data,
        gaussian_blur,
        global_avg_pool_backward,
        linear_backward_data,
        linear_isa_level,
        lrn_backward,
        max_pool2d_backward,
        rectifier_backward,
        winograd_variant,
        winograd_weights,
    )

KERNELS = tuple(n for n in __all__
                if n not in ("NAME", "unavailable_reason", "linear_isa_level"))
