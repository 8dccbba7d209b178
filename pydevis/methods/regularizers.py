"""Composable pieces of the ascent: the regularizer r(x) of Yosinski et al. (2015), applied after
each step, and the image priors of Mahendran & Vedaldi (2015), whose gradients join the signal.

Each r-piece is a small callable ``piece(state) -> v`` reading the state of the current iteration;
``compose`` chains them in order. Each prior is ``prior.grad(v) -> dR/dv``. The L2 decay is fused
into the step itself (``kernels.ascent_update``), the first operation of r in the authors' order.
The ascent runs the step and r = compose([blur, clip_norm, clip_contribution, clamp]) as one
kernel, ``kernels.ascent_step`` (the same result bit for bit); the pieces state it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .. import kernels


@dataclass
class State:
    """One iteration: the image after the step ``v``, the gradient of the step ``g``, the
    iteration ``t`` (0-based)."""

    v: np.ndarray
    g: np.ndarray
    t: int


Piece = Callable[[State], np.ndarray]


def blur_sigma_at(sigma: float, every: int, t: int) -> float:
    """The blur of iteration t: sigma on every ``every``-th iteration (t % every == 0), else 0
    (none)."""
    return sigma if sigma > 0 and every > 0 and t % every == 0 else 0.0


def blur(sigma: float, every: int) -> Piece:
    """Gaussian blur of width sigma on every ``every``-th iteration (t % every == 0)."""
    def piece(s: State) -> np.ndarray:
        at = blur_sigma_at(sigma, every, s.t)
        return kernels.gaussian_blur(s.v, at) if at > 0 else s.v
    return piece


def clip_norm(pct: float) -> Piece:
    """Zero the pixels whose norm over channels is below the pct-th percentile."""
    return lambda s: kernels.clip_small_norm(s.v, pct) if pct > 0 else s.v


def clip_contribution(pct: float) -> Piece:
    """Zero the pixels whose contribution |Σ_c g·(−x)| is below the pct-th percentile."""
    return lambda s: kernels.clip_small_contribution(s.v, s.g, pct) if pct > 0 else s.v


def clamp(lo: np.ndarray, hi: np.ndarray) -> Piece:
    """Keep every channel within its pixel range."""
    return lambda s: kernels.clamp_channels(s.v, lo, hi)


def compose(pieces: Sequence[Piece]) -> Piece:
    """r = pieces[-1] ∘ … ∘ pieces[0]."""
    def r(s: State) -> np.ndarray:
        for piece in pieces:
            s.v = piece(s)
        return s.v
    return r


@dataclass(frozen=True)
class TotalVariation:
    """R(x) = weight · Σ ((x[i,j+1] − x[i,j])² + (x[i+1,j] − x[i,j])²)^(beta/2)."""

    weight: float
    beta: float = 2.0

    def grad(self, v: np.ndarray) -> np.ndarray:
        dx = np.zeros_like(v)
        dy = np.zeros_like(v)
        dx[..., :, :-1] = v[..., :, 1:] - v[..., :, :-1]
        dy[..., :-1, :] = v[..., 1:, :] - v[..., :-1, :]
        mag = dx * dx + dy * dy
        if self.beta != 2:
            k = self.beta * (mag + 1e-8) ** (self.beta / 2 - 1)
        else:
            k = 2 * np.ones_like(v)
        a, b = k * dx, k * dy
        g = -(a + b)
        g[..., :, 1:] += a[..., :, :-1]
        g[..., 1:, :] += b[..., :-1, :]
        return self.weight * g


@dataclass(frozen=True)
class AlphaNorm:
    """R(x) = weight · Σ |x|^alpha (keeps pixels in a natural range; alpha = 6 in the paper)."""

    weight: float
    alpha: float = 6.0

    def grad(self, v: np.ndarray) -> np.ndarray:
        return self.weight * self.alpha * np.sign(v) * np.abs(v) ** (self.alpha - 1)


def jitter_offsets(rng: np.random.Generator, amount: int) -> tuple[int, int]:
    if amount <= 0:
        return 0, 0
    dy, dx = rng.integers(-amount, amount + 1, size=2)
    return int(dy), int(dx)


def roll(v: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Translate the images by (dy, dx) pixels, wrapping around (the jitter of the prior)."""
    return np.roll(v, (dy, dx), axis=(2, 3)) if dy or dx else v
