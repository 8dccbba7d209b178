"""Normalizations (``backward/rules/norm.py``): BatchNormalization (inference form) and LRN."""

from __future__ import annotations

import numpy as np

from .builder import ExportError
from .registry import translation


@translation("BatchNormalization")
def batch_norm(node, b, gy, mode):
    """dX = g·scale/√(var+ε) per channel (a constant of shape (1, C, 1, ...))."""
    scale, var = node.inputs[1], node.inputs[4]
    if not (b.is_const(scale) and b.is_const(var)):
        raise ExportError("BatchNormalization", node.name, "scale or variance is not constant")
    k = b.value(scale).astype(np.float64) / np.sqrt(b.value(var).astype(np.float64)
                                                    + node.attrs.get("epsilon", 1e-5))
    shape = (1, -1) + (1,) * (b.rank(node.inputs[0]) - 2)
    return [b.mul(gy[0], b.const(k.reshape(shape)))] + [None] * (len(node.inputs) - 1)


@translation("LRN")
def lrn(node, b, gy, mode):
    """y = x·s^−β, s = bias + α/size·Σ_window x² (a 1×1 Conv of x² with a banded weight):
    dX_c = g_c·s_c^−β − (2αβ/size)·x_c·Σ_{j: c ∈ window(j)} g_j·x_j·s_j^(−β−1), the sum a 1×1
    Conv with the transposed band."""
    x, g = node.inputs[0], gy[0]
    if b.rank(x) != 4:
        raise ExportError("LRN", node.name, f"only 4-D input, got rank {b.rank(x)}")
    a = node.attrs
    size, alpha = int(a["size"]), float(a.get("alpha", 1e-4))
    beta, bias = float(a.get("beta", 0.75)), float(a.get("bias", 1.0))
    channels = b.dim(x, 1, node)
    band = np.zeros((channels, channels), np.float64)
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2  # window of channel c: [c-lo, c+hi]
    for c in range(channels):
        band[c, max(0, c - lo):min(channels, c + hi + 1)] = 1.0
    s = b.op("Conv", [b.mul(x, x), b.const((band * alpha / size)[:, :, None, None]),
                      b.const(np.full(channels, bias))])
    s_beta = b.op("Pow", [s, b.const(-beta)])  # s^-β
    t = b.mul(b.mul(g, x), b.op("Div", [s_beta, s]))  # g·x·s^(−β−1)
    back = b.op("Conv", [t, b.const(band.T[:, :, None, None])])
    second = b.mul(b.scale(x, 2 * alpha * beta / size), back)
    return [b.op("Sub", [b.mul(g, s_beta), second])]
