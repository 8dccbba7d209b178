"""Reading and writing images in pixel space (RGB, float 0..255)."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .atomic import atomic_open
from .errors import ImageError

MAX_IMAGE_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # beyond this PIL raises DecompressionBombError
#: the geometry every decoded image must have, checked from the header before decoding: at most
#: MAX_IMAGE_PIXELS pixels, MAX_IMAGE_SIDE pixels a side, and a long/short side ratio of at most
#: MAX_IMAGE_ASPECT (a 1 x 1,000,000 strip is 3 KB as a PNG, and resizing its short side to a
#: model's input would ask for tens of GB)
MAX_IMAGE_SIDE = 32768
MAX_IMAGE_ASPECT = 32
_RESIZE_PIXELS = 16_000_000  # load_for: larger intermediate resizes are done on the crop only


def check_geometry(width: int, height: int, name: str) -> None:
    """Refuse (ImageError, one line) an image whose header gives a size out of bounds."""
    if width < 1 or height < 1:
        raise ImageError(f"{name}: image has no pixels ({width}x{height})")
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(f"{name}: image too large ({width}x{height}, over "
                         f"{MAX_IMAGE_PIXELS} pixels)")
    if max(width, height) > MAX_IMAGE_SIDE:
        raise ImageError(f"{name}: image too large ({width}x{height}, a side over "
                         f"{MAX_IMAGE_SIDE} pixels)")
    if max(width, height) > MAX_IMAGE_ASPECT * min(width, height):
        raise ImageError(f"{name}: image too elongated ({width}x{height}, sides more than "
                         f"{MAX_IMAGE_ASPECT}:1)")


def open_rgb(path: str | os.PathLike | io.BytesIO, name: str | None = None) -> Image.Image:
    """An image file (or in-memory encoded image, named ``name`` in errors) as an 8-bit RGB PIL
    image: EXIF orientation applied, alpha composited on white, 16-bit scaled to 8-bit,
    grayscale/CMYK/palette converted. The one guarded loader: every image pydevis decodes comes
    here, and its size is checked (:func:`check_geometry`) before a pixel is decoded."""
    p = Path(path) if not isinstance(path, io.BytesIO) else Path(name or "<image>")
    src = path if isinstance(path, io.BytesIO) else p
    try:
        if not isinstance(path, io.BytesIO) and p.exists() and not p.is_file():
            raise ImageError(f"{p}: not a regular file")
        # Between MAX_IMAGE_PIXELS and twice that PIL only warns, then decodes the whole image:
        # make that an error too, before any pixel is decoded.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(src)
        with opened as raw:
            check_geometry(raw.width, raw.height, str(p))
            im = ImageOps.exif_transpose(raw)
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
        raise ImageError(f"{p}: image too large (over {MAX_IMAGE_PIXELS} pixels)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{p}: cannot read image ({type(exc).__name__}: {exc})") from None


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image file as (H, W, 3) float32 RGB in 0..255 (see :func:`open_rgb`)."""
    return np.asarray(open_rgb(path), dtype=np.float32)


def decode_rgb(data: bytes, name: str) -> np.ndarray:
    """Encoded image bytes (a dataset's JPEG, for example) as (H, W, 3) float32 RGB, through
    the same guard as files; ``name`` says which image in errors."""
    return np.asarray(open_rgb(io.BytesIO(data), name), dtype=np.float32)


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
    top, left = (nh - h) // 2, (nw - w) // 2
    if nw * nh <= _RESIZE_PIXELS:
        im = im.resize((nw, nh), Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.float32)[top:top + h, left:left + w]
    # Resizing the whole image to (nw, nh) and cropping would allocate nw*nh pixels, most of
    # them thrown away (an elongated image at a large input size: GBs); resizing only the
    # source box that becomes the crop gives the same filter, scale and sample positions
    # (within one grey level of rounding), at h*w pixels whatever the image's shape.
    sx, sy = im.width / nw, im.height / nh
    box = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
    return np.asarray(im.resize((w, h), Image.Resampling.BILINEAR, box=box), dtype=np.float32)


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def save_png(pixels: np.ndarray, path: str | os.PathLike) -> Path:
    """Write (H, W, 3) pixels as an 8-bit PNG atomically (temp file, then rename)."""
    with atomic_open(path, "wb") as f:
        Image.fromarray(to_uint8(pixels), mode="RGB").save(f, format="PNG")
    return Path(path)
