"""Seed experiment 2, class isolation: from a real photo of class c, subtract the input gradients
of the other classes (optionally add c's) until the model gives c a high probability and every
other class a low one.

One step: d = Σ_{k≠c} w_k ∂S_k/∂x − add_own·∂S_c/∂x with w_k = 1, or w_k = p_k (softmax
weighting), computed as one backward pass with the cotangent w at the scores; then
x ← clip(x − η·d/‖d‖_∞) in pixel units, so η is the largest change of any pixel per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..class_scores import softmax
from ..model import Model
from .pixels import PixelSpace


@dataclass
class Isolation:
    """The edited image, the difference map (pixels, signed) and the trajectory's end."""

    pixels: np.ndarray  # (H, W, 3) edited image, 0..255
    difference: np.ndarray  # (H, W, 3) edited − original
    target_probability: float
    max_other_probability: float
    start_probability: float
    steps: int
    status: str  # isolated | max-steps | zero-gradient


def isolate(model: Model, pixels: np.ndarray, target: int, *, steps: int = 200,
            step_size: float = 1.0, weighting: str = "softmax", add_own: bool = True,
            high: float = 0.9, low: float = 0.05) -> Isolation:
    """Edit ``pixels`` (H, W, 3) so that only class ``target`` is claimed (see module doc)."""
    if weighting not in ("softmax", "uniform"):
        raise ValueError(f"weighting must be softmax or uniform, got {weighting!r}")
    if not (0 <= steps <= 100_000 and 0 < step_size <= 255):  # NaN fails too
        raise ValueError(f"steps must be in 0..100000 and step_size in (0, 255], got {steps}, "
                         f"{step_size}")
    space = PixelSpace(model)
    v0 = space.from_pixels(pixels)
    v = v0.copy()
    start_p = float("nan")  # p(target) at the unedited image, set at t = 0
    status, t = "max-steps", 0
    for t in range(steps + 1):
        x = space.to_input(v)
        values, walk = model.pullback(x, model.scores, "gradient")
        scores = values[model.scores]
        p = softmax(scores.reshape(1, -1))[0]
        if target >= p.size or target < 0:
            raise ValueError(f"class {target} out of range: the model has {p.size}")
        if t == 0:
            start_p = float(p[target])
        others = np.delete(p, target)
        if p[target] >= high and others.max() <= low:
            status = "isolated"
            break
        if t == steps:
            break
        w = p.copy() if weighting == "softmax" else np.ones_like(p)
        w[target] = -1.0 if add_own else 0.0
        d = space.grad_to_pixels(walk(w.reshape(scores.shape).astype(scores.dtype)))
        peak = float(np.abs(d).max())
        if peak == 0:
            status = "zero-gradient"
            break
        v = np.clip(v - step_size * d / peak, space.lo[None, :, None, None],
                    space.hi[None, :, None, None]).astype(np.float32)
    out = space.to_pixels(v)[0]
    return Isolation(out, out - space.to_pixels(v0)[0], float(p[target]),
                     float(np.delete(p, target).max()), start_p, t, status)
