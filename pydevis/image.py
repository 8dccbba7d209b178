"""Reading and writing images in pixel space (RGB, float 0..255)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

Image.MAX_IMAGE_PIXELS = 64_000_000  # beyond this PIL raises DecompressionBombError


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image file as (H, W, 3) float32 RGB in 0..255, EXIF orientation applied."""
    p = Path(path)
    try:
        with Image.open(p) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                top = 65535.0 if arr.max() > 255 else 255.0
                return np.repeat((arr / top * 255.0).astype(np.float32)[..., None], 3, axis=2)
            if im.mode in ("RGBA", "LA", "P", "PA"):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            return np.asarray(im.convert("RGB"), dtype=np.float32)
    except FileNotFoundError:
        raise ImageError(f"{p}: no such file") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{p}: image too large (over {Image.MAX_IMAGE_PIXELS} pixels)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{p}: cannot read image ({type(exc).__name__}: {exc})") from None


def resize_pixels(p: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (N, H, W, 3) float pixels to ``size`` = (H, W)."""
    h, w = size
    out = np.empty((p.shape[0], h, w, 3), np.float32)
    for i in range(p.shape[0]):
        for c in range(3):
            ch = Image.fromarray(np.ascontiguousarray(p[i, :, :, c], dtype=np.float32), mode="F")
            out[i, :, :, c] = np.asarray(ch.resize((w, h), Image.Resampling.BILINEAR))
    return out


def load_for(path: str | os.PathLike, size: tuple[int, int], crop_fraction: float = 0.875
             ) -> np.ndarray:
    """Read an image, resize its shorter side to size/crop_fraction, centre-crop to ``size``."""
    p = read_rgb(path)
    h, w = size
    scale = max(h, w) / crop_fraction / min(p.shape[:2])
    nh, nw = max(h, round(p.shape[0] * scale)), max(w, round(p.shape[1] * scale))
    r = resize_pixels(p[None], (nh, nw))[0]
    top, left = (nh - h) // 2, (nw - w) // 2
    return r[top:top + h, left:left + w]


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def save_png(pixels: np.ndarray, path: str | os.PathLike) -> Path:
    """Write (H, W, 3) pixels as an 8-bit PNG atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(to_uint8(pixels), mode="RGB").save(f, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
