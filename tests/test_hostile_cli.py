"""Hostile configs, arguments and output folders (issue 7, item 3), through the real CLI: one line
on stderr, exit code 2, the run folder untouched (or never created), no partial files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hostile import assert_ok, assert_user_error, files, leftovers, run_cli
from pydevis.errors import PydevisError
from tiny import tiny_classifier

CONFIG = '''out = "{out}"
seed = {seed}
generators = ["tiny.onnx"]
scorers = ["other.onnx"]
classes = {classes}
methods = [{{ name = "gradient", steps = 3 }}]
batch_size = 1
bootstrap = 10
'''


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile_cli")
    tiny_classifier(d / "tiny.onnx")
    tiny_classifier(d / "other.onnx", seed=1)
    from PIL import Image

    Image.new("RGB", (20, 18), (90, 120, 200)).save(d / "img.png")
    return d


def config(d: Path, name: str, out: str | None = None, seed: int = 0,
           classes: str = '[1, "thing 4"]', extra: str = "") -> Path:
    p = d / f"{name}.toml"
    p.write_text(CONFIG.format(out=out or name, seed=seed, classes=classes) + extra)
    return p


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns
            for p in folder.rglob("*") if p.is_file()}


# ---- the experiment config -------------------------------------------------------------------
@pytest.mark.parametrize("name, change, message", [
    ("unknown_key", ("seed = 0", "seeed = 0"), "unknown key 'seeed' (did you mean 'seed'?)"),
    ("wrong_type", ("seed = 0", 'seed = "zero"'), "'seed' has the wrong type (str)"),
    ("bad_toml", ("seed = 0", "seed = = 0"), "not valid TOML"),
    ("negative_steps", ("steps = 3", "steps = -3"), "steps must be >= 1"),
    ("float_steps", ("steps = 3", "steps = 2.5"), "steps must be int, got 2.5"),
    ("string_step_size", ("steps = 3", 'steps = 3, step_size = "big"'),
     "step_size must be float, got 'big'"),
    ("preset_out_of_range", ('name = "gradient", steps = 3', 'name = "yosinski", preset = 7'),
     "yosinski preset must be 1-4, got 7"),
    ("zero_batch", ("batch_size = 1", "batch_size = 0"),
     "'batch_size' must be in [1, 1024], got 0"),
    ("class_past_labels", ('[1, "thing 4"]', "[1, 60]"), "class 60 out of range"),
    ("unknown_label", ('[1, "thing 4"]', '["thin 4"]'),
     "unknown class 'thin 4' for tiny.onnx; did you mean 'thing 4'"),
    ("too_many_random", ('[1, "thing 4"]', '["random:99"]'), "'random:99': N must be 1..6"),
    ("missing_model", ('"other.onnx"', '"nope.onnx"'), "no such model file"),
])
def test_config_errors(d, name, change, message):
    p = config(d, name)
    p.write_text(p.read_text().replace(*change))
    assert_user_error(run_cli("experiment", p, "-q"), message)
    assert not (d / name).exists()  # refused before the run folder is created


def test_missing_config(d):
    assert_user_error(run_cli("experiment", d / "nope.toml"), "nope.toml: no such file")


@pytest.mark.parametrize("card, message", [
    ('{"size": "big"}', "invalid size 'big'"),
    ('{"mean": [1, 2]}', "mean needs 3 values, got 2"),
    ('{"mean": {"r": 1}}', "invalid mean"),
    ('{"crop_fraction": 2}', "crop_fraction must be in (0, 1]"),
    ('{"std": [0, 1, 1]}', "std must not be zero"),
    ('{"channels": "CMYK"}', "channels must be RGB, BGR or L"),
    ('{"size": [20, 18]', "model card is not valid JSON"),
    ('[1, 2]', "model card must be a JSON object"),
])
def test_model_card_errors(d, tmp_path, card, message):
    model = tiny_classifier(tmp_path / "m.onnx")
    model.with_name("m.onnx.json").write_text(card)
    assert_user_error(run_cli("info", model), message)


@pytest.mark.parametrize("args, message", [
    (["info", "{tiny}", "--bogus"], "No such option: --bogus"),
    (["visualize", "{tiny}", "--class", "1", "--steps", "-3"], "Invalid value for '--steps'"),
    (["visualize", "{tiny}", "--class", "1", "--method", "nope"], "Invalid value for '--method'"),
    (["predict", "{tiny}"], "Missing argument"),
    (["info", "{tiny}", "--size", "a,b"], "--size: expected comma-separated numbers"),
    (["info", "{tiny}", "--size", "0,5"], "whole numbers in 1..1000000, got '0,5'"),
    (["info", "{tiny}", "--mean", "1,2"], "mean needs 3 values"),
    (["visualize", "{tiny}", "--class", "-1", "--out", "{out}"], "class -1 out of range"),
    (["project", "{tiny}", "{img}", "--unit", "r2:99", "--out", "{out}"], "r2:99"),
    (["project", "{tiny}", "{img}", "--unit", "r2:1@40,40", "--out", "{out}"],
     "position out of range"),
    (["top9", "{tiny}", "{tiny}", "--layer", "r2", "--out", "{out}"], "not a folder"),
    (["nosuchcommand"], "No such command"),
])
def test_argument_errors(d, args, message):
    fmt = {"tiny": d / "tiny.onnx", "img": d / "img.png", "out": d / "args_out"}
    assert_user_error(run_cli(*[a.format(**fmt) for a in args]), message)
    assert files(d / "args_out") == []


# ---- the run folder --------------------------------------------------------------------------
def test_same_config_resumes_other_config_is_refused(d):
    first = config(d, "run_a", out="run")
    assert_ok(run_cli("experiment", first, "-q"))
    run = d / "run"
    before = snapshot(run)
    assert any(k.startswith("scores/") for k in before) and leftovers(run) == []
    # the same config again: nothing is redone (every chunk marker untouched), and the temp
    # files a killed run would have left are cleared
    stale = next((run / "images").rglob("*.png")).with_name(".tmp-killed.png")
    stale.write_bytes(b"\x89PNG half")
    assert_ok(run_cli("experiment", first, "-q"))
    after = snapshot(run)
    assert leftovers(run) == []
    assert {k: v for k, v in after.items() if k.startswith(("scores/", "images/"))} == \
        {k: v for k, v in before.items() if k.startswith(("scores/", "images/"))}
    # another config with the same out: refused, the run untouched
    second = config(d, "run_b", out="run", seed=1)
    assert_user_error(run_cli("experiment", second, "-q"), "holds a run of a different config",
                      "--force")
    assert snapshot(run) == after
    # --force starts it afresh
    assert_ok(run_cli("experiment", second, "--force", "-q"))
    assert (run / "config.toml").read_text() == second.read_text() and leftovers(run) == []


def test_force_never_deletes_a_folder_that_is_not_a_run(d):
    out = d / "precious"
    out.mkdir()
    (out / "config.toml").write_text("# someone else's config\n")
    (out / "thesis.tex").write_text("years of work")
    assert_user_error(run_cli("experiment", config(d, "clobber", out="precious"), "--force",
                              "-q"), "not part of a run", "thesis.tex")
    assert (out / "thesis.tex").read_text() == "years of work"


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_out_is_a_file(d, where):
    """Decision: running as root, chmod cannot make a folder read-only; an --out that cannot be
    a folder (an existing file, or a path under one) is the robust stand-in, checked before any
    work by ``outputs.check_out`` (which also refuses folders ``os.access`` reports unwritable: see
    the next test)."""
    blocker = d / f"blocker_{where}"
    blocker.write_text("not a folder")
    out = blocker if where == "file" else blocker / "sub"
    assert_user_error(run_cli("visualize", d / "tiny.onnx", "--class", "1", "--steps", "2",
                              "--out", out, "-q"), "is a file")
    p = config(d, f"exp_{where}", out=str(out.relative_to(d)))
    assert_user_error(run_cli("experiment", p, "-q"), "is a file")
    assert blocker.read_text() == "not a folder" and leftovers(d) == []


def test_unwritable_out_folder(d, tmp_path, monkeypatch):
    from pydevis import outputs

    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:  # a real read-only folder stops only non-root users
        ro.chmod(0o500)
        try:
            assert_user_error(run_cli("visualize", d / "tiny.onnx", "--class", "1", "--steps",
                                      "2", "--out", ro / "o", "-q"), "not writable")
        finally:
            ro.chmod(0o700)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m, **k: False if Path(p) == ro else real(p, m))
    with pytest.raises(PydevisError, match="output folder is not writable"):
        outputs.check_out(ro / "o" / "deeper")
    assert list(ro.iterdir()) == []


# ---- a full disk -----------------------------------------------------------------------------
FULL_DISK = '''
import errno, os
_fdopen, _ok = os.fdopen, [{ok}]
class _Full:
    def __init__(self, f): self._f = f
    def write(self, data):
        self._f.write(data[:len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")
    def __getattr__(self, name): return getattr(self._f, name)
    def __enter__(self): return self
    def __exit__(self, *exc): self._f.close()
def fdopen(*a, **k):
    f = _fdopen(*a, **k)
    _ok[0] -= 1
    return f if _ok[0] >= 0 else _Full(f)
os.fdopen = fdopen
'''


@pytest.mark.parametrize("ok", [0, 1, 3])
def test_full_disk_visualize(d, ok):
    """The disk fills after ``ok`` files: one-line error, exit 2, every file left is whole."""
    out = d / f"full_{ok}"
    res = run_cli("visualize", d / "tiny.onnx", "--class", "1", "--class", "2", "--steps", "2",
                  "--out", out, "-q", prelude=FULL_DISK.format(ok=ok))
    assert_user_error(res, "No space left on device")
    assert leftovers(d) == [] and len(files(out)) == ok
    from PIL import Image

    for name in files(out):
        if name.endswith(".png"):
            with Image.open(out / name) as im:
                im.load()
        else:
            json.loads((out / name).read_text())


def test_full_disk_experiment(d):
    p = config(d, "full_exp")
    res = run_cli("experiment", p, "-q", prelude=FULL_DISK.format(ok=2))
    assert_user_error(res, "No space left on device")
    assert leftovers(d / "full_exp") == []
    # room again: the run resumes and completes
    assert_ok(run_cli("experiment", p, "-q"))
    assert (d / "full_exp" / "report.html").is_file() and leftovers(d / "full_exp") == []
