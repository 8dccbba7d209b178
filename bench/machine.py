"""What the figures are measured against: the machine and its two yardsticks.

- :func:`machine_info`: CPU model, ISA flags (AVX2, AVX-512, AMX...), cores, cgroup quota, load;
- :func:`versions`: the libraries the figures depend on;
- :func:`gemm_peak`: float32 C = A·B rate at a thread count — through the OpenBLAS the C++
  backend calls (scipy-openblas32), numpy's and torch's; the yardstick of GEMM-bound layers;
- :func:`stream`: STREAM-like copy and triad bandwidth (numba, parallel over the same thread
  count); the yardstick of memory-bound layers (depthwise convs, pointwise ops).
"""

from __future__ import annotations

import ctypes
import glob
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_tile",
         "amx_bf16", "amx_int8")


def _best_ms(fn, repeats: int) -> float:
    """Least wall time of ``repeats`` calls after two warm-up calls: a peak is the best the
    machine does (a median of 3 after one warm-up read 233-404 GFLOP/s on one quiet machine); a
    bandwidth likewise."""
    fn()
    fn()
    times = []
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(min(times))


# ---- GEMM ---------------------------------------------------------------------------------------
def _scipy_openblas() -> ctypes.CDLL | None:
    """scipy-openblas32, the BLAS the C++ backend links (None when the wheel is missing)."""
    try:
        import scipy_openblas32
    except ImportError:
        return None
    names = sorted(glob.glob(os.path.join(scipy_openblas32.get_lib_dir(), "*openblas*.so*")))
    return ctypes.CDLL(names[0]) if names else None


def _cblas_sgemm_ms(lib: ctypes.CDLL, a, b, c, threads: int, repeats: int) -> float:
    n = a.shape[0]
    lib.scipy_openblas_set_num_threads(ctypes.c_int(threads))
    fn = lib.scipy_cblas_sgemm
    fp = ctypes.POINTER(ctypes.c_float)
    fn.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, fp, ctypes.c_int, fp, ctypes.c_int,
                                        ctypes.c_float, fp, ctypes.c_int]
    pa, pb, pc = (x.ctypes.data_as(fp) for x in (a, b, c))
    return _best_ms(lambda: fn(101, 111, 111, n, n, n, 1.0, pa, n, pb, n, 0.0, pc, n), repeats)


def gemm_peak(threads: int, n: int = 2048, repeats: int = 3) -> dict:
    """float32 C = A·B (n³) rate at ``threads`` threads: scipy-openblas32's ``cblas_sgemm``
    (the C++ backend's BLAS), numpy's ``@`` (its own OpenBLAS) and torch's ``mm`` if present.

    ``peak_gflops`` is the largest: the rate a GEMM-bound layer could approach here, now.
    """
    try:
        from .common import set_threads
    except ImportError:  # run as a script
        from common import set_threads  # type: ignore[no-redef]

    set_threads(threads)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    flops = 2.0 * n ** 3
    out: dict = {"n": n, "threads": threads}
    t = _best_ms(lambda: a @ b, repeats)
    out.update(numpy_ms=t, numpy_gflops=flops / (t * 1e6))
    lib = _scipy_openblas()
    if lib is not None:
        c = np.empty_like(a)
        t = _cblas_sgemm_ms(lib, a, b, c, threads, repeats)
        out.update(openblas_ms=t, openblas_gflops=flops / (t * 1e6))
    try:
        import torch

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        t = _best_ms(lambda: torch.mm(ta, tb), repeats)
        out.update(torch_ms=t, torch_gflops=flops / (t * 1e6))
    except ImportError:
        out["torch_gflops"] = None
    out["peak_gflops"] = max(v for k, v in out.items() if k.endswith("_gflops") and v)
    return out


# ---- memory bandwidth ---------------------------------------------------------------------------
def stream(threads: int, n: int = 1 << 24, repeats: int = 5) -> dict:
    """STREAM-like bandwidth at ``threads`` threads, GB/s: copy ``a = b`` (2 arrays moved) and
    triad ``a = b + s·c`` (3 arrays), float32, ``n`` elements each (64 MiB at 2^24: well past
    the caches). numba parallel loops; None when numba is missing."""
    try:
        import numba
    except ImportError:
        return {"n": n, "threads": threads, "copy_gbs": None, "triad_gbs": None}

    @numba.njit(parallel=True, fastmath=True, cache=False)
    def copy(a, b):
        for i in numba.prange(a.shape[0]):
            a[i] = b[i]

    @numba.njit(parallel=True, fastmath=True, cache=False)
    def triad(a, b, c, s):
        for i in numba.prange(a.shape[0]):
            a[i] = b[i] + s * c[i]

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    a, b, c = (np.full(n, v, np.float32) for v in (0.0, 1.0, 2.0))
    elt = 4 * n / 1e9
    t_copy = _best_ms(lambda: copy(a, b), repeats)
    t_triad = _best_ms(lambda: triad(a, b, c, np.float32(3.0)), repeats)
    return {"n": n, "threads": threads, "copy_gbs": 2 * elt / (t_copy / 1e3),
            "triad_gbs": 3 * elt / (t_triad / 1e3)}


# ---- machine, versions --------------------------------------------------------------------------
def _cpuinfo(key: str) -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The ISA flags among :data:`FLAGS` this CPU reports (AVX-512, AMX...)."""
    have = set((_cpuinfo("flags") or "").split())
    return [f for f in FLAGS if f in have]


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict:
    """CPU model and flags, logical cores, cores this process may use, load average, OS."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    quota = None
    try:
        quota = Path("/sys/fs/cgroup/cpu.max").read_text().strip()
    except OSError:
        pass
    return {"cpu": cpu_model(), "cpu_flags": cpu_flags(), "logical_cores": os.cpu_count(),
            "usable_cores": usable, "cgroup_cpu_max": quota, "load_average": load_average(),
            "os": platform.platform(), "python": platform.python_version()}


def versions() -> dict:
    """Versions of the libraries the figures depend on (None: not installed)."""
    out: dict[str, str | None] = {}
    for name in ("numpy", "onnx", "onnxruntime", "torch", "numba", "pydevis", "onnx2torch"):
        try:
            mod = __import__(name)
            out[name] = getattr(mod, "__version__", "?")
        except Exception:
            out[name] = None
    try:
        import pydevis

        out["pydevis_path"] = str(Path(pydevis.__file__).resolve().parent)
    except Exception:
        pass
    try:
        out["pydevis_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
            timeout=5).stdout.strip() or None
    except Exception:
        out["pydevis_commit"] = None
    try:
        import numba

        out["numba_threading_layer"] = numba.config.THREADING_LAYER
    except Exception:
        pass
    return out
