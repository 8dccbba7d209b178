"""How an image file becomes a model's pixels, for scoring and prediction: one rule.

- An image at the model's input size (H, W) is used as it is.
- Otherwise a **generated image** (``score``, ``api.cross_score``, the experiment's
  cross-scoring) is resized, bilinear, to the model's input size (:meth:`Model.preprocess`);
  a **photo** (``predict``) gets the ImageNet evaluation transform instead: its shorter side
  resized (bilinear) to size / crop_fraction of the model card, then the centre crop.

Pixels are 8-bit RGB (as saved); each model then applies its own channel order, mean and std.
:func:`pixels_for` is the rule for one model; :func:`score_files` scores files on several
models by it, through :func:`evaluation.cross_score.score_images` (each model resizing the
same file's pixels to its own size).
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import PydevisError
from .image import load_for, read_rgb, resize_pixels

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def pixels_for(model, path: str | os.PathLike, photo: bool = False) -> np.ndarray:
    """(H, W, 3) pixels of ``path`` at ``model``'s input size by the rule of the module doc."""
    size = tuple(model.spec.size)
    img = read_rgb(path)
    if img.shape[:2] == size:
        return img
    if photo:
        return load_for(path, size, model.spec.crop_fraction)
    return resize_pixels(img[None], size)[0]


def expand_paths(specs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files, folders (their image files, sorted) and glob patterns → image paths, in order,
    each once. A pattern, name or folder that yields no image is an error."""
    out: list[Path] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            found = sorted(f for f in p.iterdir()
                           if f.is_file() and f.suffix.lower() in IMAGE_EXTS)
            if not found:
                raise PydevisError(f"{spec}: a folder with no image file "
                                   f"({', '.join(sorted(IMAGE_EXTS))})")
        elif p.exists():
            found = [p]
        elif glob.has_magic(str(spec)):
            found = [Path(f) for f in sorted(glob.glob(str(spec))) if Path(f).is_file()]
            if not found:
                raise PydevisError(f"{spec}: no file matches")
        else:
            raise PydevisError(f"{spec}: no such file or folder")
        out += found
    return list(dict.fromkeys(out))


def generated_class(path: Path) -> tuple[str | int | None, str]:
    """The intended class recorded in the JSON beside a generated image (its ``label``, else
    ``target_class``), or (None, why it is not a generated class image)."""
    side = path.with_suffix(".json")
    if not side.is_file():
        return None, f"no {side.name} beside it (not a generated image)"
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        return None, f"{side.name} is not readable JSON ({type(exc).__name__})"
    if not isinstance(meta, dict):
        return None, f"{side.name} holds no class"
    cls = meta.get("label", meta.get("target_class"))
    if cls is None:
        return None, f"{side.name} holds no class (a unit image?)"
    return cls, ""


def score_files(paths: Sequence[str | os.PathLike], classes: Sequence[int],
                labels: Sequence[str], models: dict, robust: bool = False):
    """Score image files (intended ``classes``, indices into ``labels``) on every model of
    ``models`` (name → Model) by the rule of the module doc; returns ``(scores, skipped)`` as
    :func:`evaluation.cross_score.score_images`, scores ordered by model, then file."""
    from .evaluation.cross_score import score_images

    names = [str(p) for p in paths]
    pixels = [read_rgb(p) for p in paths]
    groups: dict[tuple, list[int]] = {}  # one stack per image size
    for i, px in enumerate(pixels):
        groups.setdefault(px.shape, []).append(i)
    scores, skipped = [], []
    for idx in groups.values():
        kw = {"robust": True} if robust else {}
        s, k = score_images(np.stack([pixels[i] for i in idx]), [names[i] for i in idx],
                            [classes[i] for i in idx], labels, models, **kw)
        scores += s
        skipped += k
    order = {n: i for i, n in enumerate(names)}
    rank = {m: i for i, m in enumerate(models)}
    scores.sort(key=lambda s: (rank[s.scoring_model], order[s.image]))
    return scores, skipped
