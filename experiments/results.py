"""Run (or resume) the ImageNet experiment and write docs/results.md from its results.

    python experiments/results.py [CONFIG] [--doc docs/results.md]

The config defaults to experiments/imagenet.toml. The run is resumable (kill it and run the same
command again); when every row is there, the document is (re)written: the per-method tables, the
robustness table, per-generator tables, image grids as small PNGs beside the document
(``docs/results/``), the command, the machine and the run's time, and the conclusions written
by hand in ``experiments/conclusions.md`` (kept as they are: numbers in the tables are
regenerated, the words are a person's reading of them).
"""

from __future__ import annotations

import argparse
import base64
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LATER = ("## Since then: `fourier`, tuned Yosinski and the presets (issue 18)\n\n"
         "This run predates the `fourier` method (Olah et al. 2017) and `pydevis tune`. Both are "
         "measured beside the paper's presets on four shared nets, with picture grids and a "
         "by-eye reading, in [fourier.md](fourier.md) (`experiments/fourier_results.py`); every "
         "preset at the paper's iterations on the shared nets in [presets.md](presets.md) "
         "(`experiments/presets.py`).")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _ci(g: dict | None, key: str = "mean_probability") -> str:
    if not g or g.get(key) is None:
        return "—"
    lo, hi = g[f"{key}_ci"]
    return f"{g[key]:.3f} [{lo:.2f}, {hi:.2f}]"


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def image_grid(run: Path, gen: str, methods: list[str], cell: int = 72) -> Image.Image | None:
    """Rows: methods; columns: classes (first image of each); the label above each column."""
    cols: list[str] = []
    for m in methods:
        for p in sorted((run / "images" / gen / m).glob("*.png")):
            side = json.loads(p.with_suffix(".json").read_text())
            if side.get("copy", 0) == 0 and p.stem not in cols:
                cols.append(p.stem)
    if not cols:
        return None
    left, top = 130, 30
    out = Image.new("RGB", (left + len(cols) * (cell + 2), top + len(methods) * (cell + 2)),
                    "white")
    draw = ImageDraw.Draw(out)
    for j, stem in enumerate(cols):
        label = stem.split("_", 1)[1][:11]
        draw.text((left + j * (cell + 2), 8), label, fill="black", font=_font(11))
    for i, m in enumerate(methods):
        draw.text((4, top + i * (cell + 2) + cell // 2 - 6), m, fill="black", font=_font(12))
        for j, stem in enumerate(cols):
            p = run / "images" / gen / m / f"{stem}.png"
            if p.is_file():
                with Image.open(p) as im:
                    out.paste(im.convert("RGB").resize((cell, cell), Image.Resampling.LANCZOS),
                              (left + j * (cell + 2), top + i * (cell + 2)))
    return out


def contrast(run: Path, gens: list[str], method: str) -> float:
    """Mean over a method's images (trained generators) of the pixels' RMS deviation from the
    image's mean, in grey levels."""
    vals = []
    for g in gens:
        for p in (run / "images" / g / method).glob("*.png"):
            with Image.open(p) as im:
                a = np.asarray(im.convert("RGB"), np.float64)
            vals.append(float(np.sqrt(((a - a.mean()) ** 2).mean())))
    return float(np.mean(vals)) if vals else float("nan")


def detail(run: Path, gen: str, methods: list[str], n: int = 5) -> Image.Image | None:
    """The first ``n`` classes of ``methods`` (one row each) at the generator's own size:
    what a person sees when opening the PNGs."""
    rows = []
    for m in methods:
        files = [p for p in sorted((run / "images" / gen / m).glob("*.png"))
                 if json.loads(p.with_suffix(".json").read_text()).get("copy", 0) == 0][:n]
        if files:
            rows.append((m, files))
    if not rows:
        return None
    with Image.open(rows[0][1][0]) as im0:
        w, h = im0.size
    left, top = 130, 22
    out = Image.new("RGB", (left + n * (w + 4), top + len(rows) * (h + 4)), "white")
    draw = ImageDraw.Draw(out)
    for j, p in enumerate(rows[0][1]):
        draw.text((left + j * (w + 4), 4), p.stem.split("_", 1)[1][:24], fill="black",
                  font=_font(13))
    for i, (m, files) in enumerate(rows):
        draw.text((4, top + i * (h + 4) + h // 2 - 7), m, fill="black", font=_font(13))
        for j, p in enumerate(files):
            with Image.open(p) as im:
                out.paste(im.convert("RGB"), (left + j * (w + 4), top + i * (h + 4)))
    return out


def _run_time(run: Path) -> str:
    chunks = sorted((run / "scores").rglob("chunk*.json"), key=lambda p: p.stat().st_mtime)
    start = (run / "config.toml").stat().st_mtime
    return f"{(chunks[-1].stat().st_mtime - start) / 60:.0f} min" if chunks else "n/a"


def write_doc(run: Path, doc: Path, command: str) -> Path:
    """Write the results document for the finished run folder ``run``."""
    sys.path.insert(0, str(ROOT))
    from pydevis.evaluation import figures

    data = json.loads((run / "results.json").read_text())
    rows, summary = data["rows"], data["summary"]
    pm = summary["per_method"]
    methods = list(pm)
    gens = sorted({r["generating_model"] for r in rows if "~" not in r["generating_model"]})
    scorers = sorted({r["scoring_model"] for r in rows} - set(gens))
    assets = doc.parent / doc.stem
    assets.mkdir(parents=True, exist_ok=True)
    lines = ["# Which technique depicts a class most faithfully? (ImageNet nets)", "",
             f"Produced by `{command}` from `{run.name}` "
             f"(config `experiments/{Path(data.get('config', 'imagenet.toml')).name}`): "
             f"{len({r['image'] for r in rows})} images, {len(rows)} scores; "
             f"run time {_run_time(run)} on {_cpu()} (2 cores, shared with other work).", "",
             f"Generating nets: {', '.join(f'`{g}`' for g in gens)}. "
             f"Scoring nets besides them: {', '.join(f'`{s}`' for s in scorers)}.", ""]
    conclusions = HERE / "conclusions.md"
    if conclusions.is_file():
        lines += [conclusions.read_text().strip(), ""]
    if (doc.parent / "fourier.md").is_file():  # issue 18's measurements, a later document
        lines += [LATER, ""]
    lines += ["## Per method", "",
              "Mean probability of the intended class, 95 % bootstrap interval over images. "
              "*Same model*: images of the three trained generators scored by the net that made "
              "them. *Other models*: the same images on the eight other nets (mean per image). "
              "*Randomized copy*: images made on a copy of each generator with redrawn weights, "
              "scored by the trained original (Adebayo et al. 2018).", "",
              "*Contrast*: the RMS deviation of the saved pixels from each image's mean, in "
              "grey levels (the noise every ascent starts from has 8).", "",
              "| method | images | same model | other models | randomized copy | top-1 same "
              "| top-1 other | contrast |", "|---|---|---|---|---|---|---|---|"]
    for m, g in pm.items():
        lines.append(f"| {m} | {(g['same_model'] or {}).get('images', 0)} | "
                     f"{_ci(g['same_model'])} | {_ci(g['other_models'])} | "
                     f"{_ci(g['randomized'])} | {_ci(g['same_model'], 'top1_rate')} | "
                     f"{_ci(g['other_models'], 'top1_rate')} | {contrast(run, gens, m):.1f} |")
    for key, name in (("same_model", "same model"), ("other_models", "other models")):
        lines += ["", f"## Robustness ({name})", "",
                  "Mean probability of the intended class on the saved 8-bit PNG and after JPEG "
                  "quality 75, Gaussian blur radius 1, half size and back, centred 90 % crop.", "",
                  "| method | saved PNG | jpeg | blur | half | crop |", "|---|---|---|---|---|---|"]
        for m, g in pm.items():
            lines.append(f"| {m} | " + " | ".join(
                [_ci(g[key])] + [_ci(g[key], f"p_{k}") for k in ("jpeg", "blur", "half",
                                                                 "crop")]) + " |")
    lines += ["", "## Per generating net (same model / other models)", "",
              "| method | " + " | ".join(gens) + " |", "|---|" + "---|" * len(gens)]
    gaps = {(g["method"], g["generating_model"]): g for g in summary["transfer_gaps"]}
    for m in methods:
        cells = [f"{gaps[(m, g)]['same_model']:.3f} / {gaps[(m, g)]['other_models']:.3f}"
                 if (m, g) in gaps else "—" for g in gens]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    status = summary.get("status", {})
    lines += ["", "## Image status", "", "| method | ok | low | diverged | zero-gradient |",
              "|---|---|---|---|---|"]
    for m, c in status.items():
        lines.append(f"| {m} | " + " | ".join(str(c.get(k, 0)) for k in
                                             ("ok", "low", "diverged", "zero-gradient")) + " |")
    lines += ["", "## Figures", ""]
    for name, uri in (("faithfulness", figures.faithfulness(pm)),
                      ("robustness_same", figures.robustness(pm, "same_model")),
                      ("same_vs_other", figures.same_vs_other(rows, methods))):
        if uri:
            (assets / f"{name}.png").write_bytes(base64.b64decode(uri.split(",", 1)[1]))
            lines.append(f"![{name}]({assets.name}/{name}.png)")
            lines.append("")
    best = max(gens, key=lambda g: max((gaps[(m, g)]["other_models"] for m in methods
                                        if (m, g) in gaps), default=0.0))
    order = sorted(methods, key=lambda m: -(pm[m]["other_models"] or {}).get(
        "mean_probability", 0.0))
    shown = list(dict.fromkeys([order[0], "gradient" if "gradient" in pm else order[-1]]))
    im = detail(run, best, shown)
    if im is not None:
        im.quantize(256, method=Image.Quantize.MEDIANCUT).save(assets / "detail.png",
                                                               optimize=True)
        lines += [f"## At full size: {best}, {' and '.join(shown)}", "",
                  f"![detail]({assets.name}/detail.png)", ""]
    lines += ["## Images (first of the two per class; 72 px thumbnails of the scored PNGs, "
              "reduced to 256 colours)", ""]
    for g in gens:
        im = image_grid(run, g, methods)
        if im is not None:
            # 256 colours keep a 10×9 grid near 200 KB; the scored PNGs are in the run folder
            im.quantize(256, method=Image.Quantize.MEDIANCUT).save(assets / f"grid_{g}.png",
                                                                   optimize=True)
            lines += [f"### {g}", "", f"![{g}]({assets.name}/grid_{g}.png)", ""]
    doc.write_text("\n".join(lines) + "\n")
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", nargs="?", default=str(HERE / "imagenet.toml"))
    ap.add_argument("--doc", default=str(ROOT / "docs" / "results.md"))
    args = ap.parse_args(argv)
    from pydevis.evaluation.config import load_config
    from pydevis.evaluation.experiment import run_experiment

    t0 = time.time()

    def show(label: str, done: int, total: int) -> None:
        print(f"[{done}/{total}] {label} ({time.time() - t0:.0f} s)", file=sys.stderr,
              flush=True)

    run_experiment(args.config, progress=show)
    out = load_config(args.config).out.resolve()
    print(write_doc(out, Path(args.doc), "python experiments/results.py"))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
