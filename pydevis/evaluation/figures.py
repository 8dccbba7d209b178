"""The report's figures (matplotlib, object API only: no pyplot state), as PNG data URIs.

Every figure takes the summary (or rows) of a run and returns ``data:image/png;base64,...``,
or None when there is nothing to draw. Colours: one per method, the same in every figure.
"""

from __future__ import annotations

import base64
import io
from collections import defaultdict

import numpy as np
from matplotlib.figure import Figure

from .perturb import PERTURBATIONS

_GROUPS = (("same_model", "same model"), ("other_models", "other models"),
           ("randomized", "randomized copy"))
_PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
            "#ff9da7", "#9c755f", "#bab0ac"]


def colors(methods: list[str]) -> dict[str, str]:
    return {m: _PALETTE[k % len(_PALETTE)] for k, m in enumerate(methods)}


def _uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _err(mean: float, ci) -> tuple[float, float]:
    if ci is None or not np.all(np.isfinite(ci)):
        return (0.0, 0.0)
    return (max(0.0, mean - ci[0]), max(0.0, ci[1] - mean))


def faithfulness(per_method: dict) -> str | None:
    """Grouped horizontal bars: per method, mean intended-class probability on the same model,
    on the other models and of the randomized copies' images, with 95 % CIs."""
    methods = list(per_method)
    if not methods:
        return None
    fig = Figure(figsize=(8, 0.55 * len(methods) + 1.4))
    ax = fig.add_subplot()
    h = 0.8 / len(_GROUPS)
    for k, ((key, name), col) in enumerate(zip(_GROUPS, ("#4e79a7", "#f28e2b", "#bab0ac"),
                                               strict=True)):
        y, v, e = [], [], []
        for i, m in enumerate(methods):
            g = per_method[m].get(key)
            if g is None:
                continue
            y.append(i + (k - 1) * h)
            v.append(g["mean_probability"])
            e.append(_err(g["mean_probability"], g["mean_probability_ci"]))
        if y:
            ax.barh(y, v, height=h, color=col, label=name,
                    xerr=np.array(e).T, error_kw={"elinewidth": 0.8, "capsize": 2})
    ax.set_yticks(range(len(methods)), methods)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("mean probability of the intended class (95 % CI over images)")
    _legend_above(ax, ncol=3)
    ax.grid(axis="x", alpha=0.3)
    return _uri(fig)


def _legend_above(ax, ncol: int) -> None:
    """The legend in one row above the axes: inside them (lower right) it covered the last
    method's bars, which reach 1.0 for the methods that work."""
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=ncol, fontsize=8,
              frameon=False)


def robustness(per_method: dict, group: str = "same_model") -> str | None:
    """Per method: the probability on the saved PNG and after each perturbation, on ``group``."""
    methods = [m for m in per_method if per_method[m].get(group)]
    if not methods:
        return None
    keys = [("mean_probability", "saved PNG")] + [(f"p_{k}", k) for k in PERTURBATIONS]
    fig = Figure(figsize=(9, 0.6 * len(methods) + 1.4))
    ax = fig.add_subplot()
    h = 0.8 / len(keys)
    cmap = ["#333333", "#4e79a7", "#59a14f", "#edc948", "#e15759"]
    for k, (key, name) in enumerate(keys):
        y, v, e = [], [], []
        for i, m in enumerate(methods):
            g = per_method[m][group]
            if g.get(key) is None:
                continue
            y.append(i + (k - (len(keys) - 1) / 2) * h)
            v.append(g[key])
            e.append(_err(g[key], g.get(f"{key}_ci")))
        if y:
            ax.barh(y, v, height=h, color=cmap[k], label=name, xerr=np.array(e).T,
                    error_kw={"elinewidth": 0.6, "capsize": 1.5})
    ax.set_yticks(range(len(methods)), methods)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("mean probability of the intended class, "
                  + ("same model" if group == "same_model" else "other models"))
    _legend_above(ax, ncol=5)
    ax.grid(axis="x", alpha=0.3)
    return _uri(fig)


def same_vs_other(rows: list[dict], methods: list[str]) -> str | None:
    """One panel per method: each image of a trained generator at (probability on its own
    model, mean probability on the other models); the diagonal is perfect transfer."""
    pts: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(lambda: [None, []]))
    for r in rows:
        if "~" in r["generating_model"]:
            continue
        cell = pts[r["method"]][r["image"]]
        if r["same_model"] in (True, "True"):
            cell[0] = float(r["probability"])
        else:
            cell[1].append(float(r["probability"]))
    methods = [m for m in methods if any(c[0] is not None and c[1] for c in pts[m].values())]
    if not methods:
        return None
    ncol = min(3, len(methods))
    nrow = -(-len(methods) // ncol)
    fig = Figure(figsize=(3.2 * ncol, 3.1 * nrow))
    col = colors(methods)
    for k, m in enumerate(methods):
        ax = fig.add_subplot(nrow, ncol, k + 1)
        xy = np.array([(c[0], np.mean(c[1])) for c in pts[m].values()
                       if c[0] is not None and c[1]])
        ax.plot([0, 1], [0, 1], color="#999", lw=0.8, ls="--")
        ax.scatter(xy[:, 0], xy[:, 1], s=12, color=col[m], alpha=0.7)
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{m} ({len(xy)} images)", fontsize=9)
        ax.set_xlabel("p, same model", fontsize=8)
        ax.set_ylabel("mean p, other models", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _uri(fig)


def transfer_gaps(gaps: list[dict]) -> str | None:
    """Signed horizontal bars: same-model minus other-model probability, per (method,
    generating model); the axis is symmetric so negative gaps show."""
    if not gaps:
        return None
    gens = sorted({g["generating_model"] for g in gaps})
    methods = list(dict.fromkeys(g["method"] for g in gaps))
    fig = Figure(figsize=(8, 0.5 * len(methods) * max(1, len(gens)) ** 0.5 + 1.4))
    ax = fig.add_subplot()
    h = 0.8 / len(gens)
    col = colors(gens)
    lim = max(0.05, max(abs(g["transfer_gap"]) for g in gaps)) * 1.1
    for k, gen in enumerate(gens):
        y = [methods.index(g["method"]) + (k - (len(gens) - 1) / 2) * h
             for g in gaps if g["generating_model"] == gen]
        v = [g["transfer_gap"] for g in gaps if g["generating_model"] == gen]
        ax.barh(y, v, height=h, color=col[gen], label=gen)
    ax.axvline(0, color="#333", lw=0.8)
    ax.set_xlim(-lim, lim)
    ax.set_yticks(range(len(methods)), methods)
    ax.invert_yaxis()
    ax.set_xlabel("transfer gap: p(same model) − mean p(other models)")
    ax.legend(fontsize=8, loc="best", title="generating model", title_fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _uri(fig)


def accuracy_bars(rows: list[dict]) -> str | None:
    """Train-on-generated: accuracy on real test images per (generating model, trained on)."""
    ok = [r for r in rows if r.get("status") == "ok" and r.get("accuracy") is not None]
    if not ok:
        return None
    fig = Figure(figsize=(8, 0.35 * len(ok) + 1.2))
    ax = fig.add_subplot()
    labels = [f"{r['generating_model']} / {r['method']}" for r in ok]
    acc = [r["accuracy"] for r in ok]
    err = np.array([_err(r["accuracy"], r.get("accuracy_ci")) for r in ok]).T
    ax.barh(range(len(ok)), acc, xerr=err, color="#4e79a7", error_kw={"capsize": 2})
    ax.axvline(ok[0]["chance"], color="#e15759", ls="--", lw=1, label="chance")
    ax.set_yticks(range(len(ok)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy on real test images (95 % Wilson CI)")
    ax.legend(fontsize=8)
    return _uri(fig)
