"""One ascent step — forward + backward to the input for a class target — pydevis vs PyTorch.

The nets (``bench/architectures.py``): AlexNet in torchvision's layout and in CaffeNet's
(grouped convs, LRN), SqueezeNet 1.1, ResNet-18, MobileNetV2 (depthwise convs, ReLU6),
VGG-16, and on request GoogLeNet v1 and VGG-11, at 3×224×224 with random frozen weights,
exported to ONNX. For every net, batch size, thread count and OpenMP wait policy the script

1. checks, before timing (``bench/oracle.py``): pydevis's logits against torch's (≤ 1e-4), and
   each backend's gradient against ``torch.autograd.grad`` of the summed class logits computed
   by a float64 copy of the net that replays ONNX Runtime's forward decisions (rectifier masks,
   max-pool switches): relative error ≤ 1e-4 per row, else the script exits non-zero;
2. times (wall clock; median, min and max of ``--repeats`` after ``--warmup``; torch and the
   pydevis backends round-robin, so that a busy spell hits them alike):
   - ``torch``: eager forward + ``torch.autograd.grad`` (parameters frozen), its forward alone
     under ``no_grad`` and its backward alone (graph retained);
   - ``pydevis[cpp]``, ``pydevis[numba]``: ``Model.signal``; the instrumented ORT forward alone,
     the backward walk alone and ``Model.forward`` (plain ORT scores);
   - ``pydevis[ort]`` (``bench/ort_variant.py``) and ``onnx2torch`` when installed.

Each (thread count, wait policy) runs in its own subprocess. By default two policies:
``OMP_WAIT_POLICY=PASSIVE`` and the runtimes' default (unset); torch is fastest under one or the
other depending on the machine and its load, so the *target speedup* of a row is the smaller of
the two (torch / pydevis, each within its own interleaved run).

GFLOP/s counts conv and linear layers (2·MACs forward + 2·MACs backward-data); ``% peak`` is
against the float32 GEMM rate measured in the same worker (``machine.gemm_peak``: the C++
backend's OpenBLAS, numpy's, torch's). Each worker also measures STREAM copy/triad bandwidth.
``--profile`` adds per-op profiles of both steps (``bench/op_profile.py``).

Usage::

    python bench/ascent_step.py                        # 6 nets, batch 1 and 8, threads 1 and 2
    python bench/ascent_step.py --nets resnet18 --batches 8 --threads 2 --backends cpp
    python bench/ascent_step.py --nets mobilenetv2 --batches 8 --threads 2 --profile
    python bench/ascent_step.py --quick                # two tiny nets at 32x32 (smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
from pathlib import Path

import numpy as np

try:
    from . import architectures as N
    from . import common as C
    from . import op_profile as P
    from . import oracle as Q
    from . import ort_variant as O
    from . import summary as S
except ImportError:  # run as a script
    import architectures as N  # type: ignore[no-redef]
    import common as C  # type: ignore[no-redef]
    import op_profile as P  # type: ignore[no-redef]
    import oracle as Q  # type: ignore[no-redef]
    import ort_variant as O  # type: ignore[no-redef]
    import summary as S  # type: ignore[no-redef]

NAME = "ascent_step"
TOL = Q.TOL
QUICK_NETS = ("alexnet", "resnet18")


def onnx_path(name: str, args, model, size: int) -> Path:
    """The net's ONNX export in ``--onnx-dir`` (written once, shared by the workers)."""
    path = Path(args.onnx_dir) / f"{name}{'-quick' if args.quick else ''}.onnx"
    if not path.is_file():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        N.export(model, tmp, size)
        os.replace(tmp, path)
    return path


def bench_net(name, args, worker, rows, checks):
    import pydevis

    size = N.input_size(name, args.quick)
    model = N.build(name, args.quick)
    path = onnx_path(name, args, model, size)
    threads = worker["threads"]
    pm = pydevis.load(path, threads=threads, backend="pydevis")
    ctx = {"name": name, "model": model, "pm": pm, "size": size, "threads": threads,
           "peak": worker["gemm"]["peak_gflops"], "policy": worker["policy"],
           "backends": C.usable_backends(args.backends),
           "pm_ort": O.load(path, threads) if O.wanted(args.backends) else None,
           "o2t": None}
    if Q.onnx2torch_status() is None:
        import onnx2torch

        ctx["o2t"] = onnx2torch.convert(str(path)).eval()
        for p in ctx["o2t"].parameters():
            p.requires_grad_(False)
    for batch in args.batches:
        bench_batch(ctx, batch, args, rows, checks, worker)


def check_batch(ctx, case, x, args, checks):
    """Every correctness check of one (net, batch), before timing; returns the torch step."""
    import torch

    model, pm = ctx["model"], ctx["pm"]
    xt = torch.from_numpy(x)
    with torch.no_grad():
        logits = model(xt)
    classes = logits.argmax(1)
    cls_list = [int(c) for c in classes]

    def torch_step(model=model):
        xg = xt.clone().requires_grad_(True)
        out = model(xg)
        return torch.autograd.grad(out.gather(1, classes[:, None]).sum(), xg)[0]

    if args.check_max_batch is not None and x.shape[0] > args.check_max_batch:
        ctx["ort_setup_ms"] = None
        return torch_step, cls_list, classes  # --scaling: the large batches are timed only
    ref = torch_step().numpy()
    ref64 = Q.grad64(model, x, classes)
    replay = Q.grad64(model, x, classes, Q.ort_decisions(pm, x))
    checks.append({"case": case, "asserted": False,
                   "what": "torch float32 vs torch float64 (not asserted)",
                   "rel_err": C.rel_err(ref, ref64)})
    checks.append({"case": case, "what": "logits pydevis vs torch",
                   "rel_err": C.check_close(pm.forward(x), logits.numpy(), TOL,
                                            f"{case}: logits")})
    grads = {}
    for b in ctx["backends"]:
        with Q.Backend(b):
            grads[b] = pm.signal(x, cls_list, "gradient").grad
        checks.append(Q.check_grad(grads[b], replay, ref, ref64,
                                   f"{case}: gradient pydevis[{b}]"))
    first = ctx["backends"][0] if ctx["backends"] else None
    for b in ctx["backends"][1:]:
        checks.append({"case": case, "what": f"gradient pydevis[{b}] vs pydevis[{first}]",
                       "rel_err": C.check_close(grads[b], grads[first], TOL,
                                                f"{case}: {b} vs {first}")})
    if ctx["pm_ort"] is not None:
        ctx["ort_setup_ms"] = O.check(ctx["pm_ort"], x, cls_list, case, grads,
                                      lambda g, what: Q.check_grad(g, replay, ref, ref64, what),
                                      C.check_close, TOL, checks)
    if ctx["o2t"] is not None:
        g = torch_step(ctx["o2t"]).numpy()
        checks.append({"case": case, "what": "gradient onnx2torch vs torch float32",
                       "rel_err": C.check_close(g, ref, TOL, f"{case}: onnx2torch")})
    return torch_step, cls_list, classes


def bench_batch(ctx, batch, args, rows, checks, worker):
    """Check, then time, one (net, batch) at this worker's thread count and wait policy."""
    import torch

    name, pm, model = ctx["name"], ctx["pm"], ctx["model"]
    case = f"{name} b{batch} t{ctx['threads']} {ctx['policy']}"
    size = ctx["size"]
    x = np.random.default_rng(batch).standard_normal((batch, 3, size, size), dtype=np.float32)
    torch_step, cls_list, classes = check_batch(ctx, case, x, args, checks)
    xt = torch.from_numpy(x)
    macs = N.count_macs(model, xt)
    flops = 4.0 * macs["total"]  # 2·MACs forward + 2·MACs backward-data
    base = {"net": name, "batch": batch, "threads": ctx["threads"], "policy": ctx["policy"],
            "size": size, "gflop": flops / 1e9, "macs": macs, "neighbours": args.neighbours}

    def pydevis_step(b):
        def step():
            with Q.Backend(b):
                return pm.signal(x, cls_list, "gradient")
        return step

    fns = {"torch": torch_step, **{b: pydevis_step(b) for b in ctx["backends"]}}
    if ctx["pm_ort"] is not None:
        fns[O.NAME] = O.step(ctx["pm_ort"], x, cls_list)
    with C.neighbours(args.neighbours):  # --neighbours: busy processes beside the timed runs
        steps = C.timeit_interleaved(fns, repeats=args.repeats, warmup=args.warmup,
                                     budget_s=args.budget * len(fns),
                                     paired=args.order == "paired")
        parts = None if args.scaling else time_parts(ctx, x, xt, classes, cls_list, args)
        to = timed(args, lambda: torch_step(ctx["o2t"])) if ctx["o2t"] is not None else None
    new = step_rows(ctx, base, steps, parts, flops)
    checked = args.check_max_batch is None or batch <= args.check_max_batch
    for r in new:
        r.update(checked=checked,
                 rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if to is not None:
        new.append(dict(base, impl="onnx2torch", **C.spread(to), x_torch=to.median_ms /
                        steps["torch"].median_ms, gflops=flops / (to.median_ms * 1e6)))
    rows.extend(new)
    C.log(f"[ascent_step] {case} (load {C.load_average()}): " + ", ".join(
        f"{r['impl']} {r['step_ms']:.1f} ms" for r in new))
    if args.profile:
        worker.setdefault("profiles", []).append(
            P.profile_case(ctx, x, cls_list, torch_step, base, worker))


def timed(args, fn):
    return C.timeit(fn, repeats=args.repeats, warmup=args.warmup, budget_s=args.budget)


def time_parts(ctx, x, xt, classes, cls_list, args) -> dict:
    """The parts of each step timed alone: torch's forward and backward, ORT's plain and
    instrumented forwards, each backend's backward walk."""
    import torch

    from pydevis import targets

    model, pm = ctx["model"], ctx["pm"]

    def torch_fwd():
        with torch.no_grad():
            return model(xt)

    out = {"torch_fwd": timed(args, torch_fwd)}
    xg = xt.clone().requires_grad_(True)
    sel = model(xg).gather(1, classes[:, None]).sum()
    out["torch_bwd"] = timed(args, lambda: torch.autograd.grad(sel, xg, retain_graph=True))
    out["plain"] = timed(args, lambda: pm.forward(x))
    tensor = pm.scores
    out["fwd"] = timed(args, lambda: pm.pullback(x, tensor, "gradient"))
    values, walk = pm.pullback(x, tensor, "gradient")
    seed, _ = targets.seed(values[tensor], targets.parse(cls_list, x.shape[0]))
    for b in ctx["backends"]:
        with Q.Backend(b):
            out[f"bwd:{b}"] = timed(args, lambda: walk(seed))
    return out


def step_rows(ctx, base, steps, parts, flops) -> list[dict]:
    """The rows of one (net, batch); ``parts`` None (``--scaling``): the step times only."""
    if parts is None:
        parts = {}
    tt = steps["torch"]

    def ms(key):
        return parts[key].median_ms if key in parts else None

    peak = ctx["peak"]

    def rates(ms):
        return {"gflops": flops / (ms * 1e6), "pct_peak": 100 * flops / (ms * 1e6) / peak}

    rows = [dict(base, impl="torch", **C.spread(tt), fwd_ms=ms("torch_fwd"),
                 bwd_ms=ms("torch_bwd"), x_torch=1.0, speedup=1.0,
                 **rates(tt.median_ms))]
    for b in ctx["backends"]:
        ts = steps[b]
        rows.append(dict(base, impl=f"pydevis[{b}]", **C.spread(ts), fwd_ms=ms("fwd"),
                         fwd_plain_ms=ms("plain"), bwd_ms=ms(f"bwd:{b}"),
                         x_torch=ts.median_ms / tt.median_ms,
                         speedup=tt.median_ms / ts.median_ms,
                         x_torch_paired=float(np.median(np.divide(ts.times_ms, tt.times_ms))),
                         **rates(ts.median_ms)))
    if ctx["pm_ort"] is not None:
        rows.append(O.row(base, ctx["pm_ort"], steps[O.NAME], tt, parts.get("plain"),
                          ctx["ort_setup_ms"], flops, peak))
    return rows


def worker(args) -> int:
    threads = args.threads[0]
    policy = args.omp_wait_policy[0]
    setup = C.set_threads(threads)
    # pydevis.load sets it anyway; set before anything is timed, torch included (one process)
    from pydevis.memory import keep_freed_memory

    kept = keep_freed_memory()
    load0 = C.load_average()
    peak = C.gemm_peak(threads, n=256 if args.quick else 2048, repeats=1 if args.quick else 5)
    bw = C.stream(threads, n=1 << 16 if args.quick else 1 << 24)
    C.log(f"[ascent_step] threads={threads} policy={policy}: sgemm {peak['peak_gflops']:.1f} "
          f"GFLOP/s, triad {C.fmt(bw['triad_gbs'])} GB/s (load {C.load_average()})")
    rows: list[dict] = []
    checks: list[dict] = []
    error = None
    payload = {"threads": threads, "policy": policy, "thread_setup": setup, "gemm": peak,
               "allocator": "keeps freed memory (pydevis.memory)" if kept else "default",
               "stream": bw, "load_before": load0}
    try:
        for name in args.nets:
            bench_net(name, args, payload, rows, checks)
    except C.CheckFailed as exc:
        error = str(exc)
        C.log(f"[ascent_step] CHECK FAILED: {error}")
    payload.update(rows=rows, checks=checks, error=error, load_after=C.load_average(),
                   max_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    Path(args.worker_out).write_text(json.dumps(payload, default=C._json_default))
    return 1 if error else 0


# ---- driver -------------------------------------------------------------------------------------
def _neighbours(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        k = -1
    if not 0 <= k <= C.MAX_NEIGHBOURS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number in 0..{C.MAX_NEIGHBOURS}")
    return k


def parse(argv):
    p = argparse.ArgumentParser(prog="bench/ascent_step.py", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_common_args(p, NAME)
    p.set_defaults(omp_wait_policy=None)
    p.add_argument("--nets", nargs="+", default=None,
                   help=f"nets (default {' '.join(N.NETS)}; also {' '.join(N.EXTRA_NETS)})")
    p.add_argument("--batches", type=int, nargs="+", default=None, help="default 1 8")
    p.add_argument("--budget", type=float, default=20.0,
                   help="seconds of timed runs per figure before stopping early (min 3 runs)")
    p.add_argument("--onnx-dir", default=None, help="keep the ONNX exports here (default: temp)")
    p.add_argument("--scaling", action="store_true",
                   help="step times only (no fwd/bwd parts), with the worker's max RSS after each "
                        "batch; batches above --check-max-batch (default 8 here) are not checked")
    p.add_argument("--check-max-batch", type=int, default=None,
                   help="check the gradients only up to this batch (timing only above it)")
    p.add_argument("--profile", action="store_true",
                   help="per-op profiles of the pydevis and torch steps (bench/op_profile.py)")
    p.add_argument("--neighbours", type=_neighbours, default=0, metavar="K",
                   help=f"K busy-looping processes (0-{C.MAX_NEIGHBOURS}, not pinned) run "
                        "beside the timed steps: the spread of each implementation's step when "
                        "another job shares the cores (default 0)")
    p.add_argument("--order", choices=("paired", "alternate"), default="paired",
                   help="paired (default): each timed step follows an untimed step of the same "
                        "implementation, as in an ascent loop; alternate: the implementations' "
                        "steps strictly alternate, so each step runs in the wake of the other "
                        "library's (torch's spinning OpenMP workers under the default policy)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    if args.quick:
        args.warmup = 0
    args.nets = args.nets or list(QUICK_NETS if args.quick else N.NETS)
    args.batches = args.batches or ([1, 2] if args.quick else [1, 8])
    if args.scaling and args.check_max_batch is None:
        args.check_max_batch = 8
    if args.omp_wait_policy is None:
        args.omp_wait_policy = ["passive"] if args.quick else ["passive", "default"]
    if args.worker_out:
        return worker(args)
    threads = args.threads or ([1] if args.quick else C.default_threads())
    info = C.meta(argv)
    with tempfile.TemporaryDirectory(prefix="pydevis-bench-onnx-") as tmp:
        args.onnx_dir = args.onnx_dir or tmp
        Path(args.onnx_dir).mkdir(parents=True, exist_ok=True)
        fwd = ["--repeats", str(args.repeats), "--warmup", str(args.warmup), "--budget",
               str(args.budget), "--nets", *args.nets, "--batches", *map(str, args.batches),
               "--onnx-dir", str(args.onnx_dir), "--order", args.order,
               "--neighbours", str(args.neighbours)]
        fwd += ["--quick"] * args.quick + ["--profile"] * args.profile
        fwd += ["--scaling"] * args.scaling
        if args.check_max_batch is not None:
            fwd += ["--check-max-batch", str(args.check_max_batch)]
        if args.backends:
            fwd += ["--backends", *args.backends]
        parts = []
        rc = 0
        for policy in args.omp_wait_policy:
            got, code = C.run_workers(Path(__file__), [*fwd, "--omp-wait-policy", policy],
                                      threads, wait_policy=policy)
            parts += got
            rc = rc or code
    rows = [row for part in parts for row in part["rows"]]
    errors = [part["error"] for part in parts if part.get("error")]
    if len(parts) < len(threads) * len(args.omp_wait_policy) and not errors:
        errors.append("a worker produced no result")
    S.print_all(parts, rows, args)
    for part in parts:
        for prof in part.get("profiles") or []:
            print(P.format_profile(prof))
    targets = S.targets(rows)
    return C.finish(NAME, args, parts, rows, errors, rc, info,
                    worker_keys=("max_rss_mb", "gemm", "stream", "profiles"),
                    tolerance=TOL, nets=args.nets, batches=args.batches, targets=targets,
                    order=args.order, neighbours=args.neighbours,
                    onnx2torch=Q.onnx2torch_status() or "installed")


if __name__ == "__main__":
    sys.exit(main())
