"""``project`` / ``top9`` figures on the tiny classifier: files per mode, crop beside patch,
full grids whatever the number of channels and images, labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import pydevis
from pydevis import api
from tiny import tiny_classifier


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return pydevis.load(tiny_classifier(tmp_path_factory.mktemp("tiny") / "tiny.onnx"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Eleven 24×30 photos in mid tones (no black: dark pixels in a figure are text)."""
    rng = np.random.default_rng(3)
    d = tmp_path_factory.mktemp("photos")
    for i in range(11):
        Image.fromarray(rng.integers(90, 220, (24, 30, 3), dtype=np.uint8)).save(d / f"p{i}.png")
    return d


def _read(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), np.int32)


def _white_square(img: np.ndarray, side: int) -> bool:
    """Whether some side×side window is entirely white (an empty slot of a grid)."""
    white = np.all(img >= 250, axis=-1).astype(np.int64)
    s = np.pad(white.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    win = s[side:, side:] - s[:-side, side:] - s[side:, :-side] + s[:-side, :-side]
    return bool((win == side * side).any())


def test_project_writes_full_projection_figure_patch_and_json(tiny, photos, tmp_path):
    img = photos / "p0.png"
    p = api.project(tiny, img, "r2:3", out=tmp_path)
    stem = "deconvnet_r2_3"
    full = _read(tmp_path / f"{stem}.png")
    assert full.shape == (20, 18, 3)  # the model's input size
    y0, y1, x0, x1 = p.box
    assert _read(tmp_path / f"{stem}_patch.png").shape == (y1 - y0, x1 - x0, 3)
    fig = _read(tmp_path / f"{stem}_figure.png")
    assert fig.shape[1] >= 2 * 160 and fig.shape[0] >= 160  # readable cells, side by side
    meta = json.loads((tmp_path / f"{stem}.json").read_text())
    assert meta["mode"] == "deconvnet" and meta["box"] == list(p.box)
    assert meta["files"]["figure"] == f"{stem}_figure.png"
    assert 0 < meta["contrast"]["scale"] <= float(np.abs(p.signal).max())


def test_modes_do_not_overwrite_each_other(tiny, photos, tmp_path):
    img = photos / "p1.png"
    a = api.project(tiny, img, "r2:3", out=tmp_path, mode="deconvnet")
    b = api.project(tiny, img, "r2:3", out=tmp_path, mode="guided")
    assert not np.array_equal(a.signal, b.signal)
    fa, fb = tmp_path / "deconvnet_r2_3.png", tmp_path / "guided_r2_3.png"
    assert not np.array_equal(_read(fa), _read(fb))
    assert json.loads((tmp_path / "guided_r2_3.json").read_text())["mode"] == "guided"
    api.top9(tiny, photos, "r2", [1], out=tmp_path, mode="deconvnet")
    api.top9(tiny, photos, "r2", [1], out=tmp_path, mode="guided")
    assert (tmp_path / "deconvnet_top9_r2.png").is_file()
    assert (tmp_path / "guided_top9_r2.png").is_file()


@pytest.mark.parametrize("n_images", [4, 11])
@pytest.mark.parametrize("channels", [[0], [0, 3], [0, 1, 2, 3, 4]])
def test_top9_figure_has_no_empty_cells(tiny, photos, tmp_path, channels, n_images):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in sorted(photos.iterdir())[:n_images]:
        (folder / p.name).write_bytes(p.read_bytes())
    hits = api.top9(tiny, folder, "r2", channels, out=tmp_path / "out")
    assert [len(h) for h in hits.values()] == [min(9, n_images)] * len(channels)
    figs = list((tmp_path / "out").glob("*top9*.png"))
    assert len(figs) == 1
    fig = _read(figs[0])
    assert not _white_square(fig, 90)  # no empty slot for a cell (96 px) or a block
    meta = json.loads(next((tmp_path / "out").glob("*top9*.json")).read_text())
    assert sorted(meta["channels"]) == sorted(str(c) for c in channels)


def test_top9_figure_is_labelled(tiny, photos, tmp_path):
    api.top9(tiny, photos, "r2", [2], out=tmp_path / "a")
    api.top9(tiny, photos, "r2", [5], out=tmp_path / "b")
    a = _read(tmp_path / "a" / "deconvnet_top9_r2.png")
    b = _read(tmp_path / "b" / "deconvnet_top9_r2.png")
    dark = np.all(a < 60, axis=-1)  # photos are mid-tone; projections rarely black in 3 channels
    assert dark[:40].any(axis=1).sum() >= 8  # a title line, glyphs ≥ 8 px tall, at the top
    assert dark[:40].any(axis=0).sum() > 100  # wide enough to name layer and channel
    assert a.shape == b.shape
    assert not np.array_equal(a[:40], b[:40])  # the title names the channel
    assert dark[40:].any(axis=1).sum() >= 3 * 8  # captions under the three rows of cells
