"""The CLI through typer's runner (arguments reaching the API) and through a real subprocess
(exit codes, one-line errors)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from pydevis.cli import eval_cmds, model_cmds, vis_cmds  # noqa: F401  (register commands)
from pydevis.cli.app import app
from tiny import tiny_with_images

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_with_images(tmp_path_factory.mktemp("cli"), 3)


def run_cli(*args):
    """The installed entry point in a subprocess: (exit code, stdout, stderr). The cwd is a
    temp folder, so that ``-c`` does not import the source tree instead of the install."""
    import tempfile

    code = "from pydevis.cli import main; main()"
    p = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                       text=True, env=os.environ.copy(), timeout=300,
                       cwd=tempfile.gettempdir())
    return p.returncode, p.stdout, p.stderr


def test_help_lists_every_command():
    res = runner.invoke(app, ["--help"])
    for cmd in ("info", "predict", "visualize", "project", "top9", "isolate", "score",
                "experiment", "report", "demo"):
        assert cmd in res.output


def test_deconv_is_still_project_with_a_note(tiny, tmp_path):
    """The old command name runs ``project`` (same files, same JSON) and says the new name on
    stderr; it is left out of the help."""
    img = str(tiny.parent / "img0.png")
    new = runner.invoke(app, ["project", str(tiny), img, "--unit", "r2:3", "--out",
                              str(tmp_path / "new"), "--json"])
    old = runner.invoke(app, ["deconv", str(tiny), img, "--unit", "r2:3", "--out",
                              str(tmp_path / "old"), "--json"])
    assert new.exit_code == old.exit_code == 0, old.output
    assert json.loads(old.stdout) == json.loads(new.stdout)
    assert old.stderr.strip() == "note: 'pydevis deconv' is now 'pydevis project'"
    names = sorted(p.name for p in (tmp_path / "old").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "new").iterdir()) and names
    assert "deconv " not in runner.invoke(app, ["--help"]).output


def test_method_option_takes_every_method():
    from pydevis.cli.ascent_cmds import Method
    from pydevis.methods.ascent import METHODS

    assert sorted(m.value for m in Method) == sorted(METHODS)


def test_info_json(tiny):
    res = runner.invoke(app, ["info", str(tiny), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["size"] == [20, 18] and data["classes"] == 6
    assert data["sources"]["mean"].startswith("card") and data["ops"]["Conv"] is True


def test_info_flags_override_card(tiny):
    res = runner.invoke(app, ["info", str(tiny), "--json", "--mean", "1,2,3", "--bgr"])
    data = json.loads(res.output)
    assert data["mean"] == [1.0, 2.0, 3.0] and data["channels"] == "BGR"
    assert data["sources"]["mean"] == "flags"


def test_predict_blocks(tiny):
    res = runner.invoke(app, ["predict", str(tiny), str(tiny.parent / "img0.png"),
                              str(tiny.parent / "img1.png"), "--top", "2", "--json"])
    data = json.loads(res.output)
    assert [len(d["top"]) for d in data] == [2, 2]
    assert data[0]["top"][0]["label"].startswith("thing")


def test_visualize_writes_files(tiny, tmp_path):
    res = runner.invoke(app, ["visualize", str(tiny), "--class", "2", "--class", "thing 5",
                              "--method", "yosinski", "--preset", "1", "--steps", "5",
                              "--out", str(tmp_path), "--quiet"])
    assert res.exit_code == 0, res.output
    assert {p.name for p in tmp_path.glob("*.png")} == {
        "yosinski1_0002_thing_2.png", "yosinski1_0005_thing_5.png", "yosinski1_grid.png"}


def test_project_top9_isolate_score(tiny, tmp_path):
    img = tiny.parent / "img0.png"
    assert runner.invoke(app, ["project", str(tiny), str(img), "--unit", "r2:3",
                               "--out", str(tmp_path), "-q"]).exit_code == 0
    assert (tmp_path / "deconvnet_r2_3.png").is_file()
    assert runner.invoke(app, ["top9", str(tiny), str(tiny.parent), "--layer", "r2",
                               "--channels", "0-1", "--out", str(tmp_path), "-q"]).exit_code == 0
    assert (tmp_path / "deconvnet_top9_r2.png").is_file()
    res = runner.invoke(app, ["isolate", str(tiny), str(img), "--class", "1", "--steps", "5",
                              "--out", str(tmp_path), "--json"])
    assert res.exit_code == 0 and "target_probability" in json.loads(res.output)
    res = runner.invoke(app, ["score", str(img), "--model", str(tiny), "--model", str(tiny),
                              "--class", "thing 1", "--json"])
    assert len(json.loads(res.output)["scores"]) == 1  # same stem: one scoring model


@pytest.mark.parametrize("args, message", [
    (["info", "nope.onnx"], "nope.onnx: no such file"),
    (["predict", "{tiny}", "nope.png"], "nope.png: no such file"),
    (["visualize", "{tiny}", "--class", "thin 4", "--out", "{out}"], "did you mean 'thing 4'"),
    (["visualize", "{tiny}", "--class", "60", "--out", "{out}"], "class 60 out of range"),
    (["project", "{tiny}", "{img}", "--unit", "nosuch:1", "--out", "{out}"], "no tensor or node"),
    (["experiment", "missing.toml"], "missing.toml: no such file"),
])
def test_user_errors_are_one_line_exit_2(tiny, tmp_path, args, message):
    fmt = {"tiny": tiny, "img": tiny.parent / "img0.png", "out": tmp_path / "o"}
    code, out, err = run_cli(*[a.format(**fmt) for a in args])
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_garbage_model_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage" * 100)
    code, _, err = run_cli("info", bad)
    assert code == 2 and "not an ONNX model" in err


def test_version():
    code, out, _ = run_cli("--version")
    assert code == 0 and out.startswith("pydevis ")


def test_bundled_model_through_the_cli(tmp_path):
    from pydevis.demo import models_dir

    model = models_dir() / "cifar10_resnet.onnx"
    code, out, err = run_cli("info", model)
    assert code == 0 and "card cifar10_resnet.onnx.json" in out, err
    code, out, err = run_cli("visualize", model, "--class", "cat", "--method", "gradient",
                             "--steps", "30", "--out", tmp_path, "--json")
    assert code == 0, err
    data = json.loads(out)["results"]
    assert data[0]["label"] == "cat" and data[0]["probability"] > 0.5
    code, out, err = run_cli("predict", model, tmp_path / "gradient_0003_cat.png", "--top", "1")
    assert code == 0 and "cat" in out, err


def test_cross_score_api(tmp_path):
    import pydevis
    from pydevis.demo import models_dir

    d = models_dir()
    pydevis.visualize(pydevis.load(d / "cifar10_alexnet.onnx"), ["ship"], "gradient",
                      out=tmp_path, steps=30)
    scores, skipped = pydevis.cross_score([tmp_path / "gradient_0008_ship.png"],
                                          [d / "cifar10_inception.onnx", d / "cifar10_resnet.onnx"],
                                          ["ship"])
    assert [s.scoring_model for s in scores] == ["cifar10_inception", "cifar10_resnet"]
    assert all(s.target_label == "ship" and 0 <= s.probability <= 1 for s in scores)
    assert skipped == []


def test_bench_command(tmp_path):
    pytest.importorskip("torch")
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    p = subprocess.run([sys.executable, "-c", "from pydevis.cli import main; main()", "bench",
                        "kernels", "--quick", "--threads", "1", "--out-dir", str(tmp_path)],
                       capture_output=True, text=True, cwd=root, env=os.environ.copy(),
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert list(tmp_path.glob("*.json"))
    code, _, err = run_cli("bench", "nosuch")
    assert code == 2 and "bench/nosuch.py not found" in err
