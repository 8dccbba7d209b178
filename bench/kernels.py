"""Per-kernel figures: each pydevis kernel backend against torch (or plain numpy).

For every case, every backend's result is first checked against the reference (relative error
≤ 1e-4 of the largest reference magnitude; a failure exits non-zero), then timed:

- ``conv2d_backward_data`` vs ``torch.nn.grad.conv2d_input`` (dense, strided, grouped, 1×1 and
  depthwise layer shapes of AlexNet, ResNet, VGG, MobileNet at batch 8), with GFLOP/s
  (2·N·M·Ho·Wo·C/g·kH·kW) and the percentage of the float32 GEMM rate measured in the same run;
- ``max_pool2d_backward`` (what the MaxPool rule runs: switches found again from the input) vs
  torch's max-pool backward (``max_pool2d_with_indices_backward``, what autograd runs) and
  torch's forward with indices (the cost torch pays in its forward to have switches);
- ``linear_backward_data`` (the Gemm backward, ``G·W``: AlexNet's three fully connected layers
  at batch 1 and 8, and G half zero or one-hot: the C++ kernel skips W's rows of zero G
  columns) vs torch's ``g @ w`` and the C++ backend's 1×1-conv GEMM (what the front runs above
  ``LINEAR_MAX_N``), interleaved, with W's GB/s at the best time (the rows read) beside the
  STREAM triad bandwidth measured at the same thread count;
- ``lrn_backward`` vs autograd of ``F.local_response_norm`` (backward only, graph retained);
- ``rectifier_backward`` vs ``np.where`` and ``torch.ops.aten.threshold_backward``;
- the ascent update and regularizers (``ascent_update``, ``gaussian_blur``, ``clip_small_norm``,
  ``clip_small_contribution``, ``clamp_channels``) vs plain numpy;
- ``ascent_step`` (the update and the regularizers fused, as the ascent runs them) vs the same
  backend's single kernels one after the other (``<backend> composed``), first checked equal to
  them bit for bit.

Each thread count runs in its own subprocess (``--threads 1 2``). Usage::

    python bench/kernels.py                     # all cases, threads 1 and all cores
    python bench/kernels.py --only conv --threads 2 --repeats 7
    python bench/kernels.py --quick             # tiny shapes, one run (smoke test)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

try:
    from . import common as C
except ImportError:  # run as a script
    import common as C  # type: ignore[no-redef]

NAME = "kernels"
TOL = 1e-4
GROUPS = ("conv", "linear", "maxpool", "lrn", "rectifier", "ascent")

# label, N, C, H, W, M, k, stride, pad, group
CONV = [
    ("alexnet conv1 11x11/4 3->64 224", 8, 3, 224, 224, 64, 11, 4, 2, 1),
    ("alexnet conv2 5x5 g2 96->256 27", 8, 96, 27, 27, 256, 5, 1, 2, 2),
    ("resnet conv1 7x7/2 3->64 224", 8, 3, 224, 224, 64, 7, 2, 3, 1),
    ("resnet 3x3 64->64 56", 8, 64, 56, 56, 64, 3, 1, 1, 1),
    ("resnet 3x3/2 128->256 28", 8, 128, 28, 28, 256, 3, 2, 1, 1),
    ("alexnet(tv) conv2 5x5 64->192 27", 8, 64, 27, 27, 192, 5, 1, 2, 1),
    ("alexnet(tv) 3x3 384->256 13", 8, 384, 13, 13, 256, 3, 1, 1, 1),
    ("vgg conv1_2 3x3 64->64 224", 8, 64, 224, 224, 64, 3, 1, 1, 1),
    ("vgg 3x3 128->128 112", 8, 128, 112, 112, 128, 3, 1, 1, 1),
    ("vgg 3x3 256->256 56", 8, 256, 56, 56, 256, 3, 1, 1, 1),
    ("vgg 3x3 512->512 14", 8, 512, 14, 14, 512, 3, 1, 1, 1),
    ("1x1 256->64 56", 8, 256, 56, 56, 64, 1, 1, 0, 1),
    ("1x1 64->256 56", 8, 64, 56, 56, 256, 1, 1, 0, 1),
    ("depthwise 3x3 144 56", 8, 144, 56, 56, 144, 3, 1, 1, 144),
    ("depthwise 3x3/2 96 112", 8, 96, 112, 112, 96, 3, 2, 1, 96),
]
CONV_QUICK = [("3x3 4->6 9", 1, 4, 9, 9, 6, 3, 1, 1, 1),
              ("depthwise 3x3/2 4 9", 1, 4, 9, 9, 4, 3, 2, 1, 4)]
# label, N, M, K, G: grad_in (N, K) = G (N, M) · W (M, K); G dense, "relu" (half its entries
# zero, as past a ReLU) or "onehot" (the class seed at the logits): the kernel skips W's rows
# whose G column is zero
LINEAR = [(f"alexnet fc{i} {m}x{k} N={n}", n, m, k, "dense") for n in (1, 8)
          for i, m, k in ((6, 4096, 9216), (7, 4096, 4096), (8, 1000, 4096))] + [
    ("alexnet fc6 4096x9216 N=1 G 50% zero", 1, 4096, 9216, "relu"),
    ("alexnet fc7 4096x4096 N=1 G 50% zero", 1, 4096, 4096, "relu"),
    ("alexnet fc8 1000x4096 N=1 G one-hot", 1, 1000, 4096, "onehot"),
    ("alexnet fc8 1000x4096 N=8 G one-hot", 8, 1000, 4096, "onehot")]
LINEAR_QUICK = [("fc 7x37 N=3", 3, 7, 37, "dense"), ("fc 7x37 N=3 G 50% zero", 3, 7, 37, "relu")]
# label, N, C, H, W, k, stride, pad
POOL = [("resnet 3x3/2 p1 64x112", 8, 64, 112, 112, 3, 2, 1),
        ("alexnet 3x3/2 96x55", 8, 96, 55, 55, 3, 2, 0)] + [
    (f"vgg 2x2/2 {c}x{h} N={n}", n, c, h, h, 2, 2, 0) for n in (1, 8)
    for c, h in ((64, 224), (128, 112), (256, 56), (512, 28), (512, 14))]
POOL_QUICK = [("3x3/2 p1 3x9", 1, 3, 9, 9, 3, 2, 1), ("2x2/2 3x8", 1, 3, 8, 8, 2, 2, 0)]
# label, N, C, H, W, size, alpha, beta, bias
LRN = [("alexnet lrn1 96x55", 8, 96, 55, 55, 5, 1e-4, 0.75, 1.0),
       ("alexnet lrn2 256x27", 8, 256, 27, 27, 5, 1e-4, 0.75, 1.0),
       ("googlenet lrn 192x56", 8, 192, 56, 56, 5, 1e-4, 0.75, 1.0)]
LRN_QUICK = [("5 6x7", 1, 6, 7, 7, 5, 1e-4, 0.75, 1.0)]
RECT = [(8, 64, 112, 112), (8, 512, 14, 14), (1, 64, 56, 56), (5, 8, 64, 64), (1, 16, 8, 8)]
RECT_QUICK = [(1, 4, 5, 5)]
ASCENT = [(8, 3, 224, 224), (1, 3, 224, 224)]
ASCENT_QUICK = [(2, 3, 12, 10)]
# kernel, blur_sigma, norm_pct, contrib_pct: Yosinski et al.'s preset 1 on a blur step, preset 4
ASCENT_STEPS = [("ascent_step blur0.5+norm50%", 0.5, 50.0, 0.0),
                ("ascent_step contribution90%", 0.0, 0.0, 90.0)]


def parse(argv):
    p = argparse.ArgumentParser(prog="bench/kernels.py", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_common_args(p, NAME)
    p.add_argument("--only", nargs="+", choices=GROUPS, default=list(GROUPS),
                   help="which kernel groups")
    p.add_argument("--budget", type=float, default=3.0,
                   help="seconds of timed runs per figure before stopping early (min 3 runs)")
    return p.parse_args(argv)


# ---- one thread count ---------------------------------------------------------------------------
class Runner:
    def __init__(self, args, threads: int, peak: float):
        import pydevis.kernels as K

        self.K = K
        self.args = args
        self.threads = threads
        self.peak = peak
        self.rows: list[dict] = []
        self.checks: list[dict] = []
        self.mods = {b: K.get(b) for b in C.usable_backends(args.backends)}
        self.missing: set[tuple[str, str]] = set()  # (kernel, backend) not implemented

    def time(self, fn):
        return C.timeit(fn, repeats=self.args.repeats, warmup=self.args.warmup,
                        budget_s=self.args.budget)

    def check(self, kernel, case, impl, actual, expected):
        err = C.check_close(actual, expected, TOL, f"{kernel} [{case}] {impl}")
        self.checks.append({"kernel": kernel, "case": case, "impl": impl, "rel_err": err})

    def record(self, kernel, case, impl, t, ref_ms=None, flops=None, ref=None, note=None):
        row = {"kernel": kernel, "case": case, "impl": impl, "threads": self.threads,
               "ms": t.median_ms, "min_ms": t.min_ms, "repeats": t.repeats}
        if flops:
            row["gflops"] = flops / (t.median_ms * 1e6)
            row["pct_peak"] = 100.0 * row["gflops"] / self.peak
        if ref_ms:
            row["x_ref"] = t.median_ms / ref_ms
            row["ref"] = ref
        if note:
            row["note"] = note
        self.rows.append(row)

    def compare(self, kernel, case, run_backend, refs: dict, expected, flops=None,
                check_refs=()):
        """Check every backend (and the refs in ``check_refs``) against ``expected``, then time
        the refs (the first is the one ratios are taken against) and the backends."""
        fn_name = kernel.split()[0]
        mods = {b: m for b, m in self.mods.items() if hasattr(m, fn_name)}
        for b in self.mods.keys() - mods.keys():
            self.missing.add((fn_name, b))
        for b, mod in mods.items():
            self.check(kernel, case, b, run_backend(mod), expected)
        for r in check_refs:
            self.check(kernel, case, r, refs[r](), expected)
        ref_name = next(iter(refs))
        ref_ms = None
        for r, fn in refs.items():
            t = self.time(fn)
            ref_ms = ref_ms or t.median_ms
            self.record(kernel, case, r, t, flops=flops)
        for b, mod in mods.items():
            t = self.time(lambda mod=mod: run_backend(mod))
            self.record(kernel, case, b, t, ref_ms, flops, ref_name)

    # ---- groups ---------------------------------------------------------------------------------
    def conv(self, rng):
        import torch

        for label, n, c, h, w, m, k, s, p, g in (CONV_QUICK if self.args.quick else CONV):
            ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
            gy = rng.standard_normal((n, m, ho, wo), dtype=np.float32)
            wt = rng.standard_normal((m, c // g, k, k), dtype=np.float32)
            tg, tw = torch.from_numpy(gy), torch.from_numpy(wt)

            def ref(tg=tg, tw=tw, n=n, c=c, h=h, w=w, s=s, p=p, g=g):
                return torch.nn.grad.conv2d_input((n, c, h, w), tw, tg, stride=s, padding=p,
                                                  groups=g)

            expected = ref().numpy()
            flops = 2.0 * n * m * ho * wo * (c // g) * k * k

            def run(mod, gy=gy, wt=wt, h=h, w=w, s=s, p=p, g=g):
                return self.K.conv2d_backward_data(gy, wt, (h, w), (s, s), (p, p, p, p), (1, 1),
                                                   g, module=mod)

            self.compare("conv2d_backward_data", label, run, {"torch": ref}, expected, flops)

    def linear(self, rng):
        import torch

        kernel = "linear_backward_data"
        quick = self.args.quick
        triad = C.stream(self.threads, n=1 << (10 if quick else 24),
                         repeats=1 if quick else 5)["triad_gbs"]
        mods = {b: m for b, m in self.mods.items() if b in ("cpp", "numba")}
        for label, n, m, k, kind in (LINEAR_QUICK if quick else LINEAR):
            g = linear_grad(rng, n, m, kind)
            w = rng.standard_normal((m, k), dtype=np.float32)
            tg, tw = torch.from_numpy(g), torch.from_numpy(w)
            fns = {"torch": lambda tg=tg, tw=tw: tg @ tw}
            if "cpp" in mods:
                fns["cpp 1x1-conv GEMM"] = lambda g=g, w=w: linear_gemm_path(mods["cpp"], g, w)
            for b, mod in mods.items():
                fns[b] = lambda mod=mod, g=g, w=w: self.K.linear_backward_data(g, w, module=mod)
            expected = g.astype(np.float64) @ w
            for name, fn in fns.items():
                self.check(kernel, label, name, np.asarray(fn()), expected)
            times = C.timeit_interleaved(fns, repeats=self.args.repeats, warmup=self.args.warmup,
                                         budget_s=self.args.budget)
            active = int((g != 0).any(axis=0).sum())  # rows of W the cpp kernel reads
            for name, t in times.items():
                ref = None if name == "torch" else "torch"
                read = w.nbytes * (active / m if name == "cpp" and active < m else 1.0)
                rows = f" ({active}/{m} rows)" if read < w.nbytes else ""
                note = (f"W{rows} {read / (t.min_ms * 1e6):.1f} GB/s at best, "
                        f"triad {C.fmt(triad)}")
                self.record(kernel, label, name, t, ref and times["torch"].median_ms,
                            2.0 * n * m * k, ref, note)

    def maxpool(self, rng):
        import torch
        import torch.nn.functional as F

        for label, n, c, h, w, k, s, p in (POOL_QUICK if self.args.quick else POOL):
            x = torch.from_numpy(rng.standard_normal((n, c, h, w), dtype=np.float32))
            y, idx = F.max_pool2d(x, k, s, p, return_indices=True)
            gy = torch.from_numpy(rng.standard_normal(tuple(y.shape), dtype=np.float32))
            g_np, x_np = gy.numpy(), x.numpy()

            def aten(gy=gy, x=x, idx=idx, k=k, s=s, p=p):
                return torch.ops.aten.max_pool2d_with_indices_backward(
                    gy, x, [k, k], [s, s], [p, p], [1, 1], False, idx)

            def fwd_idx(x=x, k=k, s=s, p=p):
                return F.max_pool2d(x, k, s, p, return_indices=True)

            def run_x(mod, g_np=g_np, x_np=x_np, k=k, s=s, p=p):
                return self.K.max_pool2d_backward(g_np, x_np, (k, k), (s, s), (p, p, p, p),
                                                  (1, 1), module=mod)

            self.compare("max_pool2d_backward", label, run_x,
                         {"torch pool-backward": aten, "torch pool-forward with indices": fwd_idx},
                         aten().numpy())
            if label.startswith("vgg"):
                self.maxpool_relu(label, x, gy, k, s, p)

    def maxpool_relu(self, label, x, gy, k, s, p):
        """The fused Relu -> MaxPool backward (VGG's pairs) on a Relu output x, against torch's
        pool backward then threshold_backward."""
        import torch
        import torch.nn.functional as F

        xr = torch.relu(x)
        idx = F.max_pool2d(xr, k, s, p, return_indices=True)[1]

        def aten(gy=gy, xr=xr, idx=idx):
            gi = torch.ops.aten.max_pool2d_with_indices_backward(
                gy, xr, [k, k], [s, s], [p, p], [1, 1], False, idx)
            return torch.ops.aten.threshold_backward(gi, xr, 0.0)

        g_np, x_np = gy.numpy(), xr.numpy()

        def run(mod):
            return self.K.max_pool2d_backward(g_np, x_np, (k, k), (s, s), (p, p, p, p), (1, 1),
                                              rectify="gradient", module=mod)

        self.compare("max_pool2d_backward +relu", label, run,
                     {"torch pool-backward + threshold_backward": aten}, aten().numpy())

    def lrn(self, rng):
        import torch
        import torch.nn.functional as F

        for label, n, c, h, w, size, alpha, beta, bias in (LRN_QUICK if self.args.quick
                                                           else LRN):
            x_np = rng.standard_normal((n, c, h, w), dtype=np.float32)
            g_np = rng.standard_normal((n, c, h, w), dtype=np.float32)
            x = torch.from_numpy(x_np).requires_grad_(True)
            y = F.local_response_norm(x, size, alpha, beta, bias)
            gy = torch.from_numpy(g_np)

            def ref(y=y, x=x, gy=gy):
                return torch.autograd.grad(y, x, gy, retain_graph=True)[0]

            expected = ref().numpy()

            def run(mod, g_np=g_np, x_np=x_np, size=size, alpha=alpha, beta=beta, bias=bias):
                return self.K.lrn_backward(g_np, x_np, size, alpha, beta, bias, module=mod)

            self.compare("lrn_backward", label, run, {"torch autograd": ref}, expected)

    def rectifier(self, rng):
        import torch

        for shape in (RECT_QUICK if self.args.quick else RECT):
            g = rng.standard_normal(shape, dtype=np.float32)
            y = np.maximum(rng.standard_normal(shape, dtype=np.float32), 0)
            tg, ty = torch.from_numpy(g), torch.from_numpy(y)
            label = "x".join(map(str, shape))

            def npy(g=g, y=y):
                return np.where(y > 0, g, np.float32(0))

            def thr(tg=tg, ty=ty):
                return torch.ops.aten.threshold_backward(tg, ty, 0.0)

            def run(mod, g=g, y=y):
                return self.K.rectifier_backward(g, y, "gradient", module=mod)

            self.compare("rectifier_backward", label, run, {"numpy": npy, "torch": thr},
                         npy(), check_refs=("torch",))

    def ascent(self, rng):
        for shape in (ASCENT_QUICK if self.args.quick else ASCENT):
            n, c = shape[:2]
            label = "x".join(map(str, shape))
            v = (rng.standard_normal(shape) * 40).astype(np.float32)
            g = rng.standard_normal(shape, dtype=np.float32)
            eta = rng.uniform(1, 2, n)
            lo, hi = -np.array([104.0, 117.0, 123.0])[:c], np.array([151.0, 138.0, 132.0])[:c]
            for kernel, ref, run in ascent_cases(self.K, v, g, eta, lo, hi):
                self.compare(kernel, label, run, {"numpy": ref}, ref())
            for kernel, sigma, norm_pct, contrib_pct in ASCENT_STEPS:
                self.ascent_step(kernel, label, (v, g, eta, 1e-4, sigma, norm_pct, contrib_pct,
                                                 lo, hi))

    def ascent_step(self, kernel, case, args):
        """The fused step of each backend that has one against that backend's single kernels
        one after the other (the reference timing, run round-robin with it); the two must be
        equal bit for bit."""
        for b, mod in self.mods.items():
            if not hasattr(mod, "ascent_step"):
                self.missing.add(("ascent_step", b))
                continue
            ref = f"{b} composed"
            fns = {ref: lambda mod=mod: composed_step(self.K, mod, *args),
                   b: lambda mod=mod: self.K.ascent_step(*args, module=mod)}
            fused, want = fns[b](), fns[ref]()
            if not np.array_equal(fused, want):
                raise C.CheckFailed(f"{kernel} [{case}] {b}: differs from {ref}")
            self.check(kernel, case, b, fused, want)
            times = C.timeit_interleaved(fns, repeats=self.args.repeats, warmup=self.args.warmup,
                                         budget_s=self.args.budget)
            self.record(kernel, case, ref, times[ref])
            self.record(kernel, case, b, times[b], times[ref].median_ms, ref=ref)


def linear_grad(rng, n, m, kind):
    """G (n, m) float32: dense normal, half of it zero ("relu") or one 1 per row ("onehot")."""
    if kind == "onehot":
        g = np.zeros((n, m), np.float32)
        g[np.arange(n), rng.integers(0, m, n)] = 1
        return g
    g = rng.standard_normal((n, m), dtype=np.float32)
    if kind == "relu":
        g[rng.random((n, m)) < 0.5] = 0
    return g


def linear_gemm_path(mod, g, w):
    """G·W as the front runs it above LINEAR_MAX_N: a 1×1 transposed conv of G as one image."""
    (n, m), k = g.shape, w.shape[1]
    gi = mod.conv2d_backward_data(np.ascontiguousarray(g.T).reshape(1, m, 1, n),
                                  w.reshape(m, k, 1, 1), (1, n), (1, 1), (0, 0, 0, 0), (1, 1), 1)
    return np.ascontiguousarray(gi.reshape(k, n).T)


def ascent_cases(K, v, g, eta, lo, hi):
    """(kernel, numpy reference, backend call) for the ascent update and the regularizers."""
    return [
        ("ascent_update", lambda: ref_update(v, g, eta, 1e-4),
         lambda mod: K.ascent_update(v, g, eta, 1e-4, module=mod)),
        ("gaussian_blur s=1", lambda: ref_blur(v, 1.0),
         lambda mod: K.gaussian_blur(v, 1.0, module=mod)),
        ("clip_small_norm 50%", lambda: ref_clip(v, norm_score(v), 50),
         lambda mod: K.clip_small_norm(v, 50.0, module=mod)),
        ("clip_small_contribution 90%", lambda: ref_clip(v, contrib_score(v, g), 90),
         lambda mod: K.clip_small_contribution(v, g, 90.0, module=mod)),
        ("clamp_channels", lambda: ref_clamp(v, lo, hi),
         lambda mod: K.clamp_channels(v, lo, hi, module=mod)),
    ]


def composed_step(K, mod, v, g, eta, decay, sigma, norm_pct, contrib_pct, lo, hi):
    """What the ascent ran before ``ascent_step``: the single kernels of backend ``mod``, those
    switched off skipped (as the pieces of pydevis/methods/regularizers.py do)."""
    x = K.ascent_update(v, g, eta, decay, module=mod)
    if sigma > 0:
        x = K.gaussian_blur(x, sigma, module=mod)
    if norm_pct > 0:
        x = K.clip_small_norm(x, norm_pct, module=mod)
    if contrib_pct > 0:
        x = K.clip_small_contribution(x, g, contrib_pct, module=mod)
    return K.clamp_channels(x, lo, hi, module=mod)


# ---- plain numpy definitions (docs/kernels.md) --------------------------------------------------
def ref_update(v, g, eta, decay):
    return ((v + eta[:, None, None, None] * g) * (1 - decay)).astype(v.dtype)


def ref_blur(v, sigma):
    r = int(4 * sigma + 0.5)
    k = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-k * k / (2 * sigma * sigma))
    w /= w.sum()
    h, wd = v.shape[2:]
    p = np.pad(v.astype(np.float64), ((0, 0), (0, 0), (0, 0), (r, r)), mode="symmetric")
    t = sum(w[i] * p[..., i:i + wd] for i in range(2 * r + 1))
    p = np.pad(t, ((0, 0), (0, 0), (r, r), (0, 0)), mode="symmetric")
    return sum(w[i] * p[..., i:i + h, :] for i in range(2 * r + 1)).astype(v.dtype)


def norm_score(v):
    return np.sqrt((v.astype(np.float64) ** 2).sum(axis=1))


def contrib_score(v, g):
    return np.abs((g.astype(np.float64) * -v).sum(axis=1))


def ref_clip(v, score, pct):
    thr = np.percentile(score.reshape(score.shape[0], -1), pct, axis=1)
    return np.where((score < thr[:, None, None])[:, None], np.float32(0), v)


def ref_clamp(v, lo, hi):
    return np.clip(v, lo[None, :, None, None], hi[None, :, None, None]).astype(v.dtype)


# ---- driver -------------------------------------------------------------------------------------
def worker(args) -> int:
    threads = args.threads[0]
    setup = C.set_threads(threads)
    peak = C.gemm_peak(threads, n=256 if args.quick else 2048, repeats=1 if args.quick else 3)
    C.log(f"[kernels] threads={threads} sgemm {peak['peak_gflops']:.1f} GFLOP/s "
          f"(load {C.load_average()})")
    r = Runner(args, threads, peak["peak_gflops"])
    rng = np.random.default_rng(0)
    error = None
    load0 = C.load_average()
    try:
        for group in args.only:
            getattr(r, group)(rng)
    except C.CheckFailed as exc:
        error = str(exc)
        C.log(f"[kernels] CHECK FAILED: {error}")
    payload = {"threads": threads, "thread_setup": setup, "gemm": peak, "rows": r.rows,
               "checks": r.checks, "error": error,
               "missing": sorted(f"{k} ({b})" for k, b in r.missing), "load_before": load0,
               "load_after": C.load_average()}
    Path(args.worker_out).write_text(__import__("json").dumps(payload, default=C._json_default))
    return 1 if error else 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    if args.quick:
        args.warmup = 0
    if args.worker_out:
        return worker(args)
    threads = args.threads or ([1] if args.quick else C.default_threads())
    fwd = ["--repeats", str(args.repeats), "--warmup", str(args.warmup), "--budget",
           str(args.budget), "--only", *args.only]
    if args.quick:
        fwd.append("--quick")
    if args.backends:
        fwd += ["--backends", *args.backends]
    info = C.meta(argv)
    parts, rc = C.run_workers(Path(__file__), fwd, threads,
                                   wait_policy=args.omp_wait_policy)
    rows = [row for part in parts for row in part["rows"]]
    errors = [part["error"] for part in parts if part.get("error")]
    if len(parts) < len(threads) and not errors:
        errors.append("a worker produced no result")
    print(f"\nKernel figures (median ms of {args.repeats}; load average {C.load_average()})")
    for part in parts:
        gm = part["gemm"]
        print(f"  threads={part['threads']}: sgemm {gm['n']}^3 numpy {gm['numpy_gflops']:.1f} "
              f"GFLOP/s, torch {C.fmt(gm.get('torch_gflops'))} GFLOP/s")
    print(C.table(rows, ["kernel", "case", "threads", "impl", "ms", "min_ms", "gflops",
                         "pct_peak", "x_ref", "note"],
                  ["kernel", "case", "thr", "impl", "ms", "min ms", "GFLOP/s", "% peak",
                   "x ref", "note"]))
    missing = sorted({m for p in parts for m in p.get("missing", [])})
    if missing:
        print("not implemented by the backend (skipped): " + ", ".join(missing))
    return C.finish(NAME, args, parts, rows, errors, rc, info, tolerance=TOL, missing=missing)

if __name__ == "__main__":
    sys.exit(main())
