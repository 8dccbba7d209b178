"""`pydevis demo` (the README's main job) on the bundled models, with few steps."""

from __future__ import annotations

import os
import subprocess
import sys

from pydevis.demo import BUNDLED, models_dir


def test_bundled_models_ship_with_the_package():
    d = models_dir()
    for name in BUNDLED:
        assert (d / f"{name}.onnx").is_file() and (d / f"{name}.onnx.json").is_file()
    assert (d / "cifar10_labels.txt").is_file()


def test_demo_writes_report(tmp_path):
    out = tmp_path / "demo"
    p = subprocess.run([sys.executable, "-c", "from pydevis.cli import main; main()", "demo",
                        "--out", str(out), "--steps", "2"], capture_output=True, text=True,
                       env=os.environ.copy(), timeout=900,
                       cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "report:" in p.stdout
    html = (out / "report.html").read_text()
    # one thumbnail per image: 10 methods × 10 classes × (model + its weight-randomized copy),
    # and the five figures
    assert html.count('<img src="data:image/') == 10 * 10 * 2
    assert html.count('<img class="fig"') == 5
    assert "<h3>cifar10_alexnet — fourier</h3>" in html
    rows = (out / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 10 * 2 * 10 * 3
    assert sum(",fourier," in r for r in rows) == 2 * 10 * 3
