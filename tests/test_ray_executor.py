"""The Ray executor (issue 17) on a local Ray with 2 workers and the bundled CIFAR-10 models:
a run completes with the local executor's files byte for byte; a worker SIGKILLed holding a cell
is replaced, the cell retried, every row written once; a cell whose worker dies twice is
recorded as failed with its error while the rest completes, and a rerun completes it; the CLI
joining the running cluster (--address auto), SIGKILLed, then rerun, resumes.

One Ray for the module (its start-up takes seconds); `pytest -m ray` selects these tests."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hostile import CLI, assert_ok, run_cli
from pydevis.evaluation.config import ExecutorSpec
from pydevis.evaluation.executors import RayExecutor, worker_env
from pydevis.evaluation.experiment import run_experiment

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'pydevis[ray]'; "
                                        "the test extra installs it)")
pytestmark = pytest.mark.ray

MODELS = Path(__file__).resolve().parents[1] / "models"
CONFIG = f'''out = "{{out}}"
seed = 11
generators = ["{MODELS / "cifar10_alexnet.onnx"}"]
scorers = ["{MODELS / "cifar10_resnet.onnx"}"]
classes = [0, 1, 2, 3, 4, 5]
methods = [{{{{ name = "gradient", steps = 150 }}}}, {{{{ name = "deconv-prior", steps = 12 }}}}]
batch_size = 2
bootstrap = 20
'''
CELLS = 6  # 2 methods x 3 chunks of 2 classes
ROWS = 24  # 12 images x 2 scoring models (the generator and the scorer)


@pytest.fixture(scope="module")
def cluster():
    """Ray started the way the executor starts it (from a neutral folder: pytest runs in the
    source checkout, whose pydevis has no compiled kernels when the package is installed
    non-editable, as in CI)."""
    RayExecutor({}, workers=2).connect()
    yield
    ray.shutdown()


def test_workers_import_the_drivers_pydevis_and_kernels(cluster):
    @ray.remote(runtime_env={"env_vars": worker_env()})
    def where() -> tuple[str, str, list[str]]:
        import sys

        import pydevis
        from pydevis import kernels

        return pydevis.__file__, kernels.backend(), sys.path

    import pydevis
    from pydevis import kernels

    path, backend, sys_path = ray.get(where.remote())
    assert path == pydevis.__file__ and backend == kernels.backend()
    # The checkout (pytest's folder) must not shadow the installed package on the workers. In an
    # editable install the checkout *is* the installed package: its .pth file puts the folder on
    # every interpreter's path, the driver's too, and the first assertion covers it.
    if not pydevis.__file__.startswith(os.path.join(os.getcwd(), "")):
        assert os.getcwd() not in sys_path


def test_worker_env_pins_the_drivers_kernel_backend(monkeypatch):
    from pydevis import kernels

    monkeypatch.delenv("PYDEVIS_BACKEND", raising=False)
    if kernels.backend() in ("cpp", "numba"):  # a CUDA driver leaves each worker its own
        assert worker_env()["PYDEVIS_BACKEND"] == kernels.backend()
    monkeypatch.setenv("PYDEVIS_BACKEND", "numba")
    assert worker_env()["PYDEVIS_BACKEND"] == "numba"


def _config(d: Path, name: str) -> Path:
    p = d / f"{name}.toml"
    p.write_text(CONFIG.format(out=name))
    return p


def _files(run: Path) -> dict[str, bytes]:
    """The images and chunk files (the sidecars name the run folder, so not them)."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and (p.suffix == ".png" or p.parent.parent.parent.name == "scores")}


def _rows(run: Path) -> list[dict]:
    with open(run / "results.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("ray")
    run_experiment(_config(d, "local"), executor=ExecutorSpec("local"))
    return d, d / "local"


def test_ray_run_equals_local_run(cluster, local_run):
    d, local = local_run
    workers: set[int] = set()
    summary = run_experiment(_config(d, "ray"), executor=ExecutorSpec("ray", workers=2),
                             watch=lambda e, c, i: workers.add(i["worker"]) if e == "start"
                             else None)
    assert len(workers) == 2 and os.getpid() not in workers  # two worker processes did it
    assert summary["failed_cells"] == []
    assert len(_rows(d / "ray")) == ROWS
    want = _files(local)
    assert len([k for k in want if k.endswith(".png")]) == 12
    assert _files(d / "ray") == want  # PNGs and chunk files byte for byte
    assert (d / "ray" / "results.csv").read_text() == (local / "results.csv").read_text()


def test_killed_worker_is_replaced_and_every_row_written_once(cluster, local_run):
    d, local = local_run
    killed: list[int] = []
    events: list[tuple[str, str, dict]] = []

    def watch(event: str, cell, info: dict) -> None:
        events.append((event, cell.key, info))
        if event == "start" and len([e for e in events if e[0] == "start"]) == 3:
            killed.append(info["worker"])  # the worker of the third cell, while it holds it
            threading.Timer(0.3, os.kill, (info["worker"], signal.SIGKILL)).start()

    summary = run_experiment(_config(d, "killed"), executor=ExecutorSpec("ray", workers=2),
                             watch=watch)
    retries = [(k, i["error"]) for e, k, i in events if e == "retry"]
    assert len(retries) == 1 and f"worker {killed[0]} died" in retries[0][1], events
    # the kill (0.3 s after the worker took the cell) landed mid-cell: the cell takes longer
    [took] = [i["seconds"] for e, k, i in events if e == "done" and k == retries[0][0]]
    assert took > 0.6, took
    assert summary["failed_cells"] == []
    rows = _rows(d / "killed")
    assert len(rows) == ROWS
    assert len({(r["image"], r["scoring_model"]) for r in rows}) == ROWS  # every row once
    assert _files(d / "killed") == _files(local)
    assert not list((d / "killed").rglob(".tmp-*"))


def test_cell_failing_twice_is_recorded_and_the_rest_completes(cluster, local_run):
    d, local = local_run
    events: list[tuple[str, str, dict]] = []

    def watch(event: str, cell, info: dict) -> None:
        events.append((event, cell.key, info))
        if event == "start" and cell.key.endswith("gradient/chunk1"):  # its worker dies, twice
            threading.Timer(0.3, os.kill, (info["worker"], signal.SIGKILL)).start()

    cfg = _config(d, "failing")
    summary = run_experiment(cfg, executor=ExecutorSpec("ray", workers=2), watch=watch)
    [failed] = summary["failed_cells"]
    assert failed["cell"] == "cifar10_alexnet/gradient/chunk1"
    assert failed["classes"] == [2, 3] and "died" in failed["error"]
    assert [e for e, k, _ in events if k == failed["cell"]] == ["start", "retry", "start",
                                                               "failed"]
    run = d / "failing"
    assert (run / "failed" / "cifar10_alexnet" / "gradient" / "chunk1.json").is_file()
    assert "Failed cells" in (run / "summary.md").read_text()
    rows = _rows(run)
    assert len(rows) == ROWS - 4 and {int(r["target_class"]) for r in rows
                                      if r["method"] == "gradient"} == {0, 1, 4, 5}
    # rerun: only the failed cell runs, and the run is whole
    again: list[str] = []
    summary = run_experiment(cfg, executor=ExecutorSpec("ray", workers=2),
                             watch=lambda e, c, i: again.append(c.key) if e == "start" else None)
    assert again == [failed["cell"]] and summary["failed_cells"] == []
    assert not (run / "failed" / "cifar10_alexnet" / "gradient" / "chunk1.json").exists()
    assert _files(run) == _files(local)


def test_driver_killed_then_rerun_resumes_on_a_joined_cluster(cluster, local_run):
    d, local = local_run
    cfg = _config(d, "driver")
    run = d / "driver"
    args = ["experiment", str(cfg), "--executor", "ray", "--address", "auto", "-q"]
    proc = subprocess.Popen([sys.executable, "-c", CLI, *args], cwd=d, env=os.environ.copy(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if len(list(run.rglob("chunk*.json"))) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    before = len(list(run.rglob("chunk*.json")))
    assert 2 <= before < CELLS
    assert_ok(run_cli(*args, cwd=d))
    rows = _rows(run)
    assert len(rows) == ROWS and len({(r["image"], r["scoring_model"]) for r in rows}) == ROWS
    assert _files(run) == _files(local)
    assert not list(run.rglob(".tmp-*"))
