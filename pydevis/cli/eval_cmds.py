"""``score``, ``experiment``, ``report``, ``demo``: cross-scoring and the experiment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import PydevisError
from .app import JsonOpt, QuietOpt, app, emit


@app.command(short_help="Score images on several models: probability and rank of the "
                        "intended class.")
def score(images: Annotated[list[str], typer.Argument(
              metavar="IMAGES...", help="Image files, folders or glob patterns (quoted).")],
          models: Annotated[list[str], typer.Option(
              "--model", "-m", metavar="MODEL", help="Scoring model (.onnx); repeat.")],
          cls: Annotated[str | None, typer.Option(
              "--class", "-c", metavar="CLASS",
              help="Intended class of every image (index or label of the first model).  "
                   "[default: the class in the JSON beside each image; images without one "
                   "are skipped with a note]")] = None,
          robust: Annotated[bool, typer.Option(
              "--robust/--no-robust",
              help="Also score each image after JPEG q75, blur r=1, half size and back, and a "
                   "centred 90 % crop (p_jpeg, p_blur, p_half, p_crop).")] = True,
          json: JsonOpt = False, quiet: QuietOpt = False):
    """Score images on several models: the intended class's probability, rank, top-1/top-5,
    and its probability after four small perturbations (see README, "What a run writes").

    Pixels: an image at a model's input size is used as it is, any other size is resized
    (bilinear) to it; each model applies its own preprocessing (see pydevis.scoring). Without
    --class, files with no generated-image JSON beside them (METHOD_grid.png, photos, unit
    images) are skipped with a note.

    Example: pydevis score out/ --model a.onnx --model b.onnx
    """
    from .. import load
    from ..classes import resolve_class
    from ..scoring import expand_paths, generated_class, score_files

    paths = expand_paths(images)
    loaded = {Path(p).stem: load(p) for p in models}
    first = next(iter(loaded.values()))
    keep, classes, notes = [], [], []
    for img in paths:
        if cls is not None:
            keep.append(img)
            classes.append(resolve_class(first, cls))
            continue
        found, why = generated_class(img)
        if found is None:
            notes.append(f"{img}: {why}")
            continue
        keep.append(img)
        classes.append(resolve_class(first, found))
    if not quiet and not json:
        for n in notes:
            typer.echo(f"note: skipped {n}", err=True)
    if not keep:
        raise PydevisError("no image to score" + (f" ({len(notes)} skipped: not generated "
                                                  "images; give --class)" if notes else ""))
    scores, skipped = score_files(keep, classes, first.labels, loaded, robust=robust)
    rows = [s.row() for s in scores]
    data = {"scores": rows, "skipped": skipped + notes}
    extra = ("p_jpeg", "p_blur", "p_half", "p_crop")
    text = "\n".join(
        f"{r['image']}  {r['scoring_model']:24s} p={r['probability']:.3f} rank={r['rank']}"
        + "".join(f" {k}={r[k]:.3f}" for k in extra if r.get(k) is not None)
        + f" {r['target_label'][:30]}" for r in rows)
    emit(data, json, quiet, text + "".join(f"\nskipped: {k}" for k in skipped))


@app.command()
def experiment(config: Annotated[str, typer.Argument(help="Experiment config (TOML).")],
               force: Annotated[bool, typer.Option(
                   "--force", help="Start afresh if --out holds a different run.")] = False,
               executor: Annotated[str | None, typer.Option(
                   "--executor", metavar="local|ray",
                   help="Where the cells run: this process, or Ray workers (pip install "
                        "'pydevis[ray]').  [default: the config's [executor], else local]")
               ] = None,
               address: Annotated[str | None, typer.Option(
                   "--address", metavar="ADDR",
                   help="Join a running Ray cluster: auto, HOST:PORT or ray://HOST:PORT.  "
                        "[default: start a local Ray]")] = None,
               workers: Annotated[int | None, typer.Option(
                   "--workers", metavar="N",
                   help="Ray workers (one CPU each).  [default: the machine's or cluster's "
                        "CPUs]")] = None,
               plan: Annotated[bool, typer.Option(
                   "--plan", help="Do not run: print the number of cells and, from a short "
                                  "timed probe per (model, method), the core-hours and the "
                                  "wall time on the workers.")] = False,
               json: JsonOpt = False, quiet: QuietOpt = False):
    """Generate → cross-score → summarize; resumes where a killed run stopped.

    The work is cut into cells (generating model, method, batch_size classes); with
    --executor ray they run on Ray workers, and this process alone writes the run folder. A
    cell whose worker dies is retried; a cell failing twice is listed (failed/ in the run
    folder, and here) and the rest completes; rerunning the command retries it (exit code 1
    meanwhile).

    Example: pydevis experiment run.toml --executor ray --workers 8
    """
    from ..evaluation.config import ExecutorSpec, check_executor, load_config
    from ..evaluation.experiment import run_experiment
    from .cell_progress import CellProgress

    cfg = load_config(config)
    spec = check_executor(ExecutorSpec(
        executor if executor is not None else cfg.executor.kind,
        address if address is not None else cfg.executor.address,
        workers if workers is not None else cfg.executor.workers), "command line")
    if plan:
        from ..evaluation.plan import format_plan, plan_experiment

        found = plan_experiment(config, spec)
        emit(found, json, quiet, format_plan(found))
        return
    with CellProgress(quiet) as shown:
        summary = run_experiment(config, progress=shown.progress, force=force, executor=spec,
                                 watch=shown.watch)
    out = cfg.out
    emit({"out": str(out), "summary": summary}, json, quiet,
         (out / "summary.md").read_text() + f"\nreport: {out / 'report.html'}")
    failed = summary.get("failed_cells") or []
    if failed:
        typer.echo(f"error: {len(failed)} cell(s) failed (listed in {out / 'failed'}); "
                   "rerun the same command to retry them", err=True)
        raise typer.Exit(1)


@app.command()
def report(run_dir: Annotated[str, typer.Argument(help="A run folder of `experiment`.")],
           quiet: QuietOpt = False):
    """Rebuild results.csv/json, summary.md and report.html of a run folder.

    Example: pydevis report runs/first
    """
    from ..evaluation.experiment import report as _report

    path = _report(run_dir)
    emit({}, False, quiet, f"report: {path}")


@app.command()
def demo(out: Annotated[str, typer.Option("--out", "-o", help="Run folder.")] = "pydevis-demo",
         steps: Annotated[int, typer.Option(min=1, max=100_000,
                                            help="Ascent steps per method.")] = 60,
         quiet: QuietOpt = False):
    """The main job on the bundled CIFAR-10 models: every method on one model, cross-scored
    on all of them, with the HTML report.

    Example: pydevis demo --out pydevis-demo
    """
    from ..demo import write_demo_config
    from ..evaluation.experiment import run_experiment

    cfg = write_demo_config(Path(out), steps)

    def show(label: str, done: int, total: int) -> None:
        if not quiet:
            typer.echo(f"[{done}/{total}] {label}", err=True)

    run_experiment(cfg, progress=show)
    emit({}, False, quiet, (Path(out) / "summary.md").read_text()
         + f"\nreport: {Path(out).resolve() / 'report.html'}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(ctx: typer.Context,
          which: Annotated[str, typer.Argument(help="ascent_step or kernels")] = "ascent_step"):
    """Run a benchmark of bench/ (a source checkout); extra options go to the script
    (e.g. --quick). Prints a table and saves JSON under bench/results/.

    Example: pydevis bench kernels --quick
    """
    import subprocess
    import sys

    candidates = [Path.cwd() / "bench", Path(__file__).resolve().parents[2] / "bench"]
    folder = next((d for d in candidates if (d / f"{which}.py").is_file()), None)
    if folder is None:
        raise PydevisError(f"bench/{which}.py not found: run from a pydevis source checkout")
    raise typer.Exit(subprocess.call([sys.executable, str(folder / f"{which}.py"), *ctx.args],
                                     cwd=folder.parent))
