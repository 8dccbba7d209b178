"""Conv: the backward is the transposed convolution with the same weights (deconvnet
"filtering"), in every mode.

Padding of the transpose. The forward reads X[oh·s − p_begin + kh·d]. Its adjoint scatters
grad[oh] to those same input rows, so the backward needs the *forward* begin-pads, strides and
dilations, not new ones: the kernel takes them verbatim and handles rows that fall into the
padding (they are dropped). ``auto_pad`` is resolved to explicit pads first, as the spec says:
SAME_* gives out = ceil(in / s) and a total pad of max((out−1)·s + (k−1)·d + 1 − in, 0), split
with the extra pixel at the end (SAME_UPPER) or at the beginning (SAME_LOWER).
"""

from __future__ import annotations

import math

import numpy as np

from ... import kernels
from ...errors import UnsupportedOpError
from ..registry import Rule, rule


def resolve_pads(node, in_hw, kernel, strides, dilations) -> tuple[int, int, int, int]:
    """Explicit (top, left, bottom, right) pads of a Conv/Pool node, auto_pad included."""
    auto = node.attrs.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", "", None):
        pads = list(node.attrs.get("pads") or [0, 0, 0, 0])
        return pads[0], pads[1], pads[2], pads[3]
    if auto == "VALID":
        return 0, 0, 0, 0
    begin, end = [], []
    for size, k, s, d in zip(in_hw, kernel, strides, dilations, strict=True):
        out = math.ceil(size / s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small = total // 2
        big = total - small
        begin.append(small if auto == "SAME_UPPER" else big)
        end.append(big if auto == "SAME_UPPER" else small)
    return begin[0], begin[1], end[0], end[1]


def check_2d(node, shape) -> None:
    if len(shape) != 4:
        raise UnsupportedOpError(node.op_type, node.name, f"only 2-D spatial input, got {shape}")


@rule("Conv", needs=("in:1", "shape:in:0"))
def conv(node, ctx, gy, mode):
    """dX = conv_transpose(g, W) with the forward strides, pads, dilations and groups."""
    return [_conv_backward(node, ctx, gy, ctx.shape(node.inputs[0]))] + \
        [None] * (len(node.inputs) - 1)


def conv_after_relu(node, ctx, gy, mode):
    """The fused Relu -> Conv (or Clip -> Conv) step (``engine.fuse_relu``): Conv's backward to
    the rectifier's output y, then the rectifier's: g·[lo<y<hi], max(g,0) or both, by mode, as
    ``rules.activation`` has it (a Clip whose min is not 0 takes the gradient mode)."""
    y = ctx.value(node.attrs["relu_output"])
    lo, hi = node.attrs.get("relu_lo", 0.0), node.attrs.get("relu_hi", np.inf)
    rect_mode = mode if lo == 0.0 else "gradient"
    return ([_conv_backward(node, ctx, gy, y.shape, rect_mode, y, lo, hi)]
            + [None] * (len(node.inputs) - 1))


def _conv_backward(node, ctx, gy, x_shape, rectify=None, y=None, lo=0.0, hi=np.inf):
    check_2d(node, x_shape)
    if node.inputs[1] not in ctx.graph.constants and not ctx.has(node.inputs[1]):
        raise UnsupportedOpError("Conv", node.name, "its weights depend on the input")
    w = ctx.value(node.inputs[1])
    kernel = tuple(node.attrs.get("kernel_shape") or w.shape[2:])
    strides = tuple(node.attrs.get("strides") or (1, 1))
    dilations = tuple(node.attrs.get("dilations") or (1, 1))
    pads = resolve_pads(node, x_shape[2:], kernel, strides, dilations)
    return kernels.conv2d_backward_data(gy[0], w, x_shape[2:], strides, pads, dilations,
                                        int(node.attrs.get("group", 1)),
                                        constant_weight=node.inputs[1] in ctx.graph.constants,
                                        rectify=rectify, y=y, lo=lo, hi=hi)


#: Not registered by op type: the engine builds fused steps with it.
CONV_AFTER_RELU = Rule("Relu+Conv", conv_after_relu, ("in:1", "shape:in:0"), False)
