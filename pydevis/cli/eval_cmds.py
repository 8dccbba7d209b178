"""``score``, ``experiment``, ``report``, ``demo``: cross-scoring and the experiment."""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Annotated

import typer

from ..errors import PydevisError
from .app import JsonOpt, QuietOpt, app, emit


@app.command()
def score(images: Annotated[list[str], typer.Argument(help="Image files (pixel space).")],
          models: Annotated[list[str], typer.Option("--model", "-m",
                                                    help="Scoring model; repeat.")],
          cls: Annotated[str | None, typer.Option(
              "--class", "-c", help="Intended class (index or label of the first model); "
                                    "default: the 'label' in the JSON beside each image.")] = None,
          json: JsonOpt = False, quiet: QuietOpt = False):
    """Score images on several models: probability, rank, top-1/top-5 of the intended class.

    Example: pydevis score out/*.png --model a.onnx --model b.onnx
    """
    import numpy as np

    from .. import load
    from ..api import resolve_class
    from ..evaluation.cross_score import score_images
    from ..image import load_for

    loaded = {Path(p).stem: load(p) for p in models}
    first = next(iter(loaded.values()))
    classes = []
    for img in images:
        if cls is not None:
            classes.append(resolve_class(first, cls))
            continue
        side = Path(img).with_suffix(".json")
        if not side.is_file():
            raise PydevisError(f"{img}: no --class given and no {side.name} beside it")
        meta = jsonlib.loads(side.read_text())
        classes.append(resolve_class(first, meta.get("label", meta.get("target_class"))))
    pixels = [load_for(p, first.spec.size, 1.0) for p in images]
    scores, skipped = score_images(np.stack(pixels), images, classes, first.labels, loaded)
    data = {"scores": [s.row() for s in scores], "skipped": skipped}
    text = "\n".join(f"{s.image}  {s.scoring_model:24s} p={s.probability:.3f} rank={s.rank}"
                     f" {s.target_label[:30]}" for s in scores)
    emit(data, json, quiet, text + "".join(f"\nskipped: {k}" for k in skipped))


@app.command()
def experiment(config: Annotated[str, typer.Argument(help="Experiment config (TOML).")],
               force: Annotated[bool, typer.Option(
                   "--force", help="Start afresh if --out holds a different run.")] = False,
               json: JsonOpt = False, quiet: QuietOpt = False):
    """Generate → cross-score → summarize; resumes where a killed run stopped.

    Example: pydevis experiment run.toml
    """
    from ..evaluation.config import load_config
    from ..evaluation.experiment import run_experiment

    def show(label: str, done: int, total: int) -> None:
        if not quiet:
            typer.echo(f"[{done}/{total}] {label}", err=True)

    summary = run_experiment(config, progress=show, force=force)
    out = load_config(config).out
    emit({"out": str(out), "summary": summary}, json, quiet,
         (out / "summary.md").read_text() + f"\nreport: {out / 'report.html'}")


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
         steps: Annotated[int, typer.Option(min=1, help="Ascent steps per method.")] = 60,
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
