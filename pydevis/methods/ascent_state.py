"""Where the image of a batched ascent lives between its steps, and who computes its signal.

:func:`pydevis.methods.ascent.ascend` runs one loop for every backend over an *image state*:

- :class:`HostImage` (every backend, and the only one with priors): the image is a numpy array,
  the signal comes from :meth:`PixelSpace.signal` (the model's backward, pydevis's or the exported
  graph's) and the update runs in :func:`pydevis.kernels.ascent_step`.
- ``BoundImage`` (``pydevis.export.ort_ascent``; the ``ort`` backend): the image and the
  gradient stay bound to the exported backward graph's ONNX Runtime session by IOBinding, on the
  session's device (the CUDA provider: device memory, updated by the ``pydevis._cuda`` kernels;
  the CPU provider: numpy buffers the session reads and writes in place, updated by the host
  kernels), and only per-row numbers cross to the host each step.

A state offers: ``signal(targets, mode, dy, dx) -> BackwardPass`` (objective and target value on the
host, the gradient kept inside), ``grad_sumsq()`` (per row, float64), ``add_prior_grads(priors)``,
``step(eta, decay, blur_sigma, norm_pct, contrib_pct, active)`` (the active rows only),
``keep_best(mask)``, ``image()`` / ``set_image(v)`` (host copies: the start and the restarts of
dead rows only), ``best_pixels()``.
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..model import BackwardPass
from . import regularizers as R
from .pixels import PixelSpace


class HostImage:
    """The image as a numpy array (N, 3, H, W); the signal from ``space.signal``."""

    def __init__(self, space: PixelSpace, v: np.ndarray, lo: np.ndarray, hi: np.ndarray):
        self.space, self.lo, self.hi = space, lo, hi
        self.v = v
        self.best = v.copy()
        self.g = np.zeros_like(v)

    def backward_pass(self, targets: list, mode: str, dy: int, dx: int) -> BackwardPass:
        """The signal at v shifted by the jitter (dy, dx); its gradient is kept shifted back."""
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is checked by the caller
            sig, g = self.space.backward_pass(R.roll(self.v, dy, dx), targets, mode)
        self.g = R.roll(g, -dy, -dx)
        return sig

    def grad_sumsq(self) -> np.ndarray:
        n = self.g.shape[0]
        return (self.g.astype(np.float64) ** 2).reshape(n, -1).sum(axis=1)

    def add_prior_grads(self, priors: list) -> None:
        for prior in priors:
            self.g = self.g - prior.grad(self.v)

    def step(self, eta: np.ndarray, decay: float, blur_sigma: float, norm_pct: float,
             contrib_pct: float, active: np.ndarray) -> None:
        rows = active[:, None, None, None]
        g = np.where(rows, self.g, 0).astype(np.float32)
        v_new = kernels.ascent_step(self.v, g, eta, decay, blur_sigma, norm_pct, contrib_pct,
                                    self.lo, self.hi)
        self.v = np.where(rows, v_new, self.v).astype(np.float32)

    def keep_best(self, mask: np.ndarray) -> None:
        self.best[mask] = self.v[mask]

    def image(self) -> np.ndarray:
        return self.v.copy()

    def set_image(self, v: np.ndarray) -> None:
        self.v = v

    def best_pixels(self) -> np.ndarray:
        return self.space.to_pixels(self.best)
