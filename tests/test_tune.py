"""Issue 18, ``pydevis tune``: through the installed command, on a copy of a bundled CIFAR model
with tiny trials: the card gets the winner, a rerun resumes without redoing trials, visualize
then uses the card's settings and records where they came from, bad input exits 2."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_cli_researcher import pydevis as run

import pydevis
from pydevis import demo
from pydevis.evaluation.perturb import perturb
from pydevis.tuning import trial_settings

MODELS = demo.models_dir()
ARGS = ["--method", "yosinski", "--class", "1", "--class", "cat", "--steps", "6",
        "--scorer", MODELS / "cifar10_resnet.onnx"]


def _copy(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f in ("cifar10_alexnet.onnx", "cifar10_alexnet.onnx.json", "cifar10_labels.txt"):
        shutil.copy(MODELS / f, folder / f)
    return folder / "cifar10_alexnet.onnx"


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A copy of the AlexNet tuned with 3 trials: (model, out, first run's JSON)."""
    tmp = tmp_path_factory.mktemp("tune")
    model = _copy(tmp / "m")
    rc, out, err = run("tune", model, *ARGS, "--trials", "3", "--out", tmp / "t", "--json")
    assert rc == 0, err
    return model, tmp / "t", json.loads(out)


def _p(model: pydevis.Model, png: Path, c: int, kind: str | None = None) -> float:
    px = np.asarray(Image.open(png).convert("RGB"), np.float32)
    if kind:
        px = perturb(px, kind)
    return float(model.predict(model.preprocess(px))[0, c])


def test_winner_is_written_to_the_card(tuned):
    model, out, res = tuned
    assert res["trials_run"] == 3 and len(res["trials"]) == 3
    trials = [json.loads((out / f"trial_{k:04d}" / "trial.json").read_text()) for k in range(3)]
    # the objective recomputed here from the saved PNGs, by the documented formula
    alex = pydevis.load(model)
    resnet = pydevis.load(MODELS / "cifar10_resnet.onnx")
    for t in trials:
        js = []
        for c in t["per_class"]:
            png, k = out / f"trial_{t['trial']:04d}" / c["image"], c["class"]
            pm, ps = _p(alex, png, k), _p(resnet, png, k)
            pr = np.mean([_p(alex, png, k, kind) for kind in ("jpeg", "blur", "half", "crop")])
            js.append((pm + ps + pr) / 3)
        assert t["objective"] == pytest.approx(np.mean(js), abs=1e-5)
    best = max(trials, key=lambda t: t["objective"])
    card = json.loads(Path(str(model) + ".json").read_text())
    entry = card["ascent"]["yosinski"]
    assert entry["trial"] == best["trial"] == res["best"]["trial"]
    assert entry["objective"] == pytest.approx(best["objective"])
    assert entry["settings"]["steps"] == 6
    for k, v in best["settings"].items():
        assert entry["settings"][k] == v
    assert card["labels"] == "cifar10_labels.txt" and card["size"] == [32, 32]  # kept
    # trial 0 is the paper's preset 3; the others are draws
    assert trials[0]["config"]["blur_sigma"] == 1.0 and trials[0]["config"]["steps"] == 6
    assert trials[1]["settings"] != trials[2]["settings"]
    assert trials[1]["settings"] == trial_settings("yosinski", 1, 0, 6)


def test_rerun_resumes(tuned):
    model, out, _ = tuned
    before = {k: (out / f"trial_{k:04d}" / "trial.json").stat().st_mtime_ns for k in range(3)}
    rc, o, err = run("tune", model, *ARGS, "--trials", "4", "--out", out, "--json")
    assert rc == 0, err
    assert json.loads(o)["trials_run"] == 1
    assert all((out / f"trial_{k:04d}" / "trial.json").stat().st_mtime_ns == t
               for k, t in before.items())
    (out / "trial_0002" / "trial.json").unlink()  # as a kill mid-trial leaves it
    rc, o, err = run("tune", model, *ARGS, "--trials", "4", "--out", out, "--json")
    assert rc == 0 and json.loads(o)["trials_run"] == 1, err


def test_visualize_uses_the_card_and_says_so(tuned, tmp_path):
    model, _, _ = tuned
    entry = json.loads(Path(str(model) + ".json").read_text())["ascent"]["yosinski"]
    rc, _, err = run("visualize", model, "-c", "2", "-o", tmp_path / "a", "-q")
    assert rc == 0, err
    side = json.loads((tmp_path / "a" / "yosinski_0002_bird.json").read_text())
    assert side["settings_source"] == "card" and side["preset"] is None
    assert side["settings_card"] == str(Path(str(model) + ".json"))
    for k, v in entry["settings"].items():
        assert side["settings"][k] == v
    rc, _, err = run("visualize", model, "-c", "2", "-o", tmp_path / "b", "--steps", "2", "-q")
    side = json.loads((tmp_path / "b" / "yosinski_0002_bird.json").read_text())
    assert rc == 0 and side["settings_source"] == "flags" and side["settings"]["steps"] == 2
    assert side["settings"]["decay"] == entry["settings"]["decay"]  # the card's, under the flag
    rc, _, err = run("visualize", model, "-c", "2", "-o", tmp_path / "c", "--preset", "3",
                     "--steps", "2", "-q")
    side = json.loads((tmp_path / "c" / "yosinski3_0002_bird.json").read_text())
    assert rc == 0 and side["settings"]["blur_sigma"] == 1.0  # the paper's preset 3
    rc, _, err = run("visualize", MODELS / "cifar10_alexnet.onnx", "-c", "2", "-o",
                     tmp_path / "d", "-m", "fourier", "--steps", "2", "-q")
    side = json.loads((tmp_path / "d" / "fourier_0002_bird.json").read_text())
    assert rc == 0 and side["settings_source"] == "flags"
    rc, _, err = run("visualize", MODELS / "cifar10_alexnet.onnx", "-c", "2", "-o",
                     tmp_path / "e", "-q")
    side = json.loads((tmp_path / "e" / "yosinski3_0002_bird.json").read_text())
    assert rc == 0 and side["settings_source"] == "paper"


def test_card_elsewhere(tmp_path):
    model = _copy(tmp_path / "m")
    card = tmp_path / "cards" / "mine.json"
    card.parent.mkdir()
    rc, _, err = run("tune", model, "-m", "fourier", "-c", "3", "--steps", "4", "--trials",
                     "2", "--out", tmp_path / "t", "--card", card, "-q")
    assert rc == 0, err
    data = json.loads(card.read_text())
    assert Path(data["labels"]).is_absolute() and data["size"] == [32, 32]
    assert "ascent" not in json.loads(Path(str(model) + ".json").read_text())
    rc, _, err = run("visualize", model, "-m", "fourier", "-c", "3", "--card", card, "-o",
                     tmp_path / "v", "-q")
    side = json.loads((tmp_path / "v" / "fourier_0003_cat.json").read_text())
    assert rc == 0 and side["settings_source"] == "card" and side["settings"]["steps"] == 4


def _bad(tmp_path: Path, *args) -> str:
    out = tmp_path / "never"
    rc, so, err = run("tune", *args, "--out", out)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not out.exists()
    return err


def test_bad_input_exits_2_before_any_work(tmp_path):
    model = _copy(tmp_path / "m")
    assert "--class" in _bad(tmp_path, model, "--trials", "2")
    assert "unknown class" in _bad(tmp_path, model, "-c", "nosuch")
    assert "--trials" in _bad(tmp_path, model, "-c", "1", "--trials", "0")
    assert "--steps" in _bad(tmp_path, model, "-c", "1", "--steps", "0")
    _bad(tmp_path, model, "-c", "1", "--method", "nosuch")
    _bad(tmp_path, model, "-c", "1", "--scorer", tmp_path / "absent.onnx")
    _bad(tmp_path, model, "-c", "1", "--card", tmp_path)  # a folder
    card = Path(str(model) + ".json")
    card.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)  # as the shared cards are
    try:
        assert "--card" in _bad(tmp_path, model, "-c", "1")
    finally:
        card.chmod(0o644)
    other = tmp_path / "other"
    rc, _, err = run("tune", model, "-c", "1", "--steps", "2", "--trials", "1", "--out", other,
                     "-q")
    assert rc == 0, err
    rc, _, err = run("tune", model, "-c", "2", "--steps", "2", "--trials", "1", "--out", other)
    assert rc == 2 and "other inputs" in err


def test_experiment_uses_the_card(tuned, tmp_path):
    """A tuned model as an experiment's generator: a method entry without settings takes the
    card's (settings_source "card" in each sidecar), one with settings is "flags"."""
    model, _, _ = tuned
    entry = json.loads(Path(str(model) + ".json").read_text())["ascent"]["yosinski"]
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'out = "run"\ngenerators = ["{model}"]\n'
                   f'scorers = ["{MODELS / "cifar10_resnet.onnx"}"]\nclasses = [2, 5]\n'
                   'methods = [{ name = "yosinski", label = "tuned" },\n'
                   '           { name = "yosinski", preset = 1, steps = 3 }]\nbootstrap = 10\n')
    rc, _, err = run("experiment", cfg, "-q")
    assert rc == 0, err
    images = tmp_path / "run" / "images" / "cifar10_alexnet"
    for side in sorted((images / "tuned").glob("*.json")):
        s = json.loads(side.read_text())["settings"]
        assert s["settings_source"] == "card"
        assert all(s[k] == v for k, v in entry["settings"].items())
    assert len(list((images / "tuned").glob("*.json"))) == 2
    s = json.loads(next((images / "yosinski1").glob("*.json")).read_text())["settings"]
    assert s["settings_source"] == "flags" and s["steps"] == 3 and s["norm_pct"] == 50
