"""The HTML report renders in a real browser (headless Chromium): images decode and tables are
there. Skipped when Chromium is absent (Debian package `chromium`)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from pydevis.evaluation.experiment import run_experiment
from tiny import tiny_classifier

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")


def test_report_renders_with_images_and_tables(tmp_path):
    for i in range(2):
        tiny_classifier(tmp_path / f"m{i}.onnx", seed=i)
    (tmp_path / "run.toml").write_text(
        'out = "run"\ngenerators = ["m0.onnx"]\nscorers = ["m1.onnx"]\nclasses = [1, 2, 3]\n'
        'methods = [{ name = "gradient", steps = 5 }, { name = "deconv", steps = 5 }]\n'
        "bootstrap = 50\n")
    run_experiment(tmp_path / "run.toml")
    report = tmp_path / "run" / "report.html"
    # after load, a script records how many images decoded and how many table rows exist
    probe = tmp_path / "run" / "probe.html"
    probe.write_text(report.read_text().replace(
        "</body>", "<script>window.onload=()=>{const ok=[...document.images].filter("
        "i=>i.complete&&i.naturalWidth>0).length;document.title='imgs='+ok+' of '+"
        "document.images.length+' rows='+document.querySelectorAll('tr').length+' svg='+"
        "document.querySelectorAll('svg rect').length;}</script></body>"))
    out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                          "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    title = out.stdout.split("<title>")[1].split("</title>")[0]
    imgs, rows, svg = title.split(" rows=")[0], int(title.split("rows=")[1].split()[0]), \
        int(title.split("svg=")[1])
    assert imgs == "imgs=2 of 2", title
    assert rows > 6 and svg > 0, title
