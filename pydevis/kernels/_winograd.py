"""The C++ backend's Winograd weights, transformed once per constant weight array.

``conv2d_backward_data`` of the C++ backend runs 3×3 stride-1 float32 convs by Winograd's
F(2×2, 3×3) or F(4×4, 3×3) (``csrc/cpu/winograd.cpp``), whose weights must first be transformed:
16 or 36 planes of M × C/group floats, up to 4× the weights. Transformed on every call, that
costs as much as a fifth of the layer at batch 1 (512 -> 512 channels at 28²: ~0.9 ms of the
F(2×2) transform, writing 16 MiB, in a ~8 ms layer on 2 threads). For weights the caller
declares constant (a model's initializers), :func:`prepared` transforms them once per variant
and keeps the result as long as the weight array lives (keyed by the array object, dropped by a
weak reference when it is freed). The kernel's choice of path stays the same: letting
Winograd serve smaller convs once the transform was free (VGG's 14² layers, F(4×4) on its 28²
ones at batch 1) made a VGG-16 step slower, the transformed weights (up to 4× the weights)
coming from memory every step.

Memory: VGG-16 holds 164 MB of transformed weights after a step (its 3×3 weights: 59 MB); the
price of not transforming them on every step.
"""

from __future__ import annotations

import weakref

import numpy as np

# id(weight) -> (weak reference to it, {(group, variant): transformed weights})
_CACHE: dict[int, tuple[weakref.ref, dict[tuple[int, int], np.ndarray]]] = {}


def prepared(mod, g: np.ndarray, w: np.ndarray, args: tuple, group: int) -> np.ndarray | None:
    """``winograd_u`` for ``mod.conv2d_backward_data(g, w, *args, group, winograd_u)``, or None
    when the backend has no Winograd path or this conv does not take it."""
    if w.dtype != np.float32 or g.dtype != np.float32 or not hasattr(mod, "winograd_variant"):
        return None
    variant = mod.winograd_variant(g, w, *args, group)
    if not variant:
        return None
    key = id(w)
    entry = _CACHE.get(key)
    if entry is None or entry[0]() is not w:
        entry = (weakref.ref(w, _dropper(key)), {})
        _CACHE[key] = entry
    u = entry[1].get((group, variant))
    if u is None:
        u = entry[1][(group, variant)] = mod.winograd_weights(w, group, variant)
    return u


def _dropper(key: int):
    def drop(_ref: weakref.ref) -> None:
        _CACHE.pop(key, None)
    return drop


def cached_bytes() -> int:
    """Bytes of transformed weights held now (for tests and memory figures)."""
    return sum(u.nbytes for _, us in _CACHE.values() for u in us.values())
