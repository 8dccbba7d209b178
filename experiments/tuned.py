"""Tune Yosinski's ascent on four shared nets, then run experiments/tuned.toml (issue 18, item 4).

    nice -n 10 python experiments/tuned.py [--trials 8] [--steps 150]

The shared models and cards are read-only, so each net gets a link in ``runs/tuned/models``
with a copy of its card beside it (labels path made absolute): the card ``pydevis tune`` writes
the winner to, and the one the experiment reads. The search runs through the installed
``pydevis tune`` command, on two classes that the evaluation does not use (golden retriever
207, strawberry 949), scored by two other shared nets (MobileNet v1 0.75 and RegNetX) and the
robustness perturbations; every step is resumable (run the same command again), and a net whose
card already holds a winner is not tuned again (its card says how many trials it had).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared" / "models"
NETS = ["mobilenet_v1_0.25_128_qat", "mobilenet_v1_0.5_160_qat", "squeezenet1_1_caffe",
        "mobilenet_v2_1.0_224_qat"]
SCORERS = ["mobilenet_v1_0.75_192_qat", "regnetx_200mf_ptq"]
TUNE_CLASSES = [207, 949]


def link(net: str, folder: Path) -> Path:
    """``folder/NET.onnx`` → the shared file, with a writable copy of its card beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx, card = folder / f"{net}.onnx", folder / f"{net}.onnx.json"
    if not onnx.exists():
        onnx.symlink_to(SHARED / f"{net}.onnx")
    if not card.exists():
        data = json.loads((SHARED / f"{net}.onnx.json").read_text())
        data["labels"] = str((SHARED / data["labels"]).resolve())
        card.write_text(json.dumps(data, indent=1))
    return onnx


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--steps", type=int, default=150)
    args = ap.parse_args(argv)
    runs = ROOT / "runs" / "tuned"
    exe = shutil.which("pydevis") or str(Path(sys.executable).parent / "pydevis")
    t0 = time.time()
    for net in NETS:
        model = link(net, runs / "models")
        card = json.loads(Path(str(model) + ".json").read_text())
        if "yosinski" in card.get("ascent", {}):  # tuned in an earlier call: keep its winner
            continue
        cmd = [exe, "tune", str(model), "--method", "yosinski", "--trials", str(args.trials),
               "--steps", str(args.steps), "--out", str(runs / f"tune_{net}"), "-q", "--json"]
        cmd += [a for c in TUNE_CLASSES for a in ("--class", str(c))]
        cmd += [a for s in SCORERS if s != net for a in ("--scorer", str(SHARED / f"{s}.onnx"))]
        print(" ".join(cmd), file=sys.stderr, flush=True)
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        print(f"{net}: best trial {res['best']['trial']} J={res['best']['objective']:.3f} "
              f"({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    from pydevis.evaluation.experiment import run_experiment

    run_experiment(HERE / "tuned.toml", progress=lambda label, d, t: print(
        f"[{d}/{t}] {label} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
