"""Issue 18, item 4: ``fourier`` and tuned Yosinski beside the paper's presets on four shared
nets; writes docs/fourier.md and its grids (docs/fourier/).

    nice -n 10 python experiments/fourier_results.py

Runs (or resumes) experiments/fourier.toml (fourier and presets 1-4, ``runs/fourier``) and
experiments/tuned.py (the tune on each net, then experiments/tuned.toml, ``runs/tuned/run``),
then writes the document: per method the same-model, other-model and robustness
probabilities, per generator the same / other split, the settings the tune chose, picture grids,
and the by-eye reading kept by hand in experiments/fourier_conclusions.md.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from results import _ci, _cpu, _font  # noqa: E402  (the sibling script's helpers)

RUNS = {"paper": ROOT / "runs" / "fourier", "tuned": ROOT / "runs" / "tuned" / "run"}
ORDER = ["fourier", "yosinski-tuned", "yosinski1", "yosinski2", "yosinski3", "yosinski4"]


def _load() -> tuple[list[dict], dict]:
    """Rows of both runs, and the per-method summary of both."""
    rows: list[dict] = []
    per_method: dict = {}
    for run in RUNS.values():
        data = json.loads((run / "results.json").read_text())
        rows += data["rows"]
        per_method.update(data["summary"]["per_method"])
    return rows, per_method


def _folder(gen: str, method: str) -> Path:
    run = RUNS["tuned"] if method == "yosinski-tuned" else RUNS["paper"]
    return run / "images" / gen / method


def contrast(gens: list[str], method: str) -> float:
    vals = []
    for g in gens:
        for p in _folder(g, method).glob("*.png"):
            with Image.open(p) as im:
                a = np.asarray(im.convert("RGB"), np.float64)
            vals.append(float(np.sqrt(((a - a.mean()) ** 2).mean())))
    return float(np.mean(vals)) if vals else float("nan")


def grid(gen: str, methods: list[str], probs: dict, cell: int = 128) -> Image.Image:
    """Rows: methods; columns: classes; each picture at ``cell`` px with its same-model
    probability under it."""
    stems = sorted(p.stem for p in _folder(gen, methods[0]).glob("*.png"))
    left, top, foot = 120, 22, 14
    out = Image.new("RGB", (left + len(stems) * (cell + 4), top + len(methods) * (cell + foot
                                                                                   + 4)),
                    "white")
    draw = ImageDraw.Draw(out)
    for j, stem in enumerate(stems):
        draw.text((left + j * (cell + 4), 4), stem.split("_", 1)[1][:18], fill="black",
                  font=_font(12))
    for i, m in enumerate(methods):
        y = top + i * (cell + foot + 4)
        draw.text((4, y + cell // 2 - 6), m, fill="black", font=_font(12))
        for j, stem in enumerate(stems):
            p = _folder(gen, m) / f"{stem}.png"
            if not p.is_file():
                continue
            with Image.open(p) as im:
                out.paste(im.convert("RGB").resize((cell, cell), Image.Resampling.LANCZOS),
                          (left + j * (cell + 4), y))
            rel = str(p.relative_to(RUNS["tuned"] if m == "yosinski-tuned" else RUNS["paper"]))
            v = probs.get((rel, gen))
            if v is not None:
                draw.text((left + j * (cell + 4), y + cell + 1), f"p={v:.3f}", fill="black",
                          font=_font(11))
    return out


def _tuned_settings(gens: list[str]) -> list[str]:
    lines = ["| net | trial (of) | J | p_model / p_scorers / p_robust (tune classes) | "
             "settings |", "|---|---|---|---|---|"]
    for g in gens:
        card = ROOT / "runs" / "tuned" / "models" / f"{g}.onnx.json"
        e = json.loads(card.read_text()).get("ascent", {}).get("yosinski")
        if not e:
            continue
        s = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                      for k, v in e["settings"].items() if k != "step_rule")
        lines.append(f"| {g} | {e['trial']} ({e['trials']}) | {e['objective']:.3f} | "
                     f"{e['p_model']:.3f} / {e['p_scorers']:.3f} / {e['p_robust']:.3f} | {s} |")
    return lines


def write_doc(doc: Path, seconds: float | None) -> Path:
    rows, pm = _load()
    gens = sorted({r["generating_model"] for r in rows})
    methods = [m for m in ORDER if m in pm]
    scorers = sorted({r["scoring_model"] for r in rows} - set(gens))
    assets = doc.parent / doc.stem
    assets.mkdir(parents=True, exist_ok=True)
    n_img = len({(r["image"], r["generating_model"], r["method"]) for r in rows})
    lines = ["# `fourier` and tuned Yosinski beside the paper's presets (issue 18)", "",
             "Made by `nice -n 10 python experiments/fourier_results.py` from "
             "`experiments/fourier.toml` and `experiments/tuned.toml` (after "
             "`experiments/tuned.py` tuned each net), on " + _cpu() + ", 2 cores shared with "
             "other work" + (f", {seconds / 60:.0f} min in this call" if seconds else "") + ". "
             f"{n_img} images, {len(rows)} scores.", "",
             f"Generators: {', '.join(f'`{g}`' for g in gens)}. Other scorers: "
             f"{', '.join(f'`{s}`' for s in scorers)}. Five classes (goldfish, flamingo, "
             "tabby, monarch, lemon), one image each. Steps, cut for the 2-core budget: "
             "fourier 256 (Lucid: 512), presets 150 (the paper: 500-1000), tuned Yosinski "
             "150 (the steps it was tuned at). The tune ran a few trials per net (the table "
             "of settings below says how many) on two *other* classes (golden retriever, "
             "strawberry), scored by MobileNet v1 0.75 and RegNetX besides the net itself.",
             ""]
    words = HERE / "fourier_conclusions.md"
    if words.is_file():
        lines += [words.read_text().strip(), ""]
    lines += ["## Per method", "",
              "Mean probability of the intended class (95 % bootstrap interval over images). "
              "*Same model*: scored by the net that made the picture; *other models*: by the "
              "other eight shared nets (mean per image). Robustness: the same-model "
              "probability after JPEG 75 / blur radius 1 / half size and back / 90 % crop. "
              "*Contrast*: RMS deviation of the saved pixels from their mean, grey levels.", "",
              "| method | images | same model | other models | top-1 same | top-1 other | "
              "jpeg | blur | half | crop | contrast |", "|---|---|---|---|---|---|---|---|---|"
              "---|---|"]
    for m in methods:
        s, o = pm[m]["same_model"], pm[m]["other_models"]
        rob = " | ".join(f"{s[f'p_{k}']:.3f}" for k in ("jpeg", "blur", "half", "crop"))
        lines.append(f"| {m} | {s['images']} | {_ci(s)} | {_ci(o)} | {s['top1_rate']:.2f} | "
                     f"{o['top1_rate']:.2f} | {rob} | {contrast(gens, m):.1f} |")
    lines += ["", "## Per generating net (same model / other models)", "",
              "| method | " + " | ".join(gens) + " |", "|---|" + "---|" * len(gens)]
    for m in methods:
        cells = []
        for g in gens:
            mine = [r for r in rows if r["method"] == m and r["generating_model"] == g]
            same = [float(r["probability"]) for r in mine if r["same_model"] in (True, "True")]
            oth = [float(r["probability"]) for r in mine if r["same_model"] not in (True, "True")]
            cells.append(f"{np.mean(same):.3f} / {np.mean(oth):.3f}" if same else "—")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "## The settings the tune chose", ""] + _tuned_settings(gens)
    lines += ["", "## The pictures", "",
              "Each row a method, each column a class; 128 px (the nets see 128-224 px); under "
              "each picture its probability on the net that made it. The PNGs are in "
              "`runs/fourier/images` and `runs/tuned/run/images`.", ""]
    probs = {(r["image"], r["generating_model"]): float(r["probability"]) for r in rows
             if r["same_model"] in (True, "True")}
    for g in gens:
        im = grid(g, methods, probs)
        im.quantize(256, method=Image.Quantize.MEDIANCUT).save(assets / f"grid_{g}.png",
                                                               optimize=True)
        lines += [f"### {g}", "", f"![{g}]({assets.name}/grid_{g}.png)", ""]
    doc.write_text("\n".join(lines) + "\n")
    return doc


def main() -> int:
    from pydevis.evaluation.experiment import run_experiment

    t0 = time.time()
    run_experiment(HERE / "fourier.toml", progress=lambda label, d, t: print(
        f"[{d}/{t}] {label} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True))
    import tuned

    tuned.main([])
    print(write_doc(ROOT / "docs" / "fourier.md", time.time() - t0))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
