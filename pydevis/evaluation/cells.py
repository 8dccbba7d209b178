"""The unit of work of an experiment: a cell = (generating model, method, batch of classes).

:func:`run_cell` computes a cell without touching the run folder: it makes the images with
:func:`pydevis.ascent_images.visualize` (the one image-generation path, the same as
``pydevis visualize``), encodes each as the 8-bit PNG that will be saved, scores the decoded PNGs
on every scoring model and returns the files to write as bytes. The driver alone writes them
(:func:`write_cell`): images and their sidecars first, the chunk file (the cell's completion
marker) last, each atomically. The local and the Ray executor run this same function, so a cell
gives the same files wherever it ran. A cell's classes and seed are fixed by the config, so a
cell redone after a kill gives the same images.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..ascent_images import visualize
from ..atomic import atomic_open
from ..image import decode_rgb, to_uint8
from ..model import Model
from ..outputs import finite, jsonable, slug, write_json
from .config import MethodSpec
from .cross_score import score_images


@dataclass(frozen=True)
class Cell:
    """One (generating model, method, batch of classes): ``scores/GEN/LABEL/chunkK.json``."""

    gname: str  # the generating model's name in the run (its folder)
    gen_path: str  # its file on the driver (recorded in the sidecars)
    spec: MethodSpec
    index: int  # K of chunkK.json
    items: tuple[tuple[int, int], ...]  # (class, copy)
    seed: int
    scorers: tuple[str, ...]  # names of the scoring models, in the run's order

    @property
    def key(self) -> str:
        return f"{self.gname}/{self.spec.label}/chunk{self.index}"

    @property
    def marker(self) -> str:
        return f"scores/{self.key}.json"

    @property
    def classes(self) -> list[int]:
        return [c for c, _ in self.items]

    def describe(self) -> str:
        cs = self.classes
        what = (f"class {cs[0]}" if len(cs) == 1 else
                f"classes {', '.join(map(str, cs))}" if len(cs) <= 4 else
                f"{len(cs)} classes {cs[0]}, {cs[1]}, ...")
        return f"{self.gname} {self.spec.label} {what}"


@dataclass
class CellOutput:
    """What a cell returns to the driver: run-relative files (written in this order) and the
    chunk file's content."""

    files: list[tuple[str, bytes]]
    chunk: dict
    seconds: float = 0.0
    worker: dict = field(default_factory=dict)


def run_cell(cell: Cell, models: Mapping[str, Model]) -> CellOutput:
    """Generate, encode and score one cell; ``models`` holds the generator and every scorer
    by name. Pure: reads and writes no file."""
    start = time.perf_counter()
    gen = models[cell.gname]
    spec = cell.spec
    res = visualize(gen, cell.classes, method=spec.name, preset=spec.preset, seed=cell.seed,
                    batch_size=len(cell.items), **spec.settings)
    folder = f"images/{cell.gname}/{spec.label}"
    files: list[tuple[str, bytes]] = []
    names, pixels = [], []
    for r, (_, copy) in zip(res, cell.items, strict=True):
        c = int(r.target)
        stem = f"{c:04d}_{slug(gen.labels[c])}" + (f"_{copy}" if copy else "")
        png = _png(r.pixels)
        settings = {k: v for k, v in r.config.items() if k != "probability"}
        side = {"generating_model": cell.gname, "model": cell.gen_path, "method": spec.label,
                "method_name": spec.name, "preset": spec.preset, "target_class": c,
                "label": gen.labels[c], "copy": copy, "status": r.status,
                "restart_std": r.restart_std, "best_objective": r.best_objective,
                "success_step": r.success_step, "best_step": r.best_step, "settings": settings}
        files += [(f"{folder}/{stem}.png", png), (f"{folder}/{stem}.json", _json(side))]
        names.append(f"{folder}/{stem}.png")
        pixels.append(decode_rgb(png, names[-1]))  # score what is saved: the 8-bit PNG
    scorers = {n: models[n] for n in cell.scorers}
    scores, skipped = score_images(np.stack(pixels), names, cell.classes, gen.labels, scorers,
                                   robust=True)
    rows = [{**s.row(), "method": spec.label, "generating_model": cell.gname,
             "same_model": s.scoring_model == cell.gname.split("~")[0]} for s in scores]
    image_status(rows, dict(zip(names, res, strict=True)))
    return CellOutput(files, {"rows": rows, "skipped": skipped}, time.perf_counter() - start)


def write_cell(out: Path, cell: Cell, output: CellOutput) -> None:
    """Write a cell's files into the run folder, atomically, the chunk file last."""
    for rel, data in output.files:
        if not rel.startswith(f"images/{cell.gname}/{cell.spec.label}/") or ".." in rel:
            raise ValueError(f"cell {cell.key} returned a file outside its folder: {rel!r}")
        with atomic_open(out / rel, "wb") as f:
            f.write(data)
    write_json(out / cell.marker, output.chunk)


def _png(pixels: np.ndarray) -> bytes:
    """The bytes :func:`pydevis.image.save_png` writes for ``pixels``."""
    buf = io.BytesIO()
    Image.fromarray(to_uint8(pixels), mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def _json(data: dict) -> bytes:
    """The bytes :func:`pydevis.outputs.write_json` writes for ``data``."""
    return json.dumps(finite(data), indent=1, default=jsonable, allow_nan=False).encode()


def image_status(rows: list[dict], results: dict) -> None:
    """Each row's ``status``: the ascent's (ok, zero-gradient, diverged), or ``low`` when the
    target was the generating model's top-1 class at some step of the ascent but the saved 8-bit
    PNG, scored by that model, is not. The ascent keeps its best iterate by the objective (the
    logit); a logit can keep rising while a sibling class rises faster (squeezenet1_1 "tabby"
    against "tiger cat"), so its best iterate need not be the most probable one: such an image
    is reported, not silently counted as a success."""
    low = {r["image"] for r in rows if r["same_model"] and not r["top1"]
           and "~" not in r["generating_model"]
           and results[r["image"]].success_step >= 0 and results[r["image"]].status == "ok"}
    for r in rows:
        r["status"] = "low" if r["image"] in low else results[r["image"]].status
