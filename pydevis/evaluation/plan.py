"""``pydevis experiment CONFIG --plan``: the cost of a run before running it.

The cells are counted as the run would cut them (:func:`.experiment.plan_cells`; the cells
already complete in the run folder are left out of the cost). Then a short timed probe per
(generating model, method), in a child process set up as a Ray worker is (ONNX Runtime on one
intra-op thread, one OpenMP/numba/OpenBLAS thread) and timed in CPU seconds (other work on the
machine does not count): the method through the run's own image-generation path on
``PROBE_ROWS`` classes, after a warm-up (sessions, JIT compiles), once with 1 step and once
with ``1 + PROBE_STEPS`` steps; the difference gives the time per step, extrapolated to the
configured steps, and the time per row scales to the cell's rows. Scoring is probed per scoring
model (every image is scored on each, with the four perturbations). A cell's estimate is its
ascent plus its scoring; core-hours are their sum, and the wall time on N workers is the longest
worker's load when each cell goes to the least-loaded worker, longest cells first (no start-up,
no network).
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..ascent_images import visualize
from ..model import Model, load
from .cells import Cell
from .config import ExecutorSpec, load_config
from .cross_score import score_images

PROBE_ROWS = 4
PROBE_STEPS = 4
WORKER_COUNTS = (1, 2, 8, 32, 128)


def _timed(fn) -> float:
    """CPU seconds of this process (all its threads) while ``fn`` runs: a core's time, which a
    busy machine does not inflate as it does wall time."""
    t = time.process_time()
    fn()
    return time.process_time() - t


def probe_method(gen: Model, cell: Cell) -> dict[str, float]:
    """Seconds per step and per cell (at the cell's rows) of ``cell``'s method on ``gen``."""
    from ..methods.ascent import method_config

    spec = cell.spec
    rows = cell.classes[:PROBE_ROWS]

    def run(k: int) -> None:
        visualize(gen, rows, method=spec.name, preset=spec.preset, seed=cell.seed,
                  batch_size=len(rows), **{**spec.settings, "steps": k})

    configured = method_config(spec.name, spec.preset, **spec.settings).steps
    short = min(PROBE_STEPS, configured - 1)
    run(1)  # sessions for this batch, JIT compiles: not part of a step
    t_warm = _timed(lambda: run(1))
    t_probe = _timed(lambda: run(1 + short)) if short else t_warm
    per_step = max((t_probe - t_warm) / short, 0.0) if short else t_warm / 2
    per_row = (t_probe + (configured - 1 - short) * per_step) / len(rows)
    return {"rows": len(rows), "warm_s": t_warm, "probe_s": t_probe, "step_s": per_step,
            "steps": configured, "cell_row_s": per_row}


def probe_scorer(model: Model, size: tuple[int, int], labels) -> float:
    """Seconds to score one image on ``model`` (with the four perturbations)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (PROBE_ROWS, *size, 3)).astype(np.float32)
    names = [f"images/probe/{i}.png" for i in range(PROBE_ROWS)]
    classes = [0] * PROBE_ROWS

    def run() -> None:
        score_images(pixels, names, classes, labels, {"probe": model}, robust=True)

    run()  # warm-up
    return _timed(run) / PROBE_ROWS


def makespan(costs: list[float], workers: int) -> float:
    """Longest worker's load, each cell (longest first) to the least-loaded worker."""
    import heapq

    loads = [0.0] * workers
    for c in sorted(costs, reverse=True):
        heapq.heappush(loads, heapq.heappop(loads) + c)
    return max(loads)


def plan_experiment(path: str | os.PathLike, spec: ExecutorSpec) -> dict[str, Any]:
    """Cells, probes and estimates of the config at ``path`` (see module docstring). The
    probes run in a child process with a Ray worker's environment (one thread for OpenMP,
    numba and OpenBLAS: idle threads that spin would count as CPU time)."""
    import concurrent.futures as cf
    import multiprocessing

    from .executors import worker_env

    saved = dict(os.environ)
    os.environ.update(worker_env())
    try:
        with cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            found = pool.submit(_probe_all, str(path)).result()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    costs = found.pop("costs")
    workers = spec.workers or (os.cpu_count() or 1)
    counts = sorted({*WORKER_COUNTS, workers})
    return {**found, "core_hours": sum(costs) / 3600, "workers": workers,
            "wall_hours": {str(n): makespan(costs, n) / 3600 for n in counts}}


def _probe_all(path: str) -> dict[str, Any]:
    """Count the cells, probe every (generator, method) and scorer; the cost of each cell to
    run, in seconds."""
    from .experiment import _complete, _names, plan_cells

    cfg = load_config(Path(path))
    gens = {n: load(p, threads=1) for n, p in _names(cfg.generators).items()}
    scorer_paths = _names([*cfg.generators, *cfg.scorers])
    scorers = {n: gens[n] if n in gens else load(p, threads=1) for n, p in scorer_paths.items()}
    cells = plan_cells(cfg, gens, list(scorers))
    if cfg.sanity:  # the randomized copies cost what their originals cost
        cells += [replace(c, gname=f"{c.gname}~randomized") for c in list(cells)]
    todo = [c for c in cells if not _complete(cfg, c)] if cfg.out.is_dir() else cells
    first = next(iter(gens.values()))
    score_s = {n: probe_scorer(m, first.spec.size, first.labels) for n, m in scorers.items()}
    probes: dict[tuple[str, str], dict[str, float]] = {}
    for c in cells:
        base = c.gname.split("~")[0]
        if (base, c.spec.label) not in probes:
            probes[(base, c.spec.label)] = probe_method(gens[base], c)
    per_image = sum(score_s.values())
    costs = [len(c.items) * (probes[(c.gname.split("~")[0], c.spec.label)]["cell_row_s"]
                             + per_image) for c in todo]
    return {"config": path, "cells": len(cells), "cells_to_run": len(todo),
            "images": sum(len(c.items) for c in todo),
            "probe": [{"generating_model": g, "method": m, **v} for (g, m), v in probes.items()],
            "scoring_s_per_image": score_s, "costs": costs}


def _duration(hours: float) -> str:
    if hours >= 48:
        return f"{hours / 24:.1f} days"
    if hours >= 1:
        return f"{hours:.1f} h"
    if hours >= 1 / 60:
        return f"{hours * 60:.1f} min"
    return f"{hours * 3600:.1f} s"


def format_plan(plan: dict[str, Any]) -> str:
    lines = [f"{plan['cells']} cells ({plan['cells_to_run']} to run, {plan['images']} images)",
             "probe (one core; seconds per step at the probe's rows, per image of a cell):"]
    for p in plan["probe"]:
        lines.append(f"  {p['generating_model']:34s} {p['method']:18s} "
                     f"{p['step_s']:.3f} s/step x {p['steps']} steps, "
                     f"{p['cell_row_s']:.2f} s/image")
    score = plan["scoring_s_per_image"]
    lines.append(f"scoring: {sum(score.values()):.3f} s per image on {len(score)} models")
    lines.append(f"estimate: {plan['core_hours']:.3g} core-hours")
    for n, h in plan["wall_hours"].items():
        mark = "  <- --workers" if int(n) == plan["workers"] else ""
        lines.append(f"  wall time on {n:>4s} workers: {_duration(h)}{mark}")
    return "\n".join(lines)
