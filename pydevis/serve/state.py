"""The explorer's state: the model, its tensor listing, and bounded caches of photos.

A photo (uploaded, or an entry of ``--images``) gets one forward with every tensor of interest
exposed (the 4-D tensors whose backward path is supported, plus the class scores); its
activations stay in an LRU bounded in photos and bytes. A layer's activation grid is rendered
once per photo and layer; projections are cached per (photo, unit, mode, size). Photo ids are
made here (random hex); nothing from a request becomes a path.
"""

from __future__ import annotations

import io
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from ..class_scores import softmax
from ..errors import TargetError
from ..image import load_for, to_uint8
from ..kernels import MODES
from ..methods import deconvnet as dn
from ..model import Model
from ..render import projection_figure
from ..tensors import list_tensors

#: photos kept (each holds every exposed activation: 52 MB for MobileNet v2 at 224²)
MAX_PHOTOS = 8
MAX_PHOTO_BYTES = 384 << 20
MAX_PROJECTIONS = 64  # cached PNGs per photo


class NotFound(TargetError):
    """An id or name the server does not know (404)."""


def png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(to_uint8(pixels), mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Photo:
    id: str
    name: str
    pixels: np.ndarray  # (H, W, 3) float32 at the model's size
    probs: np.ndarray  # (K,)
    acts: dict[str, np.ndarray]  # tensor -> (C, h, w), batch row 0
    grids: dict[str, dict] = field(default_factory=dict)
    projections: OrderedDict = field(default_factory=OrderedDict)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.acts.values()) + self.pixels.nbytes


class Explorer:
    """One model, served: predictions, activations and projections of photos."""

    def __init__(self, model: Model, max_photos: int = MAX_PHOTOS,
                 max_bytes: int = MAX_PHOTO_BYTES):
        self.model = model
        self.lock = threading.RLock()  # the model's engine is used by one request at a time
        self.tensors = [t for t in list_tensors(model) if t.backward and len(t.shape) == 4]
        self.by_name = {t.name: t for t in self.tensors}
        self.photos: OrderedDict[str, Photo] = OrderedDict()
        self.max_photos, self.max_bytes = max_photos, max_bytes
        self._cmap = _colormap()

    # ---- photos ------------------------------------------------------------------------------
    def add_photo(self, source, name: str) -> Photo:
        """Decode ``source`` (a path chosen by the server, or a BytesIO of an upload) by the
        guarded loader with the ImageNet transform, run the one forward, cache it."""
        m = self.model
        pixels = load_for(source, m.spec.size, m.spec.crop_fraction)
        x = m.preprocess(pixels[None])
        names = tuple(t.name for t in self.tensors) + (m.scores,)
        with self.lock:
            out = m.run(x, names)
        scores = out[m.scores].reshape(1, -1)
        if not np.isfinite(scores).all():
            raise TargetError("the model's scores are not finite (NaN or Inf) on this image")
        acts = {t.name: np.ascontiguousarray(out[t.name][0]) for t in self.tensors}
        photo = Photo(secrets.token_hex(8), name, pixels, softmax(scores)[0], acts)
        with self.lock:
            self.photos[photo.id] = photo
            while len(self.photos) > 1 and (len(self.photos) > self.max_photos or sum(
                    p.nbytes for p in self.photos.values()) > self.max_bytes):
                self.photos.popitem(last=False)
        return photo

    def photo(self, pid: str) -> Photo:
        with self.lock:
            p = self.photos.get(str(pid))
            if p is None:
                raise NotFound(f"unknown photo {str(pid)[:40]!r} (expired from the cache? "
                               "upload it again)")
            self.photos.move_to_end(p.id)
            return p

    def top(self, photo: Photo, k: int = 5) -> list[dict]:
        labels = self.model.labels
        order = np.argsort(-photo.probs, kind="stable")[:k]
        return [{"class": int(i), "label": labels[int(i)], "probability": float(photo.probs[i])}
                for i in order]

    def tensor(self, name: str) -> str:
        if name not in self.by_name:
            raise NotFound(f"unknown tensor {str(name)[:200]!r}: GET /api/tensors lists them")
        return name

    # ---- activations -------------------------------------------------------------------------
    def activations(self, photo: Photo, tensor: str) -> dict:
        """Per-channel maxima and the grid of the channels' maps (one shared scale, the
        strongest channel framed in red), rendered once per photo and layer."""
        tensor = self.tensor(tensor)
        if tensor in photo.grids:
            return photo.grids[tensor]
        a = photo.acts[tensor]
        maxima = a.reshape(a.shape[0], -1).max(axis=1)
        grid = self._grid(a, int(np.argmax(maxima)))
        data = {"tensor": tensor, "shape": list(a.shape), "maxima": [float(v) for v in maxima],
                "top": [int(i) for i in np.argsort(-maxima, kind="stable")[:10]],
                "strongest": int(np.argmax(maxima)), "grid": grid}
        photo.grids[tensor] = data
        return data

    def _grid(self, a: np.ndarray, strongest: int) -> dict:
        c, h, w = a.shape
        cell = 96 if c <= 16 else 64 if c <= 64 else 40 if c <= 256 else 28
        pad = 3
        cols = int(min(max(1, np.ceil(np.sqrt(c * 1.5))), 960 // (cell + pad)))
        rows = -(-c // cols)
        top = float(a.max())
        v = np.clip(a / top, 0.0, 1.0) if top > 0 else np.zeros_like(a)
        idx = np.rint(v * 255).astype(np.uint8)
        scale = cell / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        method = Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.BILINEAR
        out = Image.new("RGB", (cols * (cell + pad) + pad, rows * (cell + pad) + pad),
                        (255, 255, 255))
        for k in range(c):
            r, q = divmod(k, cols)
            tile = Image.fromarray(self._cmap[idx[k]]).resize(size, method)
            out.paste(tile, (pad + q * (cell + pad), pad + r * (cell + pad)))
        r, q = divmod(strongest, cols)
        x0, y0 = q * (cell + pad), r * (cell + pad)
        ImageDraw.Draw(out).rectangle([x0, y0, x0 + cell + 2 * pad - 1, y0 + cell + 2 * pad - 1],
                                      outline=(230, 20, 20), width=pad)
        import base64

        buf = io.BytesIO()
        out.save(buf, format="PNG")
        return {"png": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(),
                "cols": cols, "rows": rows, "cell": cell, "pad": pad,
                "width": out.width, "height": out.height}

    # ---- projections -------------------------------------------------------------------------
    def unit(self, spec: str) -> tuple[str, int, tuple[int, int] | None]:
        """``TENSOR:CH[@Y,X]`` of a listed tensor, split and range-checked."""
        text = str(spec)
        head, at, pos_text = text.rpartition("@")
        if not at:
            head, pos_text = text, ""
        tensor, colon, ch = head.rpartition(":")
        if not colon or not ch.strip().isdigit():
            raise TargetError(f"unit {text[:200]!r}: expected TENSOR:CHANNEL or "
                              "TENSOR:CHANNEL@Y,X")
        tensor, channel = self.tensor(tensor), int(ch)
        shape = self.by_name[tensor].shape
        if not 0 <= channel < shape[1]:
            raise TargetError(f"channel {channel} out of range 0–{shape[1] - 1} of {tensor!r}")
        pos = None
        if pos_text:
            parts = pos_text.split(",")
            if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
                raise TargetError(f"unit {text[:200]!r}: the position is Y,X")
            pos = (int(parts[0]), int(parts[1]))
            if not (0 <= pos[0] < shape[2] and 0 <= pos[1] < shape[3]):
                raise TargetError(f"position {pos[0]},{pos[1]} out of range of a "
                                  f"{shape[2]}×{shape[3]} map")
        return tensor, channel, pos

    def project(self, photo: Photo, spec: str, mode: str, cell: int = 224) -> tuple[bytes, dict]:
        """The projection of a unit (at its strongest position unless given) cropped to its
        receptive field beside the image patch, as a PNG, and what it shows."""
        if mode not in MODES:
            raise TargetError(f"mode {str(mode)[:40]!r}: expected one of {', '.join(MODES)}")
        tensor, channel, pos = self.unit(spec)
        plane = photo.acts[tensor][channel]
        if pos is None:
            y, x = np.unravel_index(int(np.argmax(plane)), plane.shape)
            pos = (int(y), int(x))
        key = (tensor, channel, pos, mode, cell)
        with self.lock:
            if key in photo.projections:
                photo.projections.move_to_end(key)
                return photo.projections[key]
            p = dn.project(self.model, photo.pixels, f"{tensor}:{channel}@{pos[0]},{pos[1]}",
                           mode)
        title = f"{mode} {channel}@{pos[0]},{pos[1]} act {p.activation:.3g}"
        png = png_bytes(projection_figure(p.signal, photo.pixels, p.box, title, cell))
        info = {"tensor": tensor, "channel": channel, "pos": list(pos), "mode": mode,
                "activation": p.activation, "box": list(p.box),
                "zero": not bool(np.any(p.signal))}  # every path back rectified away
        with self.lock:
            photo.projections[key] = (png, info)
            while len(photo.projections) > MAX_PROJECTIONS:
                photo.projections.popitem(last=False)
        return png, info


def _colormap() -> np.ndarray:
    """256 RGB colours of matplotlib's 'inferno' (dark: weak, yellow: strong)."""
    import matplotlib

    return (matplotlib.colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
