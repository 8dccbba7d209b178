"""``bench/ascent_step.py --profile``: where one step's time goes, pydevis beside torch.

- pydevis forward: ONNX Runtime's own profiler (``Runner.start_profiling``: a JSON trace with
  each node's kernel time) over the instrumented forward ``signal`` runs, summed per op type
  (the layout reorders ORT inserts around its NCHWc convs show up as ``ReorderInput`` /
  ``ReorderOutput``);
- pydevis backward: each backward rule timed (the plan's rules wrapped), per op type and per
  node, convs with their GFLOP/s against the GEMM peak and depthwise convs with their GB/s
  against the STREAM triad of the same worker; what the walk spends outside the rules;
- torch: ``torch.profiler`` over whole steps, top ops by self CPU time.

:func:`levers` turns the figures into the few lines that say where a speed-up can come from.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np

REPEATS = 3
TOP = 12
CONVS = ("Conv", "Relu+Conv", "Clip+Conv")  # a Relu or Clip fused into the Conv (engine.fuse_relu)


def profile_case(ctx, x, cls_list, torch_step, base, worker) -> dict:
    out = {k: base[k] for k in ("net", "batch", "threads", "policy")}
    out["forward"] = ort_forward(ctx["pm"], x)
    out["backward"] = backward_rules(ctx["pm"], x, cls_list, worker)
    out["torch"] = torch_ops(torch_step)
    out["levers"] = levers(out, worker)
    return out


def ort_forward(pm, x) -> dict:
    """Per-op-type ms of the instrumented forward (mean over ``REPEATS`` runs)."""
    tensor = pm.scores
    with tempfile.TemporaryDirectory(prefix="pydevis-ortprof-") as tmp:
        pm.runner.start_profiling(str(Path(tmp) / "ort"))
        try:
            pm.pullback(x, tensor, "gradient")  # builds the session, warms up
            t0 = time.perf_counter()
            for _ in range(REPEATS):
                pm.pullback(x, tensor, "gradient")
            wall = (time.perf_counter() - t0) * 1e3 / (REPEATS + 1)
        finally:
            files = pm.runner.end_profiling()
        by_op: dict[str, float] = {}
        for f in files:
            for ev in json.loads(Path(f).read_text()):
                if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
                    op = ev.get("args", {}).get("op_name", "?")
                    by_op[op] = by_op.get(op, 0.0) + ev["dur"] / 1e3 / (REPEATS + 1)
    return {"wall_ms": wall, "by_op_ms": dict(sorted(by_op.items(), key=lambda kv: -kv[1]))}


def walk_setup(pm, x, cls_list):
    """(plan, context, seed) of one class-target backward walk: what ``engine.run`` takes, so
    that a bench can wrap the plan's rules and walk it again and again (also
    ``bench/scaling_census.py``)."""
    from pydevis import targets
    from pydevis.backward import engine

    tensor = pm.scores
    plan = pm.plan(tensor)
    values = pm.runner.run(x, plan.values)
    shapes = pm.shapes(plan.shapes + (pm.graph.input_name,), x.shape[0])
    cx = engine.Context(pm.graph, values, shapes, pm.data)
    seed, _ = targets.seed(values[tensor], targets.parse(cls_list, x.shape[0]))
    return plan, cx, seed


def backward_rules(pm, x, cls_list, worker) -> dict:
    """Per-rule ms of the backward walk (mean of ``REPEATS`` walks after one warm-up)."""
    from pydevis.backward import engine
    from pydevis.backward.registry import Rule

    plan, cx, seed = walk_setup(pm, x, cls_list)
    times: dict[int, float] = {}
    info: dict[int, dict] = {}
    steps = []
    for i, (node, rule) in enumerate(plan.walk):
        def fn(n, c, g, m, rule=rule, i=i):
            t0 = time.perf_counter()
            r = rule(n, c, g, m)
            times[i] = times.get(i, 0.0) + time.perf_counter() - t0
            info.setdefault(i, layer_info(n, c, g[0], r[0]))
            return r
        steps.append((node, Rule(rule.op_type, fn, rule.needs, rule.broadcast)))
    timed = dataclasses.replace(plan, walk=tuple(steps))
    walks = []
    for k in range(REPEATS + 1):
        if k == 1:
            times.clear()
        t0 = time.perf_counter()
        engine.run(timed, cx, seed, pm.data, pm.graph.input_name, "gradient")
        walks.append((time.perf_counter() - t0) * 1e3)
    peak, triad = worker["gemm"]["peak_gflops"], (worker.get("stream") or {}).get("triad_gbs")
    nodes = []
    for i, t in times.items():
        ms = t * 1e3 / REPEATS
        d = dict(info[i], op=plan.walk[i][0].op_type, node=plan.walk[i][0].name, ms=ms)
        if d.get("gflop"):
            d["gflops"] = d["gflop"] / ms * 1e3
            d["pct_peak"] = 100 * d["gflops"] / peak
        if d.get("gbytes") and triad:
            d["gbs"] = d["gbytes"] / ms * 1e3
            d["pct_triad"] = 100 * d["gbs"] / triad
        nodes.append(d)
    nodes.sort(key=lambda d: -d["ms"])
    by_op: dict[str, float] = {}
    for d in nodes:
        by_op[d["op"]] = by_op.get(d["op"], 0.0) + d["ms"]
    return {"walk_ms": float(np.median(walks[1:])), "rules_ms": sum(by_op.values()),
            "by_op_ms": dict(sorted(by_op.items(), key=lambda kv: -kv[1])), "top": nodes[:TOP],
            "conv_kinds": conv_kinds(nodes)}


def layer_info(node, ctx, g, gx) -> dict:
    """Shapes, and for a Conv its backward-data GFLOP and (depthwise) the bytes it must move."""
    out: dict = {"grad_out": list(g.shape), "grad_in": None if gx is None else list(gx.shape)}
    if node.op_type not in CONVS or gx is None:
        return out
    w = ctx.value(node.inputs[1])
    group = int(node.attrs.get("group", 1))
    out["weight"] = list(w.shape)
    out["group"] = group
    out["gflop"] = 2.0 * g.size * w.shape[1] * w.shape[2] * w.shape[3] / 1e9
    if w.shape[1] == 1 and group == gx.shape[1] == w.shape[0]:
        out["kind"] = "depthwise"
        # read grad_out once, write grad_in once, and read the fused rectifier's output (the
        # size of grad_in) once: the bytes counted as STREAM counts its triad (no write-allocate)
        fused = node.op_type != "Conv"
        out["gbytes"] = (g.nbytes + gx.nbytes * (2 if fused else 1)) / 1e9
    elif w.shape[2] == w.shape[3] == 1:
        out["kind"] = "1x1"
    else:
        out["kind"] = f"{w.shape[2]}x{w.shape[3]}"
    return out


def conv_kinds(nodes) -> dict:
    kinds: dict[str, dict] = {}
    for d in nodes:
        if d["op"] not in CONVS or "kind" not in d:
            continue
        k = kinds.setdefault(d["kind"], {"ms": 0.0, "gflop": 0.0, "gbytes": 0.0, "layers": 0})
        k["ms"] += d["ms"]
        k["gflop"] += d["gflop"]
        k["gbytes"] += d.get("gbytes") or 0.0
        k["layers"] += 1
    return kinds


def torch_ops(torch_step) -> dict:
    """torch.profiler over ``REPEATS`` steps: top ops by self CPU time, ms per step."""
    from torch.profiler import ProfilerActivity, profile

    torch_step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(REPEATS):
            torch_step()
    ev = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    return {"top": [{"op": e.key, "ms": e.self_cpu_time_total / 1e3 / REPEATS,
                     "calls": e.count // REPEATS} for e in ev[:TOP]],
            "total_ms": sum(e.self_cpu_time_total for e in ev) / 1e3 / REPEATS}


def levers(p: dict, worker: dict) -> list[str]:
    """Plain-language pointers from the figures: what dominates and how far from its yardstick."""
    fwd, bwd = p["forward"], p["backward"]
    peak = worker["gemm"]["peak_gflops"]
    triad = (worker.get("stream") or {}).get("triad_gbs")
    out = []
    reorder = sum(v for k, v in fwd["by_op_ms"].items() if k.startswith("Reorder"))
    if reorder:
        out.append(f"forward: ORT layout reorders {reorder:.1f} ms of {fwd['wall_ms']:.1f} ms")
    for kind, k in sorted(bwd["conv_kinds"].items(), key=lambda kv: -kv[1]["ms"]):
        rate = k["gflop"] / k["ms"] * 1e3
        line = (f"backward conv {kind}: {k['ms']:.1f} ms in {k['layers']} layers, "
                f"{rate:.0f} GFLOP/s = {100 * rate / peak:.0f} % of the GEMM peak")
        if k["gbytes"] and triad:
            gbs = k["gbytes"] / k["ms"] * 1e3
            line += f"; {gbs:.1f} GB/s = {100 * gbs / triad:.0f} % of the triad"
        out.append(line)
    rest = {k: v for k, v in bwd["by_op_ms"].items() if k not in CONVS}
    if rest:
        out.append("backward other rules: " + ", ".join(f"{k} {v:.1f} ms" for k, v in
                                                       list(rest.items())[:5]))
    out.append(f"backward walk outside the rules (engine, sums of fan-outs): "
               f"{bwd['walk_ms'] - bwd['rules_ms']:.1f} ms of {bwd['walk_ms']:.1f} ms")
    return out


def format_profile(p: dict) -> str:
    def ms_list(d: dict, n: int = 8) -> str:
        return ", ".join(f"{k} {v:.1f}" for k, v in list(d.items())[:n])

    lines = [f"\n### profile {p['net']} b{p['batch']} t{p['threads']} {p['policy']}",
             f"pydevis forward (ORT, instrumented) {p['forward']['wall_ms']:.1f} ms; by op (ms): "
             + ms_list(p["forward"]["by_op_ms"]),
             f"pydevis backward {p['backward']['walk_ms']:.1f} ms; by rule (ms): "
             + ms_list(p["backward"]["by_op_ms"]),
             "  top backward nodes:"]
    for d in p["backward"]["top"]:
        extra = ""
        if "pct_peak" in d:
            extra = f" {d['kind']} W{d['weight']} g{d['group']}: {d['pct_peak']:.0f} % peak"
        if "pct_triad" in d:
            extra += f", {d['pct_triad']:.0f} % triad"
        lines.append(f"    {d['ms']:7.2f} ms {d['op']:<10} grad_out {d['grad_out']}{extra}")
    lines.append(f"torch step (profiler, self CPU) {p['torch']['total_ms']:.1f} ms; top ops:")
    lines += [f"    {e['ms']:7.2f} ms {e['op']} x{e['calls']}" for e in p["torch"]["top"]]
    lines.append("levers:")
    lines += [f"  - {s}" for s in p["levers"]]
    return "\n".join(lines)
