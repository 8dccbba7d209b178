"""Activation-maximization runs for the page: one at a time on a worker thread (on its own
copy of the model, so projections stay live meanwhile), with progress, cached per target,
method, preset, steps and seed; class images cross-scored on the ``--scorer`` models."""

from __future__ import annotations

import base64
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..errors import TargetError
from ..methods.ascent import METHODS
from ..model import Model
from .state import Explorer, NotFound, png_bytes

MAX_STEPS = 500  # per run asked for by the page
MAX_QUEUED = 8
MAX_JOBS = 64  # finished runs kept (their PNGs are the cache)


@dataclass
class Job:
    id: str
    key: tuple
    target: dict
    state: str = "queued"  # queued | running | done | error
    done: int = 0
    total: int = 0
    started: float = 0.0
    result: dict = field(default_factory=dict)
    error: str = ""

    def view(self) -> dict:
        out = {"job": self.id, "state": self.state, "done": self.done, "total": self.total,
               **self.target}
        if self.state == "running" and self.started:
            out["elapsed"] = round(time.monotonic() - self.started, 2)
        if self.state == "done":
            out.update(self.result)
        if self.state == "error":
            out["error"] = self.error
        return out


class Jobs:
    def __init__(self, explorer: Explorer, make_model: Callable[[], Model],
                 scorers: dict[str, Model] | None = None):
        self.explorer = explorer
        self.make_model = make_model
        self.scorers = scorers or {}
        self._model: Model | None = None
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.by_key: dict[tuple, str] = {}
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="pydevis-ascent")

    def submit(self, cls=None, unit: str | None = None, method: str = "yosinski",
               preset: int | None = None, steps: int | None = None, seed: int = 0) -> Job:
        ex = self.explorer
        if (cls is None) == (unit is None):
            raise TargetError("give a class or a unit (not both)")
        if method not in METHODS:
            raise TargetError(f"unknown method {str(method)[:40]!r}; choose from "
                              f"{', '.join(METHODS)}")
        if preset is not None and (method != "yosinski" or preset not in (1, 2, 3, 4)):
            raise TargetError("preset: 1–4, with method yosinski only")
        if steps is not None and not 1 <= steps <= MAX_STEPS:
            raise TargetError(f"steps must be in 1–{MAX_STEPS}")
        if not 0 <= seed < 2**31:
            raise TargetError("seed must be in 0–2147483647")
        if unit is None:  # a class (exactly one of the two was given)
            from ..classes import resolve_class

            c = resolve_class(ex.model, cls)
            target = {"class": c, "label": ex.model.labels[c]}
        else:
            tensor, channel, pos = ex.unit(unit)
            target = {"unit": f"{tensor}:{channel}" + (f"@{pos[0]},{pos[1]}" if pos else "")}
        key = (tuple(target.items()), method, preset, steps, seed)
        with self.lock:
            old = self.by_key.get(key)
            if old is not None and old in self.jobs and self.jobs[old].state != "error":
                return self.jobs[old]
            if sum(j.state in ("queued", "running") for j in self.jobs.values()) >= MAX_QUEUED:
                raise Busy(f"{MAX_QUEUED} runs are already waiting; try again when one ends")
            job = Job(secrets.token_hex(8), key, {**target, "method": method, "preset": preset,
                                                  "steps": steps, "seed": seed})
            self.jobs[job.id] = job
            self.by_key[key] = job.id
            finished = [j for j in self.jobs.values() if j.state in ("done", "error")]
            for j in finished[:max(0, len(finished) - MAX_JOBS)]:
                del self.jobs[j.id]
                self.by_key.pop(j.key, None)
        self.pool.submit(self._run, job)
        return job

    def get(self, jid: str) -> Job:
        with self.lock:
            job = self.jobs.get(str(jid))
        if job is None:
            raise NotFound(f"unknown job {str(jid)[:40]!r}")
        return job

    def _run(self, job: Job) -> None:
        from ..api import visualize
        from ..evaluation.cross_score import score_images

        job.state, job.started = "running", time.monotonic()
        try:
            if self._model is None:
                self._model = self.make_model()
            m, t = self._model, job.target

            def tick(done, total):
                job.done, job.total = int(done), int(total)

            settings = {"steps": t["steps"]} if t["steps"] else {}
            r = visualize(m, [t["class"]] if "class" in t else [],
                          units=[t["unit"]] if "unit" in t else [], method=t["method"],
                          preset=t["preset"], seed=t["seed"], progress=tick, **settings)[0]
            png = png_bytes(r.pixels)
            res = {"png": "data:image/png;base64," + base64.b64encode(png).decode(),
                   "status": r.status, "seconds": round(time.monotonic() - job.started, 2),
                   "steps": r.config.get("steps")}
            if "class" in t:
                models = {m.path.stem: m, **self.scorers}
                scores, skipped = score_images(r.pixels[None], ["image"], [t["class"]],
                                               m.labels, models)
                res["scores"] = [{"model": s.scoring_model, "probability": s.probability,
                                  "rank": s.rank, "top1": s.top1, "label": s.target_label}
                                 for s in scores]
                res["skipped"] = skipped
            else:
                res["activation"] = r.config.get("activation")
            job.result = res
            job.state = "done"
        except Exception as exc:  # reported to the page as the job's error
            job.error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, TargetError) \
                else str(exc)
            job.state = "error"


class Busy(TargetError):
    """Too many runs waiting (429)."""
