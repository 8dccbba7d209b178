"""The visualization methods on a tiny classifier built in the test (fast, no torch)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import pydevis
from pydevis import api
from pydevis.methods import deconvnet as dn
from pydevis.methods.ascent import METHODS, YOSINSKI, ascend, method_config
from tiny import tiny_classifier


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return pydevis.load(tiny_classifier(tmp_path_factory.mktemp("tiny") / "tiny.onnx"))


def test_same_seed_same_image_bit_for_bit(tiny):
    cfg = method_config("deconv-prior-reg", steps=12)  # jitter + blur + prior: uses the rng
    a = ascend(tiny, [1, 4], cfg, seed=7)
    b = ascend(tiny, [1, 4], cfg, seed=7)
    c = ascend(tiny, [1, 4], cfg, seed=8)
    for ra, rb in zip(a, b, strict=True):
        assert np.array_equal(ra.pixels, rb.pixels)
    assert not all(np.array_equal(ra.pixels, rc.pixels) for ra, rc in zip(a, c, strict=True))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_runs_and_gradient_ones_raise_their_score(tiny, method):
    classes = [0, 3, 5]
    cfg = method_config(method, steps=60)
    res = ascend(tiny, classes, cfg, seed=0)
    start = tiny.forward(tiny.preprocess(np.full((3, 20, 18, 3), 0.0) +
                                         PIXEL_CENTER))[[0, 1, 2], classes]
    best = np.array([r.best_objective for r in res])
    if cfg.signal == "gradient":  # a true ascent; deconvnet/guided signals need not raise it
        assert (best > start + 1e-4).all(), (method, start, best)
    for r in res:
        assert r.status == "ok" and np.isfinite(r.pixels).all()
        assert r.pixels.min() >= 0 and r.pixels.max() <= 255
        assert r.best_objective >= r.final_objective - 1e-6


PIXEL_CENTER = np.array([120.0, 115.0, 100.0])


def test_presets_are_the_papers_table():
    assert (YOSINSKI[1].decay, YOSINSKI[1].blur_sigma, YOSINSKI[1].blur_every,
            YOSINSKI[1].norm_pct, YOSINSKI[1].steps) == (0, 0.5, 4, 50, 500)
    assert (YOSINSKI[2].decay, YOSINSKI[2].norm_pct, YOSINSKI[2].step_rule,
            YOSINSKI[2].steps) == (0.3, 20, "constant", 750)
    # the papers' raw steps (Caffe AlexNet's gradient scale) become RMS pixel steps
    assert {k: (p.step_norm, p.step_size) for k, p in YOSINSKI.items()} == {
        1: ("rms", 8.0), 2: ("rms", 8.0), 3: ("rms", 2.0), 4: ("rms", 1e8)}
    assert (YOSINSKI[3].decay, YOSINSKI[3].blur_sigma, YOSINSKI[3].steps) == (1e-4, 1.0, 1000)
    assert (YOSINSKI[4].contrib_pct, YOSINSKI[4].step_rule, YOSINSKI[4].steps) == (90, "progress",
                                                                                  1000)
    with pytest.raises(ValueError, match="preset"):
        method_config("gradient", preset=2)


def test_zero_gradient_is_reported(tmp_path):
    """A dead class (constant logit) stops with status zero-gradient, not a garbage image."""
    import onnx
    from onnx import numpy_helper

    path = tiny_classifier(tmp_path / "dead.onnx")
    m = onnx.load(path)
    for t in m.graph.initializer:
        if t.name == "wf":
            a = numpy_helper.to_array(t).copy()
            a[2] = 0
            t.CopyFrom(numpy_helper.from_array(a, "wf"))
    onnx.save(m, path)
    res = ascend(pydevis.load(path), [2, 1], method_config("gradient", steps=5))
    assert res[0].status == "zero-gradient" and res[1].status == "ok"
    assert res[0].restart_std == 0 and res[1].restart_std == 0  # noise cannot revive it


def test_row_dead_at_the_mean_image_restarts_from_noise(tmp_path):
    """Every first-layer ReLU shut at the mean image (bias -1): the logits are constant there and
    the gradient exactly zero, but not elsewhere. Such rows restart from seeded noise (recorded
    in restart_std), reach a higher score, and do so the same way for the same seed."""
    import onnx
    from onnx import numpy_helper

    path = tiny_classifier(tmp_path / "shut.onnx")
    m = onnx.load(path)
    for t in m.graph.initializer:
        if t.name == "b1":
            t.CopyFrom(numpy_helper.from_array(np.full(8, -1.0, np.float32), "b1"))
    onnx.save(m, path)
    model = pydevis.load(path)
    mean = model.preprocess(np.zeros((1, 20, 18, 3)) + PIXEL_CENTER)
    start = model.forward(mean)[0, [0, 3]]
    cfg = method_config("gradient", steps=20)
    a, b = ascend(model, [0, 3], cfg, seed=3), ascend(model, [0, 3], cfg, seed=3)
    for r, s0 in zip(a, start, strict=True):
        assert r.status == "ok" and r.restart_std > 0
        assert r.best_objective > s0 + 1e-3
    assert all(np.array_equal(x.pixels, y.pixels) for x, y in zip(a, b, strict=True))
    # a user-given start is the user's: no restart, the dead row is reported
    res = ascend(model, [0], cfg, start=np.zeros((1, 20, 18, 3)) + PIXEL_CENTER)
    assert res[0].status == "zero-gradient" and res[0].restart_std == 0


def test_projection_lies_in_receptive_field(tiny, rng):
    pixels = rng.uniform(0, 255, (20, 18, 3))
    for y, x in [(0, 0), (2, 3), (4, 3)]:
        p = dn.project(tiny, pixels, f"r2:5@{y},{x}")
        # conv2 3x3 pad 1 ← maxpool 3x3/2 ← conv1 3x3 pad 1: rows 2y−3 .. 2y+5
        assert p.box == (max(2 * y - 3, 0), min(2 * y + 6, 20), max(2 * x - 3, 0),
                         min(2 * x + 6, 18))
        y0, y1, x0, x1 = p.box
        outside = p.signal.copy()
        outside[y0:y1, x0:x1] = 0
        assert np.abs(outside).max() == 0
        if p.activation > 0:
            assert np.abs(p.signal[y0:y1, x0:x1]).max() > 0


def test_default_projection_takes_strongest_position(tiny, rng):
    pixels = rng.uniform(0, 255, (20, 18, 3))
    p = dn.project(tiny, pixels, "relu2:1")  # node name stands for its output
    acts = tiny.run(tiny.preprocess(pixels), ["r2"])["r2"][0, 1]
    assert p.activation == pytest.approx(float(acts.max()))
    assert p.tensor == "r2"


def test_api_writes_pngs_json_and_grid(tiny, tmp_path):
    res = api.visualize(tiny, [1, "thing 4"], "gradient", out=tmp_path, steps=20)
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["gradient_0001_thing_1.png", "gradient_0004_thing_4.png", "gradient_grid.png"]
    meta = json.loads((tmp_path / "gradient_0004_thing_4.json").read_text())
    assert meta["target_class"] == 4 and meta["method"] == "gradient" and meta["seed"] == 0
    img = np.asarray(Image.open(tmp_path / "gradient_0004_thing_4.png"))
    assert img.shape == (20, 18, 3) and img.std() > 1
    saved = tiny.predict(tiny.preprocess(img.astype(np.float32)))[0, 4]
    assert meta["probability"] == pytest.approx(float(saved), abs=1e-6)
    assert res[1].config["probability"] == pytest.approx(meta["probability"])
    grid = np.asarray(Image.open(tmp_path / "gradient_grid.png"))
    assert grid.shape[0] > 96 and grid.std() > 1
    assert not list(tmp_path.glob(".tmp-*"))


def test_unknown_label_suggests(tiny):
    with pytest.raises(pydevis.TargetError, match="did you mean 'thing 4'"):
        api.resolve_class(tiny, "thin 4")
    with pytest.raises(pydevis.TargetError, match="out of range"):
        api.resolve_class(tiny, 6)


def test_isolation_raises_target_and_lowers_others(tiny, tmp_path, rng):
    img = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 255, (20, 18, 3), dtype=np.uint8)).save(img)
    res = api.isolate(tiny, img, 3, out=tmp_path / "out", steps=150, step_size=2.0)
    assert res.target_probability > res.start_probability
    assert res.status in ("isolated", "max-steps")
    assert (tmp_path / "out" / "isolate_photo_0003_difference.png").is_file()
    meta = json.loads((tmp_path / "out" / "isolate_photo_0003.json").read_text())
    assert meta["target_probability"] == pytest.approx(res.target_probability)


def test_top9_grid(tiny, tmp_path, rng):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(11):
        Image.fromarray(rng.integers(0, 255, (24, 30, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    hits = api.top9(tiny, folder, "r2", [0, 3], out=tmp_path / "out")
    assert [len(h) for h in hits.values()] == [9, 9]
    acts = [h.activation for h in hits[3]]
    assert acts == sorted(acts, reverse=True)
    assert len({h.image for h in hits[3]}) == 9
    grid = np.asarray(Image.open(tmp_path / "out" / "deconvnet_top9_r2.png"))
    assert grid.ndim == 3 and grid.std() > 1
