"""Summaries of a run, with bootstrap confidence intervals over images.

- ``cells``: per method × (generating model, scoring model).
- ``per_method``: per method, three groups of rows kept apart —
  ``same_model`` (images of the trained generators, scored by their generator),
  ``other_models`` (the same images, scored by every other model), and
  ``randomized`` (images made on the weight-randomized copies, scored by the trained original:
  Adebayo et al. 2018's sanity check; a faithful method should score low there).
  Each group has the mean intended-class probability, the top-1 rate, and the mean probability
  after each perturbation (``p_jpeg``, ...); the unit of resampling is the image (an image
  scored by several other models counts once, with its mean over them).
- ``transfer_gaps``: per (method, trained generator), same-model minus other-model probability.
- ``status``: per method, how many images ended ``low``, ``diverged`` or ``zero-gradient``.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from .perturb import PERTURBATIONS

ROBUST = tuple(f"p_{k}" for k in PERTURBATIONS)


def bootstrap_ci(values: np.ndarray, stat, n: int, rng: np.random.Generator
                 ) -> tuple[float, float]:
    """95 % percentile interval of ``stat`` (a numpy reduction taking ``axis``, such as
    ``np.mean``) over ``n`` resamples with replacement, in blocks of at most ~4M values."""
    if len(values) == 0:
        return (float("nan"), float("nan"))
    block = max(1, 4_000_000 // len(values))
    stats = np.concatenate([
        stat(values[rng.integers(0, len(values), size=(min(block, n - k), len(values)))], axis=1)
        for k in range(0, n, block)])
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def _true(v) -> bool:
    return v in (True, "True", 1, "1")


def _num(v) -> float | None:
    if v is None or v == "":
        return None
    f = float(v)
    return f if np.isfinite(f) else None


def _cell(rows: list[dict], n_boot: int, rng: np.random.Generator) -> dict:
    prob = np.array([float(r["probability"]) for r in rows])
    rank = np.array([float(r["rank"]) for r in rows])
    top1 = np.array([float(_true(r["top1"])) for r in rows])
    top5 = np.array([float(_true(r["top5"])) for r in rows])
    return {"n": len(rows),
            "mean_probability": float(prob.mean()), "mean_probability_ci":
                bootstrap_ci(prob, np.mean, n_boot, rng),
            "median_rank": float(np.median(rank)), "median_rank_ci":
                bootstrap_ci(rank, np.median, n_boot, rng),
            "top1_rate": float(top1.mean()), "top1_rate_ci":
                bootstrap_ci(top1, np.mean, n_boot, rng),
            "top5_rate": float(top5.mean()), "top5_rate_ci":
                bootstrap_ci(top5, np.mean, n_boot, rng),
            **_robust(rows, n_boot, rng, by_image=False)}


def _per_image(rows: list[dict], key: str) -> np.ndarray:
    """One value per image: the mean of ``key`` over the image's rows (None values skipped)."""
    vals: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        v = _num(r.get(key)) if key != "top1" else float(_true(r["top1"]))
        if v is not None:
            vals[r["image"]].append(v)
    return np.array([np.mean(v) for v in vals.values()], np.float64)


def _robust(rows: list[dict], n_boot: int, rng: np.random.Generator, by_image: bool) -> dict:
    out: dict = {}
    for key in ROBUST:
        v = (_per_image(rows, key) if by_image else
             np.array([x for x in (_num(r.get(key)) for r in rows) if x is not None]))
        out[key] = float(v.mean()) if len(v) else None
        out[f"{key}_ci"] = bootstrap_ci(v, np.mean, n_boot, rng) if len(v) else None
    return out


def _group(rows: list[dict], n_boot: int, rng: np.random.Generator) -> dict | None:
    """Mean probability, top-1 rate and robustness of a group of rows, per image."""
    if not rows:
        return None
    prob, top1 = _per_image(rows, "probability"), _per_image(rows, "top1")
    return {"images": len(prob), "rows": len(rows),
            "mean_probability": float(prob.mean()),
            "mean_probability_ci": bootstrap_ci(prob, np.mean, n_boot, rng),
            "top1_rate": float(top1.mean()),
            "top1_rate_ci": bootstrap_ci(top1, np.mean, n_boot, rng),
            **_robust(rows, n_boot, rng, by_image=True)}


def per_method(rows: list[dict], n_boot: int, rng: np.random.Generator) -> dict:
    out = {}
    for m in sorted({r["method"] for r in rows}):
        mine = [r for r in rows if r["method"] == m]
        real = [r for r in mine if "~" not in r["generating_model"]]
        rand = [r for r in mine if "~" in r["generating_model"] and _true(r["same_model"])]
        out[m] = {"same_model": _group([r for r in real if _true(r["same_model"])], n_boot, rng),
                  "other_models": _group([r for r in real if not _true(r["same_model"])],
                                         n_boot, rng),
                  "randomized": _group(rand, n_boot, rng)}
    return out


def summarize(rows: list[dict], n_boot: int = 1000, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["method"], r["generating_model"], r["scoring_model"])].append(r)
    cells = [{"method": m, "generating_model": g, "scoring_model": s, **_cell(rs, n_boot, rng)}
             for (m, g, s), rs in sorted(groups.items())]
    gaps = []
    by_mg: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        if "~" not in r["generating_model"]:  # randomized copies: see per_method["randomized"]
            by_mg[(r["method"], r["generating_model"])].append(r)
    for (m, g), rs in sorted(by_mg.items()):
        same = [float(r["probability"]) for r in rs if _true(r["same_model"])]
        other = [float(r["probability"]) for r in rs if not _true(r["same_model"])]
        if same and other:
            gaps.append({"method": m, "generating_model": g, "same_model": float(np.mean(same)),
                         "other_models": float(np.mean(other)),
                         "transfer_gap": float(np.mean(same) - np.mean(other))})
    status: dict[str, dict[str, int]] = {}
    seen: set[tuple[str, str]] = set()
    for r in rows:
        if (r["method"], r["image"]) not in seen:
            seen.add((r["method"], r["image"]))
            status.setdefault(r["method"], Counter())[r.get("status") or "ok"] += 1
    return {"cells": cells, "transfer_gaps": gaps, "per_method": per_method(rows, n_boot, rng),
            "status": {m: dict(c) for m, c in sorted(status.items())}}
