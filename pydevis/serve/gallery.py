"""The ``--images`` folder: its entries (chosen by name or index, never by a path from a
request) and the top-9 figure of a channel over them (Zeiler & Fergus fig. 2), cached."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..api import list_images
from ..errors import ImageError, TargetError
from ..image import load_for, to_uint8
from ..kernels import MODES
from ..methods import deconvnet as dn
from ..render import top9_block, top9_figure
from .state import Explorer, NotFound, png_bytes

#: images of the folder used (sorted by name; the rest are not offered)
MAX_IMAGES = 256
MAX_FIGURES = 64


class Gallery:
    def __init__(self, explorer: Explorer, folder: str | Path, max_images: int = MAX_IMAGES):
        self.explorer = explorer
        files = list_images(folder)[:max_images]
        self.files = {p.name: p for p in files}
        self.names = list(self.files)
        self._pixels: dict[str, np.ndarray] | None = None  # uint8, the model's size
        self.skipped: list[str] = []
        self._peaks: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # tensor -> (max, argmax)
        self._figures: OrderedDict = OrderedDict()

    def path(self, name: str | None = None, index: int | None = None) -> Path:
        """The file of an entry named exactly ``name`` or at ``index`` of the listing."""
        if index is not None:
            if not 0 <= index < len(self.names):
                raise NotFound(f"image index {index} out of range 0–{len(self.names) - 1}")
            return self.files[self.names[index]]
        if name not in self.files:
            raise NotFound(f"no image {str(name)[:100]!r} in --images (GET /api/images)")
        return self.files[name]

    def _load(self) -> dict[str, np.ndarray]:
        if self._pixels is None:
            m = self.explorer.model
            px = {}
            for n in self.names:
                try:
                    px[n] = to_uint8(load_for(self.files[n], m.spec.size, m.spec.crop_fraction))
                except ImageError as exc:
                    self.skipped.append(str(exc))
            if not px:
                raise TargetError("no readable image in --images")
            self._pixels = px
        return self._pixels

    def _peaks_of(self, tensor: str) -> tuple[np.ndarray, np.ndarray]:
        """Per image and channel, the strongest activation and its flat position."""
        if tensor not in self._peaks:
            m, px = self.explorer.model, self._load()
            names = list(px)
            maxima, where = [], []
            for i in range(0, len(names), 8):
                x = m.preprocess(np.stack([px[n] for n in names[i:i + 8]]).astype(np.float32))
                a = m.run(x, [tensor])[tensor]
                flat = a.reshape(a.shape[0], a.shape[1], -1)
                maxima.append(flat.max(axis=2))
                where.append(flat.argmax(axis=2))
            self._peaks[tensor] = (np.concatenate(maxima), np.concatenate(where))
        return self._peaks[tensor]

    def top9(self, tensor: str, channel: int, mode: str = "deconvnet", k: int = 9
             ) -> tuple[bytes, dict]:
        ex = self.explorer
        tensor, channel, _ = ex.unit(f"{tensor}:{channel}")
        if mode not in MODES:
            raise TargetError(f"mode {str(mode)[:40]!r}: expected one of {', '.join(MODES)}")
        key = (tensor, channel, mode, k)
        with ex.lock:
            if key in self._figures:
                self._figures.move_to_end(key)
                return self._figures[key]
            px = self._load()
            names = list(px)
            maxima, where = self._peaks_of(tensor)
            w = ex.by_name[tensor].shape[3]
            hits = []
            for i in np.argsort(-maxima[:, channel], kind="stable")[:k]:
                y, x = divmod(int(where[i, channel]), w)
                pixels = px[names[i]].astype(np.float32)
                p = dn.project(ex.model, pixels, f"{tensor}:{channel}@{y},{x}", mode)
                y0, y1, x0, x1 = p.box
                hits.append((names[i], p, p.signal[y0:y1, x0:x1], pixels[y0:y1, x0:x1]))
        block = top9_block([h[2] for h in hits], [h[3] for h in hits],
                           f"channel {channel} ({mode})",
                           [f"#{j + 1} act {h[1].activation:.3g}" for j, h in enumerate(hits)],
                           [h[0] for h in hits])
        png = png_bytes(top9_figure([block]))
        info = {"tensor": tensor, "channel": channel, "mode": mode,
                "hits": [{"image": n, "pos": list(p.pos), "activation": p.activation,
                          "box": list(p.box)} for n, p, _, _ in hits]}
        with ex.lock:
            self._figures[key] = (png, info)
            while len(self._figures) > MAX_FIGURES:
                self._figures.popitem(last=False)
        return png, info
