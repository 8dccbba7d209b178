"""Summaries of a run: per method × (generating model, scoring model), with bootstrap
confidence intervals over images, and the same-model vs other-model "transfer gap"."""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def bootstrap_ci(values: np.ndarray, stat, n: int, rng: np.random.Generator
                 ) -> tuple[float, float]:
    """95 % percentile interval of ``stat`` over ``n`` resamples with replacement."""
    if len(values) == 0:
        return (float("nan"), float("nan"))
    idx = rng.integers(0, len(values), size=(n, len(values)))
    stats = np.array([stat(values[i]) for i in idx])
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def _cell(rows: list[dict], n_boot: int, rng: np.random.Generator) -> dict:
    prob = np.array([float(r["probability"]) for r in rows])
    rank = np.array([float(r["rank"]) for r in rows])
    top1 = np.array([float(r["top1"] in (True, "True", 1)) for r in rows])
    top5 = np.array([float(r["top5"] in (True, "True", 1)) for r in rows])
    return {"n": len(rows),
            "mean_probability": float(prob.mean()), "mean_probability_ci":
                bootstrap_ci(prob, np.mean, n_boot, rng),
            "median_rank": float(np.median(rank)), "median_rank_ci":
                bootstrap_ci(rank, np.median, n_boot, rng),
            "top1_rate": float(top1.mean()), "top1_rate_ci":
                bootstrap_ci(top1, np.mean, n_boot, rng),
            "top5_rate": float(top5.mean()), "top5_rate_ci":
                bootstrap_ci(top5, np.mean, n_boot, rng)}


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
        by_mg[(r["method"], r["generating_model"])].append(r)
    for (m, g), rs in sorted(by_mg.items()):
        same = [float(r["probability"]) for r in rs if r["same_model"] in (True, "True")]
        other = [float(r["probability"]) for r in rs if r["same_model"] not in (True, "True")]
        if same and other:
            gaps.append({"method": m, "generating_model": g, "same_model": float(np.mean(same)),
                         "other_models": float(np.mean(other)),
                         "transfer_gap": float(np.mean(same) - np.mean(other))})
    methods = sorted({r["method"] for r in rows})
    per_method = {m: _cell([r for r in rows if r["method"] == m and
                            r["same_model"] not in (True, "True")] or
                           [r for r in rows if r["method"] == m], n_boot, rng)
                  for m in methods}
    return {"cells": cells, "transfer_gaps": gaps, "per_method_other_models": per_method}
