"""Many classes at once (``api.visualize``, ``pydevis visualize --class all``): batches of
bounded size, one progress count over all of them, results independent of the batching where
the method draws no random numbers, grid pictures in pages."""

from __future__ import annotations

import numpy as np
import pytest

import pydevis
from pydevis import api, ascent_images
from tiny import tiny_classifier


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return pydevis.load(tiny_classifier(tmp_path_factory.mktemp("tiny") / "tiny.onnx"))


def test_batches_give_the_same_images_and_one_progress_count(tiny, monkeypatch):
    """"gradient" starts from the mean image without jitter: the batching changes nothing."""
    sizes = []
    real = ascent_images.ascend
    monkeypatch.setattr(ascent_images, "ascend", lambda m, chunk, *a, **k: sizes.append(len(chunk))
                        or real(m, chunk, *a, **k))
    calls = []
    classes = [0, 3, 5, 1, 4]
    batched = api.visualize(tiny, classes, "gradient", steps=4, batch_size=2,
                            progress=lambda t, total: calls.append((t, total)))
    assert sizes == [2, 2, 1]
    assert calls == [(t, 12) for t in range(1, 13)]
    whole = api.visualize(tiny, classes, "gradient", steps=4, batch_size=5)
    assert [int(r.target) for r in batched] == classes
    for a, b in zip(batched, whole, strict=True):
        np.testing.assert_allclose(a.pixels, b.pixels, rtol=1e-5, atol=1e-3)


def test_all_classes_pages_and_dropped_pixels(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(ascent_images, "GRID_PAGE", 4)
    res = api.visualize(tiny, ["all"], "gradient", out=tmp_path, steps=2, batch_size=3,
                        keep_pixels=False)
    assert [int(r.target) for r in res] == list(range(tiny.num_classes))
    assert all(r.pixels.shape == (0, 0, 3) for r in res)
    assert all("probability" in r.config for r in res)
    names = {p.name for p in tmp_path.glob("gradient_grid*.png")}
    assert names == {"gradient_grid.png", "gradient_grid_2.png"}  # 6 classes, pages of 4
    assert len(list(tmp_path.glob("gradient_0*.png"))) == tiny.num_classes


def test_default_batch_size_follows_activation_memory(tiny):
    assert api.ascent_batch_size(tiny) == api.ASCENT_BATCH_MAX  # a few KB a row
    assert api.ascent_batch_size(tiny, budget=1) == 1
    names = tiny.plan(tiny.scores).values
    row = sum(int(np.prod(s)) * 4 for s in tiny.shapes(names, 1).values())
    assert api.ascent_batch_size(tiny, budget=30 * row) == 10


def test_bad_batch_size_and_class_errors_come_first(tiny, tmp_path):
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        api.visualize(tiny, [1], "gradient", steps=2, batch_size=0)
    with pytest.raises(pydevis.TargetError, match="out of range"):
        api.visualize(tiny, [1, 99], "gradient", out=tmp_path / "o", steps=2)
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())
