"""The Python API behind the CLI: each function makes pictures and writes them, with their
metadata in a JSON beside each file. Files are written atomically (temp file, then rename).
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import kernels
from .atomic import atomic_open
from .errors import PydevisError, TargetError
from .image import load_for, save_png, to_uint8
from .methods import deconvnet as dn
from .methods.ascent import AscentResult, ascend, method_config
from .methods.isolate import Isolation
from .methods.isolate import isolate as _isolate
from .model import Model
from .render import (
    CLIP_PERCENTILE,
    fit,
    grid,
    projection_figure,
    robust_scale,
    signal_to_pixels,
    top9_block,
    top9_figure,
)
from .targets import parse_one

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as JSON atomically."""
    with atomic_open(path) as f:
        json.dump(_finite(data), f, indent=1, default=_jsonable, allow_nan=False)
    return Path(path)


def _finite(o: Any) -> Any:
    """``o`` with NaN/±Inf numbers replaced by None: strict JSON (a diverged ascent's objective
    is written as null, not as the non-standard NaN/Infinity)."""
    if isinstance(o, (float, np.floating)):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, np.ndarray):
        return _finite(o.tolist())
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def check_out(out: str | os.PathLike) -> Path:
    """``out`` as a folder that can be written, checked before any work is done and without
    creating anything: refused when it (or the first existing folder above it) is a file, or
    not writable (a read-only file system, permissions)."""
    out = Path(out)
    for parent in (out, *out.parents):
        if parent.exists():
            if not parent.is_dir():
                raise PydevisError(f"{out}: cannot be an output folder ({parent} is a file)")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise PydevisError(f"{out}: output folder is not writable ({parent})")
            break
    return out


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def resolve_class(model: Model, cls: int | str) -> int:
    """A class index from an index or a label name.

    Names are case-insensitive and match a whole label line or any one of its comma-separated
    synonyms (``Persian`` matches ``Persian cat``: a synonym's words, whole); a name matching
    several classes is refused with the list of them; an unknown one gets a did-you-mean.
    """
    labels = model.labels
    text = str(cls).strip()
    if text.lstrip("-").isdigit():
        idx = int(text)
        if not 0 <= idx < len(labels):
            raise TargetError(f"class {idx} out of range 0–{len(labels) - 1} "
                              f"({model.path.name} has {len(labels)} classes)")
        return idx
    key = " ".join(text.lower().split())
    if model.spec.labels is None and key.startswith("class_") and key[6:].isdigit():
        return resolve_class(model, key[6:])  # the default names, without building an index
    # exact names: a dict built once per model (O(1)); else the whole-word scan
    hits = model.label_index.get(key) or match_classes(labels, text)
    if len(hits) == 1:
        return hits[0]
    if hits:
        shown = ", ".join(f"{i} {labels[i]!r}" for i in hits[:20])
        more = f", … ({len(hits)} in all)" if len(hits) > 20 else ""
        raise TargetError(f"class {text!r} is ambiguous in {model.path.name}: {shown}{more}; "
                          "give the index or a fuller name")
    names = {syn.strip().lower() for label in labels for syn in label.split(",")}
    close = difflib.get_close_matches(text.lower(), sorted(names), n=3)
    hint = ("; did you mean " + ", ".join(repr(c) for c in close) + "?") if close else ""
    raise TargetError(f"unknown class {text!r} for {model.path.name}{hint}")


def match_classes(labels: Sequence[str], name: str) -> list[int]:
    """Indices of the labels ``name`` names (case-insensitive), best kind of match first found:
    the whole label line or one synonym exactly; else a synonym containing ``name`` as whole
    words (``cat`` → ``tabby cat``, ``Persian cat``...)."""
    key = " ".join(name.lower().split())
    if not key:
        return []
    exact = [i for i, label in enumerate(labels)
             if key == label.strip().lower()
             or key in (" ".join(s.lower().split()) for s in label.split(","))]
    if exact:
        return exact
    words = key.split()
    out = []
    for i, label in enumerate(labels):
        for syn in label.split(","):
            sw = syn.lower().replace("-", " ").split()
            if any(sw[k:k + len(words)] == words for k in range(len(sw) - len(words) + 1)):
                out.append(i)
                break
    return out


def _slug(text: str) -> str:
    keep = "".join(c if c.isalnum() else "_" for c in text.split(",")[0].strip().lower())
    return keep.strip("_")[:40] or "x"


def _meta(model: Model, **extra) -> dict[str, Any]:
    return {"model": str(model.path), "backend": kernels.backend(),
            "signal_backend": model.signal_backend, **extra}


def score_pixels(model: Model, pixels: np.ndarray) -> np.ndarray:
    """Softmax of the model on pixels as they are saved: rounded to 8 bits."""
    p = np.stack([to_uint8(x) for x in pixels]).astype(np.float32)
    return model.predict(model.preprocess(p))


#: activation memory one ascent batch may take (see :func:`ascent_batch_size`)
ASCENT_BATCH_BYTES = 512 << 20
ASCENT_BATCH_MAX = 64
#: classes per grid picture: METHOD_grid.png, then METHOD_grid_2.png... (bounded memory)
GRID_PAGE = 128


def ascent_batch_size(model: Model, budget: int = ASCENT_BATCH_BYTES,
                      largest: int = ASCENT_BATCH_MAX) -> int:
    """Rows per ascent batch: as many as fit ``budget`` bytes of activations, 1..``largest``.

    One row holds, per step, the tensors the backward reads (exposed by the forward), about as
    much again in gradients, and ONNX Runtime's own buffers: three times the size of those
    tensors at batch 1. With the defaults: AlexNet at 224² 39 rows, VGG-16 3, the bundled CIFAR
    nets and MobileNet v1 0.25/128 64.
    """
    names = model.plan(model.scores).values
    row = sum(int(np.prod(s)) * 4 for s in model.shapes(names, 1).values())
    return int(np.clip(budget // max(3 * row, 1), 1, largest))


def expand_classes(model: Model, classes: Sequence[int | str]) -> list[int]:
    """Class indices of ``classes``: indices, label names, or ``"all"`` (every class)."""
    out: list[int] = []
    for c in classes:
        if str(c).strip().lower() == "all":
            out += range(model.num_classes)
        else:
            out.append(resolve_class(model, c))
    return out


def visualize(model: Model, classes: Sequence[int | str] = (), method: str = "yosinski",
              preset: int | None = None, out: str | os.PathLike | None = None, seed: int = 0,
              batch_size: int | None = None, progress: Callable[..., None] | None = None,
              keep_pixels: bool = True, units: Sequence[str] = (),
              written: list[Path] | None = None, **settings) -> list[AscentResult]:
    """Class and unit images by ascent (``method`` in ascent.METHODS; ``yosinski`` without
    ``preset`` runs preset 3; ``settings`` override the defaults: steps, step_size, decay,
    jitter, ...). ``classes``: indices, label names, ``"all"``; ``units``: hidden units
    ``TENSOR:CHANNEL`` (mean of the channel's map), ``TENSOR:CHANNEL@Y,X`` (one neuron) or
    ``TENSOR:all`` (every channel).

    With ``out``, writes one PNG + JSON per target, named ``TAG_CLASS_LABEL`` or
    ``TAG_TENSOR_CHANNEL[_Y_X]`` where TAG is the method and preset (``yosinski3``), and
    ``TAG_grid.png`` (``TAG_grid_2.png``... beyond ``GRID_PAGE`` images); the path of every
    file written is appended to ``written``. The JSON records every effective setting.

    The targets run as ascents of ``batch_size`` rows (default :func:`ascent_batch_size`; the
    rows of one batch share a tensor), each scored and written as soon as it ends, so memory
    stays bounded by one batch. ``progress(done, total)`` counts steps over all batches; a
    callback taking three arguments also gets what the batch runs (``"class 1 goldfish"``,
    ``"units r1:0–7 (2/3)"``). ``keep_pixels=False`` (with ``out``) drops each result's pixels
    once written (``pixels`` is then an empty (0, 0, 3) array): what the CLI does.
    """
    from .tensors import expand_units

    idx = expand_classes(model, classes)
    unit_list = expand_units(model, units)
    if not idx and not unit_list:
        raise TargetError("nothing to visualize: give a class or a unit")
    if method == "yosinski" and preset is None:
        preset = DEFAULT_PRESET
    config = method_config(method, preset, **settings)
    if out is not None:
        check_out(out)
    if batch_size is None:
        batch_size = ascent_batch_size(model)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    tag = f"{method}{preset}" if preset else method
    groups: dict[str | None, list] = {None: idx} if idx else {}
    for u in unit_list:  # one tensor per batch (Model.signal)
        groups.setdefault(parse_one(u).tensor, []).append(u)
    chunks = [(tensor, ts[i:i + batch_size]) for tensor, ts in groups.items()
              for i in range(0, len(ts), batch_size)]
    say = _progress_call(progress)
    results: list[AscentResult] = []
    page: list[tuple[np.ndarray, str]] = []  # grid cells not yet written, with their captions
    pages, offset = 0, 0
    common = dict(method=method, preset=preset, seed=seed, batch_size=batch_size,
                  preprocessing=_spec(model))
    for k, (tensor, chunk) in enumerate(chunks):
        what = _describe(model, chunk, k, len(chunks))
        tick = None if say is None else \
            (lambda t, steps, k=k, what=what: say(k * steps + t, len(chunks) * steps, what))
        res = ascend(model, chunk, config, seed=seed + offset, progress=tick)
        saved = _saved_objective(model, tensor, res)
        for r, v in zip(res, saved, strict=True):
            key = "probability" if tensor is None else "activation"
            r.config = {**r.config, key: v}
            if out is None:
                continue
            name, caption = _write_target_image(model, Path(out), tag, r, tensor, common,
                                                seed + offset, written)
            page.append((fit(r.pixels, 96), caption))
            if not keep_pixels:
                r.pixels = np.empty((0, 0, 3), np.float32)
            if len(page) == GRID_PAGE:
                pages = _write_grid_page(Path(out), tag, page, pages, written)
        offset += len(chunk)
        results += res
    if out is not None and page:
        _write_grid_page(Path(out), tag, page, pages, written)
    return results


#: the yosinski preset that runs when none is given
DEFAULT_PRESET = 3


def _progress_call(progress):
    """``progress`` as a three-argument callable (done, total, what), or None."""
    if progress is None:
        return None
    import inspect

    try:
        params = inspect.signature(progress).parameters.values()
        three = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params) >= 3 \
            or any(p.kind == p.VAR_POSITIONAL for p in params)
    except (TypeError, ValueError):
        three = False
    return progress if three else (lambda done, total, what: progress(done, total))


def _describe(model: Model, chunk: list, k: int, n: int) -> str:
    """What one batch runs, for the progress line."""
    if isinstance(chunk[0], (int, np.integer)):
        first = f"class {int(chunk[0])} {model.labels[int(chunk[0])].split(',')[0]}"
        text = first if len(chunk) == 1 else f"classes {int(chunk[0])}–{int(chunk[-1])}"
    else:
        text = chunk[0] if len(chunk) == 1 else \
            f"units {chunk[0]}–{chunk[-1].rpartition(':')[2]}"
    return text + (f" ({k + 1}/{n})" if n > 1 else "")


def _spec(model: Model) -> dict[str, Any]:
    s = model.spec
    return {"size": list(s.size), "channels": s.channels, "mean": list(s.mean),
            "std": list(s.std)}


def _saved_objective(model: Model, tensor: str | None, res: list[AscentResult]) -> list[float]:
    """For classes, the probability of the class on the image as saved (8-bit); for units,
    the unit's value on it."""
    from . import targets

    pixels = np.stack([r.pixels for r in res])
    if tensor is None:
        probs = score_pixels(model, pixels)
        return [float(p[int(r.target)]) for r, p in zip(res, probs, strict=True)]
    x = model.preprocess(np.stack([to_uint8(p) for p in pixels]).astype(np.float32))
    units = [targets.parse_one(r.target) for r in res]
    name = model.resolve_tensor(units[0])
    _, obj = targets.seed(model.run(x, [name])[name], units)
    return [float(v) for v in obj]


def _write_grid_page(out: Path, tag: str, page: list, pages: int,
                     written: list[Path] | None = None) -> int:
    """``TAG_grid.png`` (first page), ``TAG_grid_2.png``...; empties ``page``."""
    cells, captions = [c for c, _ in page], [t for _, t in page]
    name = f"{tag}_grid.png" if pages == 0 else f"{tag}_grid_{pages + 1}.png"
    path = save_png(grid(cells, min(len(cells), 8), captions=captions), out / name)
    if written is not None:
        written.append(path)
    page.clear()
    return pages + 1


def _write_target_image(model: Model, out: Path, tag: str, r: AscentResult, tensor: str | None,
                        common: dict, batch_seed: int, written: list[Path] | None):
    """One target's PNG and JSON; returns (name, grid caption)."""
    if tensor is None:
        c = int(r.target)
        name = f"{tag}_{c:04d}_{_slug(model.labels[c])}"
        what = dict(target_class=c, label=model.labels[c], probability=r.config["probability"])
        caption = f"{c} {r.config['probability']:.2f}"
    else:
        u = parse_one(r.target)
        at = f"_{u.pos[0]}_{u.pos[1]}" if u.pos else ""
        name = f"{tag}_{_slug(u.tensor)}_{u.channel:04d}{at}"
        what = dict(unit=str(u), tensor=u.tensor, channel=u.channel,
                    pos=list(u.pos) if u.pos else None, activation=r.config["activation"])
        caption = f"{u.channel}{'@' + ','.join(map(str, u.pos)) if u.pos else ''} " \
                  f"{r.config['activation']:.3g}"
    png = save_png(r.pixels, out / f"{name}.png")
    side = write_json(out / f"{name}.json", _meta(
        model, **common, **what, batch_seed=batch_seed, settings=r.config,
        best_objective=r.best_objective, final_objective=r.final_objective,
        best_step=r.best_step, success_step=r.success_step, status=r.status,
        restart_std=r.restart_std, image=f"{name}.png"))
    if written is not None:
        written += [png, side]
    return name, caption


def deconvolve(model: Model, image: str | os.PathLike, unit: str,
               out: str | os.PathLike | None = None, mode: str = "deconvnet") -> dn.Projection:
    """Zeiler–Fergus projection of ``unit`` ("TENSOR:CH[@Y,X]") of one image.

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
        stem = f"{_slug(mode)}_{_slug(proj.tensor)}_{proj.channel}"
        save_png(signal_to_pixels(proj.signal, proj.box), out / f"{stem}.png")
        title = (f"{mode} {proj.tensor}:{proj.channel} at {proj.pos[0]},{proj.pos[1]}, "
                 f"activation {proj.activation:.3g}")
        save_png(projection_figure(proj.signal, pixels, proj.box, title),
                 out / f"{stem}_figure.png")
        y0, y1, x0, x1 = proj.box
        save_png(pixels[y0:y1, x0:x1], out / f"{stem}_patch.png")
        write_json(out / f"{stem}.json", _meta(
            model, image=str(image), tensor=proj.tensor, channel=proj.channel, pos=proj.pos,
            activation=proj.activation, box=proj.box, mode=mode,
            contrast={"percentile": CLIP_PERCENTILE,
                      "scale": robust_scale(proj.signal, proj.box)},
            files={"projection": f"{stem}.png", "figure": f"{stem}_figure.png",
                   "patch": f"{stem}_patch.png"}))
    return proj


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
    activation; each cropped to its receptive field, contrast as in :func:`deconvolve`) in a
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
        stem = f"{_slug(mode)}_top9_{_slug(layer)}"
        blocks = [top9_block([h.projection for h in hs], [h.patch for h in hs],
                             f"{layer} channel {c} ({mode})",
                             [f"#{i + 1} act {h.activation:.3g}" for i, h in enumerate(hs)],
                             [h.image for h in hs]) for c, hs in hits.items()]
        save_png(top9_figure(blocks), out / f"{stem}.png")
        write_json(out / f"{stem}.json", _meta(
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
                 write_json(out / f"{stem}.json", _meta(
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
