"""Conv (``backward/rules/conv.py``): the backward is ``ConvTranspose`` with the same weights,
groups, strides and dilations, the forward's begin pads, and an end pad (or output padding) that
gives back exactly the forward input's size, in every mode.
"""

from __future__ import annotations

from ..backward.rules.conv import resolve_pads
from .builder import ExportError
from .registry import translation


def spatial(node, b, x: str) -> tuple[int, int]:
    """(H, W) of a 4-D input, static."""
    if b.rank(x) != 4:
        raise ExportError(node.op_type, node.name,
                          f"only 2-D spatial input, got rank {b.rank(x)}")
    return b.static_shape(x, node, axes=(2, 3))


def conv_transpose(b, g: str, w: str, in_hw, out_hw, kernel, strides, pads, dilations,
                   group: int) -> str:
    """The adjoint of a Conv with weights ``w`` whose input is ``in_hw`` and output ``out_hw``."""
    tpads, extra = b.transpose_pads(in_hw, out_hw, kernel, strides, pads, dilations)
    attrs = dict(kernel_shape=list(kernel), strides=list(strides), dilations=list(dilations),
                 pads=tpads, group=int(group))
    if any(extra):
        attrs["output_padding"] = extra
    return b.op("ConvTranspose", [g, w], **attrs)


@translation("Conv")
def conv(node, b, gy, mode):
    x, w = node.inputs[0], node.inputs[1]
    in_hw = spatial(node, b, x)
    if b.wants_grad(w):
        raise ExportError("Conv", node.name, "its weights depend on the input")
    kernel = tuple(node.attrs.get("kernel_shape") or b.static_shape(w, node)[2:])
    strides = tuple(node.attrs.get("strides") or (1, 1))
    dilations = tuple(node.attrs.get("dilations") or (1, 1))
    pads = resolve_pads(node, in_hw, kernel, strides, dilations)
    out_hw = b.static_shape(node.outputs[0], node, axes=(2, 3))
    gx = conv_transpose(b, gy[0], w, in_hw, out_hw, kernel, strides, pads, dilations,
                        int(node.attrs.get("group", 1)))
    return [gx] + [None] * (len(node.inputs) - 1)
