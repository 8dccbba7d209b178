"""Hostile input, round two (issue 20), through the real CLI outside the source tree: a config's
method labels never write outside the run folder; two runs of one config never lose a row (one
refuses in one line while the other holds the run folder's lock); resume checks every row
against the config instead of trusting the chunk files; an altered chunk is refused by name."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hostile import CLI, assert_ok, assert_user_error, leftovers, run_cli

MODELS = Path(__file__).resolve().parents[1] / "models"
CONFIG = f'''out = "{{out}}"
generators = ["{MODELS / "cifar10_alexnet.onnx"}"]
scorers = ["{MODELS / "cifar10_resnet.onnx"}"]
classes = [0, 1, 2]
methods = [{{{{ name = "gradient", steps = 2{{label}} }}}}, {{{{ name = "deconv", steps = 2 }}}}]
batch_size = 1
sanity = true
bootstrap = 10
'''
# 2 generators (alexnet and its randomized copy) x 2 methods x 3 classes x 2 scorers
ROWS = 24


def config(d: Path, name: str, label: str = "") -> Path:
    p = d / f"{name}.toml"
    p.write_text(CONFIG.format(out=name, label=f", label = {json.dumps(label)}" if label else ""))
    return p


def rows(run: Path) -> list[dict]:
    with open(run / "results.csv") as f:
        return list(csv.DictReader(f))


def tree(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


@pytest.mark.parametrize("label", ["../../../x", "/ABS/dir", "..", "a/../../b"])
def test_method_label_never_writes_outside_the_run(tmp_path, label):
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    label = label.replace("/ABS", str(tmp_path / "abs"))
    cfg = config(work, "run", label)
    before = tree(tmp_path)
    assert_ok(run_cli("experiment", cfg, "-q", cwd=work))
    new = tree(tmp_path) - before
    assert new and all(n.startswith("a/b/c/run") for n in new), sorted(new)[:5]
    assert not (tmp_path / "abs").exists()
    got = rows(work / "run")
    assert len(got) == ROWS
    for r in got:  # every image the rows name is a file inside the run
        assert (work / "run" / r["image"]).resolve().is_relative_to((work / "run").resolve())
        assert (work / "run" / r["image"]).is_file()


def test_labels_equal_once_made_safe_are_refused(tmp_path):
    cfg = config(tmp_path, "dup", "gradient")  # the other method is also called "gradient"...
    cfg.write_text(cfg.read_text().replace('name = "deconv", steps = 2',
                                           'name = "deconv", steps = 2, label = "../gradient"'))
    assert_user_error(run_cli("experiment", cfg, "-q", cwd=tmp_path), "appears twice")
    assert not (tmp_path / "dup").exists()


def _start(cfg: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CLI, "experiment", str(cfg), "-q"], cwd=cwd,
                            env=os.environ.copy(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("attempt", range(5))
def test_two_runs_of_one_config_lose_no_row(tmp_path, attempt):
    cfg = config(tmp_path, "race")
    a, b = _start(cfg, tmp_path), _start(cfg, tmp_path)
    errs = [p.communicate(timeout=300)[1] for p in (a, b)]
    results = [(p.returncode, err) for p, err in zip((a, b), errs, strict=True)]
    assert 0 in [code for code, _ in results], results
    for code, err in results:
        assert "Traceback" not in err, err
        if code != 0:  # the loser refuses in one line, and touches nothing
            assert code == 2 and len(err.strip().splitlines()) == 1, err
            assert "in use by another pydevis process" in err, err
    run = tmp_path / "race"
    assert len(rows(run)) == ROWS and not leftovers(run)
    assert {r["generating_model"] for r in rows(run)} == {"cifar10_alexnet",
                                                         "cifar10_alexnet~randomized"}
    assert_ok(run_cli("experiment", cfg, "-q", cwd=tmp_path))  # a third run: same rows
    assert len(rows(run)) == ROWS


def test_resume_redoes_a_chunk_with_missing_rows(tmp_path):
    cfg = config(tmp_path, "gap")
    assert_ok(run_cli("experiment", cfg, "-q", cwd=tmp_path))
    run = tmp_path / "gap"
    for chunk in sorted((run / "scores").rglob("chunk*.json"))[:3]:
        data = json.loads(chunk.read_text())
        data["rows"] = data["rows"][:1]  # a well-formed file that lacks a row
        chunk.write_text(json.dumps(data))
    (run / "scores" / "cifar10_alexnet~randomized" / "deconv" / "chunk2.json").unlink()
    assert_ok(run_cli("experiment", cfg, "-q", cwd=tmp_path))
    assert len(rows(run)) == ROWS
    assert len({(r["image"], r["scoring_model"]) for r in rows(run)}) == ROWS


@pytest.mark.parametrize("damage, message", [
    (lambda d: d["rows"][0].pop("probability"), "row 0 has no 'probability'"),
    (lambda d: d["rows"][0].update(rank="first"), "row 0: 'rank' is invalid"),
    (lambda d: d["rows"][0].update(image="../../etc/passwd"), "row 0: 'image' is invalid"),
    (lambda d: d.update(rows={}), "not a chunk file"),
    (lambda d: d["skipped"].append(3), "'skipped' holds something"),
])
def test_report_refuses_an_altered_chunk_before_writing(tmp_path, damage, message):
    cfg = config(tmp_path, "bad")
    assert_ok(run_cli("experiment", cfg, "-q", cwd=tmp_path))
    run = tmp_path / "bad"
    chunk = run / "scores" / "cifar10_alexnet" / "gradient" / "chunk1.json"
    data = json.loads(chunk.read_text())
    damage(data)
    chunk.write_text(json.dumps(data))
    before = {n: (run / n).read_bytes() for n in ("results.csv", "results.json", "report.html")}
    assert_user_error(run_cli("report", run, cwd=tmp_path), str(chunk), message)
    assert before == {n: (run / n).read_bytes() for n in before}  # nothing half-updated


def test_a_report_that_fails_late_rewrites_nothing(tmp_path, monkeypatch):
    """If rendering the report fails after the summary was computed, results.csv/json,
    summary.md and report.html all keep their old numbers."""
    import pydevis.evaluation.report as report_mod
    from pydevis.errors import PydevisError
    from pydevis.evaluation.experiment import report

    cfg = config(tmp_path, "late")
    assert_ok(run_cli("experiment", cfg, "-q", cwd=tmp_path))
    run = tmp_path / "late"
    chunk = run / "scores" / "cifar10_alexnet" / "gradient" / "chunk0.json"
    data = json.loads(chunk.read_text())
    data["rows"][0]["probability"] = 0.123456  # valid, so a rewrite would change the numbers
    chunk.write_text(json.dumps(data))
    names = ("results.csv", "results.json", "summary.md", "report.html")
    before = {n: (run / n).read_bytes() for n in names}

    def broken(*a, **k):
        raise PydevisError("rendering failed")

    monkeypatch.setattr(report_mod, "render_report", broken)
    with pytest.raises(PydevisError, match="rendering failed"):
        report(run)
    assert before == {n: (run / n).read_bytes() for n in names}
    monkeypatch.undo()
    report(run)  # and when it works, every file moves to the new numbers together
    assert all(before[n] != (run / n).read_bytes() for n in names)


def test_report_refuses_a_hostile_bootstrap(tmp_path):
    cfg = config(tmp_path, "boot")
    assert_ok(run_cli("experiment", cfg, "-q", cwd=tmp_path))
    run = tmp_path / "boot"
    saved = run / "config.toml"
    saved.write_text(saved.read_text().replace("bootstrap = 10", "bootstrap = 1000000000000"))
    before = (run / "results.csv").read_bytes()
    assert_user_error(run_cli("report", run, cwd=tmp_path), "'bootstrap' must be")
    assert (run / "results.csv").read_bytes() == before


SLOW = ("import time, pydevis.evaluation.executors as e\n"
        "_cell = e.run_cell\n"
        "def _slow(*a, **k):\n    time.sleep(0.4)\n    return _cell(*a, **k)\n"
        "e.run_cell = _slow\n")


def test_a_second_run_is_refused_while_the_first_holds_the_folder(tmp_path):
    """Deterministic: the first run is slowed down inside its chunks; a second run started
    while it works refuses in one line and touches nothing; the first ends with every row."""
    cfg = config(tmp_path, "held")
    first = subprocess.Popen([sys.executable, "-c", SLOW + CLI, "experiment", str(cfg), "-q"],
                             cwd=tmp_path, env=os.environ.copy(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    run = tmp_path / "held"
    deadline = time.monotonic() + 120
    while not (run / "scores").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert_user_error(run_cli("experiment", cfg, "-q", cwd=tmp_path),
                      "in use by another pydevis process")
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert len(rows(run)) == ROWS and not leftovers(run)
