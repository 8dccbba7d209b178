"""The CIFAR-10 classifiers bundled in models/: files, cards and labels are consistent, pydevis
loads them, and their accuracy on the CIFAR-10 test split (../shared, skipped when absent),
re-measured through pydevis, is the card's. Also the training script's data plumbing: the
loader of the official python pickles (on a synthetic folder) and the crop/flip augmentation.
"""

from __future__ import annotations

import importlib.util
import io
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import pydevis

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CIFAR = SHARED / "datasets" / "cifar10" / "cifar10_jpeg_q75.npz"
ARCHS = ("alexnet", "inception", "resnet")
PATHS = [ROOT / "models" / f"cifar10_{a}.onnx" for a in ARCHS]
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CARD_KEYS = {"size", "channels", "mean", "std", "crop_fraction", "labels", "resize", "dataset",
             "output", "test_accuracy", "training_command", "epochs", "params", "architecture"}


def _card(path: Path) -> dict:
    return json.loads(path.with_name(path.name + ".json").read_text())


def test_labels_file():
    lines = (ROOT / "models" / "cifar10_labels.txt").read_text().splitlines()
    assert tuple(lines) == CLASSES


@pytest.mark.parametrize("path", PATHS, ids=ARCHS)
def test_file_and_card(path):
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.ir_version <= 10
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert path.stat().st_size < 3_000_000
    ops = {n.op_type for n in proto.graph.node}
    assert "BatchNormalization" not in ops and "Relu" in ops
    assert ("LRN" in ops) == (path.stem == "cifar10_alexnet")

    card = _card(path)
    assert set(card) == CARD_KEYS
    assert card["size"] == [32, 32] and card["channels"] == "RGB" and card["crop_fraction"] == 1.0
    assert len(card["mean"]) == len(card["std"]) == 3
    assert all(0 < m < 255 for m in card["mean"]) and all(0 < s < 128 for s in card["std"])
    assert card["params"] == sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
    assert f"--arch {path.stem.split('_')[1]}" in card["training_command"]
    assert 0.75 <= card["test_accuracy"] <= 1.0 and card["epochs"] > 0


@pytest.mark.parametrize("path", PATHS, ids=ARCHS)
def test_loads_with_card(path):
    model = pydevis.load(path)
    card = _card(path)
    assert model.spec.size == (32, 32) and model.spec.crop_fraction == 1.0
    assert model.spec.mean == pytest.approx(card["mean"]) and model.spec.std == pytest.approx(
        card["std"])
    assert model.labels == CLASSES and model.num_classes == 10
    x = model.preprocess(np.full((3, 32, 32, 3), 128.0))  # any batch size
    assert x.shape == (3, 3, 32, 32)
    p = model.predict(x)
    assert p.shape == (3, 10) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert all(model.op_report().values())
    for mode in pydevis.MODES:
        s = model.backward(x[:2] + np.linspace(-1, 1, 32, dtype=np.float32), [3, 7], mode)
        assert s.shape == (2, 3, 32, 32) and np.isfinite(s).all() and np.abs(s).sum() > 0


# ------------------------------------------------------------------------------------- accuracy
@pytest.fixture(scope="module")
def cifar_test():
    """The 10,000 CIFAR-10 test images (N, 32, 32, 3) uint8 and their labels."""
    from PIL import Image

    z = np.load(CIFAR)
    jpeg, o = z["test_jpeg"], z["test_offsets"]
    x = np.stack([np.asarray(Image.open(io.BytesIO(jpeg[o[i]:o[i + 1]].tobytes())).convert("RGB"))
                  for i in range(len(o) - 1)])
    assert tuple(str(c) for c in z["class_names"]) == CLASSES
    return x, z["test_labels"].astype(np.int64)


@pytest.mark.models
@pytest.mark.slow
@pytest.mark.skipif(not CIFAR.exists(), reason="../shared/datasets/cifar10 is absent")
@pytest.mark.parametrize("path", PATHS, ids=ARCHS)
def test_accuracy_matches_card(path, cifar_test):
    x, y = cifar_test
    model = pydevis.load(path)
    pred = np.concatenate([model.predict(model.preprocess(x[i:i + 500])).argmax(1)
                           for i in range(0, len(x), 500)])
    accuracy = float((pred == y).mean())
    assert accuracy == pytest.approx(_card(path)["test_accuracy"], abs=0.005)
    assert accuracy >= 0.75


# ------------------------------------------------------------------------- the training script
@pytest.fixture(scope="module")
def script():
    """models/train_cifar10.py as a module (it needs torch, the test extra)."""
    pytest.importorskip("torch")
    name = "_pydevis_models_train_cifar10"
    spec = importlib.util.spec_from_file_location(name, ROOT / "models" / "train_cifar10.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    # the script imports its siblings (cifar10_data, cifar10_nets) as `python models/...` would
    sys.path.insert(0, str(ROOT / "models"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "models"))
    return module


def _write_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """One pickle in the official layout: rows of 3072 bytes, R then G then B planes."""
    d = {b"batch_label": path.name.encode(), b"labels": [int(v) for v in labels],
         b"data": images.transpose(0, 3, 1, 2).reshape(len(images), -1),
         b"filenames": [f"{i}.png".encode() for i in range(len(images))]}
    path.write_bytes(pickle.dumps(d, protocol=2))


def test_python_pickle_loader(script, tmp_path, rng):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    images = rng.integers(0, 256, size=(6, 7, 32, 32, 3), dtype=np.uint8)  # 5 train + 1 test
    labels = rng.integers(0, 10, size=(6, 7))
    for i in range(5):
        _write_batch(folder / f"data_batch_{i + 1}", images[i], labels[i])
    _write_batch(folder / "test_batch", images[5], labels[5])
    meta = {b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))

    for given in (folder, tmp_path):  # the folder itself or the one holding it
        data = script.load_data(given)
        assert data.classes == CLASSES
        np.testing.assert_array_equal(data.x_train, images[:5].reshape(35, 32, 32, 3))
        np.testing.assert_array_equal(data.y_train, labels[:5].reshape(-1))
        np.testing.assert_array_equal(data.x_test, images[5])
        np.testing.assert_array_equal(data.y_test, labels[5])
        assert data.x_train.dtype == np.uint8 and data.y_train.dtype == np.int64
    with pytest.raises(ValueError, match="cifar-10-batches-py"):
        script.load_data(tmp_path / "cifar-10-python.tar.gz")


def test_augment_crops_and_flips(script, rng):
    x = rng.integers(1, 256, size=(40, 32, 32, 3), dtype=np.uint8)  # no zeros: padding shows
    out = script.augment(x, np.random.default_rng(1))
    assert out.shape == x.shape and out.dtype == np.uint8
    padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
    flips = 0
    for img, src in zip(out, padded, strict=True):
        found = {f for f, im in ((0, src), (1, src[:, ::-1])) for dy in range(9) for dx in range(9)
                 if np.array_equal(img, im[dy:dy + 32, dx:dx + 32])}
        assert found, "every output is a crop of the padded image, mirrored or not"
        flips += min(found)
    assert 5 < flips < 35
