"""How finely the C++ backward cuts its work for T threads: a loop census and what it implies.

A team of T threads can only go as fast as a loop's items allow: a loop of n equal items runs
ceil(n / T) of them on its busiest member, so it speeds up n / ceil(n / T) times, and a loop
below the pool's work threshold (or code outside any loop) runs on one thread. A machine with
many cores shows the loss only when it is lent; this script measures it on any machine.

One worker process, pinned to **one** core, runs the kernels with a team of T (OMP_NUM_THREADS=T,
PYDEVIS_SPIN_US=0, so that idle members sleep at once and the team's threads share the core):
each loop's wall time is then its whole work, whatever its split. With the loop census on
(``pydevis._C.census_start/stop``, csrc/common/parallel.h) every backward rule of one ascent step
(class target, as ``bench/ascent_step.py``) is timed with the loops it ran. Per rule:

- ``1-core ms``: its time on the one core (all its work);
- ``bound ms``: its time on T cores if nothing but its split limited it: each pooled loop
  ``ms * ceil(n/T) / n``, each serial loop and the time outside loops in full;
- ``speedup``: the ratio, at most T. The walk's own time outside the rules (the sums of
  fan-outs) counts as serial.

It says nothing of memory bandwidth, caches or ONNX Runtime's forward (ORT's own pool); it finds
the kernels that keep cores idle by construction (the 1×1 convs of 64-96 channels that got one
task at batch 8, fixed in ``1b4a4a5``, were such a case).

Usage::

    python bench/scaling_census.py --threads 16 --nets resnet18 mobilenetv2 --batches 1 8
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NETS = ("alexnet", "caffenet", "squeezenet", "resnet18", "mobilenetv2", "vgg16")


def parse(argv):
    p = argparse.ArgumentParser(prog="bench/scaling_census.py", description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=16, help="team size T (default 16)")
    p.add_argument("--nets", nargs="+", default=list(NETS), choices=NETS + ("googlenet", "vgg11"))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--repeats", type=int, default=3, help="timed walks per case (mean)")
    p.add_argument("--onnx-dir", default=None, help="keep the ONNX exports here")
    p.add_argument("--top", type=int, default=8, help="rules listed per case, by time lost")
    p.add_argument("--json", default=None, help="write the figures here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if not 2 <= a.threads <= 256:
        p.error("--threads must be in [2, 256]")
    if any(b < 1 or b > 64 for b in a.batches):
        p.error("--batches must be in [1, 64]")
    if not 1 <= a.repeats <= 100:
        p.error("--repeats must be in [1, 100]")
    return a


def bound(loops, rule_ms: float, threads: int) -> float:
    """The rule's time on ``threads`` cores if only its split limited it (see the module doc)."""
    in_loops = sum(ms for _, _, ms in loops)
    out = max(0.0, rule_ms - in_loops)
    for n, pooled, ms in loops:
        out += ms * math.ceil(n / threads) / n if pooled else ms
    return out


def census_case(pm, x, cls, threads: int, repeats: int) -> dict:
    import op_profile

    from pydevis import _C, kernels
    from pydevis.backward import engine
    from pydevis.backward.registry import Rule

    plan, cx, seed = op_profile.walk_setup(pm, x, cls)
    rec: dict[int, dict] = {}
    outputs: dict[int, list] = {}  # each rule's result in an untimed walk, for the replay below
    recording = [False]  # kept results hold memory that the timed walks would otherwise reuse
    steps, replay = [], []
    for i, (node, rule) in enumerate(plan.walk):
        def fn(n, c, g, m, rule=rule, i=i):
            if recording[0]:
                outputs[i] = rule(n, c, g, m)
                return outputs[i]
            _C.census_start()
            t0 = time.perf_counter()
            try:
                return rule(n, c, g, m)
            finally:
                ms = (time.perf_counter() - t0) * 1e3
                loops = _C.census_stop()
                r = rec.setdefault(i, {"ms": 0.0, "bound_ms": 0.0, "loops": loops})
                r["ms"] += ms
                r["bound_ms"] += bound(loops, ms, threads)
                r["shape"] = list(g[0].shape)
        steps.append((node, Rule(rule.op_type, fn, rule.needs, rule.broadcast)))
        replay.append((node, Rule(rule.op_type, lambda n, c, g, m, i=i: outputs[i], rule.needs,
                                  rule.broadcast)))
    timed = dataclasses.replace(plan, walk=tuple(steps))
    sums = {"ms": 0.0, "bound_ms": 0.0, "loops": []}  # the walk's own sums of fan-outs
    add = kernels.add

    def timed_add(a, b, **kw):
        _C.census_start()
        t0 = time.perf_counter()
        try:
            return add(a, b, **kw)
        finally:
            ms = (time.perf_counter() - t0) * 1e3
            loops = _C.census_stop()
            sums["ms"] += ms
            sums["bound_ms"] += bound(loops, ms, threads)
            sums["loops"] += loops

    kernels.add = timed_add
    try:
        for k in range(repeats + 1):
            if k == 1:
                rec.clear()
                sums.update(ms=0.0, bound_ms=0.0, loops=[])
            engine.run(timed, cx, seed, pm.data, pm.graph.input_name, "gradient")
    finally:
        kernels.add = add
    walks = []  # the walk's own time: without the wrappers, whose bookkeeping is not the walk's
    for _ in range(repeats):
        t0 = time.perf_counter()
        engine.run(plan, cx, seed, pm.data, pm.graph.input_name, "gradient")
        walks.append((time.perf_counter() - t0) * 1e3)
    walk_ms = sum(walks) / repeats
    recording[0] = True  # one more walk, untimed, records the rules' results (held from now on)
    engine.run(timed, cx, seed, pm.data, pm.graph.input_name, "gradient")
    # the walk's own Python (serial): a replay whose rules return their recorded results at once
    # and whose sums return their first operand
    fast = dataclasses.replace(plan, walk=tuple(replay))
    kernels.add = lambda a, b, **kw: a
    try:
        replays = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            engine.run(fast, cx, seed, pm.data, pm.graph.input_name, "gradient")
            replays.append((time.perf_counter() - t0) * 1e3)
    finally:
        kernels.add = add
    other = min(replays)
    rules = []
    for i, r in rec.items():
        node = plan.walk[i][0]
        ms, b = r["ms"] / repeats, r["bound_ms"] / repeats
        rules.append({"node": node.name, "op": node.op_type, "grad_out": r["shape"], "ms": ms,
                      "bound_ms": b, "lost_ms": b - ms / threads,
                      "loops": [[n, p] for n, p, _ in r["loops"]]})
    sums_ms, sums_bound = sums["ms"] / repeats, sums["bound_ms"] / repeats
    total_bound = sum(r["bound_ms"] for r in rules) + sums_bound + other
    rules.sort(key=lambda r: -r["lost_ms"])
    return {"walk_ms": walk_ms, "sums_ms": sums_ms, "sums_bound_ms": sums_bound,
            "other_ms": other, "bound_ms": total_bound,
            "speedup": walk_ms / total_bound if total_bound else float("nan"), "rules": rules}


def worker(args) -> int:
    sys.path.insert(0, str(HERE))
    import architectures as N
    import numpy as np

    import pydevis

    out = {"threads": args.threads, "cpu": os.sched_getaffinity(0).copy().pop(), "cases": []}
    onnx_dir = Path(args.onnx_dir) if args.onnx_dir else Path(os.environ["CENSUS_TMP"])
    for name in args.nets:
        size = N.input_size(name, False)
        path = onnx_dir / f"{name}.onnx"
        if not path.is_file():
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            N.export(N.build(name, False), tmp, size)
            os.replace(tmp, path)
        pm = pydevis.load(path, threads=args.threads, backend="pydevis")
        for batch in args.batches:
            rng = np.random.default_rng(0)
            x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
            cls = [int(c) for c in rng.integers(0, 1000, batch)]
            case = census_case(pm, x, cls, args.threads, args.repeats)
            case.update(net=name, batch=batch)
            out["cases"].append(case)
            report(case, args.threads, args.top)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


def report(case, threads: int, top: int) -> None:
    print(f"\n{case['net']} b{case['batch']}: backward {case['walk_ms']:.1f} ms on one core; "
          f"bound on {threads} cores {case['bound_ms']:.2f} ms = {case['speedup']:.1f}x; "
          f"sums of fan-outs {case['sums_ms']:.2f} ms -> {case['sums_bound_ms']:.2f}, "
          f"the walk's Python {case['other_ms']:.2f} ms (serial)")
    print(f"  {'rule':<12} {'grad_out':<22} {'1-core ms':>9} {'bound ms':>9} {'speedup':>7}  loops "
          f"(items, * = serial)")
    for r in case["rules"][:top]:
        loops = " ".join(f"{n}{'' if p else '*'}" for n, p in r["loops"][:8])
        more = " ..." if len(r["loops"]) > 8 else ""
        sp = r["ms"] / r["bound_ms"] if r["bound_ms"] else float("nan")
        print(f"  {r['op']:<12} {str(r['grad_out']):<22} {r['ms']:9.2f} {r['bound_ms']:9.2f} "
              f"{sp:7.1f}  {loops}{more}")


def main(argv=None) -> int:
    args = parse(argv)
    if args.worker:
        return worker(args)
    import tempfile

    cpu = min(os.sched_getaffinity(0))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYDEVIS_SPIN_US": "0",
           "OMP_WAIT_POLICY": "PASSIVE"}
    with tempfile.TemporaryDirectory(prefix="pydevis-census-") as tmp:
        env["CENSUS_TMP"] = tmp
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker",
               *[a for a in (argv if argv is not None else sys.argv[1:])]]
        return subprocess.run(cmd, env=env, preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
                              check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
