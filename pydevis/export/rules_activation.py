"""Pointwise nonlinearities (``backward/rules/activation.py``). Relu and Clip(min=0) are the
rectifiers: gradient ``Where(lo<y<hi, g, 0)``, deconvnet ``Relu(g)``, guided
``Where(lo<y<hi, Relu(g), 0)``, the mask read from the forward output ``y``.
"""

from __future__ import annotations

import math

from ..backward.rules.activation import _softmax_axis, clip_bounds
from .registry import translation


def rectifier(b, g: str, y: str, mode: str, lo: float, hi: float) -> str:
    if mode == "deconvnet":
        return b.op("Relu", [g])
    conds = []
    if lo > -math.inf:
        conds.append(b.op("Greater", [y, b.const(lo)]))
    if hi < math.inf:
        conds.append(b.op("Less", [y, b.const(hi)]))
    src = b.op("Relu", [g]) if mode == "guided" else g
    if not conds:
        return src
    mask = conds[0] if len(conds) == 1 else b.op("And", conds)
    return b.op("Where", [mask, src, b.const(0.0)])


@translation("Relu")
def relu(node, b, gy, mode):
    return [rectifier(b, gy[0], node.outputs[0], mode, 0.0, math.inf)]


@translation("Clip")
def clip(node, b, gy, mode):
    lo, hi = clip_bounds(node, b.value)
    rect_mode = mode if lo == 0.0 else "gradient"
    g = rectifier(b, gy[0], node.outputs[0], rect_mode, lo, hi)
    return [g] + [None] * (len(node.inputs) - 1)


def _where_positive(b, x: str, g: str, other: str) -> str:
    return b.op("Where", [b.op("Greater", [x, b.const(0.0)]), g, other])


@translation("LeakyRelu")
def leaky_relu(node, b, gy, mode):
    g = gy[0]
    return [_where_positive(b, node.inputs[0], g, b.scale(g, float(node.attrs["alpha"])))]


@translation("PRelu", broadcast=True)
def prelu(node, b, gy, mode):
    g = gy[0]
    return [_where_positive(b, node.inputs[0], g, b.mul(g, node.inputs[1])), None]


@translation("Sigmoid")
def sigmoid(node, b, gy, mode):
    y = node.outputs[0]
    one_minus = b.op("Sub", [b.const(1.0), y])
    return [b.mul(b.mul(gy[0], y), one_minus)]


@translation("Tanh")
def tanh(node, b, gy, mode):
    y = node.outputs[0]
    return [b.mul(gy[0], b.op("Sub", [b.const(1.0), b.mul(y, y)]))]


@translation("HardSigmoid")
def hard_sigmoid(node, b, gy, mode):
    a, beta = float(node.attrs["alpha"]), float(node.attrs["beta"])
    z = b.op("Add", [b.scale(node.inputs[0], a), b.const(beta)])
    inside = b.op("And", [b.op("Greater", [z, b.const(0.0)]), b.op("Less", [z, b.const(1.0)])])
    return [b.op("Where", [inside, b.scale(gy[0], a), b.const(0.0)])]


@translation("HardSwish")
def hard_swish(node, b, gy, mode):
    x = node.inputs[0]
    mid = b.op("Add", [b.op("Div", [x, b.const(3.0)]), b.const(0.5)])
    d = b.op("Where", [b.op("LessOrEqual", [x, b.const(3.0)]), mid, b.const(1.0)])
    d = b.op("Where", [b.op("Less", [x, b.const(-3.0)]), b.const(0.0), d])
    return [b.mul(gy[0], d)]


@translation("Elu")
def elu(node, b, gy, mode):
    g = gy[0]
    other = b.mul(g, b.op("Add", [node.outputs[0], b.const(float(node.attrs["alpha"]))]))
    return [_where_positive(b, node.inputs[0], g, other)]


@translation("Softplus")
def softplus(node, b, gy, mode):
    return [b.mul(gy[0], b.op("Sigmoid", [node.inputs[0]]))]


@translation("Exp")
def exp(node, b, gy, mode):
    return [b.mul(gy[0], node.outputs[0])]


@translation("Sqrt")
def sqrt(node, b, gy, mode):
    return [b.op("Div", [gy[0], b.scale(node.outputs[0], 2.0)])]


@translation("Erf")
def erf(node, b, gy, mode):
    x = node.inputs[0]
    e = b.op("Exp", [b.op("Neg", [b.mul(x, x)])])
    return [b.mul(b.scale(gy[0], 2 / math.sqrt(math.pi)), e)]


def _over_axis(node, b, g: str, fn) -> str:
    """``fn(g, y, axis)`` over the softmax axis; before opset 13 over the 2-D flattening."""
    y = node.outputs[0]
    axis, coerced = _softmax_axis(node, b.rank(y))
    if not coerced:
        return fn(g, y, axis)
    flat = fn(b.op("Flatten", [g], axis=axis), b.op("Flatten", [y], axis=axis), 1)
    return b.reshape_like(flat, g)


@translation("Softmax")
def softmax(node, b, gy, mode):
    def fn(g, y, axis):
        s = b.reduce_sum(b.mul(g, y), [axis], keepdims=1)
        return b.mul(y, b.op("Sub", [g, s]))

    return [_over_axis(node, b, gy[0], fn)]


@translation("LogSoftmax")
def log_softmax(node, b, gy, mode):
    def fn(g, y, axis):
        s = b.reduce_sum(g, [axis], keepdims=1)
        return b.op("Sub", [g, b.mul(b.op("Exp", [y]), s)])

    return [_over_axis(node, b, gy[0], fn)]
