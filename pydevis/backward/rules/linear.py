"""Gemm and MatMul: products with the transposed operands."""

from __future__ import annotations

import numpy as np

from ... import kernels
from ..registry import rule


@rule("Gemm", needs=("in:0?1", "in:1?0", "shape:in:2"))
def gemm(node, ctx, gy, mode):
    """Y = α·A'B' + βC: dA' = α·g·B'ᵀ, dB' = α·A'ᵀ·g, dC = β·g (summed to C's shape)."""
    a_name, b_name = node.inputs[0], node.inputs[1]
    alpha, beta = node.attrs.get("alpha", 1.0), node.attrs.get("beta", 1.0)
    ta, tb = node.attrs.get("transA", 0), node.attrs.get("transB", 0)
    g = gy[0]
    ga = gb = gc = None
    if ctx.wants_grad(a_name) and ctx.has(b_name):
        b = ctx.value(b_name).astype(g.dtype, copy=False)
        if tb and g.ndim == 2 and b.ndim == 2:  # B' = Bᵀ, B (M, K): dA' = g·B, a kernel
            ga = kernels.linear_backward_data(g, b)
            ga = alpha * ga if alpha != 1.0 else ga
        else:
            b = b.T if tb else b
            ga = alpha * (g @ b.T)
        ga = ga.T if ta else ga
    if ctx.wants_grad(b_name) and ctx.has(a_name):
        a = ctx.value(a_name).astype(g.dtype, copy=False)
        a = a.T if ta else a
        gb = alpha * (a.T @ g)
        gb = gb.T if tb else gb
    if len(node.inputs) > 2 and node.inputs[2]:
        from ..engine import unbroadcast

        gc = unbroadcast(beta * g, ctx.shape(node.inputs[2]))
    return [ga, gb, gc][: len(node.inputs)]


@rule("MatMul", needs=("in:0?1", "in:1?0"), broadcast=True)
def matmul(node, ctx, gy, mode):
    """numpy matmul: dA = g·Bᵀ, dB = Aᵀ·g over the last two axes (1-D operands promoted)."""
    a_name, b_name = node.inputs
    a1, b1 = len(ctx.shape(a_name)) == 1, len(ctx.shape(b_name)) == 1
    g = gy[0]
    g = g[..., None, :] if a1 else g
    g = g[..., None] if b1 else g
    ga = gb = None
    if ctx.wants_grad(a_name) and ctx.has(b_name):
        b = ctx.value(b_name).astype(g.dtype, copy=False)
        ga = g @ np.swapaxes(b[:, None] if b1 else b, -1, -2)
        ga = ga[..., 0, :] if a1 else ga
    if ctx.wants_grad(b_name) and ctx.has(a_name):
        a = ctx.value(a_name).astype(g.dtype, copy=False)
        gb = np.swapaxes(a[None, :] if a1 else a, -1, -2) @ g
        gb = gb[..., 0] if b1 else gb
    return [ga, gb]
