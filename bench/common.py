"""Shared helpers of the benchmark scripts in ``bench/``.

- :func:`timeit`: wall-clock timing (``time.perf_counter``) with warm-up runs, the median (and
  minimum) of ``repeats`` runs; :func:`timeit_interleaved`: the same for several functions run
  round-robin (the implementations compared in one figure);
- :func:`gemm_peak`, :func:`stream`, :func:`machine_info`, :func:`versions` (from
  ``machine.py``): the GEMM and memory-bandwidth yardsticks, the CPU, its ISA and load;
- :func:`set_threads` / :func:`thread_env`: one thread count for every pool in the process
  (OpenMP of the C++ backend, numba, numpy's OpenBLAS, torch, ONNX Runtime via ``pydevis.load``);
- :func:`run_workers`: run a script once per thread count, each in a subprocess whose environment
  fixes that count before anything is imported (OpenMP reads ``OMP_NUM_THREADS`` once);
- :func:`neighbours`: busy-looping processes beside a timing (another process sharing the cores);
- :func:`write_json`, :func:`table`, :func:`check_close`.

Every script exposes ``main(argv=None) -> int`` (``pydevis bench`` calls it) and accepts the
options of :func:`add_common_args`; ``--quick`` gives tiny sizes and one repeat (the smoke test).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as _dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"
THREAD_VARS = ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "MKL_NUM_THREADS")


try:  # the installed pydevis when there is one, else this checkout's
    import pydevis  # noqa: F401
except ImportError:
    sys.path.insert(0, str(ROOT))

try:
    from . import machine as _M
except ImportError:  # run as a script
    import machine as _M  # type: ignore[no-redef]

cpu_flags, cpu_model, load_average = _M.cpu_flags, _M.cpu_model, _M.load_average
gemm_peak, stream, machine_info, versions = _M.gemm_peak, _M.stream, _M.machine_info, _M.versions


class CheckFailed(AssertionError):
    """A benchmarked result disagrees with its reference: the script exits non-zero."""


# ---- timing -------------------------------------------------------------------------------------
@dataclass
class Timing:
    median_ms: float
    min_ms: float
    repeats: int
    times_ms: list[float]
    # involuntary context switches of the whole process during each timed run (getrusage:
    # every thread's): a step whose threads were preempted, by each other or by another
    # process, shows them; empty where not measured
    preempted: list[int] = field(default_factory=list)

    @property
    def max_ms(self) -> float:
        return max(self.times_ms)

    def as_dict(self) -> dict:
        return asdict(self)


def spread(t: Timing) -> dict:
    """The step-time fields of a row: median, min, max of the timed runs and their ratio
    (``step_swing``, max / min); the median count of involuntary context switches in the
    process during one (``preempted``: threads that lost their core, to each other or to
    another process; None where not measured)."""
    return {"step_ms": t.median_ms, "step_min_ms": t.min_ms, "step_max_ms": t.max_ms,
            "step_swing": t.max_ms / t.min_ms, "runs": t.repeats,
            "preempted": float(np.median(t.preempted)) if t.preempted else None}


def timeit(fn: Callable[[], object], repeats: int = 5, warmup: int = 1,
           budget_s: float | None = None) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed (wall clock).

    ``budget_s``: stop early once the timed runs took this long (at least 3 runs, or
    ``repeats`` if fewer), so a slow case does not run for minutes.
    """
    for _ in range(max(warmup, 0)):
        fn()
    times: list[float] = []
    spent = 0.0
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt * 1e3)
        spent += dt
        if budget_s is not None and spent > budget_s and len(times) >= min(3, repeats):
            break
    return Timing(statistics.median(times), min(times), len(times), times)


def timeit_interleaved(fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1,
                       budget_s: float | None = None, paired: bool = False) -> dict[str, Timing]:
    """:func:`timeit` for several functions at once, run round-robin (one call of each per round,
    the order rotated every round), so that a busy spell on a shared machine hits all of them
    alike and the ratios between them stay meaningful. ``budget_s`` bounds the rounds' total.

    ``paired``: each timed call follows an untimed call of the same function, so that it runs
    after its own kind, as a step of an ascent loop does, not in the wake of another library's
    call (whose spinning OpenMP workers and cache contents it would otherwise inherit)."""
    names = list(fns)
    for _ in range(max(warmup, 0)):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    preempted: dict[str, list[int]] = {name: [] for name in names}
    spent = 0.0
    for r in range(max(repeats, 1)):
        for name in names[r % len(names):] + names[:r % len(names)]:
            if paired:
                fns[name]()
            cs0 = _involuntary_switches()
            t0 = time.perf_counter()
            fns[name]()
            dt = time.perf_counter() - t0
            times[name].append(dt * 1e3)
            preempted[name].append(_involuntary_switches() - cs0)
            spent += dt
        if budget_s is not None and spent > budget_s and r + 1 >= min(3, repeats):
            break
    return {name: Timing(statistics.median(t), min(t), len(t), t, preempted[name])
            for name, t in times.items()}


# A neighbour: a process that only burns CPU, and exits when its parent is gone (a killed
# worker leaves none behind): every few milliseconds it checks that its parent is still the
# pid it was given (given, not read at start-up: the parent may be gone by then).
_BUSY = ("import os, sys\nparent = int(sys.argv[1])\nwhile os.getppid() == parent:\n"
         "    for _ in range(100000):\n        pass\n")
MAX_NEIGHBOURS = 64


@contextlib.contextmanager
def neighbours(count: int) -> Iterator[list[subprocess.Popen]]:
    """``count`` busy-looping Python processes for the duration of the block, not pinned: the
    scheduler shares the cores between them and the timed steps, as on a machine where another
    job runs. They are killed (and reaped) on the way out, whatever happens in the block."""
    if not 0 <= count <= MAX_NEIGHBOURS:
        raise ValueError(f"neighbours: {count} is not in 0..{MAX_NEIGHBOURS}")
    procs: list[subprocess.Popen] = []
    try:
        for _ in range(count):
            procs.append(subprocess.Popen([sys.executable, "-I", "-S", "-c", _BUSY,
                                           str(os.getpid())],
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def _involuntary_switches() -> int:
    """The process's involuntary context switches so far (all threads; 0 off Unix)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw


# ---- threads ------------------------------------------------------------------------------------
def thread_env(threads: int, base: dict | None = None, wait_policy: str = "passive") -> dict:
    """A copy of the environment with every thread-count variable set to ``threads`` and
    ``OMP_WAIT_POLICY`` set to ``wait_policy`` (``default``: unset, each runtime's default)."""
    env = dict(os.environ if base is None else base)
    for var in THREAD_VARS:
        env[var] = str(threads)
    if wait_policy == "default":
        env.pop("OMP_WAIT_POLICY", None)
    else:
        env["OMP_WAIT_POLICY"] = wait_policy.upper()
    return env


def _openblas_libs() -> list[ctypes.CDLL]:
    """The OpenBLAS builds loaded in this process (numpy's 64-bit one, scipy-openblas32...)."""
    paths: list[str] = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                p = line.split()[-1]
                base = os.path.basename(p).lower()
                if "openblas" in base and ".so" in base and p not in paths:
                    paths.append(p)
    except OSError:  # not Linux
        return []
    libs = []
    for p in paths:
        try:
            libs.append(ctypes.CDLL(p))
        except OSError:
            pass
    return libs


_SETTERS = ("openblas_set_num_threads", "openblas_set_num_threads64_",
            "scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads")


def set_blas_threads(threads: int) -> int:
    """Set the thread count of every loaded OpenBLAS; returns how many libraries took it."""
    done = 0
    for lib in _openblas_libs():
        for name in _SETTERS:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.argtypes = [ctypes.c_int]
                fn(int(threads))
                done += 1
                break
    return done


def set_threads(threads: int) -> dict:
    """Use ``threads`` threads in torch, numba and OpenBLAS of this process (OpenMP of the C++
    backend only follows ``OMP_NUM_THREADS`` at start-up: see :func:`run_workers`)."""
    out = {"requested": threads, "omp_env": os.environ.get("OMP_NUM_THREADS")}
    try:
        import torch

        torch.set_num_threads(threads)
        out["torch"] = torch.get_num_threads()
    except ImportError:
        pass
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        out["numba"] = numba.get_num_threads()
    except ImportError:
        pass
    out["openblas_libs"] = set_blas_threads(threads)
    return out


# ---- machine, versions, output ----------------------------------------------------------------
def backends() -> dict[str, str | None]:
    """Kernel backends: name -> None when usable, else why not."""
    import pydevis.kernels as K

    return K.available()


def usable_backends(wanted: Sequence[str] | None = None) -> list[str]:
    avail = [k for k, why in backends().items() if why is None]
    if wanted:
        return [b for b in wanted if b in avail]
    return [b for b in ("cpp", "numba", "cuda") if b in avail]


def meta(argv: Sequence[str] | None) -> dict:
    return {"date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "argv": list(argv or []), "machine": machine_info(), "versions": versions(),
            "backends": backends()}


def write_json(name: str, payload: dict, out_dir: str | os.PathLike | None = None) -> Path:
    """Write ``payload`` to ``OUT_DIR/NAME.json`` (default ``bench/results``)."""
    d = Path(out_dir) if out_dir else RESULTS
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1, default=_json_default) + "\n")
    return path


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def fmt(v, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != v:
            return "nan"
        if abs(v) >= 1000:
            return f"{v:.0f}"
        if abs(v) >= 100:
            return f"{v:.1f}"
        return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:.2f}"
    return str(v)


def table(rows: list[dict], columns: Sequence[str], headers: Sequence[str] | None = None) -> str:
    """A plain fixed-width table of ``rows`` (dicts) over ``columns``: text left-aligned,
    numbers right-aligned, ``-`` for a missing value."""
    headers = list(headers or columns)
    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    numeric = [all(isinstance(r.get(c), (int, float)) or r.get(c) is None for r in rows)
               for c in columns]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells]
    return "\n".join(out)


# ---- correctness --------------------------------------------------------------------------------
def rel_err(actual, expected) -> float:
    """max |actual − expected| / max |expected| (float64); inf on a shape mismatch."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        return float("inf")
    scale = float(np.abs(e).max(initial=0.0))
    diff = float(np.abs(a - e).max(initial=0.0))
    if not np.isfinite(diff):
        return float("inf")
    return diff / scale if scale > 0 else diff


def check_close(actual, expected, tol: float, what: str) -> float:
    """Raise :class:`CheckFailed` unless ``rel_err(actual, expected) <= tol``; return the error."""
    err = rel_err(actual, expected)
    if not err <= tol:
        raise CheckFailed(f"{what}: relative error {err:.3g} > {tol:g}")
    return err


# ---- command line and per-thread workers --------------------------------------------------------
def add_common_args(p: argparse.ArgumentParser, default_name: str) -> None:
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes and one repeat: checks the script runs (no useful figures)")
    p.add_argument("--threads", type=int, nargs="+", default=None,
                   help="thread counts, one subprocess each (default: 1 and all cores)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per figure (median)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs before timing")
    p.add_argument("--backends", nargs="+", default=None,
                   help="kernel backends to time (default: every available one); "
                        "ascent_step.py also takes ort (default: timed)")
    p.add_argument("--name", default=default_name, help="JSON file name (without .json)")
    p.add_argument("--out-dir", default=None, help=f"where the JSON goes (default {RESULTS})")
    p.add_argument("--no-save", action="store_true", help="print only, write no JSON")
    p.add_argument("--omp-wait-policy", choices=("passive", "active", "default"), nargs="+",
                   default=["passive"],
                   help="OMP_WAIT_POLICY of the workers (the OpenMP runtimes: torch's, numba's; "
                        "the C++ backend's own pool spins PYDEVIS_SPIN_US instead), one worker per "
                        "policy; default: unset. Default "
                        "passive: on a shared, loaded machine spinning teams run several times "
                        "slower (ascent_step.py times both passive and default)")
    # internal: one thread count, in a subprocess, writing its rows to a file
    p.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)


def default_threads() -> list[int]:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    return sorted({1, n})


def run_workers(script: Path, argv: Sequence[str], threads: Sequence[int],
                timeout: float | None = None, wait_policy: str | Sequence[str] = "passive"
                ) -> tuple[list[dict], int]:
    """Run ``script argv --threads T --worker-out FILE`` once per ``T`` and per wait policy
    (``wait_policy``: one or several), with the variables of :func:`thread_env` set; returns
    the workers' payloads (``policy`` added) and the worst exit code."""
    policies = [wait_policy] if isinstance(wait_policy, str) else list(wait_policy)
    parts: list[dict] = []
    worst = 0
    with tempfile.TemporaryDirectory(prefix="pydevis-bench-") as tmp:
        for t in threads:
            for policy in policies:
                out = Path(tmp) / f"t{t}-{policy}.json"
                cmd = [sys.executable, str(script), *argv, "--threads", str(t),
                       "--worker-out", str(out)]
                env = thread_env(t, wait_policy=policy)
                # the workers import the same pydevis as this process (installed or checkout)
                env["PYTHONPATH"] = os.pathsep.join(
                    [_pydevis_root(), *filter(None, [env.get("PYTHONPATH")])])
                proc = subprocess.run(cmd, env=env, timeout=timeout)
                if proc.returncode != 0:
                    print(f"[bench] worker threads={t} policy={policy} exited with "
                          f"{proc.returncode}", file=sys.stderr)
                    worst = worst or proc.returncode
                if out.is_file():
                    part = json.loads(out.read_text())
                    part["policy"] = policy
                    part["env"] = {k: env.get(k) for k in (*THREAD_VARS, "OMP_WAIT_POLICY")}
                    parts.append(part)
    return parts, worst


def _pydevis_root() -> str:
    import pydevis

    return str(Path(pydevis.__file__).resolve().parents[1])


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def finish(name: str, args: argparse.Namespace, parts: list[dict], rows: list, errors: list[str],
           rc: int, info: dict, worker_keys: Sequence[str] = (), **extra) -> int:
    """Print the failed checks, save the run's JSON (unless ``--no-save``) and return the exit code:
    0 when every check passed and every worker exited cleanly."""
    for e in errors:
        print(f"CHECK FAILED: {e}")
    keys = ("threads", "policy", "env", "thread_setup", "load_before", "load_after",
            *worker_keys)
    payload = {"benchmark": name, "ok": not errors and rc == 0, "errors": errors, **extra,
               "repeats": args.repeats, "quick": args.quick, "meta": info,
               "gemm": {str(p["threads"]): p["gemm"] for p in parts},
               "omp_wait_policy": args.omp_wait_policy,
               "stream": {str(p["threads"]): p["stream"] for p in parts if p.get("stream")},
               "workers": [{k: p.get(k) for k in keys} for p in parts],
               "checks": [dict(c, threads=p["threads"]) for p in parts for c in p["checks"]],
               "rows": rows}
    payload["meta"]["load_average_end"] = load_average()
    if not args.no_save:
        print(f"wrote {write_json(args.name, payload, args.out_dir)}")
    return 0 if payload["ok"] else 1
