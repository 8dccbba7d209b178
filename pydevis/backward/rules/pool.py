"""Pooling. MaxPool routes the gradient through the switches that ONNX Runtime recorded in the
forward (its optional ``Indices`` output): this is the deconvnet "unpooling", used in all modes.
Because the switches are the forward's own, ceil_mode, pads, strides < kernel (overlapping
windows, as in AlexNet) and dilations need no special handling: the kernel accumulates where two
windows chose the same pixel.
"""

from __future__ import annotations

import numpy as np

from ... import kernels
from ...errors import UnsupportedOpError
from ..registry import rule
from .conv import check_2d, resolve_pads


@rule("MaxPool", needs=("indices:0", "shape:in:0"))
def max_pool(node, ctx, gy, mode):
    """dX[switch] += g."""
    x_shape = ctx.shape(node.inputs[0])
    check_2d(node, x_shape)
    return [kernels.max_unpool2d(gy[0], ctx.indices(node.outputs[0]), x_shape)]


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
