"""Gemm and MatMul (``backward/rules/linear.py``): products with the transposed operands."""

from __future__ import annotations

from .builder import ExportError
from .registry import translation


@translation("Gemm")
def gemm(node, b, gy, mode):
    """Y = α·A'B' + βC: dA' = α·g·B'ᵀ, dB' = α·A'ᵀ·g, dC = β·g (summed to C's shape)."""
    a, w = node.inputs[0], node.inputs[1]
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    ta, tb = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
    g = gy[0]
    ga = gb = gc = None
    if b.wants_grad(a):
        if ta:  # dA = (dA')ᵀ = α·B'·gᵀ
            ga = b.op("Gemm", [w, g], alpha=alpha, transA=tb, transB=1)
        else:
            ga = b.op("Gemm", [g, w], alpha=alpha, transB=1 - tb)
    if b.wants_grad(w):
        if tb:  # dB = (dB')ᵀ = α·gᵀ·A'
            gb = b.op("Gemm", [g, a], alpha=alpha, transA=1, transB=ta)
        else:
            gb = b.op("Gemm", [a, g], alpha=alpha, transA=1 - ta)
    if len(node.inputs) > 2 and b.wants_grad(node.inputs[2]):
        gc = b.unbroadcast(b.scale(g, beta), b.template(node.outputs[0]), node.inputs[2])
    return [ga, gb, gc][: len(node.inputs)]


def _swap_last(b, name: str) -> str:
    r = b.rank(name)
    return b.op("Transpose", [name], perm=list(range(r - 2)) + [r - 1, r - 2])


@translation("MatMul")
def matmul(node, b, gy, mode):
    """numpy matmul: dA = g·Bᵀ, dB = Aᵀ·g over the last two axes (1-D operands promoted),
    each summed back over the batch axes its operand was broadcast along."""
    a, w = node.inputs
    a1, b1 = b.rank(a) == 1, b.rank(w) == 1
    if a1 and b1:
        raise ExportError("MatMul", node.name, "both operands are vectors")
    g = gy[0]
    out = b.template(node.outputs[0])
    batch = out[: len(out) - (2 - a1 - b1)]
    ga = gb = None
    if b.wants_grad(a):
        if b1:  # (..., M) -> (..., M, 1) @ (1, K)
            ga = b.op("MatMul", [b.unsqueeze(g, [-1]), b.unsqueeze(w, [0])])
        else:
            ga = b.op("MatMul", [b.unsqueeze(g, [-2]) if a1 else g, _swap_last(b, w)])
            ga = b.squeeze(ga, [-2]) if a1 else ga
        ga = b.unbroadcast(ga, batch + b.template(a)[-(1 if a1 else 2):], a)
    if b.wants_grad(w):
        if a1:  # (K, 1) @ (..., 1, N)
            gb = b.op("MatMul", [b.unsqueeze(a, [-1]), b.unsqueeze(g, [-2])])
        else:
            gb = b.op("MatMul", [_swap_last(b, a), b.unsqueeze(g, [-1]) if b1 else g])
            gb = b.squeeze(gb, [-1]) if b1 else gb
        gb = b.unbroadcast(gb, batch + b.template(w)[-(1 if b1 else 2):], w)
    return [ga, gb]
