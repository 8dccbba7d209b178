"""Issue 14, the command line a researcher expects: tensor listing with near names, --unit,
one scoring path, class names, progress, help, output names. Through the installed ``pydevis``
command in a subprocess run outside the source tree; the argument forwarding of ``visualize``
through typer's runner in-process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tiny import tiny_classifier, tiny_with_images


def _exe() -> list[str]:
    script = Path(sys.executable).parent / "pydevis"
    if script.is_file():
        return [str(script)]
    found = shutil.which("pydevis")
    return [found] if found else [sys.executable, "-c", "from pydevis.cli import main; main()"]


def pydevis(*args, env: dict | None = None):
    """The installed command: (exit code, stdout, stderr); cwd outside the source tree."""
    e = os.environ.copy()
    e.update(env or {})
    p = subprocess.run([*_exe(), *map(str, args)], capture_output=True, text=True, env=e,
                       timeout=300, cwd=tempfile.gettempdir())
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_with_images(tmp_path_factory.mktemp("cli14"), 2)


# ---- 1. tensors ------------------------------------------------------------------------------
def test_info_tensors_json(tiny):
    rc, out, err = pydevis("info", tiny, "--tensors", "--json")
    assert rc == 0, err
    rows = {r["name"]: r for r in json.loads(out)["tensors"]}
    assert rows["r1"] == {"name": "r1", "shape": ["N", 8, 20, 18], "op": "Relu",
                          "node": "relu1", "backward": True, "reason": ""}
    assert rows["p1"]["shape"] == ["N", 8, 9, 8] and rows["logits"]["shape"] == ["N", 6]
    assert "input" not in rows


def test_info_tensors_filter_text(tiny):
    rc, out, err = pydevis("info", tiny, "--tensors", "--filter", "RELU")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["tensor", "shape", "op", "node", "backward"]
    assert [ln.split()[0] for ln in lines[1:-1]] == ["r1", "r2"]
    assert "N×12×9×8" in out and "2 tensors" in lines[-1]


def test_unknown_tensor_suggests_near_names(tiny, tmp_path):
    img = tiny.parent / "img0.png"
    rc, _, err = pydevis("project", tiny, img, "--unit", "relu3:0", "--out", tmp_path)
    assert rc == 2 and "did you mean" in err and len(err.splitlines()) == 1
    assert "'relu1'" in err and "'relu2'" in err
    rc, _, err = pydevis("top9", tiny, tiny.parent, "--layer", "R2", "--out", tmp_path)
    assert rc == 2 and "'r2'" in err, err


# ---- 4. class names and ranges ---------------------------------------------------------------
def _labelled(tmp_path, labels):
    path = tiny_classifier(tmp_path / "lab.onnx", classes=len(labels))
    card = json.loads(Path(str(path) + ".json").read_text())
    card["labels"] = labels
    Path(str(path) + ".json").write_text(json.dumps(card))
    return path


def test_class_names(tmp_path):
    path = _labelled(tmp_path, ["tabby, tabby cat", "tiger cat", "Persian cat",
                                "Siamese cat, Siamese", "crate", "tiger, Panthera tigris"])
    for name, want in (("Persian", 2), ("persian CAT", 2), ("siamese", 3), ("Tiger", 5),
                       ("tabby", 0)):
        rc, out, err = pydevis("visualize", path, "--class", name, "--steps", "1",
                               "--out", tmp_path / "o", "-q", "--json")
        assert rc == 0, (name, err)
        assert json.loads(out)["results"][0]["class"] == want, name
    rc, _, err = pydevis("visualize", path, "--class", "cat", "--out", tmp_path / "o")
    assert rc == 2 and "ambiguous" in err and "crate" not in err
    for i in range(4):
        assert f"{i} '" in err
    rc, _, err = pydevis("visualize", path, "--class", "60", "--out", tmp_path / "o")
    assert rc == 2 and "class 60 out of range 0–5" in err


def test_channel_out_of_range(tiny, tmp_path):
    rc, _, err = pydevis("visualize", tiny, "--unit", "r1:9999", "--out", tmp_path, "-q")
    assert rc == 2 and "channel 9999 out of range 0–7" in err, err


# ---- 2. units --------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["gradient", "yosinski", "guided", "deconv", "deconv-prior",
                                    "deconv-prior-reg", "fourier"])
def test_visualize_units_every_method(tiny, tmp_path, method):
    rc, out, err = pydevis("visualize", tiny, "--unit", "r1:3", "--unit", "relu2:1@4,5",
                           "--class", "thing 2", "--method", method, "--steps", "4",
                           "--out", tmp_path, "--json")
    assert rc == 0, err
    data = json.loads(out)
    tag = "yosinski3" if method == "yosinski" else method
    assert [r.get("unit", r.get("class")) for r in data["results"]] == [2, "r1:3", "r2:1@4,5"]
    names = {Path(f).name for f in data["files"]}
    assert names == {f"{tag}_0002_thing_2.png", f"{tag}_0002_thing_2.json",
                     f"{tag}_r1_0003.png", f"{tag}_r1_0003.json", f"{tag}_r2_0001_4_5.png",
                     f"{tag}_r2_0001_4_5.json", f"{tag}_grid.png"}
    assert names == {p.name for p in tmp_path.iterdir()}
    side = json.loads((tmp_path / f"{tag}_r2_0001_4_5.json").read_text())
    assert side["unit"] == "r2:1@4,5" and side["pos"] == [4, 5] and side["tensor"] == "r2"
    assert side["method"] == method and side["settings"]["steps"] == 4
    assert np.isfinite(side["activation"]) and side["status"] == "ok"
    assert side["preset"] == (3 if method == "yosinski" else None)
    assert side["settings_source"] == "flags"  # --steps


def test_visualize_unit_all_is_batched(tiny, tmp_path):
    rc, out, err = pydevis("visualize", tiny, "--unit", "r1:all", "--steps", "2",
                           "--batch-size", "3", "--out", tmp_path, "--json", "-q")
    assert rc == 0, err
    data = json.loads(out)
    assert [r["unit"] for r in data["results"]] == [f"r1:{c}" for c in range(8)]
    seeds = {json.loads((tmp_path / f"yosinski3_r1_{c:04d}.json").read_text())["batch_seed"]
             for c in range(8)}
    assert seeds == {0, 3, 6}  # batches of 3 rows


@pytest.mark.parametrize("unit, message", [
    ("r1:9999", "channel 9999 out of range 0–7"),
    ("r1:1@99,0", "position out of range (y 0–19, x 0–17)"),
    ("c3:0", "did you mean"),
    ("r1", "expected TENSOR:CHANNEL"),
    ("3", "a class index goes to --class"),
])
def test_visualize_unit_errors(tiny, tmp_path, unit, message):
    rc, _, err = pydevis("visualize", tiny, "--unit", unit, "--out", tmp_path / "o")
    assert rc == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_visualize_forwards_every_option(tiny, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from pydevis import api
    from pydevis.cli import ascent_cmds  # noqa: F401  (registers visualize)
    from pydevis.cli.app import app

    seen = {}

    def fake(model, classes, method, preset, out, seed, **kw):
        seen.update(model=model, classes=classes, method=method, preset=preset, out=out,
                    seed=seed, **kw)
        return []

    monkeypatch.setattr(api, "visualize", fake)
    res = CliRunner().invoke(app, [
        "visualize", str(tiny), "-c", "1", "--class", "thing 2", "-u", "r1:0", "--unit", "r2:all",
        "-m", "yosinski", "--preset", "2", "-o", str(tmp_path), "--seed", "7", "--steps", "9",
        "--step-size", "1.5", "--step-norm", "none", "--jitter", "3", "--batch-size", "5",
        "--size", "20,18", "--bgr", "--mean", "1,2,3", "--std", "4,5,6", "--json", "-q"])
    assert res.exit_code == 0, res.output
    m = seen.pop("model")
    assert m.spec.channels == "BGR" and list(m.spec.mean) == [1, 2, 3]
    assert list(m.spec.std) == [4, 5, 6] and tuple(m.spec.size) == (20, 18)
    progress = seen.pop("progress")
    assert callable(progress)
    assert seen == {"classes": ["1", "thing 2"], "method": "yosinski", "preset": 2,
                    "out": str(tmp_path), "seed": 7, "batch_size": 5, "keep_pixels": False,
                    "units": ["r1:0", "r2:all"], "written": [], "steps": 9, "step_size": 1.5,
                    "jitter": 3, "step_norm": "none"}
    assert json.loads(res.output)["preset"] == 2


# ---- 3. one scoring path ---------------------------------------------------------------------
def test_one_probability_for_one_png(tiny, tmp_path):
    rc, out, err = pydevis("visualize", tiny, "--class", "2", "--unit", "r1:0", "--steps", "5",
                           "--method", "gradient", "--out", tmp_path, "--json")
    assert rc == 0, err
    p_vis = json.loads(out)["results"][0]["probability"]
    png = tmp_path / "gradient_0002_thing_2.png"
    # a folder and a glob: the grid and the unit image (no class in its JSON) are skipped
    for spec in (tmp_path, tmp_path / "*.png"):
        rc, out, err = pydevis("score", spec, "--model", tiny)
        assert rc == 0, err
        assert "note: skipped" in err and "gradient_grid.png" in err and "unit image" in err
        lines = out.splitlines()
        assert len(lines) == 1 and lines[0].startswith(str(png)), out
    rc, out, err = pydevis("score", tmp_path, "-m", tiny, "--json", "-q")
    assert rc == 0 and err == "", err
    data = json.loads(out)
    assert [s["image"] for s in data["scores"]] == [str(png)] and len(data["skipped"]) == 2
    p_score = data["scores"][0]["probability"]
    rc, out, err = pydevis("predict", tiny, png, "--json", "--top", "6")
    p_pred = next(t["probability"] for t in json.loads(out)[0]["top"] if t["class"] == 2)

    import pydevis as pd
    from pydevis import api

    scores, _ = api.cross_score([png], [pd.load(tiny)], [2])
    assert p_vis == pytest.approx(p_score, abs=1e-6)
    assert p_pred == pytest.approx(p_score, abs=1e-6)
    assert scores[0].probability == pytest.approx(p_score, abs=1e-6)


def test_other_sizes_resized_the_same_way(tiny, tmp_path):
    """An image not at the model's size: score and api.cross_score resize it (bilinear) by the
    same function; mixed sizes in one call."""
    import pydevis as pd
    from pydevis import api
    from pydevis.image import read_rgb, resize_pixels

    rng = np.random.default_rng(1)
    big, same = tmp_path / "big.png", tmp_path / "same.png"
    Image.fromarray(rng.integers(0, 255, (41, 37, 3), dtype=np.uint8)).save(big)
    Image.fromarray(rng.integers(0, 255, (20, 18, 3), dtype=np.uint8)).save(same)
    rc, out, err = pydevis("score", big, same, "-m", tiny, "--class", "thing 1", "--json")
    assert rc == 0, err
    cli = {Path(s["image"]).name: s["probability"] for s in json.loads(out)["scores"]}
    m = pd.load(tiny)
    scores, _ = api.cross_score([big, same], [m], [1, "thing 1"])
    assert {Path(s.image).name: s.probability for s in scores} == pytest.approx(cli, abs=1e-6)
    want = m.predict(m.preprocess(resize_pixels(read_rgb(big)[None], (20, 18))))[0, 1]
    assert cli["big.png"] == pytest.approx(float(want), abs=1e-6)


def test_score_nothing_to_score(tiny, tmp_path):
    Image.new("RGB", (20, 18)).save(tmp_path / "photo.png")
    rc, _, err = pydevis("score", tmp_path / "*.png", "-m", tiny)
    assert rc == 2 and "no image to score" in err and "give --class" in err
    rc, _, err = pydevis("score", tmp_path / "nothing*.png", "-m", tiny)
    assert rc == 2 and "no file matches" in err


# ---- 5. progress and --json ------------------------------------------------------------------
def test_progress_plain_lines_when_not_a_terminal(tiny, tmp_path):
    rc, out, err = pydevis("visualize", tiny, "--class", "1", "--class", "2", "--unit", "r1:0",
                           "--steps", "20", "--batch-size", "1", "--out", tmp_path)
    assert rc == 0, err
    assert "\r" not in err and err.endswith("\n")
    lines = err.splitlines()
    assert any(ln.startswith("yosinski3 class 1 thing 1 (1/3): step ") for ln in lines), err
    assert any(ln.startswith("yosinski3 r1:0 (3/3): step 60/60 (100%)") for ln in lines), err
    assert any("steps/s" in ln and "ETA" in ln for ln in lines), err
    assert len(lines) <= 3 + 11  # a line per tenth and per change of target, not per step


def test_quiet_and_json(tiny, tmp_path):
    rc, out, err = pydevis("visualize", tiny, "--class", "1", "--steps", "3", "--out",
                           tmp_path / "a", "-q")
    assert rc == 0 and out == "" and err == ""
    for flags in (["--json"], ["--json", "-q"]):
        rc, out, err = pydevis("visualize", tiny, "--class", "1", "--steps", "3", "--out",
                               tmp_path / "b", *flags)
        assert rc == 0 and err == "", err
        files = json.loads(out)["files"]
        assert sorted(Path(f).name for f in files) == sorted(
            p.name for p in (tmp_path / "b").iterdir())
    rc, out, err = pydevis("isolate", tiny, tiny.parent / "img0.png", "--class", "1",
                           "--steps", "2", "--out", tmp_path / "c", "--json", "-q")
    assert rc == 0, err
    assert sorted(Path(f).name for f in json.loads(out)["files"]) == sorted(
        p.name for p in (tmp_path / "c").iterdir())


@pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1) for a terminal")
def test_progress_bar_on_a_terminal(tiny, tmp_path):
    cmd = " ".join([*_exe(), "visualize", str(tiny), "--class", "1", "--steps", "30",
                    "--out", str(tmp_path)])
    p = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, text=True,
                       timeout=300, cwd=tempfile.gettempdir(),
                       env={**os.environ, "COLUMNS": "120"})
    assert p.returncode == 0, p.stdout
    assert "yosinski3 class 1 thing 1" in p.stdout and "step" in p.stdout
    assert "30/30" in p.stdout and "ETA" in p.stdout and "━" in p.stdout


# ---- 6. help ---------------------------------------------------------------------------------
def test_bare_command_prints_help():
    rc, out, err = pydevis()
    assert rc == 0 and "Usage: pydevis" in out and "visualize" in out and "error" not in err


@pytest.mark.parametrize("command", ["info", "predict", "visualize", "score", "isolate"])
def test_help_explains_every_option(command):
    rc, out, err = pydevis(command, "--help", env={"COLUMNS": "80"})
    assert rc == 0, err
    assert "<bool>" not in out and "<str>" not in out and "list[str]" not in out
    assert "seed experiment" not in out.lower()
    opts = out.split("Options:")[1]
    entries = [e for e in opts.split("\n  -") if e.strip()]
    for e in entries:  # every option has a description
        head = e.strip().splitlines()[0]
        assert len(" ".join(e.split()).split("  ")) >= 1 and len(head.split()) >= 2, e
    if command == "visualize":
        assert "yosinski --preset 3 (default)" in out and "deconv-prior-reg" in out
        for opt in ("--steps", "--step-size", "--jitter", "--seed", "--batch-size", "--unit",
                    "--preset", "--step-norm", "--out"):
            block = opts.split(opt, 1)[1].split("\n  -")[0]
            assert "[default:" in block, opt
        # the method choices are listed whole, not wrapped inside a word
        block = " ".join(out.split("--method")[1].split("--preset")[0].split())
        for name in ("deconv-prior-reg", "deconv-prior", "deconv", "guided", "gradient",
                     "yosinski", "fourier"):
            assert name in block, name
        assert "- " not in block.split("(table")[0]  # no name broken at a hyphen
        assert "d\n" not in out.split("--method")[1].split("--preset")[0]
