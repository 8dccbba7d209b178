"""Transformation robustness of the ``fourier`` method (Olah et al. 2017, Lucid's
``standard_transforms``): padding, random jitter, random scale and small rotation, each a linear
map of (N, C, H, W) images with its adjoint, so the gradient of the objective goes back through
the transforms (``RandomTransform.adjoint``).

The scale and rotation are one bilinear resample, written as an explicit sparse map: each output
pixel gathers four input pixels with weights (``resample``); its adjoint scatter-adds the output
gradient back with the same weights (``resample_adjoint``). Pixels sampled outside the input read
zero (the mean pixel in the centred pixel space).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _resample


def pad(x: np.ndarray, p: int) -> np.ndarray:
    """Zero padding of ``p`` pixels on each side."""
    return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))


def pad_adjoint(y: np.ndarray, p: int) -> np.ndarray:
    return np.ascontiguousarray(y[..., p:y.shape[-2] - p, p:y.shape[-1] - p])


def crop(x: np.ndarray, oy: int, ox: int, h: int, w: int) -> np.ndarray:
    """The (h, w) window at (oy, ox): an integer jitter."""
    return np.ascontiguousarray(x[..., oy:oy + h, ox:ox + w])


def crop_adjoint(y: np.ndarray, oy: int, ox: int, in_hw: tuple[int, int]) -> np.ndarray:
    out = np.zeros(y.shape[:-2] + tuple(in_hw), y.dtype)
    out[..., oy:oy + y.shape[-2], ox:ox + y.shape[-1]] = y
    return out


@dataclass(frozen=True)
class Taps:
    """A bilinear resample as a sparse map: output pixel k = Σ_j weight[j, k] · input[index[j, k]]
    (j the four corners; flat indices into the input's H·W)."""

    index: np.ndarray  # (4, Hout*Wout) int64
    weight: np.ndarray  # (4, Hout*Wout) float64, 0 for corners outside the input
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]


def affine_taps(in_hw: tuple[int, int], out_hw: tuple[int, int], scale: float = 1.0,
                angle_deg: float = 0.0) -> Taps:
    """Scale by ``scale`` (> 1 enlarges the content) and rotate by ``angle_deg`` about the
    centres, the output centre sampling the input centre."""
    hi, wi = in_hw
    ho, wo = out_hw
    a = np.deg2rad(angle_deg)
    yy, xx = np.meshgrid(np.arange(ho) - (ho - 1) / 2, np.arange(wo) - (wo - 1) / 2,
                         indexing="ij")
    c, s = np.cos(a), np.sin(a)
    sy = (c * yy - s * xx) / scale + (hi - 1) / 2
    sx = (s * yy + c * xx) / scale + (wi - 1) / 2
    y0, x0 = np.floor(sy).astype(np.int64), np.floor(sx).astype(np.int64)
    fy, fx = sy - y0, sx - x0
    index, weight = [], []
    for dy, dx, wgt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                        (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        y, x = y0 + dy, x0 + dx
        inside = (y >= 0) & (y < hi) & (x >= 0) & (x < wi)
        index.append((np.clip(y, 0, hi - 1) * wi + np.clip(x, 0, wi - 1)).ravel())
        weight.append(np.where(inside, wgt, 0.0).ravel())
    return Taps(np.stack(index), np.stack(weight), (hi, wi), (ho, wo))


def resample(x: np.ndarray, taps: Taps) -> np.ndarray:
    """Gather: (N, C, Hin, Win) → (N, C, Hout, Wout) (numba, ``_resample.py``; numpy without
    it, :func:`resample_reference`)."""
    if not _resample.AVAILABLE:
        return resample_reference(x, taps)
    flat = x.reshape(-1, taps.in_hw[0] * taps.in_hw[1])
    out = _resample.gather(flat, taps.index, taps.weight)
    return out.reshape(x.shape[:-2] + tuple(taps.out_hw)).astype(x.dtype, copy=False)


def resample_adjoint(y: np.ndarray, taps: Taps) -> np.ndarray:
    """The matching scatter-add: (N, C, Hout, Wout) → (N, C, Hin, Win)."""
    if not _resample.AVAILABLE:
        return resample_adjoint_reference(y, taps)
    flat = y.reshape(-1, taps.out_hw[0] * taps.out_hw[1])
    out = _resample.scatter(flat, taps.index, taps.weight, taps.in_hw[0] * taps.in_hw[1])
    return out.reshape(y.shape[:-2] + tuple(taps.in_hw)).astype(y.dtype, copy=False)


def resample_reference(x: np.ndarray, taps: Taps) -> np.ndarray:
    """:func:`resample` in numpy (fancy-index gather)."""
    lead = x.shape[:-2]
    flat = x.reshape(-1, taps.in_hw[0] * taps.in_hw[1])
    out = sum(flat[:, taps.index[j]] * taps.weight[j].astype(x.dtype) for j in range(4))
    return out.reshape(lead + tuple(taps.out_hw))


def resample_adjoint_reference(y: np.ndarray, taps: Taps) -> np.ndarray:
    """:func:`resample_adjoint` in numpy (``np.bincount`` scatter-add)."""
    lead = y.shape[:-2]
    flat = y.reshape(-1, taps.out_hw[0] * taps.out_hw[1]).astype(np.float64)
    rows, size = flat.shape[0], taps.in_hw[0] * taps.in_hw[1]
    base = (np.arange(rows) * size)[:, None]
    idx = np.concatenate([(base + taps.index[j][None]).ravel() for j in range(4)])
    wts = np.concatenate([(flat * taps.weight[j][None]).ravel() for j in range(4)])
    out = np.bincount(idx, weights=wts, minlength=rows * size)
    return out.reshape(lead + tuple(taps.in_hw)).astype(y.dtype)


@dataclass(frozen=True)
class RandomTransform:
    """One draw of Lucid's transforms, for images of (H, W): pad ``pad`` → jitter crop of
    (H + 2·pad − jitter, W + 2·pad − jitter) at a random offset in [0, jitter]² → scale and
    rotate (bilinear) back to (H, W) about the centre. ``__call__`` is the map, ``adjoint`` its
    transpose."""

    hw: tuple[int, int]
    pad: int
    jitter: int
    oy: int
    ox: int
    taps: Taps

    @classmethod
    def draw(cls, rng: np.random.Generator, hw: tuple[int, int], pad: int, jitter: int,
             scale_range: float, angle_max: float) -> RandomTransform:
        jitter = min(jitter, 2 * pad)
        oy, ox = (int(v) for v in rng.integers(0, jitter + 1, 2))
        # Lucid: scales 1 + (i - 5)/50, i = 0..10 (0.9..1.1) and angles −10..10 degrees
        scale = 1.0 + float(rng.uniform(-scale_range, scale_range))
        angle = float(rng.uniform(-angle_max, angle_max))
        mid = (hw[0] + 2 * pad - jitter, hw[1] + 2 * pad - jitter)
        hw = (hw[0], hw[1])
        return cls(hw, pad, jitter, oy, ox, affine_taps(mid, hw, scale, angle))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        h, w = self.taps.in_hw
        return resample(crop(pad(x, self.pad), self.oy, self.ox, h, w), self.taps)

    def adjoint(self, g: np.ndarray) -> np.ndarray:
        big = (self.hw[0] + 2 * self.pad, self.hw[1] + 2 * self.pad)
        return pad_adjoint(crop_adjoint(resample_adjoint(g, self.taps), self.oy, self.ox, big),
                           self.pad)
