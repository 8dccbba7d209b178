"""The experiment runner end to end on tiny models built in the test: numbers checked against
a direct predict of the saved images, kill (SIGKILL) and resume, config errors."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pydevis
from pydevis.evaluation.config import ConfigError, load_config
from pydevis.evaluation.experiment import run_experiment
from tiny import tiny_classifier

CONFIG = '''out = "{out}"
seed = 3
generators = ["m0.onnx"]
scorers = ["m1.onnx", "m2.onnx"]
classes = [1, "thing 4", "random:3"]
methods = ["gradient", {{ name = "yosinski", preset = 1, steps = 25 }}, \
{{ name = "deconv", steps = 15 }}]
batch_size = 2
sanity = true
bootstrap = 100
'''


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("exp")
    for i in range(3):
        tiny_classifier(d / f"m{i}.onnx", seed=i)
    return d


def _config(folder: Path, out: str) -> Path:
    p = folder / f"{out}.toml"
    p.write_text(CONFIG.format(out=out))
    return p


def _rows(run: Path) -> list[dict]:
    with open(run / "results.csv") as f:
        return list(csv.DictReader(f))


def _run_in_subprocess(cfg: Path) -> subprocess.Popen:
    """The experiment in a fresh interpreter: the uninterrupted and the killed/resumed runs
    then run under the same conditions (an ascent amplifies any difference in the last bit)."""
    code = ("from pydevis.evaluation.experiment import run_experiment; "
            f"run_experiment({str(cfg)!r})")
    return subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy())


@pytest.fixture(scope="module")
def full_run(folder):
    assert _run_in_subprocess(_config(folder, "full")).wait(timeout=600) == 0
    summary = json.loads((folder / "full" / "results.json").read_text())["summary"]
    return folder / "full", summary


def test_results_match_direct_predict(full_run, folder):
    run, summary = full_run
    rows = _rows(run)
    # 5 classes × 3 methods × 2 generators (real + randomized) × 3 scoring models
    assert len(rows) == 5 * 3 * 2 * 3
    models = {f"m{i}": pydevis.load(folder / f"m{i}.onnx") for i in range(3)}
    for r in rows[::7]:
        m = models[r["scoring_model"]]
        img = np.asarray(Image.open(run / r["image"]).convert("RGB"), np.float32)
        p = m.predict(m.preprocess(img))[0]
        assert float(r["probability"]) == pytest.approx(float(p[int(r["target_class"])]),
                                                        abs=1e-6)
        assert int(r["rank"]) == 1 + int((p > p[int(r["target_class"])]).sum())
    for key in ("image", "method", "generating_model", "scoring_model", "target_class",
                "probability", "rank", "top1"):
        assert key in rows[0]
    cell = next(c for c in summary["cells"] if c["method"] == "gradient"
                and c["generating_model"] == "m0" and c["scoring_model"] == "m1")
    probs = [float(r["probability"]) for r in rows if r["method"] == "gradient"
             and r["generating_model"] == "m0" and r["scoring_model"] == "m1"]
    assert cell["mean_probability"] == pytest.approx(np.mean(probs))
    lo, hi = cell["mean_probability_ci"]
    assert lo <= cell["mean_probability"] <= hi
    html = (run / "report.html").read_text()
    pngs = sorted(str(p.relative_to(run)) for p in run.glob("images/*/*/*.png"))
    assert len(pngs) == 30 and all(f'alt="{p}"' in html for p in pngs)
    for fig in ("faithfulness per method", "robustness on the same model",
                "robustness on the other models", "same model against other models",
                "transfer gaps"):
        assert f'alt="{fig}"' in html
    assert "| gradient | m0 | m1 |" in (run / "summary.md").read_text()
    # per method: trained generator's images on their own model, on the others (mean per image),
    # and the randomized copy's images on the trained original, kept apart
    grad = [r for r in rows if r["method"] == "gradient"]
    own = [float(r["probability"]) for r in grad if r["generating_model"] == "m0"
           and r["scoring_model"] == "m0"]
    rand = [float(r["probability"]) for r in grad if r["generating_model"] == "m0~randomized"
            and r["scoring_model"] == "m0"]
    per_image: dict[str, list[float]] = {}
    for r in grad:
        if r["generating_model"] == "m0" and r["scoring_model"] != "m0":
            per_image.setdefault(r["image"], []).append(float(r["probability"]))
    pm = summary["per_method"]["gradient"]
    assert pm["same_model"]["mean_probability"] == pytest.approx(np.mean(own))
    assert pm["randomized"]["mean_probability"] == pytest.approx(np.mean(rand))
    assert pm["other_models"]["mean_probability"] == pytest.approx(
        np.mean([np.mean(v) for v in per_image.values()]))
    assert pm["same_model"]["images"] == pm["other_models"]["images"] == 5
    for k in ("jpeg", "blur", "half", "crop"):
        vals = [float(r[f"p_{k}"]) for r in grad if r["generating_model"] == "m0"
                and r["scoring_model"] == "m0"]
        assert pm["same_model"][f"p_{k}"] == pytest.approx(np.mean(vals))
    assert {r["status"] for r in rows} <= {"ok", "low", "diverged", "zero-gradient"}
    assert not list(run.rglob(".tmp-*"))


def test_kill_and_resume_gives_the_same_results(full_run, folder):
    cfg = _config(folder, "killed")
    run = folder / "killed"
    for _ in range(2):  # kill twice at different points
        proc = _run_in_subprocess(cfg)
        deadline = time.time() + 120
        start = len(list(run.rglob("chunk*.json"))) if run.exists() else 0
        while time.time() < deadline and proc.poll() is None:
            if run.exists() and len(list(run.rglob("chunk*.json"))) > start:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert _run_in_subprocess(cfg).wait(timeout=600) == 0
    key = lambda r: (r["image"], r["scoring_model"])  # noqa: E731
    full = sorted(_rows(full_run[0]), key=key)
    resumed = sorted(_rows(run), key=key)
    assert len({key(r) for r in resumed}) == len(resumed)  # no duplicate rows
    assert [(key(r), r["probability"], r["rank"]) for r in resumed] == \
        [(key(r), r["probability"], r["rank"]) for r in full]
    assert not list(run.rglob(".tmp-*"))


def test_other_config_in_same_folder_is_refused(full_run, folder):
    p = folder / "changed.toml"
    p.write_text(CONFIG.format(out="full").replace("seed = 3", "seed = 4"))
    with pytest.raises(ConfigError, match="different config"):
        run_experiment(p)


@pytest.mark.parametrize("text, message", [
    ('outt = "x"', "unknown key 'outt' \\(did you mean 'out'\\?\\)"),
    ('seed = "zero"', "'seed' has the wrong type"),
    ('methods = ["gradient", "yosinsky"]', "unknown method 'yosinsky' \\(did you mean 'yosinski'"),
    ('methods = [{ name = "gradient", steps = -3 }]', "steps must be >= 1"),
    ('methods = [{ name = "gradient", stepz = 3 }]', "unknown key 'stepz'"),
    ('generators = ["missing.onnx"]', "no such model file"),
    ('classes = [-1]', "negative"),
])
def test_config_errors(folder, text, message):
    base = dict(line.split(" = ", 1) for line in CONFIG.format(out="x").strip().splitlines())
    key = text.split(" = ")[0]
    base.pop("out" if key == "outt" else key, None)
    body = "\n".join(f"{k} = {v}" for k, v in base.items()) + "\n" + text + "\n"
    if key == "outt":
        body += 'out = "x"\n'
    p = folder / "bad.toml"
    p.write_text(body)
    with pytest.raises(ConfigError, match=message):
        load_config(p)
