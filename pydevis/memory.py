"""Keep freed memory in the process: the C allocator's policy while pydevis runs (glibc only).

An ascent step allocates the same large arrays every time: ONNX Runtime's outputs (the tensors
the backward needs) and the backward's gradients, tens to hundreds of MB at batch 8 on a 224²
net. glibc serves every block above its mmap threshold (at most 32 MiB) with a fresh ``mmap``
and gives it back with ``munmap`` when freed, so each step faults all of that memory in again,
and smaller blocks are trimmed from the heap top as soon as they are freed. On a virtual machine
whose freed pages go back to the host (free page reporting, e.g. Firecracker) a fault is a host
round trip: measured here (2-core Xeon VM, VGG-16 batch 8, 2 threads, 8 steps) the step swung
1.56-3.7 s with 0.07-2.1 s of system time per step; torch's own step, in the same state, paid
0.8-1.4 s of system time per step. With blocks kept (no mmap, no trim): pydevis 1.56-1.57 s in 6
of 7 steps after the first (one 1.83 s, 16 K faults, as the heap grew), torch 1.52-1.55 s in 6 of
7 (one 2.1 s), and no page faults from then on.

:func:`keep_freed_memory` sets that policy with ``mallopt`` (``M_MMAP_MAX = 0``,
``M_TRIM_THRESHOLD`` = 2 GiB - 1): freed blocks stay in the process for its next allocations,
like a caching allocator. The cost: the process keeps its peak memory until it exits (what
``pydevis`` runs hold at their peak, nothing more). It is process-wide, so it is set once, by
:func:`pydevis.load`, and ``PYDEVIS_KEEP_MEMORY=0`` leaves the allocator as it was. Elsewhere
than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import threading

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_MAX = -4
_TRIM = 2**31 - 1  # mallopt takes an int

_lock = threading.Lock()
_state: dict[str, bool] = {}


def _mallopt():
    """glibc's mallopt, or None (musl, macOS, Windows: no such policy)."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: musl's mallopt is a no-op)
        fn = libc.mallopt
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return fn


def keep_freed_memory() -> bool:
    """Set the keep-freed-memory policy once per process; True when it is in force."""
    with _lock:
        if "kept" not in _state:
            _state["kept"] = _apply()
        return _state["kept"]


def _apply() -> bool:
    if os.environ.get("PYDEVIS_KEEP_MEMORY", "1").strip() == "0":
        return False
    fn = _mallopt()
    if fn is None:
        return False
    return bool(fn(M_MMAP_MAX, 0)) and bool(fn(M_TRIM_THRESHOLD, _TRIM))
