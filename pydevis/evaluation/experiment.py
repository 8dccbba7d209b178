"""The experiment runner: generate → score → summarize, resumable.

Layout of a run folder::

    config.toml                      the config this run was started with
    images/GEN/METHOD/CLASS.png|json generated images and their metadata (CLASS_K.png: the
                                     K-th extra image of a class with images_per_class > 1)
    scores/GEN/METHOD/chunkK.json    scores of one chunk on every scoring model (the chunk's
                                     completion marker, written after its images)
    failed/GEN/METHOD/chunkK.json    a cell that failed twice: its classes and error (removed
                                     once a later run completes it)
    train_on_generated/...           with [train_on_generated]: see train_on_generated.py
                                     (transfer/... in a run an older pydevis started)
    results.json, results.csv, summary.md, report.html

Work is done in cells (:mod:`.cells`): ``batch_size`` classes of one (generator, method), the
chunk. A cell's class list and seed are fixed by the config, so a cell redone after a kill gives
the same images. Cells run on an executor (:mod:`.executors`: this process, or Ray workers);
whatever runs them, this process alone writes the run folder, every file atomically (temp file
+ rename): a kill leaves finished chunks whole and the unfinished one is redone, never
duplicated.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..atomic import write_text
from ..classes import resolve_class
from ..files import MAX_CONFIG_BYTES, MAX_JSON_BYTES, read_json, read_text, safe_name
from ..model import Model, load
from ..outputs import check_out, write_json
from .cells import Cell, CellOutput, write_cell
from .config import RANGES, Config, ConfigError, ExecutorSpec, check_executor, load_config
from .executors import (
    MAX_ATTEMPTS,
    RAY_MISSING,
    LocalExecutor,
    RayExecutor,
    Watch,
    ray_available,
)
from .runlock import LOCK_NAME, RunLock
from .sanity import class_sensitivity, randomized_copy
from .summary import summarize
from .validate import chunk_complete, read_chunk

Progress = Callable[[str, int, int], None]


def _names(paths) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in paths:
        stem = safe_name(p.stem)  # a folder name: never a path, never "~" (randomized copies)
        name = stem
        k = 2
        while name in out and out[name] != p:
            name = f"{stem}_{k}"
            k += 1
        out[name] = p
    return out


def _seed(base: int, *parts: str) -> int:
    h = hashlib.sha256("/".join(parts).encode()).digest()
    return (base + int.from_bytes(h[:4], "little")) % (2**31)


def resolve_classes(cfg: Config, model: Model) -> list[int]:
    """Indices, label names and ``random:N`` (drawn with the run's seed, no repeats)."""
    chosen: list[int] = []
    rng = np.random.default_rng(cfg.seed)
    for c in cfg.classes:
        if isinstance(c, str) and c.startswith("random:"):
            try:
                n = int(c.split(":", 1)[1])
            except ValueError:
                raise ConfigError(f"{cfg.path}: {c!r}: expected random:N") from None
            pool = [i for i in range(model.num_classes) if i not in chosen]
            if n < 1 or n > len(pool):
                raise ConfigError(f"{cfg.path}: {c!r}: N must be 1..{len(pool)}")
            chosen += [int(i) for i in rng.choice(pool, size=n, replace=False)]
        else:
            i = resolve_class(model, c)
            if i not in chosen:
                chosen.append(i)
    return chosen


_RUN_ENTRIES = {"config.toml", "images", "scores", "failed", "sanity", "train_on_generated",
                "transfer", "results.json", "results.csv", "summary.md", "report.html",
                LOCK_NAME}


def _differs(saved: Path, text: str) -> bool:
    """Whether the run folder holds another config's run. Where the cells run (the
    ``[executor]`` table) is not part of a run: a run started locally resumes on Ray."""
    if not saved.exists():
        return False
    old = read_text(saved, "saved config", MAX_CONFIG_BYTES, ConfigError)
    return old != text and _run_part(old) != _run_part(text)


def _run_part(text: str) -> object:
    """The config without its ``[executor]`` table (the text itself if it does not parse)."""
    import tomllib

    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError):
        return text
    data.pop("executor", None)
    return data


def _check_same_config(cfg: Config, force: bool) -> RunLock:
    """Refuse another config's run (before touching the folder), then take the run folder's
    lock (see :mod:`.runlock`) and, with ``force``, empty it. Returns the held lock."""
    check_out(cfg.out)
    saved = cfg.out / "config.toml"
    text = read_text(cfg.path, "config", MAX_CONFIG_BYTES, ConfigError)
    if _differs(saved, text) and not force:
        raise ConfigError(f"{cfg.out} holds a run of a different config; use another 'out' "
                          "or --force to start it afresh")
    cfg.out.mkdir(parents=True, exist_ok=True)
    if not os.access(cfg.out, os.W_OK):
        raise ConfigError(f"{cfg.out}: output folder is not writable")
    lock = RunLock(cfg.out).acquire()
    try:
        if _differs(saved, text):  # checked again under the lock
            if not force:
                raise ConfigError(f"{cfg.out} holds a run of a different config; use another "
                                  "'out' or --force to start it afresh")
            alien = sorted(e.name for e in cfg.out.iterdir()
                           if e.name not in _RUN_ENTRIES and not e.name.startswith(".tmp-"))
            if alien:  # --force deletes a run folder, never a folder that holds other files
                raise ConfigError(f"{cfg.out} holds files that are not part of a run "
                                  f"({', '.join(alien[:3])}); --force will not delete it")
            for e in cfg.out.iterdir():
                if e.name != LOCK_NAME:
                    shutil.rmtree(e) if e.is_dir() and not e.is_symlink() else e.unlink()
        if not saved.is_file():
            write_text(saved, text)
    except BaseException:
        lock.release()
        raise
    return lock




def run_experiment(path: str | os.PathLike, progress: Progress | None = None,
                   force: bool = False, executor: ExecutorSpec | None = None,
                   watch: Watch | None = None) -> dict:
    """Run (or resume) the experiment of the TOML config at ``path``; returns the summary.

    ``executor`` (else the config's ``[executor]`` table) says where the cells run (see
    :mod:`.executors`); ``watch(event, cell, info)`` hears each cell start, retry and fail.
    Cells that fail twice are listed in ``summary["failed_cells"]`` and in ``failed/``; the
    rest completes, and rerunning the same config retries them."""
    cfg = load_config(Path(path))
    spec = check_executor(executor if executor is not None else cfg.executor, "executor")
    if spec.kind == "ray" and not ray_available():
        raise ConfigError(RAY_MISSING)
    gens = {n: load(p) for n, p in _names(cfg.generators).items()}
    for gen in gens.values():  # unknown classes are refused before the run folder is touched
        resolve_classes(cfg, gen)
    models: dict[str, Model] = {}  # filled in by _run_locked; the executor ships them
    runner = (RayExecutor(models, spec.workers, spec.address) if spec.kind == "ray"
              else LocalExecutor(models))
    runner.connect()  # a cluster that cannot be joined is refused before the folder is touched
    try:
        with _check_same_config(cfg, force):
            return _run_locked(cfg, gens, progress, runner, watch)
    finally:
        runner.close()


def plan_cells(cfg: Config, gens: dict[str, Model], scorers: list[str]) -> list[Cell]:
    """Every cell of the run, in order: per generator, per method, ``batch_size`` items each;
    a cell's classes and seed depend on the config alone."""
    cells = []
    for gname, gen in gens.items():
        items = _items(cfg, gen)
        for spec in cfg.methods:
            for k, start in enumerate(range(0, len(items), cfg.batch_size)):
                chunk = tuple(items[start:start + cfg.batch_size])
                c0, k0 = chunk[0]  # a run without extra copies keeps its seeds
                seed = _seed(cfg.seed, gname, spec.label, str(c0),
                             *([f"copy{k0}"] if k0 else []))
                cells.append(Cell(gname, str(gen.path), spec, k, chunk, seed, tuple(scorers)))
    return cells


def _complete(cfg: Config, cell: Cell) -> bool:
    return chunk_complete(cfg.out / cell.marker, cfg.out, cell.gname, cell.spec.label,
                          cell.classes, list(cell.scorers))


def _run_locked(cfg: Config, gens: dict[str, Model], progress: Progress | None,
                runner: LocalExecutor | RayExecutor, watch: Watch | None) -> dict:
    """The run, with the run folder's lock held: no other writer, so every temp file left is
    a killed run's, and every chunk is checked against the config before it is trusted."""
    for stale in cfg.out.rglob(".tmp-*"):  # temp files of a killed run: never renamed into place
        if stale.is_file():
            stale.unlink(missing_ok=True)
    if cfg.sanity:
        for name in list(gens):
            rpath = randomized_copy(gens[name].path, cfg.out / "sanity", cfg.seed)
            gens[f"{name}~randomized"] = load(rpath)
    scorer_paths = _names([*cfg.generators, *cfg.scorers])
    scorers = {n: (gens[n] if n in gens else load(p)) for n, p in scorer_paths.items()}
    cells = plan_cells(cfg, gens, list(scorers))
    todo = [c for c in cells if not _complete(cfg, c)]
    pending = {c.key for c in todo}
    for cell in cells:  # a failure record of a cell finished since is out of date
        if cell.key not in pending:
            (cfg.out / "failed" / f"{cell.key}.json").unlink(missing_ok=True)
    done = len(cells) - len(todo)
    if progress is not None and done:
        progress("already done", done, len(cells))

    def finished(cell: Cell, output: CellOutput) -> None:
        nonlocal done
        write_cell(cfg.out, cell, output)
        if not _complete(cfg, cell):
            raise ConfigError(f"{cfg.out / cell.marker}: rows are missing after the chunk was "
                              "run (is another program writing in the run folder?)")
        (cfg.out / "failed" / f"{cell.key}.json").unlink(missing_ok=True)
        done += 1
        if progress is not None:
            progress(f"{cell.gname} {cell.spec.label}", done, len(cells))

    def failed(cell: Cell, error: str) -> None:
        write_json(cfg.out / "failed" / f"{cell.key}.json", {
            "cell": cell.key, "generating_model": cell.gname, "method": cell.spec.label,
            "classes": cell.classes, "error": error, "attempts": MAX_ATTEMPTS})

    runner.models.update({**scorers, **gens})
    runner.run(todo, finished, failed, watch)
    if cfg.train_on_generated is not None:
        from .train_on_generated import run_train_on_generated

        run_train_on_generated(cfg.out, cfg.train_on_generated, cfg.seed, progress)
    return finish(cfg.out, cfg.bootstrap, cfg.seed)


def _items(cfg: Config, model: Model) -> list[tuple[int, int]]:
    """(class, copy) pairs: every class once, then again for each extra image per class."""
    classes = resolve_classes(cfg, model)
    return [(c, k) for k in range(cfg.images_per_class) for c in classes]


COLUMNS = ["image", "method", "generating_model", "scoring_model", "target_class",
           "target_label", "probability", "p_jpeg", "p_blur", "p_half", "p_crop", "rank",
           "top1", "top5", "entropy", "same_model", "status", "top5_labels"]


def collect(out: Path) -> tuple[list[dict], list[str]]:
    rows: list[dict] = []
    skipped: list[str] = []
    for f in sorted((out / "scores").rglob("chunk*.json"), key=lambda p: str(p)):
        data = read_chunk(f)  # the shape run_cell returns, or a one-line error naming f
        rows += data["rows"]
        skipped += data["skipped"]
    return rows, skipped


def collect_failed(out: Path) -> list[dict]:
    """The failure records under ``failed/`` (see :func:`run_experiment`)."""
    found = []
    for f in sorted((out / "failed").rglob("chunk*.json"), key=lambda p: str(p)):
        data = read_json(f, "failure record", MAX_JSON_BYTES, ConfigError)
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str)
                                                 for k in ("cell", "error")):
            raise ConfigError(f"{f}: not a failure record; the file was altered or damaged "
                              "(delete it)")
        found.append(data)
    return found


def finish(out: Path, bootstrap: int = 1000, seed: int = 0) -> dict:
    """Assemble results.json/csv, the summaries and the report from the finished chunks."""
    from .report import render_report

    rows, skipped = collect(out)
    failed = collect_failed(out)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    summary = summarize(rows, bootstrap, seed)
    summary["class_sensitivity"] = class_sensitivity(out)
    summary["skipped"] = skipped
    summary["failed_cells"] = failed
    from .train_on_generated import collect_train_on_generated, rows_dir

    if rows_dir(out).is_dir():
        summary["train_on_generated"] = collect_train_on_generated(out)
    html, md = render_report(out, rows, summary)
    if failed:
        md += "\n## Failed cells\n\nRerun the same command to retry them.\n\n" + "".join(
            f"- {f['cell']} (classes {f['classes']}): {f['error']}\n" for f in failed)
    # everything that can fail on bad input (chunks, transfer rows, the bootstrap, images and
    # sidecars read by the report) ran above: the files below are rewritten together, never
    # one of them while the others keep older numbers
    write_text(out / "results.csv", buf.getvalue())
    write_json(out / "results.json", {"rows": rows, "summary": summary})
    write_text(out / "summary.md", md)
    write_text(out / "report.html", html)
    return summary


def report(run_dir: str | os.PathLike) -> Path:
    """Rebuild results, summaries and report.html of a run folder from its finished chunks."""
    import tomllib

    out = Path(run_dir)
    if not (out / "scores").is_dir():
        raise ConfigError(f"{out}: not a pydevis run folder (no scores/)")
    try:
        raw = tomllib.loads(read_text(out / "config.toml", "config", MAX_CONFIG_BYTES,
                                      ConfigError))
    except (ConfigError, tomllib.TOMLDecodeError):
        raw = {}
    values = {k: raw.get(k, d) for k, d in (("bootstrap", 1000), ("seed", 0))}
    for key, v in values.items():
        low, high = RANGES[key]
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise ConfigError(f"{out / 'config.toml'}: {key!r} must be an integer in "
                              f"[{low}, {high}], got {str(v)[:40]}")
    with RunLock(out):
        finish(out, values["bootstrap"], values["seed"])
    return out / "report.html"
