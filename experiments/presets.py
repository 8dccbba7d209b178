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


def write_doc(results: dict, classes: list[int], doc: Path, labels: list[str]) -> None:
    names = ", ".join(f"{c} {labels[c].split(',')[0]}" for c in classes)
    secs = sum(r["seconds"] for r in results.values())
    lines = [
        "# Yosinski et al.'s presets on the shared ImageNet nets", "",
        f"Made by `{COMMAND}` (script: `experiments/presets.py`) on {_cpu()}, 2 cores shared "
        f"with other work; {secs / 60:.0f} min of wall time so far, summed over the (net, "
        "preset) runs (they ran beside other jobs, some in parallel, one paused for a while: "
        "not a speed measure).", "",
        f"Per shared net and preset (Table 1 of Yosinski et al. 2015, with their iterations "
        f"and the RMS step rule of `pydevis/methods/ascent.py`): the min / mean probability "
        f"of the intended class on the saved 8-bit PNG, over only {len(classes)} classes "
        f"({names}) to keep the run within a 2-core budget; a few classes "
        "give a rough figure, not a distribution. Presets 2 and 4 are styles in the paper "
        "(strong decay; a 90th-percentile contribution clip), not expected to reach "
        "p ≥ 0.9 on 1000-class nets; `tests/test_class_images.py` no longer asks them to.", "",
        "| net | preset 1 (500 it.) | preset 2 (750 it.) | preset 3 (1000 it.) "
        "| preset 4 (1000 it.) |", "|---|---|---|---|---|"]
    for net in NETS:
        cells = []
        for p in PRESETS:
            r = results.get((net, p))
            cells.append(f"{r['min']:.3f} / {r['mean']:.3f}" if r else "not yet run")
        lines.append(f"| {net} | " + " | ".join(cells) + " |")
    lines += ["", "Per class (probabilities in the order of the classes above):", ""]
    for (net, p), r in sorted(results.items()):
        lines.append(f"- {net} preset {p}: " + ", ".join(f"{v:.3f}" for v in
                                                         r["probabilities"])
                     + f" ({r['steps']} steps, {r['seconds']:.0f} s)")
    lines += ["", "Cells marked *not yet run* were not reached in the time this run had; the "
              "same command resumes and fills them in."]
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
    if args.doc_only:
        write_doc(results, args.classes, Path(args.doc), labels)
        return 0
    for net in args.nets:
        for p in PRESETS:
            results[(net, p)] = r = measure(net, p, args.classes, runs)
            print(f"{net} preset {p}: min {r['min']:.3f} mean {r['mean']:.3f} "
                  f"({r['seconds']:.0f} s)", file=sys.stderr, flush=True)
            write_doc(results, args.classes, Path(args.doc), labels)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
