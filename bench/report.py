"""Markdown tables from saved results: ``python bench/report.py [bench/results/NAME.json ...]``.

Used to paste measured figures into ``bench/README.md``; prints the machine, versions, date and
load average recorded with each file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

try:
    from . import common as C
except ImportError:  # run as a script
    import common as C  # type: ignore[no-redef]


def _md(rows, columns, headers) -> str:
    numeric = [all(isinstance(r.get(c), (int, float)) or r.get(c) is None for r in rows)
               for c in columns]
    out = ["| " + " | ".join(headers) + " |",
           "|" + "|".join("---:" if num else "---" for num in numeric) + "|"]
    for r in rows:
        out.append("| " + " | ".join(C.fmt(r.get(c)) for c in columns) + " |")
    return "\n".join(out)


def header(d: dict) -> str:
    m, v = d["meta"]["machine"], d["meta"]["versions"]
    gem = "; ".join(f"{t} thread(s): numpy sgemm {g['numpy_gflops']:.0f}, torch "
                    f"{C.fmt(g.get('torch_gflops'))} GFLOP/s" for t, g in d["gemm"].items())
    loads = "; ".join(f"threads={w['threads']}: {w['load_before']} -> {w['load_after']}"
                      for w in d["workers"])
    return (f"{d['benchmark']}: {d['meta']['date']}, {m['cpu']} ({', '.join(m['cpu_flags'])}), "
            f"{m['usable_cores']} usable cores; numpy {v['numpy']}, onnxruntime "
            f"{v['onnxruntime']}, torch {v['torch']}, numba {v['numba']}, pydevis "
            f"{v['pydevis']} ({v.get('pydevis_commit')} + working tree); OMP_WAIT_POLICY "
            f"{d.get('omp_wait_policy', '?')}; median of {d['repeats']}.\n"
            f"GEMM peak: {gem}.\nLoad average (1, 5, 15 min) before -> after: {loads}.")


def ascent_table(d: dict) -> str:
    rows = sorted(d["rows"], key=lambda r: (r["net"], r["batch"], r["threads"]))
    return _md(rows, ["net", "batch", "threads", "impl", "step_ms", "fwd_ms", "bwd_ms",
                      "fwd_plain_ms", "x_torch", "gflop", "gflops", "pct_peak"],
               ["net", "batch", "thr", "impl", "step ms", "fwd ms", "bwd ms", "ORT plain ms",
                "× torch", "GFLOP", "GFLOP/s", "% peak"])


def ascent_pivot(d: dict) -> str:
    """One line per (net, batch, threads): torch, then each pydevis backend, side by side."""
    lines: dict[tuple, dict] = {}
    for r in d["rows"]:
        lines.setdefault((r["net"], r["batch"], r["threads"]), {})[r["impl"]] = r
    backends = sorted({i for v in lines.values() for i in v if i.startswith("pydevis[")})
    heads = ["net", "batch", "thr", "GFLOP", "torch step (fwd + bwd) ms",
             "ORT fwd ms (plain)"]
    for b in backends:
        heads += [f"{b} step ms (× torch)", f"{b} bwd ms", f"{b} % peak"]
    out = ["| " + " | ".join(heads) + " |", "|---|" + "---:|" * (len(heads) - 1)]
    for (net, batch, thr), v in sorted(lines.items()):
        t = v.get("torch", {})
        first = v[backends[0]] if backends and backends[0] in v else {}
        cells = [net, str(batch), str(thr), C.fmt(t.get("gflop") or first.get("gflop")),
                 f"{C.fmt(t.get('step_ms'))} ({C.fmt(t.get('fwd_ms'))} + "
                 f"{C.fmt(t.get('bwd_ms'))})",
                 f"{C.fmt(first.get('fwd_ms'))} ({C.fmt(first.get('fwd_plain_ms'))})"]
        for b in backends:
            r = v.get(b, {})
            cells += [f"{C.fmt(r.get('step_ms'))} ({C.fmt(r.get('x_torch'))})",
                      C.fmt(r.get("bwd_ms")), C.fmt(r.get("pct_peak"))]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def kernels_table(d: dict) -> str:
    return _md(d["rows"], ["kernel", "case", "threads", "impl", "ms", "gflops", "pct_peak",
                           "x_ref", "note"],
               ["kernel", "case", "thr", "impl", "ms", "GFLOP/s", "% peak", "× ref", "note"])


def kernels_pivot(d: dict) -> str:
    """One line per (kernel, case, threads): the reference(s) and each backend side by side;
    ``(n%)`` is the percentage of the GEMM peak (conv), ``*`` marks a row with a note."""
    backends = [b for b in ("cpp", "numba", "cuda") if any(r["impl"] == b for r in d["rows"])]
    lines: dict[tuple, dict] = {}
    for r in d["rows"]:
        key = (r["kernel"], r["case"], r["threads"])
        line = lines.setdefault(key, {"kernel": r["kernel"], "case": r["case"],
                                      "threads": str(r["threads"]), "ref": []})
        val = C.fmt(r["ms"])
        if r.get("pct_peak") is not None:
            val += f" ({r['pct_peak']:.0f}%)"
        if r.get("note"):
            val += " *"
        if r["impl"] in backends:
            line[r["impl"]] = val
        else:
            line["ref"].append(f"{r['impl']} {val}")
    heads = ["kernel", "case", "thr", "reference ms", *[f"{b} ms" for b in backends]]
    out = ["| " + " | ".join(heads) + " |", "|---|---|---:|---|" + "---:|" * len(backends)]
    for v in lines.values():
        cells = [v["kernel"], v["case"], v["threads"], "; ".join(v["ref"]),
                 *[v.get(b, "-") for b in backends]]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/report.py", description=__doc__.split("\n")[0])
    p.add_argument("files", nargs="*", help="result files (default: bench/results/*.json)")
    p.add_argument("--pivot", action="store_true",
                   help="one line per case, implementations side by side")
    args = p.parse_args(argv)
    files = [Path(f) for f in args.files] or sorted(C.RESULTS.glob("*.json"))
    for f in files:
        d = json.loads(f.read_text())
        print(f"### {f.name}\n\n{header(d)}\n")
        if d.get("benchmark") == "ascent_step":
            print(ascent_pivot(d) if args.pivot else ascent_table(d))
        elif d.get("benchmark") == "kernels":
            print(kernels_pivot(d) if args.pivot else kernels_table(d))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
