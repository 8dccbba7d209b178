"""Cells and executors without Ray (issue 17): the [executor] table and the CLI options checked
before any work; --executor ray without Ray is one line; a cell failing twice on the local
executor is recorded (run folder, console, exit code 1) while the rest completes, and a rerun
retries only it; --plan counts the cells, probes, and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hostile import assert_user_error, run_cli
from pydevis.evaluation import executors
from pydevis.evaluation.config import ConfigError, ExecutorSpec, load_config
from pydevis.evaluation.experiment import run_experiment
from tiny import tiny_classifier

CONFIG = '''out = "{out}"
seed = 2
generators = ["g.onnx"]
scorers = ["s.onnx"]
classes = [0, 1, 2, 3, 4]
methods = [{{ name = "gradient", steps = 4 }}, {{ name = "deconv", steps = 3 }}]
batch_size = 2
bootstrap = 10
'''
CELLS = 6  # 2 methods x 3 chunks (2, 2 and 1 classes)


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    d = tmp_path_factory.mktemp("cells")
    tiny_classifier(d / "g.onnx", seed=0)
    tiny_classifier(d / "s.onnx", seed=1)
    return d


def _config(d: Path, name: str, extra: str = "") -> Path:
    p = d / f"{name}.toml"
    p.write_text(CONFIG.format(out=name) + extra)
    return p


@pytest.mark.parametrize("table, message", [
    ('[executor]\nkind = "rey"', "executor kind must be local or ray, got 'rey' "
                                 "\\(did you mean 'ray'\\?\\)"),
    ('[executor]\nkind = "ray"\nworkers = 0', "executor workers must be in \\[1, 4096\\]"),
    ('[executor]\nworkers = true', "'workers' has the wrong type"),
    ('[executor]\naddress = "auto"', "an executor address needs kind \"ray\""),
    ('[executor]\nkind = "ray"\naddress = "a b"', "executor address must be"),
    ('[executor]\nnodes = 3', "unknown key 'nodes'"),
    ('executor = "ray"', "'executor' has the wrong type"),
])
def test_executor_table_errors(d, table, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_config(d, "bad", table + "\n"))


def test_executor_table_read(d):
    cfg = load_config(_config(d, "good", '[executor]\nkind = "ray"\naddress = "auto"\n'
                                         'workers = 3\n'))
    assert cfg.executor == ExecutorSpec("ray", "auto", 3)
    assert load_config(_config(d, "plain")).executor == ExecutorSpec("local")


@pytest.mark.parametrize("args, message", [
    (["--executor", "spark"], "executor kind must be local or ray"),
    (["--workers", "0", "--executor", "ray"], "executor workers must be in [1, 4096]"),
    (["--address", "auto"], "an executor address needs kind \"ray\""),
    (["--workers", "two"], "Invalid value for '--workers'"),
])
def test_cli_executor_errors_before_any_work(d, args, message):
    cfg = _config(d, "cli_bad")
    assert_user_error(run_cli("experiment", cfg, *args, cwd=d), message)
    assert not (d / "cli_bad").exists()


def test_ray_missing_is_one_line(d):
    cfg = _config(d, "noray")
    block = "import sys; sys.modules['ray'] = None  # import ray fails as if not installed"
    assert_user_error(run_cli("experiment", cfg, "--executor", "ray", prelude=block, cwd=d),
                      "pip install 'pydevis[ray]'")
    assert not (d / "noray").exists()


def test_cell_failing_twice_is_recorded_and_retried_on_rerun(d, monkeypatch):
    real = executors.run_cell
    calls: list[str] = []

    def flaky(cell, models):
        calls.append(cell.key)
        if cell.key == "g/deconv/chunk1":
            raise RuntimeError("out of luck\nsecond line")
        return real(cell, models)

    monkeypatch.setattr(executors, "run_cell", flaky)
    events: list[tuple[str, str]] = []
    cfg = _config(d, "flaky")
    summary = run_experiment(cfg, watch=lambda e, c, i: events.append((e, c.key)))
    assert calls.count("g/deconv/chunk1") == 2 and len(calls) == CELLS + 1
    assert [e for e, k in events if k == "g/deconv/chunk1"] == ["start", "retry", "start",
                                                                "failed"]
    [failed] = summary["failed_cells"]
    assert failed["error"] == "RuntimeError: out of luck" and failed["classes"] == [2, 3]
    record = d / "flaky" / "failed" / "g" / "deconv" / "chunk1.json"
    assert json.loads(record.read_text())["cell"] == "g/deconv/chunk1"
    rows = json.loads((d / "flaky" / "results.json").read_text())["rows"]
    assert len(rows) == (10 - 2) * 2  # every other image, on both models
    # the CLI, still failing: the run completes, a line for the cell, exit code 1
    code, _, err = run_cli("experiment", cfg, cwd=d)
    assert code == 0 and not record.exists()  # without the patch the rerun completes it
    assert "cells 6/6" in err and "FAILED" not in err
    rows = json.loads((d / "flaky" / "results.json").read_text())["rows"]
    assert len(rows) == 10 * 2


def test_cli_reports_failed_cells(d):
    cfg = _config(d, "clifail")
    prelude = ("from pydevis.evaluation import executors\n"
               "real = executors.run_cell\n"
               "def flaky(cell, models):\n"
               "    if cell.index == 0: raise MemoryError('no room')\n"
               "    return real(cell, models)\n"
               "executors.run_cell = flaky")
    code, out, err = run_cli("experiment", cfg, prelude=prelude, cwd=d)
    assert code == 1, err
    lines = err.splitlines()
    assert sum("FAILED cell g/gradient/chunk0 (g gradient classes 0, 1) after 2 attempts: "
               "MemoryError: no room" in ln for ln in lines) == 1
    assert sum(ln.startswith("retrying cell") for ln in lines) == 2
    assert lines[-1].startswith("error: 2 cell(s) failed") and "Traceback" not in err
    assert "Failed cells" in out


def test_plan_counts_probes_and_writes_nothing(d):
    cfg = _config(d, "planned")
    code, out, err = run_cli("experiment", cfg, "--plan", "--workers", "3", "--json", cwd=d)
    assert code == 0, err
    plan = json.loads(out)
    assert plan["cells"] == plan["cells_to_run"] == CELLS and plan["images"] == 10
    assert {(p["generating_model"], p["method"]) for p in plan["probe"]} == \
        {("g", "gradient"), ("g", "deconv")}
    assert all(p["step_s"] >= 0 and p["cell_row_s"] > 0 for p in plan["probe"])
    walls = {int(n): h for n, h in plan["wall_hours"].items()}
    assert plan["workers"] == 3 and 3 in walls
    assert walls[1] == pytest.approx(plan["core_hours"])  # one worker does it all
    assert walls[1] >= walls[2] >= walls[3] >= walls[128] > 0
    assert not (d / "planned").exists()
    code, text, _ = run_cli("experiment", cfg, "--plan", cwd=d)
    assert code == 0 and text.startswith(f"{CELLS} cells ({CELLS} to run, 10 images)")
    assert "core-hours" in text and "wall time on" in text


def test_executor_table_is_not_part_of_the_run(d):
    cfg = _config(d, "switch")
    run_experiment(cfg)
    marker = d / "switch" / "scores" / "g" / "gradient" / "chunk0.json"
    before = marker.stat().st_mtime_ns
    cfg.write_text(cfg.read_text() + '[executor]\nkind = "local"\nworkers = 2\n')
    started: list[str] = []
    run_experiment(cfg, watch=lambda e, c, i: started.append(c.key))  # resumes: nothing to do
    assert started == [] and marker.stat().st_mtime_ns == before
    cfg.write_text(cfg.read_text().replace("seed = 2", "seed = 3"))
    with pytest.raises(ConfigError, match="different config"):
        run_experiment(cfg)


def test_unreachable_cluster_is_one_line_before_any_work(d):
    pytest.importorskip("ray", reason="Ray is not installed (the test extra installs it)")
    cfg = _config(d, "unreachable")
    assert_user_error(run_cli("experiment", cfg, "--executor", "ray", "--address",
                              "127.0.0.1:1", cwd=d, timeout=60),
                      "cannot join the Ray cluster at 127.0.0.1:1")
    assert not (d / "unreachable").exists()
