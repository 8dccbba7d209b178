"""The committed real-net experiment (experiments/imagenet.toml → docs/results.md), run small:
its config loads with every path inside ../shared, and a reduced copy of it (one generator, two
scorers, two classes, every method at 3 steps, sanity and two images per class) runs through
experiments/results.py's document writer. The full run is done outside CI (see docs/results.md).
Skipped when ../shared is absent."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from pydevis.evaluation.config import load_config
from pydevis.evaluation.experiment import run_experiment

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CONFIG = ROOT / "experiments" / "imagenet.toml"
pytestmark = [pytest.mark.models, pytest.mark.slow,
              pytest.mark.skipif(not (SHARED / "models").is_dir(),
                                 reason="../shared/models is absent")]


def _results_module():
    spec = importlib.util.spec_from_file_location("results", ROOT / "experiments" / "results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_committed_config_loads_with_shared_paths():
    cfg = load_config(CONFIG)
    assert len(cfg.generators) >= 3 and len(cfg.scorers) >= 6
    assert len(cfg.classes) == 10 and cfg.sanity and cfg.images_per_class >= 2
    assert {m.label for m in cfg.methods} == {
        "gradient", "guided", "deconv", "deconv-prior", "deconv-prior-reg",
        "yosinski1", "yosinski2", "yosinski3", "yosinski4"}
    for p in (*cfg.generators, *cfg.scorers):
        assert p.resolve().is_relative_to(SHARED.resolve())


def test_a_small_version_runs_and_writes_the_document(tmp_path):
    text = CONFIG.read_text()
    text = re.sub(r'out = "[^"]*"', 'out = "run"', text)
    text = text.replace("../../shared", str(SHARED))
    text = re.sub(r"generators = \[[^\]]*\]",
                  f'generators = ["{SHARED}/models/mobilenet_v1_0.25_128_qat.onnx"]', text)
    text = re.sub(r"scorers = \[[^\]]*\]", f'scorers = ["{SHARED}/models/'
                  f'mobilenet_v1_0.5_160_qat.onnx", "{SHARED}/models/squeezenet1_1_caffe.onnx"]',
                  text)
    text = re.sub(r"classes = \[[^\]]*\]", "classes = [1, 281]", text)
    text = re.sub(r"steps = \d+, ", "", text).replace("name = ", "steps = 3, name = ")
    text = text.replace("bootstrap = 1000", "bootstrap = 50")
    cfg = tmp_path / "small.toml"
    cfg.write_text(text)
    run_experiment(cfg)
    doc = _results_module().write_doc(tmp_path / "run", tmp_path / "docs" / "results.md", "cmd")
    md = doc.read_text()
    # 9 methods × 2 classes × 2 images × (trained + randomized) generators
    assert len(list((tmp_path / "run" / "images").rglob("*.png"))) == 72
    for m in ("gradient", "deconv-prior-reg", "yosinski4"):
        assert re.search(rf"^\| {m} \| 4 \| \d\.\d{{3}} \[", md, re.M), m
    assert "## Robustness (same model)" in md and "randomized copy" in md
    pngs = sorted(p.name for p in (tmp_path / "docs" / "results").glob("*.png"))
    assert "grid_mobilenet_v1_0.25_128_qat.png" in pngs and "faithfulness.png" in pngs
    for name in pngs:
        assert f"](results/{name})" in md
