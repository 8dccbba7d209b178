"""``tune``: a random search over one method's hyper-parameters for one model, scored on the
pictures as saved, the winner written to the model card (Yosinski et al. 2015 chose their
presets by a random search too).

Trial 0 is the method's published defaults; trial k ≥ 1 draws every dimension of the method's
search space (:data:`SPACES`) from ``np.random.default_rng(seed)``, in order, so trial k has
the same settings in every run with that seed, whatever ``trials`` is. Every trial runs the
same ascent seed on the same classes; its images are saved as 8-bit PNGs, read back and
scored. The objective of a trial:

    J = mean over the classes c of  (p_model(c) + p_scorers(c) + p_robust(c)) / 3
        (with no scorer:            (p_model(c) + p_robust(c)) / 2)

- ``p_model(c)``: MODEL's softmax probability of c on the saved PNG;
- ``p_scorers(c)``: the mean of that probability over the scorers (each model resizes the
  PNG to its own input, as the cross-scoring does);
- ``p_robust(c)``: the mean of MODEL's probability of c after each perturbation of
  :mod:`pydevis.evaluation.perturb` (JPEG 75, blur radius 1, half size and back, 90 % crop).

Each term lies in [0, 1]: a picture that only its own net sees, or that falls apart when
blurred or cropped, loses to one other nets see and that survives them. The highest J wins
(ties: the earlier trial).

Out folder (resumable: a rerun with the same inputs skips the finished trials, and more
``trials`` extend a finished search)::

    tune.json                 the search's inputs (a rerun with other inputs is refused)
    trial_0007/*.png          the trial's pictures
    trial_0007/trial.json     its settings and scores, written last (the completion marker)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .card_settings import card_with_entry, writable_card
from .classes import expand_classes
from .errors import PydevisError
from .files import MAX_JSON_BYTES, read_json
from .image import read_rgb, save_png
from .methods.ascent import AscentConfig, ascend, method_config
from .model import Model
from .outputs import check_out, slug, write_json


@dataclass(frozen=True)
class Dim:
    """One hyper-parameter: uniform (or log-uniform) in [lo, hi], exactly 0 with probability
    ``zero`` (the regularizer off), rounded to 4 significant digits or to an integer."""

    name: str
    lo: float
    hi: float
    log: bool = False
    integer: bool = False
    zero: float = 0.0

    def draw(self, rng: np.random.Generator) -> float | int:
        off = rng.random() < self.zero  # always drawn: the stream stays aligned
        u = rng.uniform(np.log(self.lo), np.log(self.hi)) if self.log else \
            rng.uniform(self.lo, self.hi)
        v = float(np.exp(u)) if self.log else float(u)
        if self.integer:
            return 0 if off else int(round(v))
        return 0.0 if off else float(f"{v:.4g}")


_STEP = Dim("step_size", 0.5, 8.0, log=True)
_JITTER = Dim("jitter", 0, 8, integer=True)
#: the search space of each method; fixed fields beside it in :data:`FIXED`
SPACES: dict[str, tuple[Dim, ...]] = {
    # Yosinski et al.'s four regularizers and the step (RMS pixels per step, constant rule)
    "yosinski": (Dim("decay", 1e-5, 0.3, log=True, zero=0.25),
                 Dim("blur_sigma", 0.3, 1.5, zero=0.25), Dim("blur_every", 1, 8, integer=True),
                 Dim("norm_pct", 0.0, 50.0, zero=0.5), Dim("contrib_pct", 0.0, 50.0, zero=0.5),
                 Dim("step_size", 1.0, 16.0, log=True)),
    "gradient": (_STEP, Dim("decay", 1e-6, 1e-2, log=True, zero=0.3), _JITTER),
    "guided": (_STEP, _JITTER),
    "deconv": (_STEP, _JITTER),
    "deconv-prior": (_STEP, _JITTER, Dim("tv_weight", 0.005, 0.5, log=True),
                     Dim("alpha_weight", 1e-11, 1e-7, log=True)),
    "deconv-prior-reg": (_STEP, _JITTER, Dim("tv_weight", 0.005, 0.5, log=True),
                         Dim("blur_sigma", 0.3, 1.5, zero=0.25)),
    # Lucid's knobs: Adam's rate, the spectrum's decay, the transforms' strength
    "fourier": (Dim("step_size", 0.01, 0.2, log=True), Dim("decay_power", 0.5, 1.5),
                Dim("pad", 0, 24, integer=True), Dim("jitter", 0, 16, integer=True),
                Dim("scale_range", 0.0, 0.2), Dim("angle_max", 0.0, 20.0)),
}
FIXED: dict[str, dict[str, Any]] = {"yosinski": {"step_rule": "constant"}}
MAX_TRIALS = 10_000


@dataclass
class Trial:
    trial: int
    settings: dict[str, Any]
    objective: float
    p_model: float
    p_scorers: float | None
    p_robust: float
    per_class: list[dict] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class TuneResult:
    trials: list[Trial]
    best: Trial
    card: Path | None
    out: Path
    ran: int  # trials run by this call (the others were resumed from disk)


def trial_settings(method: str, k: int, seed: int, steps: int | None = None) -> dict[str, Any]:
    """The settings of trial ``k``: the defaults for k = 0, else the k-th draw."""
    base: dict[str, Any] = {} if steps is None else {"steps": steps}
    if k == 0:
        return base
    rng = np.random.default_rng(seed)
    space = SPACES[method]
    for _ in range(k):
        draw = {d.name: d.draw(rng) for d in space}
    return {**draw, **FIXED.get(method, {}), **base}


def objective(p_model: float, p_scorers: float | None, p_robust: float) -> float:
    """The formula of the module docstring, for one class."""
    terms = [p_model, p_robust] + ([] if p_scorers is None else [p_scorers])
    return float(np.mean(terms))


def check_inputs(model: Model, method: str, classes: Sequence[int | str],
                 scorers: dict[str, Model], trials: int, steps: int | None) -> list[int]:
    """Everything that can be refused before any work; returns the class indices."""
    if method not in SPACES:
        raise PydevisError(f"unknown method {method!r}; choose from {', '.join(SPACES)}")
    if not 1 <= trials <= MAX_TRIALS:
        raise PydevisError(f"--trials must be in 1..{MAX_TRIALS}, got {trials}")
    idx = expand_classes(model, classes)
    if not idx:
        raise PydevisError("nothing to tune on: give at least one --class")
    from .evaluation.cross_score import class_map

    for name, s in scorers.items():
        cmap = class_map(model.labels, s.labels)
        missing = [model.labels[c] for c in idx if c not in cmap]
        if missing:
            raise PydevisError(f"scorer {name}: class {missing[0]!r} is not in its labels")
    method_config(method, None, **({} if steps is None else {"steps": steps}))
    return idx


def _identity(model: Model, method: str, idx: list[int], scorers: dict[str, Model],
              steps: int | None, seed: int) -> dict[str, Any]:
    return {"model": str(model.path.resolve()), "method": method, "classes": idx,
            "scorers": {n: str(s.path.resolve()) for n, s in scorers.items()},
            "steps": steps, "seed": seed}


def _open_out(out: Path, ident: dict[str, Any]) -> None:
    """Create ``out`` with its tune.json, or check that it holds this very search."""
    saved = out / "tune.json"
    if saved.exists():
        have = read_json(saved, "tune record", MAX_JSON_BYTES)
        if have != ident:
            raise PydevisError(f"{out} holds a tune of other inputs ({saved}); use another "
                               "--out")
        for stale in out.glob("trial_*/.tmp-*"):  # a killed trial's temp files
            stale.unlink(missing_ok=True)
        return
    if out.exists() and any(out.iterdir()):
        raise PydevisError(f"{out}: not empty and not a tune folder; use another --out")
    write_json(saved, ident)


def _done(folder: Path, settings: dict[str, Any]) -> Trial | None:
    """The finished trial in ``folder``, or None (absent, unreadable or other settings)."""
    try:
        data = read_json(folder / "trial.json", "trial record", MAX_JSON_BYTES)
        t = Trial(**{f.name: data[f.name] for f in fields(Trial)})
    except (PydevisError, TypeError, KeyError):
        return None
    ok = t.settings == settings and all((folder / c["image"]).is_file() for c in t.per_class)
    return t if ok else None


def _score(model: Model, scorers: dict[str, Model], pngs: list[Path], idx: list[int]
           ) -> list[dict]:
    """Per class: the three terms of the objective, read back from the saved PNGs."""
    from .evaluation.cross_score import score_images

    pixels = np.stack([read_rgb(p) for p in pngs])
    names = [p.name for p in pngs]
    own, _ = score_images(pixels, names, idx, model.labels, {"model": model}, robust=True)
    other: dict[str, dict[str, float]] = {n: {} for n in names}
    if scorers:
        rows, _ = score_images(pixels, names, idx, model.labels, scorers)
        for r in rows:
            other[r.image][r.scoring_model] = r.probability
    out = []
    for s, c in zip(own, idx, strict=True):
        robust = {k: float(getattr(s, f"p_{k}")) for k in ("jpeg", "blur", "half", "crop")}
        p_sc = float(np.mean(list(other[s.image].values()))) if scorers else None
        p_rb = float(np.mean(list(robust.values())))
        out.append({"class": c, "label": model.labels[c], "image": s.image,
                    "p_model": s.probability, "p_scorers": p_sc, "p_robust": p_rb,
                    "scorers": other[s.image], "robust": robust,
                    "objective": objective(s.probability, p_sc, p_rb)})
    return out


def _run_trial(model: Model, method: str, k: int, settings: dict[str, Any], idx: list[int],
               scorers: dict[str, Model], seed: int, folder: Path,
               tick: Callable[[int, int], None] | None) -> Trial:
    t0 = time.monotonic()
    config: AscentConfig = method_config(method, None, **settings)
    res = ascend(model, idx, config, seed=seed, progress=tick)
    pngs = [save_png(r.pixels, folder / f"{c:04d}_{slug(model.labels[c])}.png")
            for r, c in zip(res, idx, strict=True)]
    per = _score(model, scorers, pngs, idx)
    mean = {k2: float(np.mean([p[k2] for p in per])) for k2 in ("p_model", "p_robust")}
    p_sc = float(np.mean([p["p_scorers"] for p in per])) if scorers else None
    trial = Trial(k, settings, float(np.mean([p["objective"] for p in per])), mean["p_model"],
                  p_sc, mean["p_robust"], per, time.monotonic() - t0)
    write_json(folder / "trial.json", {**asdict(trial), "config": asdict(config),
                                       "status": [r.status for r in res]})
    return trial


def tune(model: Model, method: str, classes: Sequence[int | str],
         scorers: dict[str, Model] | None = None, trials: int = 20, steps: int | None = None,
         seed: int = 0, out: str | os.PathLike = "pydevis-tune",
         card: str | os.PathLike | None = None, write_card: bool = True,
         progress: Callable[[int, int, str], None] | None = None) -> TuneResult:
    """Random search of ``method``'s settings for ``model`` (module docstring); writes the
    winner to the card (:func:`card_settings.writable_card`: ``card`` or the model's sidecar)
    as ``"ascent": {method: {"settings": ..., "objective": ..., ...}}``. ``steps`` fixes the
    ascent length of every trial (default: the method's). Every input is checked before any
    work; ``progress(done, total, what)`` counts ascent steps over the trials."""
    scorers = dict(scorers or {})
    idx = check_inputs(model, method, classes, scorers, trials, steps)
    target = writable_card(model.path, card) if write_card else None
    out = check_out(out)
    _open_out(out, _identity(model, method, idx, scorers, steps, seed))
    n_steps = method_config(method, None, **({} if steps is None else {"steps": steps})).steps
    done: list[Trial] = []
    ran = 0
    for k in range(trials):
        settings = trial_settings(method, k, seed, steps)
        folder = out / f"trial_{k:04d}"
        t = _done(folder, settings)
        if t is None:
            tick = None if progress is None else \
                (lambda s, total, k=k: progress(k * n_steps + s, trials * n_steps,
                                                f"trial {k + 1}/{trials}"))
            t = _run_trial(model, method, k, settings, idx, scorers, seed, folder, tick)
            ran += 1
        elif progress is not None:
            progress((k + 1) * n_steps, trials * n_steps, f"trial {k + 1}/{trials} (done)")
        done.append(t)
    best = max(done, key=lambda t: (t.objective, -t.trial))
    if target is not None:
        full = asdict(method_config(method, None, **best.settings))
        entry = {"settings": {k: v for k, v in full.items()
                              if k in best.settings or k == "steps"},
                 "objective": best.objective, "p_model": best.p_model,
                 "p_scorers": best.p_scorers, "p_robust": best.p_robust,
                 "trial": best.trial, "trials": trials, "classes": idx, "seed": seed,
                 "scorers": sorted(scorers), "tune_folder": str(out.resolve()),
                 "objective_formula": "mean over classes of the mean of p_model, "
                                      "p_scorers (if any) and p_robust"}
        write_json(target, card_with_entry(model, target, method, entry))
    return TuneResult(done, best, target, out, ran)
