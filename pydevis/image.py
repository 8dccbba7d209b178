"""Reading and writing images in pixel space (RGB, float 0..255)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .atomic import atomic_open
from .errors import ImageError

Image.MAX_IMAGE_PIXELS = 64_000_000  # beyond this PIL raises DecompressionBombError


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """An image file as an 8-bit RGB PIL image: EXIF orientation applied, alpha composited on
    white, 16-bit scaled to 8-bit, grayscale/CMYK/palette converted."""
    p = Path(path)
    try:
        # Between MAX_IMAGE_PIXELS and twice that PIL only warns, then decodes the whole image:
        # make that an error too, before any pixel is decoded.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(p)
        with opened as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                top = 65535.0 if arr.max() > 255 else 255.0
                im = Image.fromarray(np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8))
            if im.mode in ("RGBA", "LA", "P", "PA"):
                im = im.convert("RGBA")
                im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im)
            return im.convert("RGB")
    except FileNotFoundError:
        raise ImageError(f"{p}: no such file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{p}: image too large (over {Image.MAX_IMAGE_PIXELS} pixels)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{p}: cannot read image ({type(exc).__name__}: {exc})") from None


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image file as (H, W, 3) float32 RGB in 0..255 (see :func:`open_rgb`)."""
    return np.asarray(open_rgb(path), dtype=np.float32)


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
    """Read an image, resize (bilinear, 8-bit) its shorter side to size/crop_fraction and
    centre-crop to ``size`` = (H, W): the usual ImageNet evaluation transform."""
    im = open_rgb(path)
    h, w = size
    scale = max(h, w) / crop_fraction / min(im.height, im.width)
    nh, nw = max(h, round(im.height * scale)), max(w, round(im.width * scale))
    im = im.resize((nw, nh), Image.Resampling.BILINEAR)
    top, left = (nh - h) // 2, (nw - w) // 2
    return np.asarray(im, dtype=np.float32)[top:top + h, left:left + w]


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def save_png(pixels: np.ndarray, path: str | os.PathLike) -> Path:
    """Write (H, W, 3) pixels as an 8-bit PNG atomically (temp file, then rename)."""
    with atomic_open(path, "wb") as f:
        Image.fromarray(to_uint8(pixels), mode="RGB").save(f, format="PNG")
    return Path(path)
