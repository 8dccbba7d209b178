"""The Python API behind the CLI: each function makes pictures and writes them, with their
metadata in a JSON beside each file. Files are written atomically (temp file, then rename).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .ascent_images import (  # noqa: F401  (the API: visualize and what it is tuned by)
    ASCENT_BATCH_BYTES,
    ASCENT_BATCH_MAX,
    DEFAULT_PRESET,
    GRID_PAGE,
    ascent_batch_size,
    score_pixels,
    visualize,
)
from .classes import expand_classes, match_classes, resolve_class  # noqa: F401
from .errors import TargetError
from .image import load_for, save_png
from .methods import deconvnet as dn
from .methods.isolate import Isolation
from .methods.isolate import isolate as _isolate
from .model import Model
from .outputs import check_out, meta, slug, write_json
from .render import (
    CLIP_PERCENTILE,
    projection_figure,
    robust_scale,
    signal_to_pixels,
    top9_block,
    top9_figure,
)
from .scoring import IMAGE_EXTS
from .tuning import tune  # noqa: F401  (the API: pydevis.tune)


def project(model: Model, image: str | os.PathLike, unit: str,
            out: str | os.PathLike | None = None, mode: str = "deconvnet") -> dn.Projection:
    """Zeiler–Fergus projection of ``unit`` ("TENSOR:CH[@Y,X]") of one image (``pydevis
    project``; ``deconvolve`` is its old name).

    With ``out``, writes ``MODE_TENSOR_CH`` + ``.png`` (the full-size projection), ``_figure.png``
    (the projection cropped to the unit's receptive field beside the image patch under the same
    box, both enlarged), ``_patch.png`` (that patch) and ``.json``; MODE (deconvnet, guided,
    gradient) in the name keeps runs of different modes apart. Contrast: grey 128 is zero,
    ±127 the 99.5th percentile of |signal| inside the box (:func:`render.signal_to_pixels`).
    """
    if out is not None:
        check_out(out)
    pixels = load_for(image, model.spec.size, model.spec.crop_fraction)
    proj = dn.project(model, pixels, unit, mode)
    if out is not None:
        out = Path(out)
        stem = f"{slug(mode)}_{slug(proj.tensor)}_{proj.channel}"
        save_png(signal_to_pixels(proj.signal, proj.box), out / f"{stem}.png")
        title = (f"{mode} {proj.tensor}:{proj.channel} at {proj.pos[0]},{proj.pos[1]}, "
                 f"activation {proj.activation:.3g}")
        save_png(projection_figure(proj.signal, pixels, proj.box, title),
                 out / f"{stem}_figure.png")
        y0, y1, x0, x1 = proj.box
        save_png(pixels[y0:y1, x0:x1], out / f"{stem}_patch.png")
        write_json(out / f"{stem}.json", meta(
            model, image=str(image), tensor=proj.tensor, channel=proj.channel, pos=proj.pos,
            activation=proj.activation, box=proj.box, mode=mode,
            contrast={"percentile": CLIP_PERCENTILE,
                      "scale": robust_scale(proj.signal, proj.box)},
            files={"projection": f"{stem}.png", "figure": f"{stem}_figure.png",
                   "patch": f"{stem}_patch.png"}))
    return proj


deconvolve = project  # the old name (it read like the "deconv" ascent methods), kept for scripts


def list_images(folder: str | os.PathLike) -> list[Path]:
    d = Path(folder)
    if not d.is_dir():
        raise TargetError(f"{d}: not a folder")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if not files:
        raise TargetError(f"{d}: no images ({', '.join(IMAGE_EXTS)})")
    return files


def top9(model: Model, image_dir: str | os.PathLike, layer: str, channels: Sequence[int],
         out: str | os.PathLike | None = None, k: int = 9, mode: str = "deconvnet"
         ) -> dict[int, list[dn.TopHit]]:
    """Zeiler & Fergus fig. 2 for ``channels`` of ``layer`` over the images of a folder.

    With ``out``, writes ``MODE_top9_LAYER.png``: per channel a block titled with the layer and
    channel, its top-k projections (one per image, strongest first, captioned with their
    activation; each cropped to its receptive field, contrast as in :func:`project`) in a
    grid beside the grid of the image patches under the same boxes (captioned with the file
    name). Grids and the layout of blocks have no empty cells; and ``MODE_top9_LAYER.json``.
    """
    files = list_images(image_dir)
    if out is not None:
        check_out(out)
    images = {p.name: load_for(p, model.spec.size, model.spec.crop_fraction) for p in files}
    hits = dn.top9(model, images, layer, list(channels), k, mode)
    if out is not None:
        out = Path(out)
        stem = f"{slug(mode)}_top9_{slug(layer)}"
        blocks = [top9_block([h.projection for h in hs], [h.patch for h in hs],
                             f"{layer} channel {c} ({mode})",
                             [f"#{i + 1} act {h.activation:.3g}" for i, h in enumerate(hs)],
                             [h.image for h in hs]) for c, hs in hits.items()]
        save_png(top9_figure(blocks), out / f"{stem}.png")
        write_json(out / f"{stem}.json", meta(
            model, layer=layer, images=str(image_dir), mode=mode,
            contrast={"percentile": CLIP_PERCENTILE}, figure=f"{stem}.png",
            channels={str(c): [{"image": h.image, "pos": h.pos, "activation": h.activation,
                                "box": h.box} for h in hs] for c, hs in hits.items()}))
    return hits


def isolate(model: Model, image: str | os.PathLike, cls: int | str,
            out: str | os.PathLike | None = None, written: list[Path] | None = None,
            **settings) -> Isolation:
    """Class isolation of one photo (:mod:`methods.isolate`); writes the edited image, the
    difference map, a JSON (their paths appended to ``written``)."""
    c = resolve_class(model, cls)
    if out is not None:
        check_out(out)
    pixels = load_for(image, model.spec.size, model.spec.crop_fraction)
    res = _isolate(model, pixels, c, **settings)
    if out is not None:
        out = Path(out)
        stem = f"isolate_{Path(image).stem}_{c:04d}"
        files = [save_png(res.pixels, out / f"{stem}.png"),
                 save_png(signal_to_pixels(res.difference), out / f"{stem}_difference.png"),
                 write_json(out / f"{stem}.json", meta(
                     model, image=str(image), target_class=c, label=model.labels[c],
                     settings=settings, status=res.status, steps=res.steps,
                     start_probability=res.start_probability,
                     target_probability=res.target_probability,
                     max_other_probability=res.max_other_probability))]
        if written is not None:
            written += files
    return res


def cross_score(images: Sequence[str | os.PathLike], models: Sequence[Model | str],
                classes: Sequence[int | str], labels: Sequence[str] | None = None):
    """Score image files on several models, each with its own preprocessing and size, by the
    rule of :mod:`pydevis.scoring` (the one ``pydevis score`` uses: an image at a model's size
    as it is, else resized bilinear to it).

    ``classes`` are the intended classes (indices or label names of the first model, or of
    ``labels``); returns ``(scores, skipped)`` — see :func:`evaluation.cross_score.score_images`.
    """
    from . import load
    from .scoring import score_files

    loaded = {(m.path.stem if isinstance(m, Model) else Path(m).stem):
              (m if isinstance(m, Model) else load(m)) for m in models}
    first = next(iter(loaded.values()))
    label_list = list(labels) if labels is not None else list(first.labels)
    idx = [c if isinstance(c, int) else label_list.index(c) if c in label_list
           else resolve_class(first, c) for c in classes]
    return score_files(list(images), idx, label_list, loaded)
