"""The correctness oracle of ``bench/ascent_step.py``: torch autograd in float64, replaying
ONNX Runtime's forward decisions (rectifier masks, max-pool switches), and the checks against it.
"""

from __future__ import annotations

import os

import numpy as np

try:
    from . import common as C
except ImportError:  # run as a script
    import common as C  # type: ignore[no-redef]

TOL = 1e-4


class Backend:
    """``with Backend(name):`` sets PYDEVIS_BACKEND (read per kernel call) and restores it."""

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

    ``decisions``: optional ``(rectifier_outputs, pool_indices)``, lists in execution order;
    the float64 forward then *replays* them: the k-th ``nn.ReLU`` / ``nn.ReLU6`` call passes
    its input where ONNX Runtime's k-th ``Relu`` / ``Clip`` output was strictly inside (0, hi)
    and takes that output as a constant elsewhere, and the k-th ``nn.MaxPool2d`` call takes the
    k-th switches (flat offsets into its input, ONNX Runtime's ``Indices``), instead of
    deciding by itself. See :func:`ort_decisions`."""
    import copy

    import torch
    from torch import nn

    m64 = copy.deepcopy(model).double()
    hooks = []
    if decisions is not None:
        masks, pools = iter(decisions[0]), iter(decisions[1])

        def relu(mod, inp, out):
            y = torch.from_numpy(next(masks)).to(inp[0].dtype)
            hi = 6.0 if isinstance(mod, nn.ReLU6) else float("inf")
            inside = (y > 0) & (y < hi)
            return torch.where(inside, inp[0], y)

        def pool(mod, inp, out):
            idx = torch.from_numpy(next(pools))
            return inp[0].reshape(-1)[idx.reshape(-1)].reshape(idx.shape)

        for mod in m64.modules():
            if isinstance(mod, (nn.ReLU, nn.ReLU6)):
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
    """ONNX Runtime's forward decisions for ``x``: the ``Relu`` and ``Clip`` (ReLU6) outputs
    and the ``MaxPool`` switches, in graph order (= the torch execution order the export
    traced).

    The rectifier outputs are those of pydevis's own instrumented forward where it exposes them;
    the switches come from a session of its own on a copy of the model whose MaxPools get their
    optional ``Indices`` output (pydevis never asks for it: it finds the switches again from the
    pool's input)."""
    import copy

    import onnxruntime as ort
    from onnx import helper

    m = copy.deepcopy(pm.proto)
    relus = [n.output[0] for n in m.graph.node if n.op_type in ("Relu", "Clip")]
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
    # The rectifier outputs the backward itself reads (pydevis's own forward session): a session
    # exposing other tensors can round a pre-activation near 0 the other way and flip a mask
    # (seen on ResNet-18 at batch 2: 2.6e-2 on one row).
    own = pm.pullback(np.ascontiguousarray(x), pm.scores)[0]
    return [own.get(r, v) for r, v in zip(relus, vals, strict=False)], vals[len(relus):]


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
