"""Robustness scores: the four perturbations of a saved 8-bit image, the p_* columns of
cross-scoring, and the per-image ``low`` status of an experiment row."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import pydevis
from pydevis.evaluation.cells import image_status
from pydevis.evaluation.cross_score import score_images
from pydevis.evaluation.perturb import PERTURBATIONS, perturb, perturb_all
from tiny import tiny_classifier


@pytest.fixture
def photo():
    rng = np.random.default_rng(5)
    return rng.integers(0, 256, size=(31, 44, 3)).astype(np.float32)


@pytest.mark.parametrize("kind", PERTURBATIONS)
def test_same_size_deterministic_and_identity_on_flat_images(photo, kind):
    a, b = perturb(photo, kind), perturb(photo, kind)
    assert a.shape == photo.shape and a.dtype == np.float32
    assert np.array_equal(a, b)
    flat = np.full((30, 40, 3), 77.0, np.float32)
    assert np.abs(perturb(flat, kind) - 77.0).max() <= 1.0  # JPEG may move a level


@pytest.mark.parametrize("kind", PERTURBATIONS)
def test_each_perturbation_changes_a_textured_image(photo, kind):
    assert np.abs(perturb(photo, kind) - photo).mean() > 5.0


def test_blur_and_half_remove_fine_texture():
    checker = (np.indices((32, 32)).sum(axis=0) % 2 * 255.0)[..., None].repeat(3, axis=2)
    for kind in ("blur", "half"):
        out = perturb(checker, kind)
        assert out[4:-4, 4:-4].std() < 0.25 * checker.std(), kind


def test_crop_enlarges_the_centre():
    img = np.zeros((100, 100, 3), np.float32)
    img[30:70, 30:70] = 255.0  # a 40-pixel square
    out = perturb(img, "crop")
    width = int((out[50, :, 0] > 127).sum())
    assert abs(width - 40 / 0.9) <= 1.5


def test_unknown_kind_is_refused(photo):
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturb(photo, "rotate")


def test_scores_carry_the_probability_of_each_perturbed_image(tmp_path, photo):
    m = pydevis.load(tiny_classifier(tmp_path / "m.onnx"))
    h, w = m.spec.size
    rng = np.random.default_rng(1)
    px = rng.integers(0, 256, size=(3, h, w, 3)).astype(np.float32)
    scores, _ = score_images(px, ["a", "b", "c"], [0, 2, 4], m.labels, {"m": m}, robust=True)
    variants = perturb_all(px)
    for i, s in enumerate(scores):
        for kind in PERTURBATIONS:
            p = m.predict(m.preprocess(variants[kind][i:i + 1]))[0]
            assert getattr(s, f"p_{kind}") == pytest.approx(float(p[[0, 2, 4][i]]), abs=1e-6)
    plain, _ = score_images(px, ["a", "b", "c"], [0, 2, 4], m.labels, {"m": m})
    assert all(s.p_jpeg is None for s in plain)


def _row(image, gen, scorer, top1):
    return {"image": image, "generating_model": gen, "scoring_model": scorer,
            "same_model": scorer == gen.split("~")[0], "top1": top1}


def test_low_when_top1_during_the_ascent_but_not_on_the_saved_png():
    res = {"a.png": SimpleNamespace(success_step=10, status="ok"),
           "b.png": SimpleNamespace(success_step=-1, status="ok"),
           "c.png": SimpleNamespace(success_step=3, status="ok"),
           "d.png": SimpleNamespace(success_step=4, status="diverged")}
    rows = [_row("a.png", "g", "g", False), _row("a.png", "g", "h", True),
            _row("b.png", "g", "g", False), _row("c.png", "g", "g", True),
            _row("d.png", "g", "g", False)]
    image_status(rows, res)
    assert [r["status"] for r in rows] == ["low", "low", "ok", "ok", "diverged"]
    rand = [_row("a.png", "g~randomized", "g", False)]  # scored by the original, not its maker
    image_status(rand, res)
    assert rand[0]["status"] == "ok"


def test_score_command_prints_and_returns_the_robustness_scores(tmp_path):
    import json
    import shutil
    import subprocess
    import sys

    from PIL import Image

    m = pydevis.load(tiny_classifier(tmp_path / "m.onnx"))
    h, w = m.spec.size
    px = np.random.default_rng(3).integers(0, 256, size=(h, w, 3)).astype(np.uint8)
    Image.fromarray(px).save(tmp_path / "a.png")
    exe = shutil.which("pydevis")
    cmd = [exe] if exe else [sys.executable, "-c", "from pydevis.cli import main; main()"]

    def score(*extra):
        p = subprocess.run([*cmd, "score", str(tmp_path / "a.png"), "--model",
                            str(tmp_path / "m.onnx"), "--class", "2", *extra],
                           capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert p.returncode == 0, p.stderr
        return p.stdout

    row = json.loads(score("--json"))["scores"][0]
    for kind in PERTURBATIONS:
        p = m.predict(m.preprocess(perturb(px.astype(np.float32), kind)[None]))[0]
        assert row[f"p_{kind}"] == pytest.approx(float(p[2]), abs=1e-6)
    assert "p_jpeg=" in score() and "p_crop=" in score()
    assert json.loads(score("--json", "--no-robust"))["scores"][0]["p_jpeg"] is None
