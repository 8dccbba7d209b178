"""``pydevis visualize``: class and unit images by ascent, with the per-method defaults."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from .. import api
from ..card_settings import card_entry
from ..methods.ascent import METHODS, YOSINSKI
from .app import (
    BgrOpt,
    CardOpt,
    JsonOpt,
    LabelsOpt,
    MeanOpt,
    QuietOpt,
    SizeOpt,
    StdOpt,
    app,
    emit,
    load_model,
)
from .model_cmds import ModelArg
from .progress import Progress


class Method(StrEnum):
    """``--method``: the names of ``ascent.METHODS`` (tests/test_cli.py checks they agree)."""

    gradient = "gradient"
    yosinski = "yosinski"
    guided = "guided"
    deconv = "deconv"
    deconv_prior = "deconv-prior"
    deconv_prior_reg = "deconv-prior-reg"
    fourier = "fourier"


class StepNorm(StrEnum):
    rms = "rms"
    none = "none"


def _g(v: float) -> str:
    return f"{v:g}" if v < 1e6 else "∞"


def defaults_table() -> str:
    """The per-method defaults, as shown in ``visualize --help``."""
    rows = [("method", "mode", "steps", "step-size", "rule", "jitter", "decay", "blur σ/every",
             "clip %norm/%contrib", "prior")]
    configs = [(name, c) for name, c in METHODS.items() if name != "yosinski"]
    configs[1:1] = [(f"yosinski --preset {p}" + (" (default)" if p == api.DEFAULT_PRESET
                                                 else ""), c) for p, c in YOSINSKI.items()]
    for name, c in configs:
        prior = f"TV {c.tv_weight:g}, α {c.alpha_weight:g}" if c.tv_weight or c.alpha_weight \
            else "-"
        rows.append((name, c.mode, str(c.steps), _g(c.step_size), c.step_rule, str(c.jitter),
                     f"{c.decay:g}", f"{c.blur_sigma:g}/{c.blur_every}",
                     f"{c.norm_pct:g}/{c.contrib_pct:g}", prior))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(f"{v:{w}s}" for v, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


HELP = f"""Class and unit images by activation maximization (gradient ascent on the pixels).

A class (--class) maximizes the class's pre-softmax score; a unit (--unit TENSOR:CHANNEL)
the mean of one channel's map, TENSOR:CHANNEL@Y,X one neuron, TENSOR:all every channel of
the tensor (`pydevis info MODEL --tensors` lists the tensors). Both repeat and mix; targets
run in batches (--batch-size) with bounded memory.

Settings: the method's published defaults (the table below), or those `pydevis tune`
wrote to the model card (`ascent.METHOD`; not with an explicit --preset), with the flags
on top; each JSON records which (`settings_source`: paper, card or flags).

Writes, in --out, one PNG and one JSON (every effective setting) per target, named
METHOD[PRESET]_CLASS_LABEL or METHOD[PRESET]_TENSOR_CHANNEL[_Y_X] (e.g.
yosinski3_0001_goldfish.png), and METHOD[PRESET]_grid.png with all of them.

Defaults of each method (--steps, --step-size, --jitter override them; step-size is the
RMS pixel change of one step on the 0..255 scale, a cap for the "progress" rule; for
fourier, Olah et al. 2017's Fourier-parameterized image, Adam's learning rate):

\b
{defaults_table()}

Example: pydevis visualize model.onnx --class 1 --class goldfish --unit conv5:all --preset 3
"""

OutOpt = Annotated[str, typer.Option("--out", "-o", metavar="DIR", help="Output folder.")]


@app.command(help=HELP, short_help="Class and unit images by activation maximization.")
def visualize(model: ModelArg,
              classes: Annotated[list[str], typer.Option(
                  "--class", "-c", metavar="CLASS",
                  help="Class index, label name (any synonym, case-insensitive) or 'all'; "
                       "repeat.  [default: none]")] = [],  # noqa: B006 (typer reads it)
              units: Annotated[list[str], typer.Option(
                  "--unit", "-u", metavar="TENSOR:CH[@Y,X]",
                  help="Hidden unit: a channel (TENSOR:CH), a neuron (TENSOR:CH@Y,X) or every "
                       "channel (TENSOR:all); repeat.  [default: none]")] = [],  # noqa: B006
              method: Annotated[Method, typer.Option(
                  "--method", "-m", metavar="METHOD",
                  help="deconv-prior-reg, deconv-prior, deconv, guided, gradient, yosinski "
                       "or fourier (table above).")] = Method.yosinski,
              preset: Annotated[int | None, typer.Option(
                  "--preset", min=1, max=4, metavar="1-4",
                  help="Regularizer preset of yosinski (Yosinski et al. 2015, Table 1).  "
                       f"[default: {api.DEFAULT_PRESET}]")] = None,
              out: OutOpt = "pydevis-out",
              seed: Annotated[int, typer.Option(
                  metavar="N", help="Seed of the random jitter and of noise starts; a batch "
                                    "starting at target k uses seed + k (saved as batch_seed).")
              ] = 0,
              steps: Annotated[int | None, typer.Option(
                  min=1, metavar="N", help="Ascent steps.  [default: per method, table above]")
              ] = None,
              step_size: Annotated[float | None, typer.Option(
                  min=0.0, metavar="X",
                  help="RMS pixel change per step (0..255 scale); with --step-norm none, the "
                       "factor of the raw gradient.  [default: per method]")] = None,
              step_norm: Annotated[StepNorm | None, typer.Option(
                  metavar="rms|none",
                  help="rms: steps in pixels, the same on any model; none: the papers' literal "
                       "step on the raw gradient.  [default: rms]")] = None,
              jitter: Annotated[int | None, typer.Option(
                  min=0, metavar="PIXELS",
                  help="Random shift of the image, up to this many pixels, before each step.  "
                       "[default: per method]")] = None,
              batch_size: Annotated[int | None, typer.Option(
                  min=1, metavar="N",
                  help="Targets per ascent batch.  [default: from the model's activation "
                       "memory, at most 64]")] = None,
              size: SizeOpt = None, bgr: BgrOpt = False, mean: MeanOpt = None,
              std: StdOpt = None, labels: LabelsOpt = None, card: CardOpt = None,
              json: JsonOpt = False, quiet: QuietOpt = False):
    m = load_model(model, size, bgr, mean, std, labels, card)
    written: list = []
    tuned = preset is None and card_entry(m, method.value) is not None
    if method.value == "yosinski" and not tuned:
        preset = preset or api.DEFAULT_PRESET
    tag = method.value + (str(preset) if preset else "")
    with Progress(tag, quiet or json) as show:
        res = api.visualize(m, classes, method.value, preset, out, seed,
                            batch_size=batch_size, keep_pixels=False, progress=show,
                            units=units, written=written, steps=steps, step_size=step_size,
                            jitter=jitter, step_norm=step_norm.value if step_norm else None)
    rows = []
    for r in res:
        if "probability" in r.config:
            c = int(r.target)
            rows.append({"class": c, "label": m.labels[c], "status": r.status,
                         "probability": r.config["probability"],
                         "best_objective": r.best_objective})
        else:
            rows.append({"unit": str(r.target), "status": r.status,
                         "activation": r.config["activation"],
                         "best_objective": r.best_objective})
    files = [str(p) for p in written]
    data = {"out": out, "method": method.value, "preset": preset,
            "settings_source": "flags" if any(v is not None for v in (
                steps, step_size, jitter, step_norm)) else "card" if tuned else "paper",
            "results": rows, "files": files}
    lines = [f"{d['class']:5d} {d['label'][:30]:30s} p={d['probability']:.3f} {d['status']}"
             if "class" in d else
             f"{d['unit'][:36]:36s} activation={d['activation']:.4g} {d['status']}"
             for d in rows]
    emit(data, json, quiet and not json,
         "\n".join(lines) + f"\n{len(files)} files written to {out}")
