"""Where cells run: in this process (``local``) or on a Ray cluster (``ray``).

Both run :func:`.cells.run_cell` and hand each result to the driver, which alone writes the run
folder. A cell is tried at most ``MAX_ATTEMPTS`` times: an exception in the cell, or the death
of the worker that held it (a SIGKILL, an out-of-memory kill, a lost node), counts as one
failed attempt; after the last one the cell is reported failed, with its error, and the others
go on.

Ray: one actor per worker (``num_cpus=1``), each keeping the models it has loaded across cells
and running ONNX Runtime on one intra-op thread. The driver ships every model once into Ray's
object store (the ONNX bytes with its resolved preprocessing and labels), so workers need no
shared file system; a worker writes a model it needs into its own temp folder and loads it
there. A dead worker is replaced by a new actor and its cell goes back to the queue.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import PydevisError
from ..files import MAX_CARD_BYTES, read_json
from ..model import Model, load
from .cells import Cell, CellOutput, run_cell

MAX_ATTEMPTS = 2
RAY_MISSING = "--executor ray needs Ray: pip install 'pydevis[ray]'"

#: ``watch(event, cell, info)``: "start" (info: worker, attempt), "done" (info: worker,
#: seconds), "retry" and "failed" (info: error, attempt). The driver's progress display and the
#: tests listen here.
Watch = Callable[[str, Cell, dict], None]
Done = Callable[[Cell, CellOutput], None]
Failed = Callable[[Cell, str], None]


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")[:300]


class _Attempts:
    """Counts each cell's failed attempts; says whether to retry or give up."""

    def __init__(self, watch: Watch | None, failed: Failed):
        self.count: dict[str, int] = {}
        self.watch, self.failed = watch, failed

    def fail(self, cell: Cell, error: str) -> bool:
        """Record a failed attempt; True when the cell should run again."""
        n = self.count[cell.key] = self.count.get(cell.key, 0) + 1
        if n < MAX_ATTEMPTS:
            if self.watch:
                self.watch("retry", cell, {"error": error, "attempt": n})
            return True
        if self.watch:
            self.watch("failed", cell, {"error": error, "attempt": n})
        self.failed(cell, error)
        return False


class LocalExecutor:
    """Cells one after the other in this process, on the driver's models."""

    workers = 1

    def __init__(self, models: dict[str, Model]):
        self.models = models

    def connect(self) -> None:
        pass

    def close(self) -> None:
        pass

    def run(self, cells: Sequence[Cell], done: Done, failed: Failed,
            watch: Watch | None = None) -> None:
        attempts = _Attempts(watch, failed)
        queue = deque(cells)
        while queue:
            cell = queue.popleft()
            if watch:
                watch("start", cell, {"worker": os.getpid(),
                                      "attempt": attempts.count.get(cell.key, 0) + 1})
            try:
                output = run_cell(cell, self.models)
            except Exception as exc:  # a cell's own error: recorded, the others go on
                if attempts.fail(cell, _short(exc)):
                    queue.appendleft(cell)
                continue
            if watch:
                watch("done", cell, {"worker": os.getpid(), "seconds": output.seconds})
            done(cell, output)


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def model_payload(model: Model) -> dict[str, Any]:
    """What a worker needs to rebuild ``model`` without the driver's files: the ONNX bytes
    (external data inlined), the preprocessing and labels as resolved on the driver, and the
    card's tuned method settings (its ``ascent`` entry, see ``pydevis tune``), if any."""
    s = model.spec
    card = Path(getattr(model, "card_path", None)
                or model.path.with_name(model.path.name + ".json"))
    data = read_json(card, "model card", MAX_CARD_BYTES) if card.is_file() else None
    ascent = data.get("ascent") if isinstance(data, dict) else None
    return {"onnx": model.proto.SerializeToString(), "file": model.path.name,
            "signal_backend": model.signal_backend, "ascent": ascent,
            "spec": {"size": list(s.size), "channels": s.channels, "mean": list(s.mean),
                     "std": list(s.std), "crop_fraction": s.crop_fraction,
                     "labels": list(s.labels) if s.labels is not None else None}}


def load_payload(payload: dict[str, Any], folder: str, threads: int | None = 1) -> Model:
    """The model of :func:`model_payload`, written into ``folder`` (with a card holding only
    the tuned settings) and loaded from there."""
    d = tempfile.mkdtemp(dir=folder)
    path = os.path.join(d, os.path.basename(payload["file"]) or "model.onnx")
    with open(path, "wb") as f:
        f.write(payload["onnx"])
    if payload.get("ascent") is not None:
        with open(path + ".json", "w") as f:
            json.dump({"ascent": payload["ascent"]}, f)
    return load(path, threads=threads, backend=payload["signal_backend"], **payload["spec"])


class CellWorker:
    """A Ray actor's body: models loaded once, kept across cells (see module docstring)."""

    def __init__(self, payloads: dict[str, Any]):
        self.payloads = payloads  # name -> ObjectRef of model_payload(...)
        self.models: dict[str, Model] = {}
        self.folder = tempfile.mkdtemp(prefix="pydevis-worker-")

    def pid(self) -> int:
        return os.getpid()

    def run(self, cell: Cell) -> CellOutput | str:
        """The cell's output, or its error as one line."""
        import ray

        try:
            for name in (cell.gname, *cell.scorers):
                if name not in self.models:
                    self.models[name] = load_payload(ray.get(self.payloads[name]), self.folder)
            output = run_cell(cell, self.models)
        except Exception as exc:
            return _short(exc)
        output.worker = {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}
        return output

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class RayExecutor:
    """Cells over ``workers`` Ray actors; ``address`` joins a running cluster (``auto``,
    ``ray://HOST:PORT``), else a local Ray is started with ``workers`` CPUs (default: this
    machine's)."""

    def __init__(self, models: dict[str, Model], workers: int | None = None,
                 address: str | None = None):
        if not ray_available():
            raise PydevisError(RAY_MISSING)
        self.models, self.address = models, address
        self.workers = workers or (None if address else os.cpu_count() or 1)
        self._started = False

    def connect(self) -> None:
        """Join the cluster at ``address``, or start a local Ray (unless this process has one
        already); a failure is one line. Called before the run folder is touched."""
        import ray

        if not ray.is_initialized():
            if self.address:
                _reachable(self.address)
            # Ray puts the driver's working directory at the front of every worker's sys.path:
            # started in a source checkout, the workers would import its pydevis (without the
            # compiled kernels) instead of the driver's. So Ray starts from a neutral folder.
            here = os.getcwd()
            try:
                os.chdir(tempfile.gettempdir())
                if self.address:
                    ray.init(address=self.address, log_to_driver=False,
                             logging_level=logging.WARNING)
                else:
                    ray.init(num_cpus=self.workers, include_dashboard=False,
                             log_to_driver=False, logging_level=logging.WARNING)
            except Exception as exc:
                where = f"the Ray cluster at {self.address}" if self.address else "a local Ray"
                raise PydevisError(f"cannot start or join {where}: {_short(exc)}") from None
            finally:
                os.chdir(here)
            self._started = True
        if self.workers is None:  # a cluster: one worker per CPU it has
            self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))

    def close(self) -> None:
        """Stop the local Ray this executor started (a joined cluster goes on)."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def run(self, cells: Sequence[Cell], done: Done, failed: Failed,
            watch: Watch | None = None) -> None:
        import ray

        if cells:
            self.connect()
            self._run(ray, cells, done, _Attempts(watch, failed), watch)

    def _run(self, ray, cells: Sequence[Cell], done: Done, attempts: _Attempts,
             watch: Watch | None) -> None:
        from ray.exceptions import RayError

        actor_cls = ray.remote(num_cpus=1, max_restarts=0)(CellWorker)
        refs = {n: ray.put(model_payload(m)) for n, m in self.models.items()}
        assert self.workers is not None
        idle = [self._actor(ray, actor_cls, refs) for _ in range(min(self.workers, len(cells)))]
        queue = deque(cells)
        running: dict[Any, tuple[Any, int, Cell]] = {}
        while queue or running:
            while idle and queue:
                (actor, pid), cell = idle.pop(), queue.popleft()
                running[actor.run.remote(cell)] = (actor, pid, cell)
                if watch:
                    watch("start", cell, {"worker": pid,
                                          "attempt": attempts.count.get(cell.key, 0) + 1})
            [ref], _ = ray.wait(list(running), num_returns=1)
            actor, pid, cell = running.pop(ref)
            try:
                result = ray.get(ref)
            except RayError as exc:  # the worker died holding the cell: a new one replaces it
                ray.kill(actor, no_restart=True)
                idle.append(self._actor(ray, actor_cls, refs))
                result = f"worker {pid} died ({type(exc).__name__})"
            else:
                idle.append((actor, pid))
            if isinstance(result, str):
                if attempts.fail(cell, result):
                    queue.appendleft(cell)
                continue
            if watch:
                watch("done", cell, {"worker": pid, "seconds": result.seconds})
            done(cell, result)
        ray.get([actor.close.remote() for actor, _ in idle])
        for actor, _ in idle:  # their CPUs free at once for the next run on this cluster
            ray.kill(actor)

    @staticmethod
    def _actor(ray, actor_cls, refs) -> tuple[Any, int]:
        actor = actor_cls.options(runtime_env={"env_vars": worker_env()}).remote(refs)
        return actor, ray.get(actor.pid.remote())


def _reachable(address: str, timeout: float = 10.0) -> None:
    """A ``HOST:PORT`` or ``ray://HOST:PORT`` address must accept a TCP connection (Ray itself
    retries an unreachable one for minutes); ``auto`` is Ray's own, quick, lookup."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise PydevisError(f"cannot join the Ray cluster at {address}: {exc.strerror or exc}"
                           ) from None


def worker_env() -> dict[str, str]:
    """One thread per worker for every native library (one CPU each): ONNX Runtime is set by
    ``load_payload``; these cover the C++ kernels (OpenMP), numba and OpenBLAS. A
    ``PYDEVIS_BACKEND`` of the driver goes along; else the driver's host kernel backend when it
    is ``cpp`` or ``numba``, so that a worker runs the same kernels (the same floats) or fails
    loudly where that backend cannot load, instead of quietly falling back to another."""
    from .. import kernels

    env = {"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    if "PYDEVIS_BACKEND" in os.environ:
        env["PYDEVIS_BACKEND"] = os.environ["PYDEVIS_BACKEND"]
    elif kernels.backend() in ("cpp", "numba"):
        env["PYDEVIS_BACKEND"] = kernels.backend()
    return env
