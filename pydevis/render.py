"""Turning signals and images into pictures: contrast normalisation and grids (pillow)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .image import to_uint8


def signal_to_pixels(signal: np.ndarray, box: tuple[int, int, int, int] | None = None
                     ) -> np.ndarray:
    """A signed signal (H, W, 3) as pixels: grey 128 is zero, ±127 the largest magnitude."""
    s = np.asarray(signal, np.float64)
    if box is not None:
        s = s[box[0]:box[1], box[2]:box[3]]
    peak = np.abs(s).max()
    return 128.0 + 127.0 * (s / peak if peak > 0 else s)


def fit(pixels: np.ndarray, cell: int) -> np.ndarray:
    """Resize (H, W, 3) pixels into a ``cell``×``cell`` square (aspect kept, grey padding)."""
    im = Image.fromarray(to_uint8(pixels), mode="RGB")
    scale = cell / max(im.width, im.height)
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                   Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.BILINEAR)
    out = Image.new("RGB", (cell, cell), (96, 96, 96))
    out.paste(im, ((cell - im.width) // 2, (cell - im.height) // 2))
    return np.asarray(out, np.float32)


def grid(cells: Sequence[np.ndarray], ncols: int, pad: int = 2,
         captions: Sequence[str] | None = None) -> np.ndarray:
    """Cells of equal size (h, w, 3) in a grid, row-major, on a white background."""
    if not cells:
        raise ValueError("grid of no images")
    h, w = cells[0].shape[:2]
    cap = 12 if captions else 0
    nrows = -(-len(cells) // ncols)
    out = np.full((nrows * (h + pad + cap) + pad, ncols * (w + pad) + pad, 3), 255.0, np.float32)
    for k, c in enumerate(cells):
        r, q = divmod(k, ncols)
        y, x = pad + r * (h + pad + cap), pad + q * (w + pad)
        out[y:y + h, x:x + w] = c
    if captions:
        im = Image.fromarray(to_uint8(out), mode="RGB")
        draw = ImageDraw.Draw(im)
        for k, text in enumerate(captions):
            r, q = divmod(k, ncols)
            draw.text((pad + q * (w + pad), pad + r * (h + pad + cap) + h), text[: w // 6],
                      fill=(0, 0, 0))
        out = np.asarray(im, np.float32)
    return out
