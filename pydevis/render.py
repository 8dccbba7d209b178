"""Turning signals and images into pictures: contrast normalisation, grids, labelled figures
(pillow)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .image import to_uint8

#: |signal| percentile that maps to full contrast (see :func:`signal_to_pixels`)
CLIP_PERCENTILE = 99.5
WHITE = (255, 255, 255)


def signal_to_pixels(signal: np.ndarray, box: tuple[int, int, int, int] | None = None,
                     percentile: float = CLIP_PERCENTILE) -> np.ndarray:
    """A signed signal (H, W, 3) as pixels of the same size: grey 128 is zero, and ±127 is the
    ``percentile``-th percentile of |signal| measured inside ``box`` (y0, y1, x0, x1,
    end-exclusive; the whole signal if None); values beyond it are clipped.

    Robust contrast: a deconvnet or guided projection is dominated by a few pixels (on
    SqueezeNet 1.1 ``fire9/concat_1:10`` the 99th percentile of |signal| is a tenth of its
    maximum), so scaling by the maximum renders everything else flat grey. Clipping the top
    0.5 % (a few pixels of a small receptive field, ~250 of a 224² one) keeps the structure
    visible and saturates only the outliers. The box matters: a projection is zero outside its
    receptive field, and those zeros would drag the percentile down. If the percentile is 0
    (a signal mostly exactly zero), the largest |value| is used; an all-zero signal is grey.
    """
    s = np.asarray(signal, np.float64)
    scale = robust_scale(s, box, percentile)
    if not scale > 0:
        return np.full(s.shape, 128.0)
    return 128.0 + 127.0 * np.clip(s / scale, -1.0, 1.0)


def robust_scale(signal: np.ndarray, box: tuple[int, int, int, int] | None = None,
                 percentile: float = CLIP_PERCENTILE) -> float:
    """The |signal| that :func:`signal_to_pixels` maps to full contrast (0: all zero)."""
    s = np.asarray(signal, np.float64)
    mag = np.abs(s if box is None else s[box[0]:box[1], box[2]:box[3]])
    if not mag.size:
        return 0.0
    scale = float(np.percentile(mag, percentile))
    return scale if scale > 0 else float(mag.max())


def fit(pixels: np.ndarray, cell: int, background: tuple[int, int, int] = (96, 96, 96)
        ) -> np.ndarray:
    """Resize (H, W, 3) pixels into a ``cell``×``cell`` square (aspect kept, ``background``
    padding); nearest-neighbour when enlarged 2× or more (pixels stay visible), else bilinear."""
    im = Image.fromarray(to_uint8(pixels), mode="RGB")
    scale = cell / max(im.width, im.height)
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                   Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.BILINEAR)
    out = Image.new("RGB", (cell, cell), background)
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


def font(size: int = 14) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at ``size`` px (Pillow ≥ 10.1 with FreeType), else its fixed
    bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # old Pillow, or built without FreeType
        return ImageFont.load_default()


def exact_columns(n: int, most: int | None = None) -> int:
    """Columns for ``n`` equal cells that fill every row: the smallest divisor of ``n`` not
    below √n (9 → 3×3, 8 → 2×4, 6 → 2×3, 5 → 1×5), or with ``most``, the largest divisor
    ≤ ``most`` (5 blocks, most 4 → one column)."""
    if n < 1:
        raise ValueError("no cells")
    if most is not None:
        return max(d for d in range(1, min(n, most) + 1) if n % d == 0)
    return min(d for d in range(1, n + 1) if n % d == 0 and d * d >= n)


def tile(cells: Sequence[np.ndarray], ncols: int, gap: int = 4,
         background: tuple[int, int, int] = WHITE) -> np.ndarray:
    """Cells of possibly different sizes in rows of ``ncols``, top-left aligned, ``gap`` apart."""
    if not cells:
        raise ValueError("tile of no images")
    rows = [cells[i:i + ncols] for i in range(0, len(cells), ncols)]
    widths = [max(r[q].shape[1] for r in rows if q < len(r)) for q in range(ncols)]
    heights = [max(c.shape[0] for c in r) for r in rows]
    out = np.empty((sum(heights) + gap * (len(rows) - 1), sum(widths) + gap * (ncols - 1), 3),
                   np.float32)
    out[:] = background
    y = 0
    for r, h in zip(rows, heights, strict=True):
        x = 0
        for q, c in enumerate(r):
            out[y:y + c.shape[0], x:x + c.shape[1]] = c
            x += widths[q] + gap
        y += h + gap
    return out


def label(pixels: np.ndarray, text: str, size: int = 14, below: bool = False,
          background: tuple[int, int, int] = WHITE) -> np.ndarray:
    """``pixels`` with one line of ``text`` in a strip above (or ``below``) it, cut to fit the
    width (an ellipsis marks the cut)."""
    f = font(size)
    w = pixels.shape[1]
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    shown = text
    while shown and draw.textlength(shown, font=f) > w - 4:
        shown = shown[:-2] + "…" if len(shown) > 2 else ""
    strip = Image.new("RGB", (w, size + 6), background)
    ImageDraw.Draw(strip).text((2, 2), shown, fill=(0, 0, 0), font=f)
    s = np.asarray(strip, np.float32)
    return np.concatenate([pixels, s] if below else [s, pixels], axis=0)


def projection_figure(signal: np.ndarray, pixels: np.ndarray, box: tuple[int, int, int, int],
                      title: str = "", cell: int = 224) -> np.ndarray:
    """Zeiler & Fergus' view of one projection: the signal inside the receptive field ``box``
    (robust contrast, :func:`signal_to_pixels`) beside the input pixels under the same box, each
    enlarged to ``cell`` px (aspect kept, white padding), with ``title`` above."""
    y0, y1, x0, x1 = box
    proj = signal_to_pixels(signal, box)[y0:y1, x0:x1]
    cells = [label(fit(proj, cell, WHITE), "projection", below=True),
             label(fit(pixels[y0:y1, x0:x1], cell, WHITE), "image patch", below=True)]
    fig = tile(cells, 2, gap=8)
    return _pad(label(fig, title, size=16) if title else fig, 6)


def top9_block(projections: Sequence[np.ndarray], patches: Sequence[np.ndarray], title: str,
               proj_captions: Sequence[str], patch_captions: Sequence[str], cell: int = 96
               ) -> np.ndarray:
    """One channel of Zeiler & Fergus fig. 2: its projections (signals cropped to their boxes,
    each with its own robust contrast) in a grid beside the grid of the image patches under the
    same boxes, in the same order; a full grid for any count (9 → 3×3, 4 → 2×2, 5 → 1×5)."""
    cols = exact_columns(len(projections))
    proj = [label(fit(signal_to_pixels(p), cell, WHITE), t, size=12, below=True)
            for p, t in zip(projections, proj_captions, strict=True)]
    patch = [label(fit(p, cell, WHITE), t, size=12, below=True)
             for p, t in zip(patches, patch_captions, strict=True)]
    both = tile([tile(proj, cols, gap=3), tile(patch, cols, gap=3)], 2, gap=12)
    return label(both, title, size=16)


def top9_figure(blocks: Sequence[np.ndarray], most_columns: int = 4) -> np.ndarray:
    """Channel blocks (equal sizes) in full rows: as many columns (≤ ``most_columns``) as
    divide their number, so no position is left empty (5 channels stack in one column)."""
    fig = tile(blocks, exact_columns(len(blocks), most_columns), gap=24)
    return _pad(fig, 8)


def _pad(pixels: np.ndarray, m: int) -> np.ndarray:
    return np.pad(pixels, ((m, m), (m, m), (0, 0)), constant_values=255.0)
