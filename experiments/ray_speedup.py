"""The speed-up of 1 -> 2 Ray workers on this machine (README, "Scale-out"), measured.

    python experiments/ray_speedup.py [--repeats 2] [--steps 200]

The bundled CIFAR-10 nets: 2 generators x 2 methods x 10 classes in cells of 2 = 20 cells,
each image scored on the three nets. Each run starts its own local Ray with that many workers
(as `pydevis experiment --executor ray --workers N` does) into a fresh run folder; runs
alternate 1, 2, 1, 2... Printed per run: the whole run's wall time (Ray start-up, models shipped
to the workers, cells, report) and the cells' phase (first cell handed out to last one back),
with the 1-minute load average before and after; then the median speed-up of each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from pydevis.evaluation.config import ExecutorSpec
from pydevis.evaluation.experiment import run_experiment

MODELS = Path(__file__).resolve().parents[1] / "models"
CONFIG = f'''out = "{{out}}"
seed = 0
generators = ["{MODELS / "cifar10_alexnet.onnx"}", "{MODELS / "cifar10_resnet.onnx"}"]
scorers = ["{MODELS / "cifar10_inception.onnx"}"]
classes = "random:10"
methods = [{{{{ name = "gradient", steps = {{steps}} }}}},
           {{{{ name = "yosinski", preset = 3, steps = {{steps}} }}}}]
batch_size = 2
bootstrap = 100
'''


def one_run(folder: Path, name: str, workers: int, steps: int) -> dict[str, float]:
    cfg = folder / f"{name}.toml"
    cfg.write_text(CONFIG.format(out=name, steps=steps))
    marks: dict[str, float] = {}

    def watch(event: str, cell, info: dict) -> None:
        marks.setdefault("first", time.monotonic())
        if event == "done":
            marks["last"] = time.monotonic()

    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    run_experiment(cfg, executor=ExecutorSpec("ray", workers=workers), watch=watch)
    return {"workers": workers, "total_s": time.monotonic() - t0,
            "cells_s": marks["last"] - marks["first"], "load_before": load0,
            "load_after": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as d:
        for k in range(args.repeats):
            for workers in (1, 2):
                r = one_run(Path(d), f"w{workers}_{k}", workers, args.steps)
                runs.append(r)
                print(f"workers {workers}: total {r['total_s']:.1f} s, cells {r['cells_s']:.1f} s"
                      f" (load {r['load_before']:.2f} -> {r['load_after']:.2f})", flush=True)
    for key in ("total_s", "cells_s"):
        one = statistics.median(r[key] for r in runs if r["workers"] == 1)
        two = statistics.median(r[key] for r in runs if r["workers"] == 2)
        print(f"{key}: 1 worker {one:.1f} s, 2 workers {two:.1f} s, speed-up {one / two:.2f}x")


if __name__ == "__main__":
    main()
