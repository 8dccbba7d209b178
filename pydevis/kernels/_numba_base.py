"""What every numba kernel module shares: ``njit``/``prange`` (or stand-ins when numba cannot be
imported, so that pydevis still imports and the dispatcher can say why the backend refused), the
jit options, the serial-or-parallel rule (see ``_numba.py``'s doc) and the wrappers' argument
checks."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

# numba's own annotations of njit take no options dict; the kernels are typed by numba when it
# compiles them, not here, so njit and prange are plain Any to the type checker.
njit: Any
prange: Any
try:  # numba is a hard dependency, but an environment without it must still import pydevis
    _nb: Any = importlib.import_module("numba")
    njit, prange = _nb.njit, _nb.prange
    _IMPORT_ERROR: str | None = None
except Exception as exc:  # pragma: no cover - exercised only without numba
    _IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

    def _no_jit(*_args: Any, **_kwargs: Any) -> Any:
        def wrap(fn):
            return fn

        return wrap

    njit, prange = _no_jit, range


_JIT: dict[str, Any] = dict(cache=True, parallel=True, fastmath=False, nogil=True)
_SER: dict[str, Any] = dict(cache=True, fastmath=False, nogil=True)
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


def _threads() -> int:
    """The size of numba's thread team (1 without numba)."""
    try:
        import numba

        return int(numba.get_num_threads())
    except Exception:  # pragma: no cover
        return 1
