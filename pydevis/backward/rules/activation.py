"""Pointwise nonlinearities. Relu and Clip(min=0) (ReLU6) are the rectifiers whose backward
depends on the mode (gradient / deconvnet / guided); every other op is its true derivative.
"""

from __future__ import annotations

import numpy as np

from ... import kernels
from ..registry import rule


@rule("Relu", needs=("out:0",))
def relu(node, ctx, gy, mode):
    """gradient g·[y>0]; deconvnet max(g,0); guided max(g,0)·[y>0]."""
    return [kernels.rectifier_backward(gy[0], ctx.value(node.outputs[0]), mode, 0.0, np.inf)]


def clip_bounds(node, value) -> tuple[float, float]:
    """A Clip's (min, max): its attributes before opset 11, since then its inputs 1 and 2, each
    read as one number through ``value(name)`` (an absent bound is -inf / inf). Shared by this
    rule, the engine's Clip+Conv fusion and the ONNX export's translation."""
    if node.since_version < 11:
        return float(node.attrs.get("min", -np.inf)), float(node.attrs.get("max", np.inf))
    ins = node.inputs
    lo = float(np.asarray(value(ins[1])).reshape(())) if len(ins) > 1 and ins[1] else -np.inf
    hi = float(np.asarray(value(ins[2])).reshape(())) if len(ins) > 2 and ins[2] else np.inf
    return lo, hi


@rule("Clip", needs=("out:0", "in:1", "in:2"))
def clip(node, ctx, gy, mode):
    """g·[lo<y<hi]; with lo == 0 (ReLU6) it is a rectifier, so deconvnet/guided apply to it."""
    lo, hi = clip_bounds(node, ctx.value)
    rect_mode = mode if lo == 0.0 else "gradient"
    g = kernels.rectifier_backward(gy[0], ctx.value(node.outputs[0]), rect_mode, lo, hi)
    return [g] + [None] * (len(node.inputs) - 1)


@rule("LeakyRelu", needs=("in:0",))
def leaky_relu(node, ctx, gy, mode):
    """g·(1 if x>0 else alpha)."""
    x = ctx.value(node.inputs[0])
    return [np.where(x > 0, gy[0], gy[0] * np.asarray(node.attrs["alpha"], gy[0].dtype))]


@rule("PRelu", needs=("in:0", "in:1"), broadcast=True)
def prelu(node, ctx, gy, mode):
    """g·(1 if x>0 else slope); slope gradient is None (a weight)."""
    x, slope = ctx.value(node.inputs[0]), ctx.value(node.inputs[1])
    return [np.where(x > 0, gy[0], gy[0] * slope.astype(gy[0].dtype)), None]


@rule("Sigmoid", needs=("out:0",))
def sigmoid(node, ctx, gy, mode):
    """g·y·(1−y)."""
    y = ctx.value(node.outputs[0])
    return [gy[0] * y * (1 - y)]


@rule("Tanh", needs=("out:0",))
def tanh(node, ctx, gy, mode):
    """g·(1−y²)."""
    y = ctx.value(node.outputs[0])
    return [gy[0] * (1 - y * y)]


@rule("HardSigmoid", needs=("in:0",))
def hard_sigmoid(node, ctx, gy, mode):
    """g·alpha·[0 < alpha·x+beta < 1]."""
    a, b = node.attrs["alpha"], node.attrs["beta"]
    z = a * ctx.value(node.inputs[0]) + b
    return [gy[0] * (a * ((z > 0) & (z < 1))).astype(gy[0].dtype)]


@rule("HardSwish", needs=("in:0",))
def hard_swish(node, ctx, gy, mode):
    """y = x·clip(x/6+1/2, 0, 1): g·0 (x<−3), g·(x/3+1/2) (−3≤x≤3), g (x>3)."""
    x = ctx.value(node.inputs[0])
    d = np.where(x < -3, 0.0, np.where(x <= 3, x / 3 + 0.5, 1.0)).astype(gy[0].dtype)
    return [gy[0] * d]


@rule("Elu", needs=("in:0", "out:0"))
def elu(node, ctx, gy, mode):
    """g·(1 if x>0 else y+alpha)."""
    x, y = ctx.value(node.inputs[0]), ctx.value(node.outputs[0])
    return [np.where(x > 0, gy[0], gy[0] * (y + node.attrs["alpha"]))]


@rule("Softplus", needs=("in:0",))
def softplus(node, ctx, gy, mode):
    """g·sigmoid(x)."""
    x = ctx.value(node.inputs[0])
    return [gy[0] / (1 + np.exp(-x))]


@rule("Exp", needs=("out:0",))
def exp(node, ctx, gy, mode):
    """g·y."""
    return [gy[0] * ctx.value(node.outputs[0])]


@rule("Sqrt", needs=("out:0",))
def sqrt(node, ctx, gy, mode):
    """g/(2y)."""
    return [gy[0] / (2 * ctx.value(node.outputs[0]))]


@rule("Erf", needs=("in:0",))
def erf(node, ctx, gy, mode):
    """g·2/√π·exp(−x²)."""
    x = ctx.value(node.inputs[0])
    return [gy[0] * (2 / np.sqrt(np.pi)) * np.exp(-x * x)]


def _softmax_axis(node, ndim: int) -> tuple[int, bool]:
    """(axis, coerced): before opset 13 the op flattens to 2-D at ``axis``."""
    default = -1 if node.since_version >= 13 else 1
    axis = node.attrs.get("axis", default)
    return (axis % ndim, node.since_version < 13)


def _over_axis(node, g, y, fn):
    axis, coerced = _softmax_axis(node, g.ndim)
    if coerced:
        shape = g.shape
        flat = (int(np.prod(shape[:axis])), -1)
        return fn(g.reshape(flat), y.reshape(flat), 1).reshape(shape)
    return fn(g, y, axis)


@rule("Softmax", needs=("out:0",))
def softmax(node, ctx, gy, mode):
    """y·(g − Σ g·y) over the axis."""
    return [_over_axis(node, gy[0], ctx.value(node.outputs[0]),
                       lambda g, y, ax: y * (g - (g * y).sum(axis=ax, keepdims=True)))]


@rule("LogSoftmax", needs=("out:0",))
def log_softmax(node, ctx, gy, mode):
    """g − exp(y)·Σ g over the axis."""
    return [_over_axis(node, gy[0], ctx.value(node.outputs[0]),
                       lambda g, y, ax: g - np.exp(y) * g.sum(axis=ax, keepdims=True))]
