"""Pooling. MaxPool routes the gradient through the switches (the deconvnet "unpooling", used in
all modes). They are found again by the kernel from the forward input, with ONNX Runtime's rule
(first strict maximum of the window, in row-major tap order), rather than read from MaxPool's
optional ``Indices`` output: asking ONNX Runtime for that output makes it swap its fast NCHWc
MaxPool for a generic one (5-20x slower; it was half of SqueezeNet's instrumented forward).
ceil_mode needs nothing special (the output size carries it); overlapping windows (AlexNet's
3x3/2) accumulate where two windows chose the same pixel.
"""

from __future__ import annotations

import numpy as np

from ... import kernels
from ...errors import UnsupportedOpError
from ..registry import Rule, rule
from .conv import check_2d, resolve_pads


@rule("MaxPool", needs=("in:0",))
def max_pool(node, ctx, gy, mode):
    """dX[switch] += g, the switch being the window's first strict maximum in x."""
    x = ctx.value(node.inputs[0])
    check_2d(node, x.shape)
    kernel = tuple(node.attrs["kernel_shape"])
    strides = tuple(node.attrs.get("strides") or (1, 1))
    dilations = tuple(node.attrs.get("dilations") or (1, 1))
    pads = resolve_pads(node, x.shape[2:], kernel, strides, dilations)
    return [kernels.max_pool2d_backward(gy[0], x, kernel, strides, pads, dilations)]


def max_pool_after_relu(node, ctx, gy, mode):
    """The fused Relu -> MaxPool step (``engine.fuse_relu``): MaxPool's backward from
    the Relu's output y, then the Relu's (g·[y>0], max(g,0) or both, by mode)."""
    y = ctx.value(node.attrs["relu_output"])
    check_2d(node, y.shape)
    kernel = tuple(node.attrs["kernel_shape"])
    strides = tuple(node.attrs.get("strides") or (1, 1))
    dilations = tuple(node.attrs.get("dilations") or (1, 1))
    pads = resolve_pads(node, y.shape[2:], kernel, strides, dilations)
    return [kernels.max_pool2d_backward(gy[0], y, kernel, strides, pads, dilations, rectify=mode)]


#: Not registered by op type: the engine builds fused steps with it.
MAX_POOL_AFTER_RELU = Rule("Relu+MaxPool", max_pool_after_relu, ("in:0",), False)


@rule("AveragePool", needs=("shape:in:0",))
def average_pool(node, ctx, gy, mode):
    """Each input pixel of a window gets g / (window size, with or without the padding)."""
    x_shape = ctx.shape(node.inputs[0])
    check_2d(node, x_shape)
    if any(d != 1 for d in node.attrs.get("dilations") or (1, 1)):
        raise UnsupportedOpError("AveragePool", node.name, "dilations are not supported")
    kernel = tuple(node.attrs["kernel_shape"])
    strides = tuple(node.attrs.get("strides") or (1, 1))
    pads = resolve_pads(node, x_shape[2:], kernel, strides, (1, 1))
    return [kernels.avg_pool2d_backward(gy[0], x_shape, kernel, strides, pads,
                                        bool(node.attrs.get("count_include_pad", 0)))]


@rule("GlobalAveragePool", needs=("shape:in:0",))
def global_average_pool(node, ctx, gy, mode):
    """g / (H·W) over the map."""
    x_shape = ctx.shape(node.inputs[0])
    check_2d(node, x_shape)
    return [kernels.global_avg_pool_backward(gy[0], x_shape)]


@rule("GlobalMaxPool", needs=("in:0",))
def global_max_pool(node, ctx, gy, mode):
    """g to the (first) arg-max of each map."""
    x = ctx.value(node.inputs[0])
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    gx = np.zeros_like(flat, dtype=gy[0].dtype)
    idx = flat.argmax(axis=2)
    np.put_along_axis(gx, idx[..., None], gy[0].reshape(n, c, 1), axis=2)
    return [gx.reshape(x.shape)]
