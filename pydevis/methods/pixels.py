"""The common currency of the methods: images in pixel units, RGB, (N, 3, H, W), centred on the
model's mean pixel (as the authors' Caffe code did). A model's preprocessing is an affine map
inside the differentiable path, so d/d(pixel) = (d/d(input)) / std with channels reordered, and
the papers' step sizes and decays mean the same on every model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model import BackwardPass, Model


@dataclass(frozen=True)
class PixelSpace:
    """Conversions between the centred pixel variable ``v`` and one model's input ``x``."""

    model: Model

    @property
    def center(self) -> np.ndarray:
        """The mean pixel in RGB order, (3,)."""
        s = self.model.spec
        mean = np.asarray(s.mean, np.float32)
        if s.channels == "BGR":
            return mean[::-1].copy()
        if s.channels == "L":
            return np.repeat(mean[:1], 3)
        return mean

    @property
    def lo(self) -> np.ndarray:
        """Lower bound of ``v`` per channel, so that pixel = v + center ≥ 0."""
        return -self.center.astype(np.float64)

    @property
    def hi(self) -> np.ndarray:
        return 255.0 - self.center.astype(np.float64)

    def to_input(self, v: np.ndarray) -> np.ndarray:
        pixels = (v + self.center[None, :, None, None]).transpose(0, 2, 3, 1)
        return self.model.spec.to_input(pixels)

    def to_pixels(self, v: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) centred → (N, H, W, 3) pixels in 0..255 (float)."""
        return (v + self.center[None, :, None, None]).transpose(0, 2, 3, 1)

    def from_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) pixels → centred (N, 3, H, W)."""
        p = np.asarray(pixels, np.float32)
        p = p[None] if p.ndim == 3 else p
        return np.ascontiguousarray(p.transpose(0, 3, 1, 2) - self.center[None, :, None, None])

    def grad_to_pixels(self, g: np.ndarray) -> np.ndarray:
        """Chain rule through the preprocessing: d/dx (N, C, H, W) → d/dv (N, 3, H, W)."""
        s = self.model.spec
        g = g / np.asarray(s.std, g.dtype)[None, :, None, None]
        if s.channels == "BGR":
            return np.ascontiguousarray(g[:, ::-1])
        if s.channels == "L":
            w = np.array([0.299, 0.587, 0.114], g.dtype)[None, :, None, None]
            return np.ascontiguousarray(g * w)
        return g

    def backward_pass(self, v: np.ndarray, target, mode: str) -> tuple[BackwardPass, np.ndarray]:
        """The model's signal at ``v`` and its gradient in pixel units."""
        sig = self.model.backward_pass(self.to_input(v), target, mode)
        return sig, self.grad_to_pixels(sig.grad)
