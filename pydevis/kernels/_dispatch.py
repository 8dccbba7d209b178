"""Backend selection: CUDA for device arrays, else the C++ extension, else numba.

``PYDEVIS_BACKEND=cpp|numba|cuda`` forces one backend and fails loudly if it cannot load.
``PYDEVIS_BACKEND=ort`` is about signals, not kernels: :func:`pydevis.load` then defaults to
``backend="ort"`` (the exported backward graph in ONNX Runtime), and the few kernels still called
(the ascent update, the regularizers) take the default order, as with no variable.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from ..errors import BackendError

_NAMES = ("cuda", "cpp", "numba")
_SIGNAL_NAMES = ("ort",)  # PYDEVIS_BACKEND values that choose the signal path, not a kernel set
_loaded: dict[str, ModuleType] = {}
_refusals: dict[str, str] = {}


def _load(name: str) -> ModuleType | None:
    """Import the backend ``name`` once; remember why it refused, if it did."""
    if name in _loaded:
        return _loaded[name]
    if name in _refusals:
        return None
    try:
        mod = importlib.import_module(f"pydevis.kernels._{name}")
        reason = mod.unavailable_reason()
    except Exception as exc:  # an extension that fails to import is a refusal, not a crash
        mod, reason = None, f"{type(exc).__name__}: {exc}"
    if reason is not None or mod is None:
        _refusals[name] = reason or "not importable"
        return None
    _loaded[name] = mod
    return mod


def _env() -> str | None:
    """``PYDEVIS_BACKEND``, lower-cased, or None; a BackendError for an unknown value."""
    value = os.environ.get("PYDEVIS_BACKEND", "").strip().lower()
    if not value:
        return None
    if value not in _NAMES + _SIGNAL_NAMES:
        raise BackendError(f"PYDEVIS_BACKEND={value!r} is not one of cpp, numba, cuda, ort")
    return value


#: ``PYDEVIS_SPIN_US``: how long the C++ pool's idle workers spin (µs) before they sleep
#: (``csrc/common/parallel.h``); read once, when ``pydevis._C`` first runs a parallel loop.
SPIN_US_MAX = 1_000_000


def _check_spin_env() -> None:
    """A BackendError when ``PYDEVIS_SPIN_US`` is set to anything but a whole number of
    microseconds in [0, :data:`SPIN_US_MAX`] (the C++ side would ignore it silently)."""
    value = os.environ.get("PYDEVIS_SPIN_US")
    if value is None or value == "":
        return
    if not (value.isascii() and value.isdigit()) or int(value) > SPIN_US_MAX:
        raise BackendError(f"PYDEVIS_SPIN_US={value!r} is not a whole number of microseconds "
                           f"from 0 to {SPIN_US_MAX}")


def forced() -> str | None:
    """The kernel backend named by ``PYDEVIS_BACKEND``, or None (also for ``ort``)."""
    value = _env()
    return value if value in _NAMES else None


def signal_backend() -> str | None:
    """``"ort"`` when ``PYDEVIS_BACKEND=ort`` (the default of ``pydevis.load(backend=...)``),
    else None."""
    value = _env()
    return value if value in _SIGNAL_NAMES else None


def host_backend() -> ModuleType:
    """The backend used for numpy (host) arrays."""
    _check_spin_env()
    name = forced()
    if name is not None:
        mod = _load(name)
        if mod is None:
            raise BackendError(
                f"PYDEVIS_BACKEND={name} but that backend is unavailable: {_refusals[name]}"
            )
        return mod
    for candidate in ("cpp", "numba"):
        mod = _load(candidate)
        if mod is not None:
            return mod
    raise BackendError("no kernel backend can run: " + "; ".join(
        f"{k}: {v}" for k, v in _refusals.items()))


def backend() -> str:
    """Name of the backend that runs host-array kernels now (``cpp``, ``numba`` or ``cuda``)."""
    return host_backend().NAME


def available() -> dict[str, str | None]:
    """Every backend with ``None`` when usable, else the reason it refused."""
    out: dict[str, str | None] = {}
    for name in _NAMES:
        out[name] = None if _load(name) is not None else _refusals.get(name)
    return out


def get(name: str) -> ModuleType:
    """A named backend module, or a BackendError saying why it is unavailable."""
    mod = _load(name)
    if mod is None:
        raise BackendError(f"backend {name} is unavailable: {_refusals.get(name)}")
    return mod
