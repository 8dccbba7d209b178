"""``summary.md`` of a run: the per-method tables first (what a reader wants), then the
per-model-pair cells, the transfer gaps and the train-on-generated rows."""

from __future__ import annotations

from .perturb import PERTURBATIONS

_GROUPS = (("same_model", "same model"), ("other_models", "other models"),
           ("randomized", "randomized copy"))


def _ci(c) -> str:
    return "" if c is None else f"[{c[0]:.3f}, {c[1]:.3f}]"


def _f(v, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _pm(g: dict | None, key: str = "mean_probability") -> str:
    if g is None or g.get(key) is None:
        return "—"
    return f"{g[key]:.3f} {_ci(g.get(f'{key}_ci'))}"


def per_method_lines(summary: dict) -> list[str]:
    pm = summary.get("per_method", {})
    if not pm:
        return []
    lines = ["Per method: mean probability of the intended class (95 % CI over images). "
             "Same model: images of the trained generators scored by their generator; other "
             "models: the same images on every other model (mean per image); randomized copy: "
             "images made on a weight-randomized copy, scored by the trained original.", "",
             "| method | images | same model | other models | randomized copy | top-1 same | "
             "top-1 other |", "|---|---|---|---|---|---|---|"]
    for m, g in pm.items():
        n = (g["same_model"] or {}).get("images", 0)
        lines.append(f"| {m} | {n} | {_pm(g['same_model'])} | {_pm(g['other_models'])} | "
                     f"{_pm(g['randomized'])} | {_pm(g['same_model'], 'top1_rate')} | "
                     f"{_pm(g['other_models'], 'top1_rate')} |")
    head = " | ".join(["saved PNG", *PERTURBATIONS])
    for key, name in _GROUPS[:2]:
        lines += ["", f"Robustness, {name}: mean probability on the saved PNG and after JPEG q75, "
                  "blur r=1, half size and back, centred 90 % crop.", "",
                  f"| method | {head} |", "|---|" + "---|" * (len(PERTURBATIONS) + 1)]
        for m, g in pm.items():
            cells = [_pm(g[key])] + [_pm(g[key], f"p_{k}") for k in PERTURBATIONS]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    status = summary.get("status", {})
    if any(set(c) - {"ok"} for c in status.values()):
        lines += ["", "Images not ending `ok` (low: top-1 during the ascent, not on the saved "
                  "PNG; diverged; zero-gradient):", "",
                  "| method | " + " | ".join(f"{k}" for k in ("ok", "low", "diverged",
                                                             "zero-gradient")) + " |",
                  "|---|---|---|---|---|"]
        for m, c in status.items():
            lines.append(f"| {m} | " + " | ".join(str(c.get(k, 0)) for k in
                                                 ("ok", "low", "diverged", "zero-gradient"))
                         + " |")
    return lines + [""]


def markdown_table(summary: dict) -> str:
    lines = per_method_lines(summary)
    lines += ["Per method and model pair:", "",
              "| method | generating model | scoring model | n | mean p (95% CI) | median rank | "
              "top-1 | top-5 |", "|---|---|---|---|---|---|---|---|"]
    for c in summary["cells"]:
        lines.append(f"| {c['method']} | {c['generating_model']} | {c['scoring_model']} | "
                     f"{c['n']} | {c['mean_probability']:.3f} {_ci(c['mean_probability_ci'])} | "
                     f"{c['median_rank']:g} | {c['top1_rate']:.2f} | {c['top5_rate']:.2f} |")
    if summary["transfer_gaps"]:
        lines += ["", "| method | generating model | p same model | p other models | "
                  "transfer gap |", "|---|---|---|---|---|"]
        for g in summary["transfer_gaps"]:
            lines.append(f"| {g['method']} | {g['generating_model']} | {g['same_model']:.3f} | "
                         f"{g['other_models']:.3f} | {g['transfer_gap']:+.3f} |")
    lines += train_on_generated_markdown(summary.get("train_on_generated", []))
    return "\n".join(lines) + "\n"


def per_class(r: dict) -> str:
    return ", ".join(f"{k} {_f(v, 2)}" for k, v in r.get("per_class_accuracy", {}).items())


def acc_ci(r: dict) -> str:
    lo, hi = r["accuracy_ci"]
    return f"[{_f(lo)}, {_f(hi)}]"


def train_on_generated_markdown(rows: list[dict]) -> list[str]:
    """Lines of the train-on-generated table (none without rows)."""
    if not rows:
        return []
    lines = ["", "Trained on generated images, tested on real ones:", "",
             "| generating model | trained on | train images | test images | accuracy (95% CI) "
             "| chance | per class |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['generating_model']} | {r['method']} | | | {r.get('status')} "
                         "| | |")
            continue
        lines.append(f"| {r['generating_model']} | {r['method']} | {r['train_images']} | "
                     f"{r['test_images']} | {_f(r['accuracy'])} {acc_ci(r)} | "
                     f"{r['chance']:.3f} | {per_class(r)} |")
    return lines
