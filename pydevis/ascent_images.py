"""``visualize``: class and unit images by activation maximisation, run as bounded batches of
ascents, each batch scored and written as soon as it ends (memory bounded by one batch)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .card_settings import resolve_settings
from .classes import expand_classes
from .errors import TargetError
from .image import save_png, to_uint8
from .methods.ascent import AscentResult, ascend
from .model import Model
from .outputs import check_out, meta, slug, spec_meta, write_json
from .render import fit, grid
from .targets import parse_one


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


def visualize(model: Model, classes: Sequence[int | str] = (), method: str = "yosinski",
              preset: int | None = None, out: str | os.PathLike | None = None, seed: int = 0,
              batch_size: int | None = None, progress: Callable[..., None] | None = None,
              keep_pixels: bool = True, units: Sequence[str] = (),
              written: list[Path] | None = None, **settings) -> list[AscentResult]:
    """Class and unit images by ascent (``method`` in ascent.METHODS; ``yosinski`` without
    ``preset`` runs preset 3, or the settings ``pydevis tune`` wrote to the model's card;
    ``settings`` override the defaults: steps, step_size, decay, jitter, ...; the JSON's
    ``settings_source`` says which: ``paper``, ``card`` or ``flags``, see
    :mod:`pydevis.card_settings`). ``classes``: indices, label names, ``"all"``; ``units``:
    hidden units ``TENSOR:CHANNEL`` (mean of the channel's map), ``TENSOR:CHANNEL@Y,X`` (one
    neuron) or ``TENSOR:all`` (every channel).

    With ``out``, writes one PNG + JSON per target, named ``TAG_CLASS_LABEL`` or
    ``TAG_TENSOR_CHANNEL[_Y_X]`` where TAG is the method and preset (``yosinski3``; plain
    ``yosinski`` with the card's settings), and
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
    config, source, card = resolve_settings(model, method, preset, settings)
    if method == "yosinski" and preset is None and card is None:
        preset = DEFAULT_PRESET
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
                  settings_source=source, preprocessing=spec_meta(model))
    if card is not None:
        common["settings_card"] = str(card)
    for k, (tensor, chunk) in enumerate(chunks):
        what = _describe(model, chunk, k, len(chunks))
        tick = None if say is None else \
            (lambda t, steps, k=k, what=what: say(k * steps + t, len(chunks) * steps, what))
        res = ascend(model, chunk, config, seed=seed + offset, progress=tick)
        saved = _saved_objective(model, tensor, res)
        for r, v in zip(res, saved, strict=True):
            key = "probability" if tensor is None else "activation"
            # the source travels with the result (the experiment's sidecars record it too)
            r.config = {**r.config, key: v, "settings_source": source}
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
        name = f"{tag}_{c:04d}_{slug(model.labels[c])}"
        what = dict(target_class=c, label=model.labels[c], probability=r.config["probability"])
        caption = f"{c} {r.config['probability']:.2f}"
    else:
        u = parse_one(r.target)
        at = f"_{u.pos[0]}_{u.pos[1]}" if u.pos else ""
        name = f"{tag}_{slug(u.tensor or tensor)}_{u.channel:04d}{at}"
        what = dict(unit=str(u), tensor=u.tensor, channel=u.channel,
                    pos=list(u.pos) if u.pos else None, activation=r.config["activation"])
        caption = f"{u.channel}{'@' + ','.join(map(str, u.pos)) if u.pos else ''} " \
                  f"{r.config['activation']:.3g}"
    png = save_png(r.pixels, out / f"{name}.png")
    side = write_json(out / f"{name}.json", meta(
        model, **common, **what, batch_seed=batch_seed, settings=r.config,
        best_objective=r.best_objective, final_objective=r.final_objective,
        best_step=r.best_step, success_step=r.success_step, status=r.status,
        restart_std=r.restart_std, image=f"{name}.png"))
    if written is not None:
        written += [png, side]
    return name, caption
