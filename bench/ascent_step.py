"""One ascent step — forward + backward to the input for a class target — pydevis vs PyTorch.

Five ImageNet-size architectures are defined here in torch with random frozen weights (He
initialisation, random BatchNorm statistics): a CaffeNet-style AlexNet (grouped convs, ONNX
``LRN``), GoogLeNet v1 (nine inception modules, LRN, ceil-mode pools), SqueezeNet 1.1, VGG-16 and
ResNet-18, at 3×224×224. Each is exported to ONNX (opset 17, TorchScript exporter, dynamic batch)
into a temporary folder. For every batch size and thread count the script

1. checks, before timing: pydevis's logits against torch's (relative error ≤ 1e-4), and each
   kernel backend's gradient ``Model.signal(x, classes, "gradient").grad`` against
   ``torch.autograd.grad`` of the summed class logits (the arg-max class of each row) with
   respect to the input, computed by a float64 copy of the net that replays ONNX Runtime's
   forward decisions (ReLU masks, max-pool switches; see :func:`check_grad` for why): relative
   error (max |Δ| / max |ref|, per row) ≤ 1e-4, else the script exits non-zero. The errors
   against plain torch autograd (float32 and float64) are recorded too;
2. times (wall clock, median of ``--repeats`` after ``--warmup``; the torch step and the
   pydevis steps of each backend round-robin, so that a busy spell on a shared machine hits
   them alike):
   - ``torch``: eager forward + ``torch.autograd.grad`` (parameters have requires_grad False);
     the eager forward alone under ``no_grad``; the backward alone (graph built once, retained);
   - ``pydevis[cpp]``, ``pydevis[numba]`` (each available backend, ``PYDEVIS_BACKEND``):
     ``Model.signal``; its ONNX Runtime forward alone (with the intermediate tensors the backward
     reads exposed as outputs), the backward walk alone, and ``Model.forward`` (plain ORT scores);
   - ``pydevis[ort]``: ``pydevis.load(path, backend="ort")``, the exported backward graph in
     one ONNX Runtime session (``bench/ort_variant.py``; checked like the kernel backends and
     against the first of them; ``--backends cpp ort`` picks it with cpp, no numba);
   - ``onnx2torch`` + autograd when that package is installed (else reported "not installed").

GFLOP/s counts conv and linear layers analytically: 2·MACs forward + 2·MACs backward-data;
``% peak`` compares it with the float32 GEMM rate measured in the same worker
(``common.gemm_peak``).
Each thread count runs in its own subprocess, with OMP/numba/OpenBLAS/torch/ORT all at that count.

Usage::

    python bench/ascent_step.py                        # 5 nets, batch 1 and 8, threads 1 and 2
    python bench/ascent_step.py --nets resnet18 vgg16 --batches 8 --threads 2
    python bench/ascent_step.py --quick                # two tiny nets at 32x32 (smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

try:
    from . import common as C
    from . import ort_variant as O
except ImportError:  # run as a script
    import common as C  # type: ignore[no-redef]
    import ort_variant as O  # type: ignore[no-redef]

NAME = "ascent_step"
TOL = 1e-4
OPSET = 17
NETS = ("alexnet", "googlenet", "squeezenet", "vgg16", "resnet18")

QUICK_NETS = ("alexnet", "resnet18")


# ---- the architectures --------------------------------------------------------------------------
def _torch_nets():
    """Build the module classes lazily (torch is imported only where the nets are needed)."""
    import torch
    from torch import nn

    from pydevis.torch_export import LRN  # exports to the single ONNX LRN node

    def conv(cin, cout, k, s=1, p=0, g=1, bias=True):
        return nn.Conv2d(cin, cout, k, s, p, groups=g, bias=bias)

    class AlexNet(nn.Module):
        """CaffeNet / AlexNet (Krizhevsky 2012) with its grouped convs and LRN, at 224²."""

        def __init__(self, width=1, classes=1000, size=224):
            super().__init__()
            c = [max(4, v // width) for v in (96, 256, 384, 384, 256)]
            self.features = nn.Sequential(
                conv(3, c[0], 11, 4, 2), nn.ReLU(), LRN(5, 1e-4, 0.75, 1.0), nn.MaxPool2d(3, 2),
                conv(c[0], c[1], 5, 1, 2, g=2), nn.ReLU(), LRN(5, 1e-4, 0.75, 1.0),
                nn.MaxPool2d(3, 2),
                conv(c[1], c[2], 3, 1, 1), nn.ReLU(),
                conv(c[2], c[3], 3, 1, 1, g=2), nn.ReLU(),
                conv(c[3], c[4], 3, 1, 1, g=2), nn.ReLU(), nn.MaxPool2d(3, 2))
            s = size
            s = (s + 4 - 11) // 4 + 1
            for _ in range(3):
                s = (s - 3) // 2 + 1
            fc = 4096 if width == 1 else 64
            self.classifier = nn.Sequential(
                nn.Dropout(), nn.Linear(c[4] * s * s, fc), nn.ReLU(), nn.Dropout(),
                nn.Linear(fc, fc), nn.ReLU(), nn.Linear(fc, classes))

        def forward(self, x):
            return self.classifier(torch.flatten(self.features(x), 1))

    class Inception(nn.Module):
        def __init__(self, cin, c1, c3r, c3, c5r, c5, cp):
            super().__init__()
            self.b1 = nn.Sequential(conv(cin, c1, 1), nn.ReLU())
            self.b2 = nn.Sequential(conv(cin, c3r, 1), nn.ReLU(), conv(c3r, c3, 3, p=1), nn.ReLU())
            self.b3 = nn.Sequential(conv(cin, c5r, 1), nn.ReLU(), conv(c5r, c5, 5, p=2), nn.ReLU())
            self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), conv(cin, cp, 1),
                                    nn.ReLU())

        def forward(self, x):
            return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)

    class GoogLeNet(nn.Module):
        """GoogLeNet v1 (Szegedy 2014) without the auxiliary heads: LRN, 5×5 branches."""

        CFG = {"3a": (192, 64, 96, 128, 16, 32, 32), "3b": (256, 128, 128, 192, 32, 96, 64),
               "4a": (480, 192, 96, 208, 16, 48, 64), "4b": (512, 160, 112, 224, 24, 64, 64),
               "4c": (512, 128, 128, 256, 24, 64, 64), "4d": (512, 112, 144, 288, 32, 64, 64),
               "4e": (528, 256, 160, 320, 32, 128, 128),
               "5a": (832, 256, 160, 320, 32, 128, 128), "5b": (832, 384, 192, 384, 48, 128, 128)}

        def __init__(self, width=1, classes=1000):
            super().__init__()

            def w(v):
                return max(2, v // width)

            def inc(key):
                return Inception(*[w(v) for v in self.CFG[key]])

            self.stem = nn.Sequential(
                conv(3, w(64), 7, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
                LRN(5, 1e-4, 0.75, 1.0), conv(w(64), w(64), 1), nn.ReLU(),
                conv(w(64), w(192), 3, 1, 1), nn.ReLU(), LRN(5, 1e-4, 0.75, 1.0),
                nn.MaxPool2d(3, 2, ceil_mode=True))
            self.body = nn.Sequential(
                inc("3a"), inc("3b"), nn.MaxPool2d(3, 2, ceil_mode=True),
                inc("4a"), inc("4b"), inc("4c"), inc("4d"), inc("4e"),
                nn.MaxPool2d(3, 2, ceil_mode=True), inc("5a"), inc("5b"))
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.4),
                                      nn.Linear(w(1024), classes))

        def forward(self, x):
            return self.head(self.body(self.stem(x)))

    class Fire(nn.Module):
        def __init__(self, cin, s, e1, e3):
            super().__init__()
            self.squeeze = nn.Sequential(conv(cin, s, 1), nn.ReLU())
            self.e1 = nn.Sequential(conv(s, e1, 1), nn.ReLU())
            self.e3 = nn.Sequential(conv(s, e3, 3, p=1), nn.ReLU())

        def forward(self, x):
            x = self.squeeze(x)
            return torch.cat([self.e1(x), self.e3(x)], 1)

    class SqueezeNet(nn.Module):
        """SqueezeNet 1.1 (torchvision's definition)."""

        def __init__(self, width=1, classes=1000):
            super().__init__()

            def w(v):
                return max(2, v // width)

            self.features = nn.Sequential(
                conv(3, w(64), 3, 2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
                Fire(w(64), w(16), w(64), w(64)), Fire(w(128), w(16), w(64), w(64)),
                nn.MaxPool2d(3, 2, ceil_mode=True),
                Fire(w(128), w(32), w(128), w(128)), Fire(w(256), w(32), w(128), w(128)),
                nn.MaxPool2d(3, 2, ceil_mode=True),
                Fire(w(256), w(48), w(192), w(192)), Fire(w(384), w(48), w(192), w(192)),
                Fire(w(384), w(64), w(256), w(256)), Fire(w(512), w(64), w(256), w(256)))
            self.classifier = nn.Sequential(nn.Dropout(0.5), conv(w(512), classes, 1), nn.ReLU(),
                                            nn.AdaptiveAvgPool2d(1), nn.Flatten())

        def forward(self, x):
            return self.classifier(self.features(x))

    class VGG(nn.Module):
        """VGG-11 (config A) / VGG-16 (config D) with the 4096-wide classifier."""

        CFG = {11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
               16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                    512, 512, 512, "M"]}

        def __init__(self, depth=16, width=1, classes=1000, size=224):
            super().__init__()
            layers, cin = [], 3
            for v in self.CFG[depth]:
                if v == "M":
                    layers.append(nn.MaxPool2d(2, 2))
                    size //= 2
                else:
                    layers += [conv(cin, max(2, v // width), 3, 1, 1), nn.ReLU()]
                    cin = max(2, v // width)
            self.features = nn.Sequential(*layers)
            fc = 4096 if width == 1 else 64
            self.classifier = nn.Sequential(
                nn.Linear(cin * size * size, fc), nn.ReLU(), nn.Dropout(),
                nn.Linear(fc, fc), nn.ReLU(), nn.Dropout(), nn.Linear(fc, classes))

        def forward(self, x):
            return self.classifier(torch.flatten(self.features(x), 1))

    class Basic(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = conv(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = conv(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.r1, self.r2 = nn.ReLU(), nn.ReLU()
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(conv(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.r1(self.b1(self.c1(x)))
            y = self.b2(self.c2(y))
            return self.r2(y + (x if self.down is None else self.down(x)))

    class ResNet18(nn.Module):
        """ResNet-18 (He 2016, torchvision's layout)."""

        def __init__(self, width=1, classes=1000):
            super().__init__()
            c = [max(2, v // width) for v in (64, 128, 256, 512)]
            self.stem = nn.Sequential(conv(3, c[0], 7, 2, 3, bias=False), nn.BatchNorm2d(c[0]),
                                      nn.ReLU(), nn.MaxPool2d(3, 2, 1))
            blocks, cin = [], c[0]
            for i, cout in enumerate(c):
                blocks += [Basic(cin, cout, 1 if i == 0 else 2), Basic(cout, cout, 1)]
                cin = cout
            self.blocks = nn.Sequential(*blocks)
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      nn.Linear(cin, classes))

        def forward(self, x):
            return self.head(self.blocks(self.stem(x)))

    return {"alexnet": AlexNet, "googlenet": GoogLeNet, "squeezenet": SqueezeNet,
            "vgg16": lambda **k: VGG(16, **k), "vgg11": lambda **k: VGG(11, **k),
            "resnet18": ResNet18}


def build(name: str, quick: bool = False, seed: int = 0):
    """The torch net ``name`` with seeded random weights, eval mode, parameters frozen.

    ``quick``: 1/16 of the channels (AlexNet: 1/16 via width; inputs then 32×32 elsewhere)."""
    import torch
    from torch import nn

    nets = _torch_nets()
    if name not in nets:
        raise SystemExit(f"unknown net {name!r}; choose from {', '.join(nets)}")
    torch.manual_seed(seed)
    kw = {"width": 16, "classes": 10} if quick else {}
    if quick and name in ("alexnet", "vgg16", "vgg11"):
        kw["size"] = input_size(name, quick)
    model = nets[name](**kw)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(0.01 * torch.randn(m.bias.shape, generator=gen))
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def input_size(name: str, quick: bool) -> int:
    if not quick:
        return 224
    return 67 if name == "alexnet" else 32


def export(model, path: Path, size: int) -> Path:
    """ONNX export, opset 17, TorchScript exporter, dynamic batch."""
    import torch

    x = torch.zeros(1, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    return path


def count_macs(model, x) -> dict:
    """Multiply-accumulates of the conv and linear layers for one forward of ``x``."""
    import torch
    from torch import nn

    total = {"conv": 0, "linear": 0}

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            total["conv"] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * \
                m.kernel_size[1]
        else:
            total["linear"] += out.numel() * m.in_features

    hs = [m.register_forward_hook(hook) for m in model.modules()
          if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(x)
    for h in hs:
        h.remove()
    total["total"] = total["conv"] + total["linear"]
    return total


# ---- one thread count ---------------------------------------------------------------------------
class _Backend:
    """``with _Backend(name):`` sets PYDEVIS_BACKEND (read per kernel call) and restores it."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.old = os.environ.get("PYDEVIS_BACKEND")
        os.environ["PYDEVIS_BACKEND"] = self.name

    def __exit__(self, *exc):
        if self.old is None:
            os.environ.pop("PYDEVIS_BACKEND", None)
        else:
            os.environ["PYDEVIS_BACKEND"] = self.old


def grad64(model, x, classes, decisions=None):
    """The reference gradient in float64 (a double copy of the net), by torch autograd.

    ``decisions``: optional ``(relu_masks, pool_indices)``, lists in execution order; the
    float64 forward then *replays* them: the k-th ``nn.ReLU`` call multiplies by the k-th mask
    and the k-th ``nn.MaxPool2d`` call takes the k-th switches (flat offsets into its input,
    ONNX Runtime's ``Indices``), instead of deciding by itself. See :func:`ort_decisions`."""
    import copy

    import torch
    from torch import nn

    m64 = copy.deepcopy(model).double()
    hooks = []
    if decisions is not None:
        masks, pools = iter(decisions[0]), iter(decisions[1])

        def relu(mod, inp, out):
            return inp[0] * torch.from_numpy(next(masks)).to(inp[0].dtype)

        def pool(mod, inp, out):
            idx = torch.from_numpy(next(pools))
            return inp[0].reshape(-1)[idx.reshape(-1)].reshape(idx.shape)

        for mod in m64.modules():
            if isinstance(mod, nn.ReLU):
                hooks.append(mod.register_forward_hook(relu))
            elif isinstance(mod, nn.MaxPool2d):
                hooks.append(mod.register_forward_hook(pool))
    xg = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    out = m64(xg)
    g = torch.autograd.grad(out.gather(1, classes[:, None]).sum(), xg)[0].numpy()
    if decisions is not None:
        left = sum(1 for _ in masks) + sum(1 for _ in pools)
        if left:
            raise C.CheckFailed(f"replay: {left} ONNX Relu/MaxPool decisions were not used")
    for h in hooks:
        h.remove()
    return g


def ort_decisions(pm, x):
    """ONNX Runtime's forward decisions for ``x``: the ``Relu`` output masks (> 0) and the
    ``MaxPool`` switches, in graph order (= the torch execution order the export traced).

    A session of its own on a copy of the model whose MaxPools get their optional ``Indices``
    output (pydevis never asks for it: it finds the switches again from the pool's input)."""
    import copy

    import onnxruntime as ort
    from onnx import helper

    m = copy.deepcopy(pm.proto)
    relus = [n.output[0] for n in m.graph.node if n.op_type == "Relu"]
    pools = []
    for n in m.graph.node:
        if n.op_type == "MaxPool":
            if len(n.output) == 1:
                n.output.append(n.output[0] + "::indices")
            pools.append(n.output[1])
    m.graph.output.extend(helper.make_empty_tensor_value_info(o) for o in relus + pools)
    del m.graph.value_info[:]
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    vals = sess.run(relus + pools, {pm.graph.input_name: np.ascontiguousarray(x)})
    return [v > 0 for v in vals[:len(relus)]], vals[len(relus):]


def check_grad(g, replay64, ref32, ref64, what: str) -> dict:
    """``g`` against the float64 autograd gradient on ONNX Runtime's own decisions
    (``replay64``, asserted: relative error max |Δ| / max |ref| ≤ ``TOL`` on every row), and,
    for information, against plain torch autograd in float32 and float64.

    Why the replay: a float32 forward decides near-ties (two nearly equal values of a max-pool
    window, a pre-activation within rounding of 0) by rounding, and one flipped decision moves
    gradient between whole receptive fields. On these random-weight nets that happens on most
    inputs of VGG-16 and on some of GoogLeNet and AlexNet: torch float32 is then up to ~4e-2
    (max) / ~7e-3 (L2) away from its own float64 result, and so is pydevis. Replaying ORT's
    decisions in float64 makes the comparison exact, whatever the input."""
    rows = []
    for i in range(g.shape[0]):
        e = C.rel_err(g[i], replay64[i])
        if not e <= TOL:
            raise C.CheckFailed(f"{what}: row {i}: relative error {e:.3g} > {TOL:g} against "
                                "torch float64 autograd on ONNX Runtime's decisions")
        l2 = float(np.linalg.norm((g[i] - ref64[i]).astype(np.float64)) /
                   max(float(np.linalg.norm(ref64[i].astype(np.float64))), 1e-300))
        rows.append((e, C.rel_err(g[i], ref32[i]), C.rel_err(g[i], ref64[i]), l2))
    return {"case": what.split(":")[0],
            "what": what.split(": ", 1)[1] + " vs torch float64 autograd on ORT's decisions",
            "rel_err": max(r[0] for r in rows),
            "plain_torch": {"rel_err_f32": max(r[1] for r in rows),
                            "rel_err_f64": max(r[2] for r in rows),
                            "l2_f64": max(r[3] for r in rows),
                            "rows_within_tol": sum(min(r[1], r[2]) <= TOL for r in rows),
                            "rows": len(rows)}}


def onnx2torch_status() -> str | None:
    try:
        import onnx2torch  # noqa: F401
    except ImportError:
        return "not installed"
    return None


def bench_net(name, args, threads, peak, onnx_dir: Path, rows, checks):
    import pydevis

    size = input_size(name, args.quick)
    model = build(name, args.quick)
    path = onnx_dir / f"{name}{'-quick' if args.quick else ''}.onnx"
    if not path.is_file():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        export(model, tmp, size)
        os.replace(tmp, path)
    pm = pydevis.load(path, threads=threads, backend="pydevis")
    pm_ort = O.load(path, threads) if O.wanted(args.backends) else None
    backends = C.usable_backends(args.backends)
    o2t = onnx2torch_status()
    o2t_model = None
    if o2t is None:
        import onnx2torch

        o2t_model = onnx2torch.convert(str(path)).eval()
        for p in o2t_model.parameters():
            p.requires_grad_(False)
    for batch in args.batches:
        bench_batch(name, batch, args, threads, peak, model, pm, size, backends, o2t_model,
                    rows, checks, pm_ort)


def bench_batch(name, batch, args, threads, peak, model, pm, size, backends, o2t_model, rows,
                checks, pm_ort=None):
    """Check, then time, one (net, batch) at this worker's thread count."""
    import torch

    from pydevis import targets

    case = f"{name} b{batch} t{threads}"
    # ---- checks, before any timing
    x = np.random.default_rng(batch).standard_normal((batch, 3, size, size),
                                                     dtype=np.float32)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        logits = model(xt)
    classes = logits.argmax(1)
    cls_list = [int(c) for c in classes]

    def torch_step(model=model):
        xg = xt.clone().requires_grad_(True)
        out = model(xg)
        return torch.autograd.grad(out.gather(1, classes[:, None]).sum(), xg)[0]

    ref = torch_step().numpy()
    ref64 = grad64(model, x, classes)
    replay = grad64(model, x, classes, ort_decisions(pm, x))
    checks.append({"case": case, "asserted": False,
                   "what": "torch float32 vs torch float64 (not asserted)",
                   "rel_err": C.rel_err(ref, ref64)})
    checks.append({"case": case, "what": "logits pydevis vs torch",
                   "rel_err": C.check_close(pm.forward(x), logits.numpy(), TOL,
                                            f"{case}: logits")})
    grads = {}
    for b in backends:
        with _Backend(b):
            grads[b] = pm.signal(x, cls_list, "gradient").grad
        checks.append(check_grad(grads[b], replay, ref, ref64,
                                 f"{case}: gradient pydevis[{b}]"))
    for b in backends[1:]:
        checks.append({"case": case,
                       "what": f"gradient pydevis[{b}] vs pydevis[{backends[0]}]",
                       "rel_err": C.check_close(grads[b], grads[backends[0]], TOL,
                                                f"{case}: {b} vs {backends[0]}")})
    if pm_ort is not None:
        ort_setup_ms = O.check(pm_ort, x, cls_list, case, grads,
                               lambda g, what: check_grad(g, replay, ref, ref64, what),
                               C.check_close, TOL, checks)
    if o2t_model is not None:
        g = torch_step(o2t_model).numpy()
        checks.append({"case": case, "what": "gradient onnx2torch vs torch float32",
                       "rel_err": C.check_close(g, ref, TOL, f"{case}: onnx2torch")})
    macs = count_macs(model, xt)
    flops = 4.0 * macs["total"]  # 2·MACs forward + 2·MACs backward-data

    def torch_fwd(model=model):
        with torch.no_grad():
            return model(xt)

    def t(fn):
        return C.timeit(fn, repeats=args.repeats, warmup=args.warmup, budget_s=args.budget)

    base = {"net": name, "batch": batch, "threads": threads, "size": size,
            "gflop": flops / 1e9, "macs": macs}

    def pydevis_step(b):
        def step():
            with _Backend(b):
                return pm.signal(x, cls_list, "gradient")
        return step

    # the steps compared in the "x torch" column: round-robin, so that load hits them alike
    fns = {"torch": torch_step, **{b: pydevis_step(b) for b in backends}}
    if pm_ort is not None:
        fns[O.NAME] = O.step(pm_ort, x, cls_list)
    steps = C.timeit_interleaved(fns, repeats=args.repeats, warmup=args.warmup,
                                 budget_s=args.budget * len(fns))
    tt = steps["torch"]
    tf = t(torch_fwd)
    xg = xt.clone().requires_grad_(True)
    sel = model(xg).gather(1, classes[:, None]).sum()
    tb = t(lambda: torch.autograd.grad(sel, xg, retain_graph=True))
    torch_ms = tt.median_ms
    rows.append(dict(base, impl="torch", step_ms=torch_ms, step_min_ms=tt.min_ms,
                     fwd_ms=tf.median_ms, bwd_ms=tb.median_ms, x_torch=1.0,
                     gflops=flops / (torch_ms * 1e6),
                     pct_peak=100 * flops / (torch_ms * 1e6) / peak))
    if o2t_model is not None:
        to = t(lambda: torch_step(o2t_model))
        rows.append(dict(base, impl="onnx2torch", step_ms=to.median_ms,
                         step_min_ms=to.min_ms, x_torch=to.median_ms / torch_ms,
                         gflops=flops / (to.median_ms * 1e6),
                         pct_peak=100 * flops / (to.median_ms * 1e6) / peak))
    # ORT forward: plain scores, and instrumented (what signal runs)
    t_plain = t(lambda: pm.forward(x))
    tensor = pm.scores
    units = targets.parse(cls_list, batch)
    t_fwd = t(lambda: pm.pullback(x, tensor, "gradient"))
    values, walk = pm.pullback(x, tensor, "gradient")
    seed, _ = targets.seed(values[tensor], units)
    for b in backends:
        ts = steps[b]
        with _Backend(b):
            tb = t(lambda: walk(seed))
        rows.append(dict(base, impl=f"pydevis[{b}]", step_ms=ts.median_ms,
                         step_min_ms=ts.min_ms, fwd_ms=t_fwd.median_ms,
                         fwd_plain_ms=t_plain.median_ms, bwd_ms=tb.median_ms,
                         x_torch=ts.median_ms / torch_ms,
                         x_torch_paired=float(np.median(np.divide(ts.times_ms, tt.times_ms))),
                         gflops=flops / (ts.median_ms * 1e6),
                         pct_peak=100 * flops / (ts.median_ms * 1e6) / peak))
    if pm_ort is not None:
        rows.append(O.row(base, pm_ort, steps[O.NAME], tt, t_plain, ort_setup_ms, flops, peak))
    C.log(f"[ascent_step] {case}: torch {torch_ms:.1f} ms, " + ", ".join(
        f"{r['impl']} {r['step_ms']:.1f} ms" for r in rows[len(rows) - (len(fns) - 1):]))


def worker(args) -> int:
    threads = args.threads[0]
    setup = C.set_threads(threads)
    peak = C.gemm_peak(threads, n=256 if args.quick else 2048, repeats=1 if args.quick else 3)
    C.log(f"[ascent_step] threads={threads} sgemm {peak['peak_gflops']:.1f} GFLOP/s "
          f"(load {C.load_average()})")
    rows: list[dict] = []
    checks: list[dict] = []
    error = None
    load0 = C.load_average()
    try:
        for name in args.nets:
            bench_net(name, args, threads, peak["peak_gflops"], Path(args.onnx_dir), rows,
                      checks)
    except C.CheckFailed as exc:
        error = str(exc)
        C.log(f"[ascent_step] CHECK FAILED: {error}")
    payload = {"threads": threads, "thread_setup": setup, "gemm": peak, "rows": rows,
               "checks": checks, "error": error, "load_before": load0,
               "load_after": C.load_average(),
               "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    Path(args.worker_out).write_text(json.dumps(payload, default=C._json_default))
    return 1 if error else 0


# ---- driver -------------------------------------------------------------------------------------
def parse(argv):
    p = argparse.ArgumentParser(prog="bench/ascent_step.py", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_common_args(p, NAME)
    p.add_argument("--nets", nargs="+", default=None,
                   help=f"nets (default {' '.join(NETS)}; also vgg11)")
    p.add_argument("--batches", type=int, nargs="+", default=None, help="default 1 8")
    p.add_argument("--budget", type=float, default=20.0,
                   help="seconds of timed runs per figure before stopping early (min 3 runs)")
    p.add_argument("--onnx-dir", default=None, help="keep the ONNX exports here (default: temp)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.quick:
        args.warmup = 0
    args.nets = args.nets or list(QUICK_NETS if args.quick else NETS)
    args.batches = args.batches or ([1, 2] if args.quick else [1, 8])
    if args.worker_out:
        return worker(args)
    threads = args.threads or ([1] if args.quick else C.default_threads())
    info = C.meta(argv)
    with tempfile.TemporaryDirectory(prefix="pydevis-bench-onnx-") as tmp:
        onnx_dir = Path(args.onnx_dir or tmp)
        onnx_dir.mkdir(parents=True, exist_ok=True)
        fwd = ["--repeats", str(args.repeats), "--warmup", str(args.warmup), "--budget",
               str(args.budget), "--nets", *args.nets, "--batches", *map(str, args.batches),
               "--onnx-dir", str(onnx_dir)]
        if args.quick:
            fwd.append("--quick")
        if args.backends:
            fwd += ["--backends", *args.backends]
        parts, rc = C.run_workers(Path(__file__), fwd, threads,
                                   wait_policy=args.omp_wait_policy)
    rows = [row for part in parts for row in part["rows"]]
    errors = [part["error"] for part in parts if part.get("error")]
    if len(parts) < len(threads) and not errors:
        errors.append("a worker produced no result")
    print(f"\nOne ascent step (forward + backward to the input, class target); median ms of "
          f"{args.repeats}; load average {C.load_average()}")
    for part in parts:
        gm = part["gemm"]
        print(f"  threads={part['threads']}: sgemm {gm['n']}^3 numpy {gm['numpy_gflops']:.1f} "
              f"GFLOP/s, torch {C.fmt(gm.get('torch_gflops'))} GFLOP/s; "
              f"max RSS {part['max_rss_mb']:.0f} MB")
    print(C.table(rows, ["net", "batch", "threads", "impl", "step_ms", "fwd_ms", "bwd_ms",
                         "fwd_plain_ms", "x_torch", "gflop", "gflops", "pct_peak"],
                  ["net", "batch", "thr", "impl", "step ms", "fwd ms", "bwd ms", "ORT plain ms",
                   "x torch", "GFLOP", "GFLOP/s", "% peak"]))
    o2t = onnx2torch_status()
    if o2t:
        print(f"onnx2torch: {o2t}")
    return C.finish(NAME, args, parts, rows, errors, rc, info, worker_keys=("max_rss_mb",),
                    tolerance=TOL, nets=args.nets, batches=args.batches,
                    onnx2torch=o2t or "installed")

if __name__ == "__main__":
    sys.exit(main())
