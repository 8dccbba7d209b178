"""Elementwise arithmetic with numpy broadcasting (the engine sums gradients back to shape)."""

from __future__ import annotations

import numpy as np

from ..registry import rule


@rule("Add", broadcast=True)
def add(node, ctx, gy, mode):
    """(g, g)."""
    return [gy[0], gy[0]]


@rule("Sum", broadcast=True)
def sum_(node, ctx, gy, mode):
    """g for every input."""
    return [gy[0]] * len(node.inputs)


@rule("Sub", broadcast=True)
def sub(node, ctx, gy, mode):
    """(g, −g)."""
    return [gy[0], -gy[0]]


@rule("Neg")
def neg(node, ctx, gy, mode):
    """−g."""
    return [-gy[0]]


@rule("Mul", needs=("in:0?1", "in:1?0"), broadcast=True)
def mul(node, ctx, gy, mode):
    """(g·b, g·a)."""
    a, b = node.inputs
    ga = gy[0] * ctx.value(b) if ctx.has(b) else None
    gb = gy[0] * ctx.value(a) if ctx.has(a) else None
    return [ga, gb]


@rule("Div", needs=("in:1", "out:0?1"), broadcast=True)
def div(node, ctx, gy, mode):
    """(g/b, −g·y/b)."""
    b = ctx.value(node.inputs[1])
    ga = gy[0] / b
    gb = -ga * ctx.value(node.outputs[0]) if ctx.has(node.outputs[0]) else None
    return [ga, gb]


@rule("Pow", needs=("in:0", "in:1"), broadcast=True)
def pow_(node, ctx, gy, mode):
    """(g·p·x^(p−1), None): the exponent is taken as a constant."""
    x, p = ctx.value(node.inputs[0]), ctx.value(node.inputs[1]).astype(gy[0].dtype)
    return [gy[0] * p * np.power(x, p - 1), None]
