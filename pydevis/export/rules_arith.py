"""Elementwise arithmetic (``backward/rules/arith.py``); the exporter sums each gradient back to
its input's shape (numpy broadcasting) with ReduceSum."""

from __future__ import annotations

import numpy as np

from .registry import translation


@translation("Add", broadcast=True)
def add(node, b, gy, mode):
    return [gy[0], gy[0]]


@translation("Sum", broadcast=True)
def sum_(node, b, gy, mode):
    return [gy[0]] * len(node.inputs)


@translation("Sub", broadcast=True)
def sub(node, b, gy, mode):
    neg = b.op("Neg", [gy[0]]) if b.wants_grad(node.inputs[1]) else None
    return [gy[0], neg]


@translation("Neg")
def neg(node, b, gy, mode):
    return [b.op("Neg", [gy[0]])]


@translation("Mul", broadcast=True)
def mul(node, b, gy, mode):
    a, c = node.inputs
    ga = b.mul(gy[0], c) if b.wants_grad(a) else None
    gc = b.mul(gy[0], a) if b.wants_grad(c) else None
    return [ga, gc]


@translation("Div", broadcast=True)
def div(node, b, gy, mode):
    ga = b.op("Div", [gy[0], node.inputs[1]])
    gb = None
    if b.wants_grad(node.inputs[1]):
        gb = b.op("Neg", [b.mul(ga, node.outputs[0])])
    return [ga, gb]


@translation("Pow", broadcast=True)
def pow_(node, b, gy, mode):
    """g·p·x^(p−1); the exponent is taken as a constant, as in the rule."""
    x, p = node.inputs
    if b.is_const(p):
        pf = b.const(np.asarray(b.value(p), np.float32))
    else:
        pf = b.op("Cast", [p], to=1)
    pm1 = b.op("Sub", [pf, b.const(1.0)])
    return [b.mul(b.mul(gy[0], pf), b.op("Pow", [x, pm1])), None]
