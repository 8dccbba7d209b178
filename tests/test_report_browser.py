"""The HTML report in a real browser (headless Chromium): no console or load errors, every image
decodes, every figure and section is there. tests/run.sh installs Chromium (Debian package
`chromium`) when it is absent and sets PYDEVIS_REQUIRE_BROWSER=1, so in CI this test runs;
elsewhere it skips when no Chromium is found."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from pydevis.evaluation.experiment import run_experiment
from tiny import tiny_classifier

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)
REQUIRED = os.environ.get("PYDEVIS_REQUIRE_BROWSER") == "1"
pytestmark = pytest.mark.skipif(CHROMIUM is None and not REQUIRED,
                                reason="headless Chromium is not installed")

# Records console errors and failed loads from the first script on, then, after load, writes
# what it found into the title for --dump-dom to return.
_PROBE_HEAD = """<script>window.__errs=[];const __ce=console.error;
console.error=(...a)=>{window.__errs.push(a.join(' '));__ce(...a)};
window.addEventListener('error',e=>window.__errs.push(String(e.message||
(e.target&&e.target.src&&e.target.src.slice(0,60))||'load error')),true);</script>"""
_PROBE_TAIL = """<script>window.addEventListener('load',()=>{const im=[...document.images];
document.title=JSON.stringify({errors:window.__errs,images:im.length,
decoded:im.filter(i=>i.complete&&i.naturalWidth>0).length,
figures:im.filter(i=>i.classList.contains('fig')).map(i=>i.alt),
sections:[...document.querySelectorAll('h2')].map(h=>h.textContent)});});</script>"""


def test_report_renders_without_errors(tmp_path):
    assert CHROMIUM is not None, "PYDEVIS_REQUIRE_BROWSER=1 but no Chromium on PATH"
    for i in range(2):
        tiny_classifier(tmp_path / f"m{i}.onnx", seed=i)
    (tmp_path / "run.toml").write_text(
        'out = "run"\ngenerators = ["m0.onnx"]\nscorers = ["m1.onnx"]\nclasses = [1, 2, 3]\n'
        'methods = [{ name = "gradient", steps = 5 }, { name = "deconv", steps = 5 }]\n'
        "sanity = true\nbootstrap = 50\n")
    run_experiment(tmp_path / "run.toml")
    report = (tmp_path / "run" / "report.html").read_text()
    assert report.count("<head>") == 1 and report.count("</body>") == 1
    probe = tmp_path / "run" / "probe.html"
    probe.write_text(report.replace("<head>", "<head>" + _PROBE_HEAD)
                     .replace("</body>", _PROBE_TAIL + "</body>"))
    out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                          "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    import html as htmllib

    found = json.loads(htmllib.unescape(out.stdout.split("<title>")[1].split("</title>")[0]))
    assert found["errors"] == []
    # 3 classes × 2 methods × (trained + randomized generator) thumbnails, and the figures
    assert found["decoded"] == found["images"] == 12 + len(found["figures"])
    assert set(found["figures"]) == {
        "faithfulness per method", "robustness on the same model",
        "robustness on the other models", "same model against other models", "transfer gaps"}
    assert any(s.startswith("1. Which method") for s in found["sections"])
    assert any(s.startswith("4. Sanity checks") for s in found["sections"])
