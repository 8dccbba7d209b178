"""The class-sensitivity check: correlation between images of different classes, on pixels
centred per colour channel."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pydevis.evaluation.sanity import class_sensitivity


def _save(folder, name, px):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(np.rint(px), 0, 255).astype(np.uint8)).save(folder / name)


def test_a_shared_colour_cast_is_not_similarity(tmp_path):
    rng = np.random.default_rng(0)
    cast = np.array([123.7, 116.8, 103.9])  # a Caffe mean pixel, in RGB
    folder = tmp_path / "images" / "gen" / "m"
    for name in ["0001_a.png", "0002_b.png", "0003_c.png"]:
        _save(folder, name, cast + rng.normal(0, 3, (16, 18, 3)))
    (row,) = class_sensitivity(tmp_path)
    assert abs(row["mean_interclass_correlation"]) < 0.1  # was ~0.9 with one global mean


def test_the_same_picture_for_every_class_correlates_fully(tmp_path):
    rng = np.random.default_rng(1)
    picture = 128 + rng.normal(0, 30, (16, 18, 3))
    folder = tmp_path / "images" / "gen" / "m"
    for name, shift in [("0001_a.png", 0), ("0002_b.png", 20), ("0002_b_1.png", -10)]:
        _save(folder, name, picture + shift)
    (row,) = class_sensitivity(tmp_path)
    assert row["mean_interclass_correlation"] == pytest.approx(1.0, abs=0.01)
    assert row["images"] == 3
