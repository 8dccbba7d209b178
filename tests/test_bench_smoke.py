"""Smoke test of the benchmark scripts in ``bench/``: each ``main(["--quick", ...])`` runs (tiny
shapes, one timed run, one worker subprocess at one thread), passes its own correctness checks and
writes its JSON with the expected keys. No timing is compared with anything."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.torch


def _bench(name: str):
    """``bench.NAME`` (the module ``pydevis bench`` calls ``main(argv)`` of)."""
    pytest.importorskip("torch")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"bench.{name}")


def _run(name: str, tmp_path: Path, *extra: str) -> dict:
    mod = _bench(name)
    rc = mod.main(["--quick", "--threads", "1", "--out-dir", str(tmp_path), "--name", name,
                   *extra])
    path = tmp_path / f"{name}.json"
    assert path.is_file(), f"{name}: no JSON written"
    data = json.loads(path.read_text())
    assert rc == 0, f"{name}: exit code {rc}, errors {data.get('errors')}"
    return data


def _common_keys(data: dict, name: str) -> None:
    assert data["benchmark"] == name
    assert data["ok"] is True and data["errors"] == []
    assert data["quick"] is True
    meta = data["meta"]
    for key in ("date", "argv", "machine", "versions", "backends"):
        assert key in meta
    for key in ("cpu", "logical_cores", "usable_cores", "load_average"):
        assert key in meta["machine"]
    for lib in ("numpy", "onnxruntime", "torch", "numba", "pydevis"):
        assert lib in meta["versions"]
    assert meta["versions"]["pydevis"]
    assert set(data["gemm"]) == {"1"}
    gemm = data["gemm"]["1"]
    assert gemm["threads"] == 1 and gemm["peak_gflops"] > 0
    assert [w["threads"] for w in data["workers"]] == [1]
    assert data["workers"][0]["env"]["OMP_NUM_THREADS"] == "1"
    assert data["checks"], "no correctness check was recorded"
    asserted = [c for c in data["checks"] if c.get("asserted", True)]
    assert asserted and all(c["rel_err"] <= data["tolerance"] for c in asserted)


def test_kernels_quick(tmp_path):
    data = _run("kernels", tmp_path)
    _common_keys(data, "kernels")
    rows = data["rows"]
    kernels = {r["kernel"].split()[0] for r in rows}
    assert {"conv2d_backward_data", "linear_backward_data", "max_pool2d_backward", "lrn_backward",
            "rectifier_backward", "ascent_update", "gaussian_blur", "clip_small_norm",
            "clip_small_contribution", "clamp_channels", "ascent_step"} <= kernels
    for r in rows:
        assert {"kernel", "case", "impl", "threads", "ms", "min_ms", "repeats"} <= set(r)
        assert r["ms"] > 0
    conv = [r for r in rows if r["kernel"] == "conv2d_backward_data"]
    assert {"torch"} <= {r["impl"] for r in conv}
    linear = {r["impl"] for r in rows if r["kernel"] == "linear_backward_data"}
    assert "torch" in linear and ("cpp" not in linear or "cpp 1x1-conv GEMM" in linear)
    assert all("gflops" in r and "pct_peak" in r for r in conv)
    import pydevis.kernels as K

    usable = {b for b, why in K.available().items() if why is None and b != "cuda"}
    assert usable <= {r["impl"] for r in conv}
    assert all("x_ref" in r for r in conv if r["impl"] in usable)


def test_ascent_step_quick(tmp_path):
    data = _run("ascent_step", tmp_path, "--nets", "resnet18", "--batches", "1", "2")
    _common_keys(data, "ascent_step")
    assert data["onnx2torch"] in ("not installed", "installed")
    rows = data["rows"]
    assert {(r["net"], r["batch"]) for r in rows} == {("resnet18", 1), ("resnet18", 2)}
    impls = {r["impl"] for r in rows}
    assert "torch" in impls and any(i.startswith("pydevis[") for i in impls)
    # the exported backward graph in ONNX Runtime (load(..., backend="ort")), beside the kernels
    assert "pydevis[ort]" in impls and impls & {"pydevis[cpp]", "pydevis[numba]"}
    ort_rows = [r for r in rows if r["impl"] == "pydevis[ort]"]
    assert len(ort_rows) == 2
    assert all("CPUExecutionProvider" in r["providers"] and r["setup_ms"] > 0
               and r["x_torch"] > 0 for r in ort_rows)
    vs_kernels = [c for c in data["checks"] if c["what"].startswith("gradient pydevis[ort] vs ")
                  and "autograd" not in c["what"]]
    assert len(vs_kernels) == 2 and all(c["rel_err"] <= data["tolerance"] for c in vs_kernels)
    for r in rows:
        assert {"net", "batch", "threads", "impl", "step_ms", "x_torch", "gflop", "gflops",
                "pct_peak"} <= set(r)
        assert r["gflop"] > 0 and r["step_ms"] > 0
        if r["impl"].startswith("pydevis["):
            assert {"fwd_ms", "bwd_ms", "fwd_plain_ms"} <= set(r)
    grads = [c for c in data["checks"] if c["what"].startswith("gradient pydevis")
             and "torch float64 autograd" in c["what"]]
    assert len(grads) == 2 * len([i for i in impls if i.startswith("pydevis[")])
    assert all("plain_torch" in c for c in grads)


def test_ascent_step_quick_profile_mobilenet(tmp_path):
    """MobileNetV2 (depthwise convs, ReLU6 replayed by the oracle) with ``--profile``: the
    per-op profiles of both steps, the GEMM and STREAM yardsticks and the target lines."""
    data = _run("ascent_step", tmp_path, "--nets", "mobilenetv2", "--batches", "2",
                "--backends", "cpp", "--profile")
    _common_keys(data, "ascent_step")
    assert isinstance(data["meta"]["machine"]["cpu_flags"], list)
    worker = data["workers"][0]
    assert worker["policy"] == "passive" and worker["stream"]["triad_gbs"] > 0
    assert worker["gemm"]["openblas_gflops"] > 0
    [prof] = worker["profiles"]
    assert prof["net"] == "mobilenetv2" and prof["batch"] == 2
    assert prof["forward"]["by_op_ms"] and prof["torch"]["top"]
    kinds = prof["backward"]["conv_kinds"]
    assert {"depthwise", "1x1", "3x3"} <= set(kinds)
    assert "Clip" in prof["backward"]["by_op_ms"]
    assert any("depthwise" in s and "triad" in s for s in prof["levers"])
    # a depthwise conv's bytes: grad_out read, grad_in written and, with the ReLU6 fused into it
    # (every one of MobileNetV2's), the Clip's output read (float32)
    dw = [d for d in prof["backward"]["top"] if d.get("kind") == "depthwise"]
    assert dw and all(d["op"] == "Clip+Conv" for d in dw)
    for d in dw:
        want = 4 * (np.prod(d["grad_out"]) + 2 * np.prod(d["grad_in"])) / 1e9
        assert d["gbytes"] == pytest.approx(want)
    [target] = data["targets"]
    assert (target["net"], target["batch"]) == ("mobilenetv2", 2)
    assert target["speedup"] > 0 and set(target["by_policy"]) == {"passive"}
    for r in data["rows"]:
        assert r["step_min_ms"] <= r["step_ms"] <= r["step_max_ms"]


def test_ascent_step_quick_scaling(tmp_path):
    """``--scaling``: step times only, the worker's RSS per batch, batches above
    ``--check-max-batch`` timed but marked unchecked."""
    data = _run("ascent_step", tmp_path, "--nets", "squeezenet", "--batches", "1", "3",
                "--backends", "cpp", "--scaling", "--check-max-batch", "1", "--neighbours", "1")
    rows = data["rows"]
    assert data["neighbours"] == 1 and all(r["neighbours"] == 1 for r in rows)
    assert all(r["step_swing"] == pytest.approx(r["step_max_ms"] / r["step_min_ms"])
               for r in rows)
    assert {(r["impl"], r["batch"]) for r in rows} >= {("torch", 1), ("pydevis[cpp]", 3)}
    assert all(r["checked"] is (r["batch"] == 1) for r in rows)
    assert all(r["rss_mb"] > 0 and r["fwd_ms"] is None for r in rows)
    checked = {c["case"].split()[1] for c in data["checks"]}
    assert checked == {"b1"}


def test_scaling_census_runs(tmp_path):
    """bench/scaling_census.py end to end on one small net: a census per rule, a bound no larger
    than the one-core walk and no smaller than an even split of it over the team."""
    mod = _bench("scaling_census")
    out = tmp_path / "census.json"
    rc = mod.main(["--threads", "4", "--nets", "squeezenet", "--batches", "2", "--repeats", "1",
                   "--onnx-dir", str(tmp_path), "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["threads"] == 4 and len(data["cases"]) == 1
    case = data["cases"][0]
    assert case["net"] == "squeezenet" and case["batch"] == 2
    assert case["rules"] and all(r["loops"] is not None for r in case["rules"])
    assert any(items > 1 and pooled for r in case["rules"] for items, pooled in r["loops"])
    total = sum(r["ms"] for r in case["rules"]) + case["sums_ms"] + case["other_ms"]
    assert total / 4 <= case["bound_ms"] <= total * 1.0001


def _cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_neighbours_burn_cpu_and_are_reaped():
    """``--neighbours``: the processes run (they use CPU) during the block and are gone after
    it, also when the block raises."""
    common = _bench("common")
    with pytest.raises(RuntimeError, match="inside"):
        with common.neighbours(2) as procs:
            assert len(procs) == 2 and all(p.poll() is None for p in procs)
            before = [_cpu_ticks(p.pid) for p in procs]
            import time

            time.sleep(0.5)
            assert all(_cpu_ticks(p.pid) > b for p, b in zip(procs, before, strict=True))
            raise RuntimeError("inside")
    assert all(p.returncode is not None for p in procs)
    with pytest.raises(ValueError, match="not in 0..64"):
        with common.neighbours(65):
            pass


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_neighbour_exits_when_its_parent_dies(tmp_path):
    """A worker killed mid-timing leaves no neighbour burning: each one exits when its parent
    is gone."""
    import subprocess
    import time

    code = ("import os, sys; sys.path.insert(0, sys.argv[1]); from bench import common\n"
            "with common.neighbours(1) as procs:\n"
            "    print(procs[0].pid, flush=True)\n"
            "    os._exit(0)\n")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True,
                         text=True, timeout=60, check=True)
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return  # gone
        if state in ("Z", "X"):
            return  # exited, not yet reaped by whoever adopted it
        time.sleep(0.1)
    pytest.fail(f"neighbour {pid} still running 20 s after its parent exited")


def test_ascent_step_refuses_a_bad_neighbour_count(capsys):
    mod = _bench("ascent_step")
    for bad in ("-1", "65", "two"):
        with pytest.raises(SystemExit) as exc:
            mod.parse(["--neighbours", bad])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "--neighbours" in err and "0..64" in err
