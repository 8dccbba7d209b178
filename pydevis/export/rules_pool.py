"""Pooling (``backward/rules/pool.py``). MaxPool routes the gradient through the switches read
from the forward MaxPool's ``Indices`` output (added to the forward node; ONNX Runtime picks the
first strict maximum in row-major tap order, as pydevis's kernels do) with ``ScatterElements``:
one scatter-add at opset >= 16; before, one plain scatter per phase of the output grid, the
phases chosen so that no two windows of one phase overlap, summed. AveragePool is a grouped
``ConvTranspose`` of ``g / divisor`` with a kernel of ones.
"""

from __future__ import annotations

import math

import numpy as np

from ..backward.rules.conv import resolve_pads
from ..kernels._reference_pool import _avg_windows
from .builder import INT_MAX, ExportError
from .registry import translation
from .rules_conv import conv_transpose, spatial


def _scatter(b, zflat: str, idx: str, g: str, **attrs) -> str:
    flat = b.ints([-1])
    return b.op("ScatterElements", [zflat, b.op("Reshape", [idx, flat]),
                                    b.op("Reshape", [g, flat])], axis=0, **attrs)


@translation("MaxPool")
def max_pool(node, b, gy, mode):
    x, g = node.inputs[0], gy[0]
    spatial(node, b, x)
    if node.attrs.get("storage_order", 0):
        raise ExportError("MaxPool", node.name, "storage_order=1")
    kernel = tuple(node.attrs["kernel_shape"])
    strides = tuple(node.attrs.get("strides") or (1, 1))
    dilations = tuple(node.attrs.get("dilations") or (1, 1))
    idx = b.maxpool_indices(node)
    zflat = b.op("Reshape", [b.zeros_like(x), b.ints([-1])])
    if b.opset >= 16:
        out = _scatter(b, zflat, idx, g, reduction="add")
    else:
        phases = [math.ceil(((k - 1) * d + 1) / s)
                  for k, s, d in zip(kernel, strides, dilations, strict=True)]
        parts = []
        for ph in range(phases[0]):
            for pw in range(phases[1]):
                if phases == [1, 1]:
                    gp, ip = g, idx
                else:
                    sl = ([ph, pw], [INT_MAX, INT_MAX], [2, 3], phases)
                    gp, ip = b.slice(g, *sl), b.slice(idx, *sl)
                parts.append(_scatter(b, zflat, ip, gp))
        out = b.add_all(parts)
    return [b.reshape_like(out, x)]


@translation("AveragePool")
def average_pool(node, b, gy, mode):
    x = node.inputs[0]
    in_hw = spatial(node, b, x)
    if any(d != 1 for d in node.attrs.get("dilations") or (1, 1)):
        raise ExportError("AveragePool", node.name, "dilations are not supported")
    kernel = tuple(node.attrs["kernel_shape"])
    strides = tuple(node.attrs.get("strides") or (1, 1))
    pads = resolve_pads(node, in_hw, kernel, strides, (1, 1))
    out_hw = b.static_shape(node.outputs[0], node, axes=(2, 3))
    inv = np.zeros(out_hw, np.float32)
    for oh, ow, *_, div in _avg_windows(in_hw, out_hw, kernel, strides, pads,
                                       bool(node.attrs.get("count_include_pad", 0))):
        inv[oh, ow] = 1.0 / div if div > 0 else 0.0
    channels = b.dim(x, 1, node)
    ones = b.const(np.ones((channels, 1, *kernel), np.float32))
    g = b.mul(gy[0], b.const(inv[None, None]))
    return [conv_transpose(b, g, ones, in_hw, out_hw, kernel, strides, pads, (1, 1), channels)]


@translation("GlobalAveragePool")
def global_average_pool(node, b, gy, mode):
    x = node.inputs[0]
    area = int(np.prod(b.static_shape(x, node, axes=range(2, b.rank(x)))))
    return [b.op("Expand", [b.scale(gy[0], 1.0 / area), b.shape_of(x)])]


@translation("GlobalMaxPool")
def global_max_pool(node, b, gy, mode):
    x = node.inputs[0]
    rows = b.op("Reshape", [x, b.ints([0, 0, -1])])
    idx = b.op("ArgMax", [rows], axis=2, keepdims=1)
    g = b.op("Reshape", [gy[0], b.ints([0, 0, 1])])
    out = b.op("ScatterElements", [b.zeros_like(rows), idx, g], axis=2)
    return [b.reshape_like(out, x)]
