"""CPU (pydevis._C) vs GPU (pydevis._cuda) times of every kernel, for tests/gpu/run.sh.

Each case is checked first (the CUDA result against the C++ one: max |Δ| / max |C++| ≤ 1e-4,
bit for bit where the two are specified to agree exactly), then timed: the C++ kernel on numpy
arrays (all cores), the CUDA kernel on device arrays (the result left on the device; each call
returns when the GPU has finished), and the CUDA kernel on numpy arrays (with the copies in and
out). Median of ``--repeats``. Prints the GPU's name and one row per case; exits 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

import pydevis.kernels as K


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (JIT of the first launch, pools, cuBLAS handle)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def cases(rng):
    """(kernel, label, args of the C++ call (numpy), exact): backward kernels at AlexNet/VGG/
    ResNet layer sizes, batch 8, and the ascent kernels on 8x3x224x224."""
    f = np.float32

    def r(*shape):
        return rng.standard_normal(shape).astype(f)

    out = []
    for label, n, c, m, h, k, s, p, g in [("vgg 3x3 256->256 56", 8, 256, 256, 56, 3, 1, 1, 1),
                                          ("alexnet conv2 5x5 g2 27", 8, 96, 256, 27, 5, 1, 2, 2),
                                          ("resnet 3x3/2 128->256 28", 8, 128, 256, 56, 3, 2, 1, 1),
                                          ("1x1 64->256 56", 8, 64, 256, 56, 1, 1, 0, 1),
                                          ("depthwise 3x3 144 56", 8, 144, 144, 56, 3, 1, 1, 144)]:
        ho = (h + 2 * p - k) // s + 1
        out.append(("conv2d_backward_data", label,
                    (r(n, m, ho, ho), r(m, c // g, k, k), (h, h), (s, s), (p, p, p, p), (1, 1), g),
                    False))
    x = np.maximum(r(8, 64, 112, 112), 0)
    out.append(("max_pool2d_backward", "resnet 3x3/2 p1 64x112",
                (r(8, 64, 56, 56), x, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)), True))
    out.append(("avg_pool2d_backward", "3x3/2 p1 64x112",
                (r(8, 64, 56, 56), (8, 64, 112, 112), (3, 3), (2, 2), (1, 1, 1, 1), False), False))
    out.append(("rectifier_backward", "8x64x112x112", (r(8, 64, 112, 112), x, 2, 0.0, np.inf),
                True))
    out.append(("lrn_backward", "alexnet lrn1 96x55",
                (r(8, 96, 55, 55), r(8, 96, 55, 55), 5, 1e-4, 0.75, 1.0), False))
    v, gv = r(8, 3, 224, 224) * 30, r(8, 3, 224, 224)
    eta, lo, hi = np.full(8, 0.5), np.full(3, -120.0), np.full(3, 135.0)
    out += [("ascent_update", "8x3x224x224", (v, gv, eta, 0.01), True),
            ("gaussian_blur", "s=1 8x3x224x224", (v, 1.0), False),
            ("clip_small_norm", "50% 8x3x224x224", (v, 50.0), True),
            ("clip_small_contribution", "90% 8x3x224x224", (v, gv, 90.0), True),
            ("clamp_channels", "8x3x224x224", (v, lo, hi), True)]
    return out


def cases_step(rng):
    return ((rng.standard_normal((8, 3, 224, 224)) * 30).astype(np.float32),
            rng.standard_normal((8, 3, 224, 224)).astype(np.float32))


def _to_device(a, C):
    return C.to_device(a) if isinstance(a, np.ndarray) and a.ndim > 1 else a


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args(argv)
    for name in ("cpp", "cuda"):
        if K.available()[name] is not None:
            print(f"bench_cuda: the {name} backend is unavailable: {K.available()[name]}",
                  file=sys.stderr)
            return 1
    from pydevis import _C
    from pydevis import _cuda as C

    gpu = C.device_name(0)
    print(f"GPU: {gpu}; CUDA runtime {C.runtime_version()}; cuBLAS: {C.has_cublas}; "
          f"C++ threads: {K.get('cpp')._C.has_openmp and 'OpenMP' or 1}")
    rows, failed = [], []
    header = f"{'kernel':<26}{'case':<28}{'C++ ms':>9}{'CUDA dev ms':>13}{'CUDA host ms':>14}"
    print(header + f"{'speed-up':>10}  check")
    for kernel, label, a, exact in cases(np.random.default_rng(0)):
        cpp_fn, cuda_fn = getattr(_C, kernel), getattr(C, kernel)
        want = cpp_fn(*a)
        dev_args = tuple(_to_device(x, C) for x in a)
        got = cuda_fn(*dev_args).to_host()
        scale = max(float(np.abs(want).max()), 1e-30)
        err = float(np.abs(got.astype(np.float64) - want).max()) / scale
        ok = (np.array_equal(got, want, equal_nan=True) if exact else err <= 1e-4)
        if not ok:
            failed.append(f"{kernel} {label}: relative error {err:.3g}"
                          + (" (must be bit for bit)" if exact else ""))
        t_cpp = _median_ms(lambda f=cpp_fn, a=a: f(*a), args.repeats)
        t_dev = _median_ms(lambda f=cuda_fn, d=dev_args: f(*d), args.repeats)
        t_host = _median_ms(lambda f=cuda_fn, a=a: f(*a), args.repeats)
        rows.append(dict(kernel=kernel, case=label, cpp_ms=t_cpp, cuda_device_ms=t_dev,
                         cuda_host_ms=t_host, rel_err=err, exact=exact, ok=ok))
        print(f"{kernel:<26}{label:<28}{t_cpp:>9.3f}{t_dev:>13.3f}{t_host:>14.3f}"
              f"{t_cpp / t_dev:>9.1f}x  {'ok' if ok else 'MISMATCH'} ({err:.1e})")
    # one ascent step on the device-resident state (AscentWorkspace: nothing allocated or
    # copied per step but the step sizes and flags) vs the fused C++ step on numpy arrays
    v, gv = (np.ascontiguousarray(x) for x in cases_step(np.random.default_rng(1)))
    eta, lo, hi = np.full(8, 0.5), np.full(3, -120.0), np.full(3, 135.0)
    ws = C.AscentWorkspace(v.shape, lo, hi)
    ws.image().copy_from(v)
    ws.grad().copy_from(gv)
    active = [True] * v.shape[0]
    ws.step(eta, 0.01, 0.5, 50.0, 90.0, active)
    want = _C.ascent_step(v, gv, eta, 0.01, 0.5, 50.0, 90.0, lo, hi)
    got = ws.image().to_host()
    err = float(np.abs(got.astype(np.float64) - want).max()) / float(np.abs(want).max())
    # the blur rounds differently (kernels.md); a pixel at a clip's threshold may then flip
    ok = err <= 1e-4 or np.mean(got != want) <= 1e-4
    if not ok:
        failed.append(f"AscentWorkspace.step vs C++ ascent_step: relative error {err:.3g}")
    t_cpp = _median_ms(lambda: _C.ascent_step(v, gv, eta, 0.01, 0.5, 50.0, 90.0, lo, hi),
                       args.repeats)
    t_ws = _median_ms(lambda: ws.step(eta, 0.01, 0.5, 50.0, 90.0, active), args.repeats)
    rows.append(dict(kernel="ascent_step", case="workspace 8x3x224x224", cpp_ms=t_cpp,
                     cuda_device_ms=t_ws, rel_err=err, ok=ok))
    print(f"{'ascent_step (workspace)':<26}{'8x3x224x224 blur+clips':<28}{t_cpp:>9.3f}"
          f"{t_ws:>13.3f}{'-':>14}{t_cpp / t_ws:>9.1f}x  {'ok' if ok else 'MISMATCH'}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"gpu": gpu, "rows": rows}, fh, indent=1)
    for line in failed:
        print(f"bench_cuda: MISMATCH {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
