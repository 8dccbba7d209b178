"""Data movement (``backward/rules/shape.py``): reshape back, transpose by the inverse
permutation, split where the forward concatenated (and the converse), pad a slice back into
zeros, crop the padding, expand a reduction back over its axes, one-hot products for Gather.
"""

from __future__ import annotations

import numpy as np

from .builder import INT_MAX, ExportError
from .registry import translation


def _operand(node, b, index: int, attr: str, first_version: int):
    """Operands that moved from attributes to inputs (axes, pads, ...); inputs must be constant."""
    if node.since_version >= first_version:
        if index < len(node.inputs) and node.inputs[index]:
            name = node.inputs[index]
            if not b.is_const(name):
                raise ExportError(node.op_type, node.name, f"input {name!r} is not constant")
            return [int(v) for v in np.asarray(b.value(name)).ravel()]
        return None
    value = node.attrs.get(attr)
    return None if value is None else [int(v) for v in np.atleast_1d(value)]


def _rest(node):
    return [None] * (len(node.inputs) - 1)


@translation("Identity", "Dropout", "Cast", "CastLike")
def identity(node, b, gy, mode):
    return [gy[0]] + _rest(node)


@translation("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape(node, b, gy, mode):
    return [b.reshape_like(gy[0], node.inputs[0])] + _rest(node)


@translation("Transpose")
def transpose(node, b, gy, mode):
    perm = node.attrs.get("perm") or list(range(b.rank(node.inputs[0])))[::-1]
    return [b.op("Transpose", [gy[0]], perm=[int(p) for p in np.argsort(perm)])]


@translation("Concat")
def concat(node, b, gy, mode):
    axis = int(node.attrs["axis"]) % b.rank(node.outputs[0])
    sizes = [b.dim(i, axis, node) for i in node.inputs]
    return b.split(gy[0], sizes, axis)


@translation("Split")
def split(node, b, gy, mode):
    parts = [g if g is not None else b.zeros_like(o)
             for g, o in zip(gy, node.outputs, strict=True)]
    axis = int(node.attrs.get("axis", 0)) % b.rank(node.inputs[0])
    return [b.op("Concat", parts, axis=axis)] + _rest(node)


def _pad(b, g: str, rank: int, axis: int, begin: int, end: int) -> str:
    pads = [0] * (2 * rank)
    pads[axis], pads[rank + axis] = begin, end
    return b.op("Pad", [g, b.ints(pads)], mode="constant")


@translation("Slice")
def slice_(node, b, gy, mode):
    """Per sliced axis: reverse (negative step), interleave zeros (step > 1), pad into place."""
    x, g = node.inputs[0], gy[0]
    rank = b.rank(x)
    starts = _operand(node, b, 1, "starts", 10)
    ends = _operand(node, b, 2, "ends", 10)
    axes = _operand(node, b, 3, "axes", 10) or list(range(len(starts)))
    steps = _operand(node, b, 4, "steps", 10) or [1] * len(starts)
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        a %= rank
        dim = b.dim(x, a, node)
        start, stop, step = slice(s, e, st).indices(dim)
        count = len(range(start, stop, step))
        if count == 0:
            raise ExportError("Slice", node.name, f"empty slice on axis {a}")
        if step < 0:  # reverse: the elements then run upward from the last one selected
            g = b.slice(g, [-1], [-INT_MAX], [a], [-1])
            start, step = start + (count - 1) * step, -step
        if step > 1:  # (.., L, ..) -> (.., L, step, ..) -> (.., L·step, ..), zeros between
            u = _pad(b, b.unsqueeze(g, [a + 1]), rank + 1, a + 1, 0, step - 1)
            shape = b.shape_of(g)
            target = b.op("Concat", [b.slice(shape, [0], [a], [0]), b.ints([count * step]),
                                     b.slice(shape, [a + 1], [INT_MAX], [0])], axis=0)
            g = b.op("Reshape", [u, target])
        length = count * step
        if start + length > dim:
            g = b.slice(g, [0], [dim - start], [a])
            length = dim - start
        g = _pad(b, g, rank, a, start, dim - start - length)
    return [g] + _rest(node)


@translation("Pad")
def pad(node, b, gy, mode):
    """Constant padding: g cropped back to the input's extent."""
    if node.attrs.get("mode", "constant") != "constant":
        raise ExportError("Pad", node.name, f"mode {node.attrs['mode']!r}")
    rank = b.rank(node.inputs[0])
    if node.since_version >= 11 and not b.is_const(node.inputs[1]):
        return [_crop_dynamic(node, b, gy[0], rank)] + _rest(node)
    pads = _operand(node, b, 1, "pads", 11)
    axes = _operand(node, b, 3, "axes", 18) or list(range(rank))
    half = len(pads) // 2
    starts, ends = [], []
    for k in range(len(axes)):
        begin, end = pads[k], pads[k + half]
        if begin < 0 or end < 0:
            raise ExportError("Pad", node.name, "negative pads")
        starts.append(begin)
        ends.append(-end if end else INT_MAX)
    g = b.slice(gy[0], starts, ends, [a % rank for a in axes])
    return [g] + _rest(node)


def _crop_dynamic(node, b, g: str, rank: int) -> str:
    """Pads computed in the graph (torch exports): crop with starts and ends read at run time
    (negative pads, refused by the rule, are not detected here)."""
    ins = node.inputs
    axes = ins[3] if len(ins) > 3 and ins[3] and node.since_version >= 18 else None
    if axes is None:
        axes, count = b.ints(range(rank)), rank
    else:
        count = b.value(axes).size if b.is_const(axes) else b.static_shape(axes, node)[0]
        axes = b.op("Cast", [axes], to=7)
    pads = b.op("Cast", [ins[1]], to=7)
    starts = b.slice(pads, [0], [count], [0])
    dims = b.op("Gather", [b.shape_of(g), axes], axis=0)
    ends = b.op("Sub", [dims, b.slice(pads, [count], [2 * count], [0])])
    return b.op("Slice", [g, starts, ends, axes])


@translation("ReduceMean", "ReduceSum")
def reduce(node, b, gy, mode):
    x, g = node.inputs[0], gy[0]
    rank = b.rank(x)
    first = 18 if node.op_type == "ReduceMean" else 13
    axes = _operand(node, b, 1, "axes", first)
    if not axes:
        if node.attrs.get("noop_with_empty_axes", 0):
            return [g] + _rest(node)
        axes = list(range(rank))
    axes = sorted(a % rank for a in axes)
    if not node.attrs.get("keepdims", 1):
        g = b.unsqueeze(g, axes)
    g = b.op("Expand", [g, b.shape_of(x)])
    if node.op_type == "ReduceMean":
        g = b.scale(g, 1.0 / float(np.prod(b.static_shape(x, node, axes))))
    return [g] + _rest(node)


@translation("Expand", broadcast=True)
def expand(node, b, gy, mode):
    return [gy[0], None]


@translation("Gather")
def gather(node, b, gy, mode):
    """g times a one-hot (k, dim) matrix along the axis (repeated indices add up)."""
    x, i = node.inputs
    if not b.is_const(i):
        raise ExportError("Gather", node.name, "its indices are not constant")
    rank = b.rank(x)
    axis = int(node.attrs.get("axis", 0)) % rank
    dim = b.dim(x, axis, node)
    idx = np.asarray(b.value(i)).astype(np.int64).ravel()
    idx = np.where(idx < 0, idx + dim, idx)
    onehot = np.zeros((idx.size, dim), np.float32)
    np.add.at(onehot, (np.arange(idx.size), idx), 1.0)
    g, ndim_i = gy[0], np.asarray(b.value(i)).ndim
    if ndim_i != 1:  # merge (or, for a scalar index, add) the index axes
        target = [0] * axis + [-1] + [b.dim(x, k, node) for k in range(axis + 1, rank)]
        g = b.op("Reshape", [g, b.ints(target)])
    perm = [k for k in range(rank) if k != axis] + [axis]
    moved = b.op("MatMul", [b.op("Transpose", [g], perm=perm), b.const(onehot)])
    return [b.op("Transpose", [moved], perm=[int(p) for p in np.argsort(perm)]), None]
