"""Yosinski et al.'s presets 1-4 on every shared net: how probable is the intended class on the
saved picture? Writes docs/presets.md (issue 18: presets 2 and 4 are styles, not expected to
reach p >= 0.9 on 1000-class nets; this table replaces their strict xfails).

    nice -n 10 python experiments/presets.py [--classes 1 401 801] [--nets NAME ...]
    python experiments/presets.py --doc-only     # the document from what is on disk

Several processes may run at once on different ``--nets`` (each writes its own result files);
``--doc-only`` then gathers them all into the document.

Each (net, preset) runs ``pydevis.api.visualize`` with the preset as published (Table 1: decay,
blur, percentiles and iterations; the RMS step rule of ``methods/ascent.py``) on a few classes
at once, and reads the class probability of each saved 8-bit PNG. Results are kept per (net,
preset) in ``runs/presets/NET/yosinskiP/result.json`` (written last, atomically), so the script
resumes where it stopped; the document is rewritten after every (net, preset), nets cheapest
first, with the ones not yet measured marked so.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared" / "models"
# cheapest first (measured ascent step time on this machine)
NETS = ["mobilenet_v1_0.25_128_qat", "mobilenet_v1_0.5_160_qat", "squeezenet1_1_caffe",
        "squeezenet1_0_deepcompression", "mobilenet_v1_0.75_192_qat",
        "mobilenet_v2_1.0_224_qat", "mobilenet_v2_1.0_224_keras_ptq", "regnetx_200mf_ptq",
        "shufflenet_v1_g8_w1_ptq"]
PRESETS = (1, 2, 3, 4)
COMMAND = "nice -n 10 python experiments/presets.py"
# What the pictures showed when looked at (a person's reading, dated: refreshed by hand)
LOOKED = (
    "Looked at (2026-12-04; mobilenet_v2_1.0_224_qat, regnetx_200mf_ptq, "
    "shufflenet_v1_g8_w1_ptq, the three classes): preset 1 shows repeated small orange fish, "
    "pleated bellows and snorkel-mask shapes on grey, sharp and noisy; preset 3 shows the same "
    "motifs blurred, larger and softer, the most readable of the four; preset 2 is grey with "
    "faint high-frequency speckle, nothing recognisable, though mobilenet_v2_1.0_224_qat and "
    "regnetx_200mf_ptq give it p ≥ 0.94; preset 4 is flat grey: on "
    "mobilenet_v2_1.0_224_keras_ptq, p 0.95 comes from about 3 800 of 50 176 pixels, a few "
    "small blobs within ±10 grey levels, seen only with the contrast stretched 10×. Presets 2 "
    "and 4 fool these nets rather than depict the class. The contrast column flags preset 4 "
    "(under one grey level) without looking, but it does not tell preset 2 from preset 3: "
    "preset 3's ~5 grey levels are smooth, large shapes, preset 2's ~8 are pixel-scale "
    "speckle.")


def measure(net: str, preset: int, classes: list[int], runs: Path) -> dict:
    """One (net, preset): run it unless its result is on disk; returns the result."""
    from pydevis import api, load
    from pydevis.atomic import write_text

    folder = runs / net / f"yosinski{preset}"
    done = folder / "result.json"
    if done.is_file():
        data = json.loads(done.read_text())
        if data["classes"] == classes:
            return data
    model = load(SHARED / f"{net}.onnx")
    t0 = time.time()
    res = api.visualize(model, classes, "yosinski", preset=preset, out=folder,
                        batch_size=len(classes), keep_pixels=False)
    probs = [float(r.config["probability"]) for r in res]
    data = {"net": net, "preset": preset, "classes": classes, "probabilities": probs,
            "min": min(probs), "mean": float(np.mean(probs)),
            "steps": int(res[0].config["steps"]), "seconds": time.time() - t0,
            "status": [r.status for r in res]}
    write_text(done, json.dumps(data, indent=1))
    return data


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def _contrast(png: Path) -> float:
    """RMS contrast: the standard deviation of the picture's grey levels (0-255)."""
    from PIL import Image

    with Image.open(png) as im:
        return float(np.asarray(im.convert("L"), dtype=np.float64).std())


def _contrasts(runs: Path, net: str, preset: int) -> list[float]:
    folder = runs / net / f"yosinski{preset}"
    return [_contrast(f) for f in sorted(folder.glob(f"yosinski{preset}_[0-9]*.png"))]


def _photo_contrast() -> tuple[float, float]:
    """The shared labelled photos' RMS contrast range, for scale."""
    files = sorted(f for f in (SHARED.parent / "images").iterdir()
                   if f.suffix.lower() in (".png", ".jpg", ".jpeg"))
    c = [_contrast(f) for f in files]
    return min(c), max(c)


def _reading(results: dict) -> list[str]:
    """What the table says, computed from it so a refresh keeps the sentence true."""
    out = []
    for p in PRESETS:
        rs = [r for (n, q), r in results.items() if q == p]
        if not rs:
            continue
        lo, hi = min(r["mean"] for r in rs), max(r["mean"] for r in rs)
        n_ok = sum(r["min"] >= 0.9 for r in rs)
        cs = [np.mean(r["contrast"]) for r in rs if r.get("contrast")]
        con = f"; contrast {min(cs):.1f}–{max(cs):.1f}" if cs else ""
        out.append(f"- Preset {p}: every class at p ≥ 0.9 on {n_ok} of {len(rs)} nets; "
                   f"mean over the classes {lo:.3f}–{hi:.3f} across nets{con}.")
    return ["Reading the table:", "", *out]


def write_doc(results: dict, classes: list[int], doc: Path, labels: list[str]) -> None:
    lo_c, hi_c = _photo_contrast()
    names = ", ".join(f"{c} {labels[c].split(',')[0]}" for c in classes)
    secs = sum(r["seconds"] for r in results.values())
    missing = [(n, p) for n in NETS for p in PRESETS if (n, p) not in results]
    so_far = " so far" if missing else ""
    lines = [
        "# Yosinski et al.'s presets on the shared ImageNet nets", "",
        f"Made by `{COMMAND}` (script: `experiments/presets.py`) on {_cpu()}, 2 cores shared "
        f"with other work; {secs / 60:.0f} min of wall time{so_far}, summed over the (net, "
        "preset) runs (they ran beside other jobs, some in parallel, one paused for a while: "
        "not a speed measure).", "",
        f"Per shared net and preset (Table 1 of Yosinski et al. 2015, with their iterations "
        f"and the RMS step rule of `pydevis/methods/ascent.py`): the min / mean probability "
        f"of the intended class on the saved 8-bit PNG, over only {len(classes)} classes "
        f"({names}) to keep the run within a 2-core budget; a few classes "
        "give a rough figure, not a distribution. Presets 2 and 4 are styles in the paper "
        "(strong decay; a 90th-percentile contribution clip), not expected to reach "
        "p ≥ 0.9 on 1000-class nets; `tests/test_class_images.py` no longer asks them to.", "",
        "Each cell: min / mean probability · mean RMS contrast of the pictures (standard "
        "deviation of their grey levels, 0–255; the shared labelled photos in "
        f"`../shared/images` span {lo_c:.0f}–{hi_c:.0f}). A high probability on a picture "
        "under one grey level of contrast is the net fooled, not the class shown.",
        "",
        "| net | preset 1 (500 it.) | preset 2 (750 it.) | preset 3 (1000 it.) "
        "| preset 4 (1000 it.) |", "|---|---|---|---|---|"]
    for net in NETS:
        cells = []
        for p in PRESETS:
            r = results.get((net, p))
            c = r.get("contrast") if r else None
            cells.append((f"{r['min']:.3f} / {r['mean']:.3f}"
                          + (f" · {np.mean(c):.1f}" if c else "")) if r else "not yet run")
        lines.append(f"| {net} | " + " | ".join(cells) + " |")
    lines += ["", *_reading(results)]
    lines += ["", LOOKED]
    lines += ["", "Per class (probabilities in the order of the classes above):", ""]
    for (net, p), r in sorted(results.items()):
        lines.append(f"- {net} preset {p}: " + ", ".join(f"{v:.3f}" for v in
                                                         r["probabilities"])
                     + f" ({r['steps']} steps, {r['seconds']:.0f} s)")
    if missing:
        lines += ["", "Cells marked *not yet run* were not reached in the time this run had; "
                  "the same command resumes and fills them in."]
    doc.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--classes", type=int, nargs="+", default=[1, 401, 801])
    ap.add_argument("--nets", nargs="+", default=NETS, choices=NETS)
    ap.add_argument("--doc", default=str(ROOT / "docs" / "presets.md"))
    ap.add_argument("--doc-only", action="store_true",
                    help="rewrite the document from the results on disk, run nothing")
    args = ap.parse_args(argv)
    runs = ROOT / "runs" / "presets"
    labels = (SHARED.parent / "labels" / "imagenet1000_names.txt").read_text().splitlines()
    results: dict = {}
    for net in NETS:  # what is on disk already, for the document
        for p in PRESETS:
            f = runs / net / f"yosinski{p}" / "result.json"
            if f.is_file() and json.loads(f.read_text())["classes"] == args.classes:
                results[(net, p)] = json.loads(f.read_text())
                results[(net, p)]["contrast"] = _contrasts(runs, net, p)
    if args.doc_only:
        write_doc(results, args.classes, Path(args.doc), labels)
        return 0
    for net in args.nets:
        for p in PRESETS:
            results[(net, p)] = r = measure(net, p, args.classes, runs)
            r["contrast"] = _contrasts(runs, net, p)
            print(f"{net} preset {p}: min {r['min']:.3f} mean {r['mean']:.3f} "
                  f"({r['seconds']:.0f} s)", file=sys.stderr, flush=True)
            write_doc(results, args.classes, Path(args.doc), labels)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
