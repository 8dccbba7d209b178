"""Small, natural perturbations of a saved 8-bit image, for the robustness scores.

A picture that *depicts* a class keeps most of its probability when it is re-encoded, blurred a
little, halved in resolution or cropped a little; an adversarial or "fooling" picture (Nguyen et
al. 2015) whose evidence lives in pixel-level patterns collapses under them. Each perturbation is
deterministic (pillow, fixed parameters) and returns an image of the same size:

- ``jpeg``: JPEG at quality 75 (4:2:0 chroma subsampling, pillow's default), decoded;
- ``blur``: Gaussian blur of radius 1 (pillow's ``GaussianBlur(1)``, σ = 1 pixel);
- ``half``: bilinear resize to half the width and height (rounded down, at least 1), then back;
- ``crop``: the centred box of 90 % of the width and height, resized back (bilinear).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

from ..image import to_uint8

PERTURBATIONS = ("jpeg", "blur", "half", "crop")


def _jpeg(im: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=75)
    buf.seek(0)
    with Image.open(buf) as back:
        return back.convert("RGB")


def _half(im: Image.Image) -> Image.Image:
    w, h = im.size
    small = im.resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.BILINEAR)
    return small.resize((w, h), Image.Resampling.BILINEAR)


def _crop(im: Image.Image) -> Image.Image:
    w, h = im.size
    cw, ch = max(1, round(0.9 * w)), max(1, round(0.9 * h))
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    return im.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.Resampling.BILINEAR)


_OPS = {"jpeg": _jpeg, "blur": lambda im: im.filter(ImageFilter.GaussianBlur(1)),
        "half": _half, "crop": _crop}


def perturb(pixels: np.ndarray, kind: str) -> np.ndarray:
    """``pixels`` (H, W, 3), rounded to 8 bits as saved, after the perturbation ``kind``;
    float32 (H, W, 3) in 0..255."""
    if kind not in _OPS:
        raise ValueError(f"unknown perturbation {kind!r}; one of {', '.join(PERTURBATIONS)}")
    im = Image.fromarray(to_uint8(pixels), mode="RGB")
    return np.asarray(_OPS[kind](im), np.float32)


def perturb_all(pixels: np.ndarray) -> dict[str, np.ndarray]:
    """Every perturbation of a batch (N, H, W, 3): kind → (N, H, W, 3)."""
    return {k: np.stack([perturb(p, k) for p in pixels]) for k in PERTURBATIONS}
