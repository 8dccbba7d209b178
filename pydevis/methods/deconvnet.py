"""Zeiler & Fergus (2014): project one hidden unit back to pixels, and the top-9 figure.

The projection keeps only the chosen activation (the rest of its layer zeroed: the cotangent is
that activation's value at its position) and walks the net in reverse in ``deconvnet`` mode:
unpooling through the forward switches, rectifying, filtering with the transposed weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import TargetError
from ..model import Model
from ..targets import parse_one
from .pixels import PixelSpace

_WINDOWED = ("Conv", "MaxPool", "AveragePool")


@dataclass
class Projection:
    """One projected unit: the signal in pixel units (H, W, 3), the unit, its activation and
    the input box that can influence it (y0, y1, x0, x1), end-exclusive."""

    signal: np.ndarray
    tensor: str
    channel: int
    pos: tuple[int, int]
    activation: float
    box: tuple[int, int, int, int]


def project(model: Model, pixels: np.ndarray, unit: str, mode: str = "deconvnet") -> Projection:
    """Project ``unit`` ("TENSOR:CHANNEL", strongest position, or "TENSOR:CHANNEL@Y,X") of the
    image ``pixels`` (H, W, 3) to pixel space."""
    u = parse_one(unit)
    if u.tensor is None:
        raise TargetError(f"{unit!r}: a deconvnet projection needs 'TENSOR:CHANNEL'")
    space = PixelSpace(model)
    v = space.from_pixels(pixels)
    tensor = model.resolve_tensor(u)
    value = model.run(space.to_input(v), [tensor])[tensor]
    if value.ndim != 4 or not 0 <= u.channel < value.shape[1]:
        raise TargetError(f"{unit!r}: tensor {tensor!r} has shape {value.shape}; need a channel "
                          "of an N×C×H×W map")
    plane = value[0, u.channel]
    pos = u.pos if u.pos is not None else np.unravel_index(int(np.argmax(plane)), plane.shape)
    pos = (int(pos[0]), int(pos[1]))
    if not (0 <= pos[0] < plane.shape[0] and 0 <= pos[1] < plane.shape[1]):
        raise TargetError(f"{unit!r}: position out of range for a {plane.shape} map")
    cot = np.zeros_like(value)
    cot[0, u.channel, pos[0], pos[1]] = plane[pos]
    g = model.vjp(space.to_input(v), tensor, cot, mode)
    signal = space.grad_to_pixels(g)[0].transpose(1, 2, 0)
    box = receptive_field(model, tensor, pos)
    return Projection(signal, tensor, u.channel, pos, float(plane[pos]), box)


def receptive_field(model: Model, tensor: str, pos: tuple[int, int]) -> tuple[int, int, int, int]:
    """Input box (y0, y1, x0, x1), end-exclusive, that can influence ``tensor`` at ``pos``.

    Intervals of rows/columns are carried back along every path: a Conv/Pool window maps
    [a, b] to [a·s − pad, b·s − pad + (k−1)·d]; pointwise, Concat, Add... keep it; an op that
    mixes positions otherwise (Gemm, Reshape, global pooling) widens it to the whole map.
    """
    g = model.graph
    shapes = model.shapes(tuple(n.inputs[0] for n, _ in model.plan(tensor).steps if n.inputs)
                           + (g.input_name,), 1)
    boxes: dict[str, list[int]] = {tensor: [pos[0], pos[0], pos[1], pos[1]]}
    for node, _ in reversed(model.plan(tensor).steps):
        out = [boxes[o] for o in node.outputs if o in boxes]
        if not out:
            continue
        b = [min(o[0] for o in out), max(o[1] for o in out),
             min(o[2] for o in out), max(o[3] for o in out)]
        for name in node.inputs:
            if name not in model.data:
                continue
            nb = _box_back(node, b, shapes.get(name), g.constants)
            prev = boxes.get(name)
            boxes[name] = nb if prev is None else [min(prev[0], nb[0]), max(prev[1], nb[1]),
                                                   min(prev[2], nb[2]), max(prev[3], nb[3])]
    _, _, h, w = shapes[g.input_name]
    b = boxes.get(g.input_name, [0, h - 1, 0, w - 1])
    return max(b[0], 0), min(b[1], h - 1) + 1, max(b[2], 0), min(b[3], w - 1) + 1


def _box_back(node, b: list[int], in_shape, constants) -> list[int]:
    from ..backward.rules.conv import resolve_pads

    op = node.op_type
    big = [-(10**9), 10**9, -(10**9), 10**9]
    if op == "Pad" and len(node.inputs) > 1 and node.inputs[1] in constants and \
            len(node.inputs) < 4 and in_shape is not None and len(in_shape) == 4:
        pads = [int(p) for p in constants[node.inputs[1]]]
        return [b[0] - pads[2], b[1] - pads[2], b[2] - pads[3], b[3] - pads[3]]
    if op in _WINDOWED:
        if in_shape is None or len(in_shape) != 4:
            return big
        kernel = tuple(node.attrs.get("kernel_shape") or ())
        if not kernel and op == "Conv" and node.inputs[1] in constants:
            kernel = tuple(constants[node.inputs[1]].shape[2:])
        if len(kernel) != 2:
            return big
        strides = tuple(node.attrs.get("strides") or (1, 1))
        dil = tuple(node.attrs.get("dilations") or (1, 1))
        pt, pl, _, _ = resolve_pads(node, in_shape[2:], kernel, strides, dil)
        return [b[0] * strides[0] - pt, b[1] * strides[0] - pt + (kernel[0] - 1) * dil[0],
                b[2] * strides[1] - pl, b[3] * strides[1] - pl + (kernel[1] - 1) * dil[1]]
    if op in ("GlobalAveragePool", "GlobalMaxPool", "Gemm", "MatMul", "Reshape", "Flatten",
              "Transpose", "ReduceMean", "ReduceSum", "Resize", "Gather", "Slice", "Pad",
              "Split", "Squeeze", "Unsqueeze", "Expand"):
        return big
    return list(b)


@dataclass
class TopHit:
    """One of the top activations of a channel over an image set."""

    image: str
    channel: int
    pos: tuple[int, int]
    activation: float
    projection: np.ndarray  # (h, w, 3) signal inside the box
    patch: np.ndarray  # (h, w, 3) input pixels inside the box
    box: tuple[int, int, int, int]


def top9(model: Model, images: dict[str, np.ndarray], tensor: str, channels: list[int],
         k: int = 9, mode: str = "deconvnet") -> dict[int, list[TopHit]]:
    """For each channel of ``tensor``, its ``k`` strongest activations over ``images``
    (name → (H, W, 3) pixels at the model's size; one hit per image, as in Zeiler & Fergus
    fig. 2), each with its projection (``mode``: deconvnet, guided or gradient) cropped to its
    receptive field and the input patch under the same box."""
    if not images:
        raise ValueError("top9 needs at least one image")
    names = list(images)
    space = PixelSpace(model)
    name = model.resolve_tensor(parse_one(f"{tensor}:0"))
    v = space.from_pixels(np.stack([images[n] for n in names]))
    acts = np.concatenate([model.run(space.to_input(v[i:i + 8]), [name])[name]
                           for i in range(0, len(names), 8)])
    if acts.ndim != 4:
        raise TargetError(f"layer {tensor!r} has shape {acts.shape}; need an N×C×H×W map")
    out: dict[int, list[TopHit]] = {}
    for c in channels:
        if not 0 <= c < acts.shape[1]:
            raise TargetError(f"channel {c} out of range: {tensor!r} has {acts.shape[1]}")
        peak = acts[:, c].reshape(len(names), -1).max(axis=1)
        hits = []
        for i in np.argsort(-peak, kind="stable")[:k]:
            pos = np.unravel_index(int(np.argmax(acts[i, c])), acts.shape[2:])
            p = project(model, images[names[i]], f"{name}:{c}@{pos[0]},{pos[1]}", mode)
            y0, y1, x0, x1 = p.box
            hits.append(TopHit(names[i], c, p.pos, p.activation, p.signal[y0:y1, x0:x1],
                               images[names[i]][y0:y1, x0:x1], p.box))
        out[c] = hits
    return out
