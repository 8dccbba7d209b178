"""The ``pydevis[ort]`` variant of ``bench/ascent_step.py``: ``pydevis.load(path, backend="ort")``,
whose ``Model.signal`` runs the exported backward graph (``pydevis export``) — the forward and
the gradient as one ONNX Runtime session run — instead of ORT's forward plus pydevis's kernels.

Checked before timing like the kernel backends: its gradient against the float64 torch autograd
gradient replaying ONNX Runtime's decisions (≤ ``TOL`` per row) and against the first kernel
backend's gradient (≤ ``TOL``). Timed in the same round-robin as torch and the kernel backends.
Its row has no separate forward / backward times (one session run does both): ``fwd_ms`` and
``bwd_ms`` are None; ``setup_ms`` is the untimed first call at that batch (at the first batch
of a net it includes the export and the session build); ``providers`` the session's execution
providers (``CPUExecutionProvider``, or CUDA first with ``onnxruntime-gpu`` on a GPU).
"""

from __future__ import annotations

import time

import numpy as np

try:
    from .common import spread
except ImportError:  # run as a script
    from common import spread  # type: ignore[no-redef]

IMPL = "pydevis[ort]"
NAME = "ort"


def wanted(backends_arg) -> bool:
    """Time the ort variant: by default, or when ``--backends`` names ``ort``."""
    return not backends_arg or NAME in backends_arg


def load(path, threads: int):
    """``pydevis.load(path, threads=threads, backend="ort")``."""
    import pydevis

    return pydevis.load(path, threads=threads, backend="ort")


def check(pm_ort, x, cls_list, case: str, grads: dict, check_grad, check_close, tol: float,
          checks: list) -> float:
    """Run (building the session), check and record; return the first call's ms."""
    t0 = time.perf_counter()
    g = pm_ort.signal(x, cls_list, "gradient").grad
    setup_ms = (time.perf_counter() - t0) * 1e3
    checks.append(check_grad(g, f"{case}: gradient {IMPL}"))
    if grads:
        first = next(iter(grads))
        checks.append({"case": case, "what": f"gradient {IMPL} vs pydevis[{first}]",
                       "rel_err": check_close(g, grads[first], tol,
                                              f"{case}: ort vs {first}")})
    return setup_ms


def step(pm_ort, x, cls_list):
    def run():
        return pm_ort.signal(x, cls_list, "gradient")
    return run


def providers(pm_ort) -> list[str]:
    """The execution providers of the class-score gradient session (CPU, or CUDA first)."""
    return list(pm_ort._ort.session(pm_ort.scores, "gradient").get_providers())


def row(base: dict, pm_ort, ts, tt, t_plain, setup_ms: float, flops: float,
        peak: float) -> dict:
    """The JSON row: ``ts`` its timing, ``tt`` torch's (same rounds), ``t_plain`` the plain
    ORT forward of the original model; ``providers``: where the session ran."""
    torch_ms = tt.median_ms
    return dict(base, impl=IMPL, **spread(ts), speedup=torch_ms / ts.median_ms,
                fwd_ms=None,
                fwd_plain_ms=None if t_plain is None else t_plain.median_ms, bwd_ms=None,
                setup_ms=setup_ms,
                providers=providers(pm_ort),
                x_torch=ts.median_ms / torch_ms,
                x_torch_paired=float(np.median(np.divide(ts.times_ms, tt.times_ms))),
                gflops=flops / (ts.median_ms * 1e6),
                pct_peak=100 * flops / (ts.median_ms * 1e6) / peak)
