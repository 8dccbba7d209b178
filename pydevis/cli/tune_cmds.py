"""``pydevis tune``: random search over a method's hyper-parameters, the winner written to the
model card (see :mod:`pydevis.tuning`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from .. import tuning as T
from ..errors import PydevisError
from .app import (
    BgrOpt,
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
from .ascent_cmds import Method
from .model_cmds import ModelArg
from .progress import Progress

if TYPE_CHECKING:
    from ..model import Model

HELP = """Tune a method for one model: a random search over its hyper-parameters, scored on
the saved 8-bit PNGs, the winner written to the model card.

Trial 0 is the method's published defaults; trials 1..N-1 are random draws (seeded by
--seed). Each trial makes one picture per --class (same ascent seed) and scores it by

    J = mean over the classes of (p_model + p_scorers + p_robust) / 3

p_model: MODEL's probability of the class on the saved PNG; p_scorers: the mean over the
--scorer models (left out of the mean without scorers); p_robust: MODEL's probability after
JPEG 75, blur, half size and back, and a 90 % crop (their mean). The highest J wins.

The winner goes to the card as "ascent": {METHOD: {"settings": ...}}: --card FILE, else the
model's own MODEL.onnx.json (a card that cannot be written, such as a read-only shared
model's, is refused: pass --card, a copy of the card is made there). From then on
`visualize` (with the same --card, or the sidecar) and `experiment` use these settings for
the model; each image's JSON says so (settings_source "card").

Resumable: the trial_K folders in --out are written one by one, each one's trial.json
last; the same command again skips the finished trials, and a larger --trials extends the
search.

Example:

\b
    pydevis tune model.onnx --method yosinski --class 1 --class goldfish
        --trials 20 --scorer other.onnx --card my_card.json
"""


@app.command(help=HELP, short_help="Tune a method's settings for a model (random search).")
def tune(model: ModelArg,
         method: Annotated[Method, typer.Option(
             "--method", "-m", metavar="METHOD",
             help="The method to tune (as in visualize).")] = Method.yosinski,
         scorers: Annotated[list[str], typer.Option(
             "--scorer", "-s", metavar="MODEL",
             help="Another model whose probability counts in the objective; repeat.  "
                  "[default: none]")] = [],  # noqa: B006 (typer reads it)
         classes: Annotated[list[str], typer.Option(
             "--class", "-c", metavar="CLASS",
             help="Class index or label name to tune on; repeat (at least one).")
         ] = [],  # noqa: B006
         trials: Annotated[int, typer.Option(
             metavar="N", help="Trials, the first the published defaults.")] = 20,
         steps: Annotated[int | None, typer.Option(
             metavar="N", help="Ascent steps of every trial (written to the card with the "
                               "winner).  [default: the method's]")] = None,
         seed: Annotated[int, typer.Option(
             metavar="N", help="Seed of the draws and of every trial's ascent.")] = 0,
         out: Annotated[str, typer.Option(
             "--out", "-o", metavar="DIR", help="The trials' folder.")] = "pydevis-tune",
         card: Annotated[str | None, typer.Option(
             "--card", metavar="FILE",
             help="Model card to write the winner to (made as a copy of the model's card "
                  "if absent).  [default: MODEL.onnx.json]")] = None,
         size: SizeOpt = None, bgr: BgrOpt = False, mean: MeanOpt = None,
         std: StdOpt = None, labels: LabelsOpt = None, json: JsonOpt = False,
         quiet: QuietOpt = False):
    if steps is not None and steps < 1:
        raise PydevisError(f"--steps must be >= 1, got {steps}")
    if seed < 0:
        raise PydevisError(f"--seed must be >= 0, got {seed}")
    m = load_model(model, size, bgr, mean, std, labels)
    others: dict[str, Model] = {}
    for s in scorers:
        sm = load_model(s)
        name = sm.path.stem
        others[name if name not in others else f"{name}_{len(others)}"] = sm
    with Progress(f"tune {method.value}", quiet or json) as show:
        res = T.tune(m, method.value, classes, others, trials=trials, steps=steps, seed=seed,
                     out=out, card=card, progress=show)
    b = res.best
    data = {"out": str(res.out), "card": str(res.card), "method": method.value,
            "trials_run": res.ran, "best": {"trial": b.trial, "objective": b.objective,
                                            "p_model": b.p_model, "p_scorers": b.p_scorers,
                                            "p_robust": b.p_robust, "settings": b.settings},
            "trials": [{"trial": t.trial, "objective": t.objective, "p_model": t.p_model,
                        "p_scorers": t.p_scorers, "p_robust": t.p_robust}
                       for t in res.trials]}
    lines = [f"trial {t.trial:4d}  J={t.objective:.3f}  p_model={t.p_model:.3f}  "
             + (f"p_scorers={t.p_scorers:.3f}  " if t.p_scorers is not None else "")
             + f"p_robust={t.p_robust:.3f}" + ("  <- best" if t is b else "")
             for t in res.trials]
    what = ", ".join(f"{k}={v}" for k, v in b.settings.items()) or "the published defaults"
    lines.append(f"{res.ran} trials run, {len(res.trials) - res.ran} resumed; best: trial "
                 f"{b.trial} ({what}), written to {res.card}")
    emit(data, json, quiet and not json, "\n".join(lines))
