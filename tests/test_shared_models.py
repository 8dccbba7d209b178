"""The nine pretrained ImageNet classifiers of ../shared/models (converted TF/Caffe/PyTorch
graphs): they load with their cards, reproduce the recorded top-1/top-5 on the labelled photos,
and their class gradient passes a finite-difference check. Skipped when ../shared is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import pydevis
from pydevis.image import load_for

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MODELS = sorted((SHARED / "models").glob("*.onnx")) if (SHARED / "models").is_dir() else []
pytestmark = [pytest.mark.models,
              pytest.mark.skipif(not MODELS, reason="../shared/models is absent")]


@pytest.fixture(scope="module")
def photos():
    meta = json.loads((SHARED / "images" / "images.json").read_text())
    return {n: v["acceptable_imagenet_classes"] for n, v in sorted(meta.items())
            if v.get("acceptable_imagenet_classes")}


def _batch(model, photos):
    return np.concatenate([model.preprocess(load_for(SHARED / "images" / n, model.spec.size,
                                                     model.spec.crop_fraction))
                           for n in photos])


@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_accuracy_matches_card(path, photos):
    model = pydevis.load(path)
    card = json.loads(path.with_name(path.name + ".json").read_text())
    probs = model.predict(_batch(model, photos))
    top5 = np.argsort(-probs, axis=1)[:, :5]
    ok = [set(t) & set(acc) for t, acc in zip(top5, photos.values(), strict=True)]
    top1 = np.mean([t[0] in acc for t, acc in zip(top5, photos.values(), strict=True)])
    assert top1 == pytest.approx(card["labelled_photos_top1"], abs=1e-9)
    assert np.mean([bool(o) for o in ok]) == pytest.approx(card["labelled_photos_top5"], abs=1e-9)


@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_gradient_finite_difference(path, photos):
    """Directional derivative along the gradient (|g|) and along a random direction.

    The nets are piecewise linear in places (ReLU, ReLU6, max-pool), so the difference step is
    small; float32 forwards (ONNX Runtime has no float64 AveragePool / GlobalAveragePool, so
    these models cannot run in float64) limit the agreement to a few percent.
    """
    model = pydevis.load(path)
    x = _batch(model, dict(list(photos.items())[:2]))
    classes = [int(c) for c in model.forward(x).argmax(axis=1)]
    grad = model.backward(x, classes)
    assert grad.shape == x.shape
    rows = np.arange(len(classes))
    norm = np.linalg.norm(grad.reshape(len(x), -1), axis=1)
    rng = np.random.default_rng(0)
    rand = rng.standard_normal(x.shape).astype(np.float32)
    rand /= np.linalg.norm(rand.reshape(len(x), -1), axis=1)[:, None, None, None]
    for direction, expected, tol in ((grad / norm[:, None, None, None], norm, 0.06),
                                     (rand, (grad * rand).reshape(len(x), -1).sum(1), 0.15)):
        eps = 2e-3
        fd = model.forward(x + eps * direction) - model.forward(x - eps * direction)
        fd = fd[rows, classes] / (2 * eps)
        np.testing.assert_allclose(fd, expected, rtol=tol, atol=0.02 * norm.max())
    # every mode runs and gives a finite, non-zero signal
    for mode in ("deconvnet", "guided"):
        s = model.backward(x, classes, mode)
        assert np.isfinite(s).all() and np.abs(s).sum() > 0


def test_fixed_batch_exports_run_any_batch(photos):
    """The shared models are exported with batch 1 (Reshape to [1, ...]); batch 3 must give
    the rows of three batch-1 runs."""
    path = SHARED / "models" / "shufflenet_v1_g8_w1_ptq.onnx"
    model = pydevis.load(path)
    x = _batch(model, dict(list(photos.items())[:3]))
    batched = model.backward(x, [1, 2, 3])
    rows = np.concatenate([model.backward(x[i:i + 1], [i + 1]) for i in range(3)])
    np.testing.assert_allclose(batched, rows, rtol=1e-4, atol=1e-6 * np.abs(rows).max())
    assert model.runner.batchable
