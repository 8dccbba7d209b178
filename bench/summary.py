"""The printed summary of ``bench/ascent_step.py`` and the issue-15 targets it checks.

Targets (2 threads and every other thread count measured): one ascent step of ``pydevis[cpp]``
at least ``SPEEDUP`` × faster than torch eager autograd, torch in the better of its wait
policies — the *target speedup* of a (net, batch, threads) is the smallest over the policies
of torch / pydevis, each ratio from one interleaved run — and AlexNet (torchvision layout) at
batch 8 at ``PEAK_PCT`` % or more of the GEMM peak measured in the same worker.
"""

from __future__ import annotations

try:
    from . import common as C
except ImportError:  # run as a script
    import common as C  # type: ignore[no-redef]

SPEEDUP = 1.3
PEAK_PCT = 60.0
IMPL = "pydevis[cpp]"


def targets(rows: list[dict]) -> list[dict]:
    """One line per (net, batch, threads): torch and pydevis[cpp] per policy, the target
    speedup (worst policy) and whether the targets are met."""
    lines: dict[tuple, dict] = {}
    for r in rows:
        if r["impl"] not in ("torch", IMPL):
            continue
        key = (r["net"], r["batch"], r["threads"])
        line = lines.setdefault(key, {"net": r["net"], "batch": r["batch"],
                                      "threads": r["threads"], "by_policy": {},
                                      "neighbours": r.get("neighbours", 0)})
        pol = line["by_policy"].setdefault(r["policy"], {})
        pol["torch_ms" if r["impl"] == "torch" else "pydevis_ms"] = r["step_ms"]
        if r["impl"] == IMPL:
            pol["pct_peak"] = r["pct_peak"]
            pol["spread_ms"] = [r["step_min_ms"], r["step_ms"], r["step_max_ms"]]
    out = []
    for line in lines.values():
        pols = {p: v for p, v in line["by_policy"].items() if "torch_ms" in v and "pydevis_ms" in v}
        for v in pols.values():
            v["speedup"] = v["torch_ms"] / v["pydevis_ms"]
        if not pols:
            continue
        line["speedup"] = min(v["speedup"] for v in pols.values())
        line["torch_best_ms"] = min(v["torch_ms"] for v in pols.values())
        line["pct_peak"] = max(v["pct_peak"] for v in pols.values())
        line["met"] = line["speedup"] >= SPEEDUP
        # the peak was measured without the neighbours: no target beside them
        if line["net"] == "alexnet" and line["batch"] == 8 and not line["neighbours"]:
            line["peak_met"] = line["pct_peak"] >= PEAK_PCT
        out.append(line)
    return sorted(out, key=lambda v: (v["net"], v["batch"], v["threads"]))


def print_all(parts: list[dict], rows: list[dict], args) -> None:
    order = getattr(args, "order", "alternate")
    busy = getattr(args, "neighbours", 0)
    beside = f"; {busy} busy process(es) beside the timed steps (--neighbours)" if busy else ""
    print(f"\nOne ascent step (forward + backward to the input, class target); median of "
          f"{args.repeats}, steps {order} (--order){beside}; load average now "
          f"{C.load_average()}")
    for part in parts:
        gm, bw = part["gemm"], part.get("stream") or {}
        print(f"  threads={part['threads']} OMP_WAIT_POLICY={part['policy']}: sgemm "
              f"{gm['n']}^3 OpenBLAS(C++) {C.fmt(gm.get('openblas_gflops'))}, numpy "
              f"{C.fmt(gm.get('numpy_gflops'))}, torch {C.fmt(gm.get('torch_gflops'))} GFLOP/s; "
              f"triad {C.fmt(bw.get('triad_gbs'))} GB/s; load {part['load_before']} -> "
              f"{part['load_after']}; max RSS {part['max_rss_mb']:.0f} MB; allocator "
              f"{part.get('allocator', 'default')} (torch and pydevis alike)")
    print(C.table(rows, ["net", "batch", "threads", "policy", "impl", "step_min_ms", "step_ms",
                         "step_max_ms", "step_swing", "preempted", "fwd_ms", "bwd_ms",
                         "fwd_plain_ms", "speedup", "gflops", "pct_peak"],
                  ["net", "batch", "thr", "policy", "impl", "min ms", "median ms", "max ms",
                   "max/min", "preempt", "fwd ms", "bwd ms", "ORT plain ms", "torch/it",
                   "GFLOP/s", "% peak"]))
    print(f"\nTargets: {IMPL} >= {SPEEDUP}x torch (worst policy), AlexNet b8 >= {PEAK_PCT:.0f} % "
          "of the GEMM peak")
    lines = []
    for t in targets(rows):
        cells = {"net": t["net"], "batch": t["batch"], "threads": t["threads"],
                 "speedup": t["speedup"], "pct_peak": t["pct_peak"],
                 "met": "yes" if t["met"] else "NO"}
        for pol, v in sorted(t["by_policy"].items()):
            cells[f"{pol}"] = (f"{C.fmt(v['torch_ms'])}/{C.fmt(v['pydevis_ms'])} = "
                               f"{C.fmt(v['speedup'])}")
        if "peak_met" in t:
            cells["met"] += ", peak " + ("yes" if t["peak_met"] else "NO")
        lines.append(cells)
    if getattr(args, "scaling", False):
        print("\nScaling (pydevis[cpp] and torch, interleaved):")
        print(scaling_table(rows))
    pols = sorted({p for t in targets(rows) for p in t["by_policy"]})
    print(C.table(lines, ["net", "batch", "threads", *pols, "speedup", "pct_peak", "met"],
                  ["net", "batch", "thr", *[f"{p}: torch/pydevis ms" for p in pols],
                   "speedup", "% peak", "met"]))


def scaling_table(rows: list[dict]) -> str:
    """``--scaling``: per net, threads and batch, torch and pydevis[cpp] step ms, ms per image,
    the speedup and the worker's max RSS after that batch (batches run in ascending order)."""
    lines: dict[tuple, dict] = {}
    for r in rows:
        if r["impl"] not in ("torch", IMPL):
            continue
        line = lines.setdefault((r["net"], r["threads"], r["batch"]),
                                {"net": r["net"], "threads": r["threads"], "batch": r["batch"]})
        key = "torch" if r["impl"] == "torch" else "pydevis"
        line[f"{key}_ms"] = r["step_ms"]
        line[f"{key}_per_image"] = r["step_ms"] / r["batch"]
        line["rss_mb"] = max(line.get("rss_mb", 0), r.get("rss_mb") or 0)
        line["checked"] = "yes" if r.get("checked", True) else "no"
    out = []
    for line in lines.values():
        if "torch_ms" in line and "pydevis_ms" in line:
            line["speedup"] = line["torch_ms"] / line["pydevis_ms"]
        out.append(line)
    out.sort(key=lambda v: (v["net"], v["threads"], v["batch"]))
    return C.table(out, ["net", "threads", "batch", "torch_ms", "pydevis_ms", "torch_per_image",
                         "pydevis_per_image", "speedup", "rss_mb", "checked"],
                   ["net", "thr", "batch", "torch ms", "pydevis ms", "torch ms/img",
                    "pydevis ms/img", "speedup", "max RSS MB", "checked"])
