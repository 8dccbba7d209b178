"""Training a small numpy net on generated images and testing it on real ones (seed question 3):
the trainer learns a separable problem and not random labels, classes map to a dataset by name,
the experiment writes, resumes and reports the section, and the config table is checked."""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pydevis.evaluation.config import ConfigError, TrainOnGeneratedSpec, load_config
from pydevis.evaluation.experiment import finish, run_experiment
from pydevis.evaluation.smallnet import NetSpec, fit_predict, standardize
from pydevis.evaluation.train_on_generated import (
    Dataset,
    run_train_on_generated,
    train_indices,
    wilson,
)

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT.parent / "shared" / "datasets" / "cifar10" / "cifar10_jpeg_q75.npz"
LABELS = (ROOT / "models" / "cifar10_labels.txt").read_text().split()
SMALL = NetSpec(hidden=32, epochs=40)


def _prototypes(n: int, rng: np.random.Generator, h: int = 20, w: int = 28) -> np.ndarray:
    """``n`` coarse random colour patterns (4 × 4 blocks) of h × w pixels (h, w: multiples of
    4; distinct sides by default on purpose)."""
    coarse = rng.uniform(0, 255, (n, h // 4, w // 4, 3))
    return np.kron(coarse, np.ones((1, 4, 4, 1)))


def _draw(protos: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(protos[y] + rng.normal(0, 40, (len(y), *protos.shape[1:])), 0, 255)


def test_learns_a_separable_problem_and_not_random_labels(rng):
    protos = _prototypes(3, rng)
    y = rng.integers(0, 3, 330)
    x = _draw(protos, y, rng)
    pred = fit_predict(x[:30], y[:30], x[30:], 3, SMALL, np.random.default_rng(0))
    assert (pred == y[30:]).mean() >= 0.9
    shuffled = np.random.default_rng(1).integers(0, 3, 330)  # labels unrelated to the images
    pred = fit_predict(x[:30], shuffled[:30], x[30:], 3, SMALL, np.random.default_rng(0))
    assert abs((pred == shuffled[30:]).mean() - 1 / 3) < 0.12
    again = fit_predict(x[:30], shuffled[:30], x[30:], 3, SMALL, np.random.default_rng(0))
    assert np.array_equal(pred, again)  # deterministic for a given generator


def test_softmax_regression_and_standardize(rng):
    protos = _prototypes(4, rng)
    y = rng.integers(0, 4, 240)
    x = _draw(protos, y, rng)
    pred = fit_predict(x[:40], y[:40], x[40:], 4, replace(SMALL, hidden=0, size=8, epochs=150),
                       np.random.default_rng(0))
    assert (pred == y[40:]).mean() >= 0.9
    s = standardize(x[:3] * 0.5 + 30, 12)  # contrast and brightness are not features
    assert s.shape == (3, 12, 12, 3)
    assert np.allclose(s, standardize(x[:3], 12), atol=0.05)
    assert np.allclose(s.mean(axis=(1, 2, 3)), 0, atol=1e-5)


def test_wilson_interval():
    lo, hi = wilson(50, 100)
    assert lo < 0.5 < hi and hi - lo == pytest.approx(0.19, abs=0.01)
    assert wilson(0, 10)[0] == pytest.approx(0, abs=1e-12)


# --------------------------------------------------------------------------------- experiment
def _jpegs(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    blobs = []
    for im in images:
        buf = io.BytesIO()
        Image.fromarray(np.clip(im, 0, 255).astype(np.uint8)).save(buf, format="JPEG",
                                                                   quality=90)
        blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
    return np.concatenate(blobs), np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)


def make_dataset(path: Path, names: list[str], train: tuple, test: tuple) -> Path:
    """A dataset in the layout of ../shared's CIFAR-10 npz (JPEG bytes + offsets + labels)."""
    arrays = {"class_names": np.array(names)}
    for split, (x, y) in (("train", train), ("test", test)):
        arrays[f"{split}_jpeg"], arrays[f"{split}_offsets"] = _jpegs(x)
        arrays[f"{split}_labels"] = np.asarray(y, np.uint8)
    np.savez(path, **arrays)
    return path


CONFIG = '''out = "run"
seed = 1
generators = ["{models}/cifar10_alexnet.onnx"]
scorers = ["{models}/cifar10_resnet.onnx"]
classes = ["cat", "ship", 9]
methods = [{{ name = "gradient", steps = 4, start = "noise", start_std = 20.0 }},
           {{ name = "deconv-prior", steps = 4 }}]
images_per_class = 2
bootstrap = 20

[train_on_generated]
dataset = "data.npz"
test_images = 30
hidden = 16
epochs = 10
'''


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny experiment with the option on; its dataset lists the classes in reverse order."""
    d = tmp_path_factory.mktemp("transfer")
    rng = np.random.default_rng(0)
    protos = _prototypes(10, rng, 32, 32)
    y_train, y_test = np.repeat(np.arange(10), 4), np.repeat(np.arange(10), 12)
    make_dataset(d / "data.npz", LABELS[::-1], (_draw(protos, y_train, rng), y_train),
                 (_draw(protos, y_test, rng), y_test))
    (d / "run.toml").write_text(CONFIG.format(models=ROOT / "models"))
    summary = run_experiment(d / "run.toml")
    return d, summary


def test_experiment_writes_and_reports_the_section(run):
    d, summary = run
    out = d / "run"
    rows = json.loads((out / "results.json").read_text())["summary"]["train_on_generated"]
    assert rows == summary["train_on_generated"]
    assert [(r["method"], r["source"]) for r in rows] == [
        ("deconv-prior", "generated"), ("gradient", "generated"), ("real (train split)", "real")]
    for r in rows:
        assert r["status"] == "ok" and r["classes"] == ["truck", "ship", "cat"]  # dataset order
        assert r["images_per_class"] == {"truck": 2, "ship": 2, "cat": 2}
        assert r["train_images"] == 6 and r["test_images"] == 30 and r["chance"] == 1 / 3
        assert 0 <= r["accuracy"] <= 1 and r["accuracy_ci"][0] <= r["accuracy"]
        assert set(r["per_class_accuracy"]) == {"truck", "ship", "cat"}
    assert sorted(p.name for p in (out / "images/cifar10_alexnet/gradient").glob("*.png")) == [
        "0003_cat.png", "0003_cat_1.png", "0008_ship.png", "0008_ship_1.png",
        "0009_truck.png", "0009_truck_1.png"]
    html = (out / "report.html").read_text()
    assert "Trained on generated images, tested on real ones" in html
    assert html.count("<td>real (train split)</td>") == 1
    md = (out / "summary.md").read_text()
    assert "| cifar10_alexnet | gradient | 6 | 30 |" in md
    assert not list(out.rglob(".tmp-*"))


def test_results_are_kept_on_resume(run):
    d, _ = run
    files = sorted((d / "run" / "train_on_generated").rglob("*.json"))
    assert len(files) == 3
    before = {f: f.stat().st_mtime_ns for f in files}
    files[0].write_text(files[0].read_text().replace('"status": "ok"', '"status": "ok" '))
    mark = files[0].stat().st_mtime_ns
    run_experiment(d / "run.toml")
    assert files[0].stat().st_mtime_ns == mark  # present: not redone
    assert all(f.stat().st_mtime_ns == before[f] for f in files[1:])


def test_a_run_an_older_version_started_resumes_in_its_transfer_folder(run, tmp_path):
    """Before the rename the rows lived in ``transfer/``: such a run keeps its rows there (not
    redone, no second folder) and reports them."""
    d, summary = run
    old = tmp_path / "old"
    shutil.copytree(d, old)
    (old / "run" / "train_on_generated").rename(old / "run" / "transfer")
    files = sorted((old / "run" / "transfer").rglob("*.json"))
    before = {f: f.stat().st_mtime_ns for f in files}
    again = run_experiment(old / "run.toml")
    assert not (old / "run" / "train_on_generated").exists()
    assert {f: f.stat().st_mtime_ns for f in files} == before
    assert again["train_on_generated"] == summary["train_on_generated"]


def test_classes_map_by_name(run, tmp_path):
    """A dataset made of a method's own images, under reversed class indices: the net trained
    on them recognizes them only if each class found its dataset counterpart by name."""
    d, _ = run
    src = d / "run" / "images" / "cifar10_alexnet" / "gradient"
    pngs = sorted(src.glob("*.png"))
    x = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float64) for p in pngs])
    y = [9 - LABELS.index(json.loads(p.with_suffix(".json").read_text())["label"])
         for p in pngs]
    data = make_dataset(tmp_path / "self.npz", LABELS[::-1], (x, y), (x, y))
    shutil.copytree(src, tmp_path / "run" / "images" / "g" / "gradient")
    spec = TrainOnGeneratedSpec(data, test_images=6, baseline=False,
                                net=NetSpec(hidden=32, epochs=60))
    run_train_on_generated(tmp_path / "run", spec, seed=0)
    row = json.loads((tmp_path / "run/train_on_generated/generated/g/gradient.json").read_text())
    assert row["status"] == "ok" and row["test_images"] == 6 and row["accuracy"] >= 0.8
    assert finish(tmp_path / "run", 10)["train_on_generated"] == [row]


def test_images_without_a_dataset_class_are_skipped(run, tmp_path):
    d, _ = run
    src = d / "run" / "images" / "cifar10_alexnet" / "gradient"
    shutil.copytree(src, tmp_path / "run" / "images" / "g" / "m")
    names = ["cat", "ship", "lorry"] + [f"other{i}" for i in range(7)]
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 255, (20, 32, 32, 3)), np.arange(20) % 3
    data = make_dataset(tmp_path / "d.npz", names, (x, y), (x, y))
    run_train_on_generated(tmp_path / "run", TrainOnGeneratedSpec(data, 9, True, SMALL), seed=0)
    row = json.loads((tmp_path / "run/train_on_generated/generated/g/m.json").read_text())
    assert row["classes"] == ["cat", "ship"] and row["train_images"] == 4
    assert len(row["skipped"]) == 2 and "'truck' is not in d.npz" in row["skipped"][0]
    base = json.loads((tmp_path / "run/train_on_generated/real/g.json").read_text())
    assert base["train_images"] == 4 and base["test_images"] == 8

    other = make_dataset(tmp_path / "e.npz", names, (x, y), (x[y != 1], y[y != 1]))
    shutil.copytree(src, tmp_path / "again" / "images" / "g" / "m")
    run_train_on_generated(tmp_path / "again", TrainOnGeneratedSpec(other, 9, False, SMALL), seed=0)
    row = json.loads((tmp_path / "again/train_on_generated/generated/g/m.json").read_text())
    assert row["status"] == "a class has no test images in e.npz" and "accuracy" not in row
    finish(tmp_path / "again", 10)
    assert "a class has no test images" in (tmp_path / "again" / "summary.md").read_text()


# ------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("table, message", [
    ('datset = "data.npz"', "unknown key 'datset' \\(did you mean 'dataset'\\?\\)"),
    ('test_images = 10', "missing required key 'dataset'"),
    ('dataset = "nope.npz"', "no such dataset file"),
    ('dataset = "data.npz"\nepochs = "ten"', "'epochs' has the wrong type"),
    ('dataset = "data.npz"\nhidden = -1', "'hidden' must be in \\[0, 4096\\], got -1"),
    ('dataset = "data.npz"\nlr = 0', "'lr' must be in \\(0, 10\\], got 0"),
    ('dataset = "data.npz"\nlr = nan', "'lr' must be in"),
    ('dataset = "data.npz"\nepochs = 9999999999', "'epochs' must be in"),
])
def test_config_table_errors(run, tmp_path, table, message):
    d, _ = run
    head = CONFIG.format(models=ROOT / "models").split("[train_on_generated]")[0]
    p = d / "bad.toml"
    p.write_text(head + "[train_on_generated]\n" + table + "\n")
    with pytest.raises(ConfigError, match=message):
        load_config(p)


def test_copies_of_a_seed_independent_method_are_refused(run):
    d, _ = run
    p = d / "same.toml"
    p.write_text(CONFIG.format(models=ROOT / "models").replace(
        '{ name = "gradient", steps = 4, start = "noise", start_std = 20.0 }', '"gradient"'))
    with pytest.raises(ConfigError, match="'gradient' does not depend on its seed"):
        load_config(p)
    cfg = load_config(d / "run.toml")
    assert cfg.images_per_class == 2 and cfg.train_on_generated.net.epochs == 10


# ------------------------------------------------------------------------- real CIFAR-10 data
@pytest.mark.skipif(not CIFAR.exists(), reason="../shared/datasets/cifar10 is absent")
def test_cifar10_dataset_and_a_real_baseline():
    ds = Dataset(CIFAR)
    assert ds.names == LABELS and ds.class_of(3, "cat") == 3
    labels = ds.labels("train")
    idx = train_indices(labels, {3: 30, 8: 30, 9: 30}, np.random.default_rng(0))
    test_idx = np.concatenate([np.flatnonzero(ds.labels("test") == c)[:100] for c in (3, 8, 9)])
    x, y = ds.images("train", idx), labels[idx]
    assert x.shape == (90, 32, 32, 3) and set(y) == {3, 8, 9}
    pred = fit_predict(x, np.searchsorted([3, 8, 9], y), ds.images("test", test_idx), 3,
                       NetSpec(epochs=60), np.random.default_rng(0))
    truth = np.searchsorted([3, 8, 9], ds.labels("test")[test_idx])
    assert (pred == truth).mean() > 1 / 3 + 0.1  # real images teach it something
