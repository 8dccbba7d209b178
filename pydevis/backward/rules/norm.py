"""Normalizations: BatchNormalization (inference form) and LRN."""

from __future__ import annotations

import numpy as np

from ... import kernels
from ..registry import rule


@rule("BatchNormalization", needs=("in:1", "in:4"))
def batch_norm(node, ctx, gy, mode):
    """Inference form y = (x − mean)·scale/√(var+ε) + B: dX = g·scale/√(var+ε) per channel."""
    g = gy[0]
    scale = ctx.value(node.inputs[1]).astype(np.float64)
    var = ctx.value(node.inputs[4]).astype(np.float64)
    k = (scale / np.sqrt(var + node.attrs.get("epsilon", 1e-5))).astype(g.dtype)
    shape = (1, -1) + (1,) * (g.ndim - 2)
    return [g * k.reshape(shape)] + [None] * (len(node.inputs) - 1)


@rule("LRN", needs=("in:0",))
def lrn(node, ctx, gy, mode):
    """y = x·s^−β with s = bias + α/size·Σ_window x²: the derivative of both factors.

    dX_c = g_c·s_c^−β − (2αβ/size)·x_c·Σ_{j: c ∈ window(j)} g_j·x_j·s_j^(−β−1). The window of
    channel j is [j − ⌊(size−1)/2⌋, j + ⌈(size−1)/2⌉], so for even sizes it is not symmetric and
    "c ∈ window(j)" is the mirrored range; the kernels implement exactly this sum.
    """
    a = node.attrs
    return [kernels.lrn_backward(gy[0], ctx.value(node.inputs[0]), a["size"],
                                 a.get("alpha", 1e-4), a.get("beta", 0.75), a.get("bias", 1.0))]
