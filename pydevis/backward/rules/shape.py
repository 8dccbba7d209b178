"""Data movement: reshapes, transposes, concatenation, slicing, padding, reductions.

Each backward is the adjoint of an index map: reshape back, transpose by the inverse
permutation, split where the forward concatenated (and the converse), scatter a slice into
zeros, crop the padding, broadcast a reduction back over its axes.
"""

from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ..registry import rule


def _input_or_attr(node, ctx, index: int, attr: str, first_version: int):
    """Operands that moved from attributes to inputs at ``first_version`` (axes, splits, ...)."""
    if node.since_version >= first_version:
        if index < len(node.inputs) and node.inputs[index]:
            return [int(v) for v in np.asarray(ctx.value(node.inputs[index])).ravel()]
        return None
    value = node.attrs.get(attr)
    return None if value is None else [int(v) for v in np.atleast_1d(value)]


@rule("Identity", "Dropout", "Cast", "CastLike")
def identity(node, ctx, gy, mode):
    """g (Dropout is the identity at inference; Cast between float types keeps the value)."""
    return [gy[0]] + [None] * (len(node.inputs) - 1)


@rule("Reshape", "Flatten", "Squeeze", "Unsqueeze", needs=("shape:in:0",))
def reshape(node, ctx, gy, mode):
    """g reshaped to the input's shape."""
    return [gy[0].reshape(ctx.shape(node.inputs[0]))] + [None] * (len(node.inputs) - 1)


@rule("Transpose")
def transpose(node, ctx, gy, mode):
    """g transposed by the inverse permutation."""
    perm = node.attrs.get("perm") or list(range(gy[0].ndim))[::-1]
    return [np.transpose(gy[0], np.argsort(perm))]


@rule("Concat", needs=tuple(f"shape:in:{i}" for i in range(64)))
def concat(node, ctx, gy, mode):
    """g split along the axis at the input sizes."""
    axis = node.attrs["axis"] % gy[0].ndim
    sizes = [ctx.shape(i)[axis] for i in node.inputs]
    return list(np.split(gy[0], np.cumsum(sizes)[:-1], axis=axis))


@rule("Split", needs=tuple(f"shape:out:{i}" for i in range(64)))
def split(node, ctx, gy, mode):
    """The output gradients concatenated (zeros for outputs that got none)."""
    parts = [g if g is not None else np.zeros(ctx.shape(o), dtype=_dtype(gy))
             for g, o in zip(gy, node.outputs, strict=True)]
    axis = node.attrs.get("axis", 0) % parts[0].ndim
    return [np.concatenate(parts, axis=axis)] + [None] * (len(node.inputs) - 1)


def _dtype(gy):
    return next(g.dtype for g in gy if g is not None)


@rule("Slice", needs=("shape:in:0", "in:1", "in:2", "in:3", "in:4"))
def slice_(node, ctx, gy, mode):
    """g scattered into zeros at the sliced positions."""
    shape = ctx.shape(node.inputs[0])
    starts = _input_or_attr(node, ctx, 1, "starts", 10)
    ends = _input_or_attr(node, ctx, 2, "ends", 10)
    axes = _input_or_attr(node, ctx, 3, "axes", 10) or list(range(len(starts)))
    steps = _input_or_attr(node, ctx, 4, "steps", 10) or [1] * len(starts)
    index = [slice(None)] * len(shape)
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        index[a % len(shape)] = slice(*slice(s, e, st).indices(shape[a % len(shape)]))
    gx = np.zeros(shape, dtype=gy[0].dtype)
    gx[tuple(index)] = gy[0]
    return [gx] + [None] * (len(node.inputs) - 1)


@rule("Pad", needs=("in:1",))
def pad(node, ctx, gy, mode):
    """Constant padding: g cropped back to the input's extent."""
    if node.attrs.get("mode", "constant") != "constant":
        raise UnsupportedOpError("Pad", node.name, f"mode {node.attrs['mode']!r}")
    pads = _input_or_attr(node, ctx, 1, "pads", 11)
    g = gy[0]
    axes = _input_or_attr(node, ctx, 3, "axes", 18) or list(range(g.ndim))
    half = len(pads) // 2
    index = [slice(None)] * g.ndim
    for k, a in enumerate(axes):
        begin, end = pads[k], pads[k + half]
        a %= g.ndim
        if begin < 0 or end < 0:
            raise UnsupportedOpError("Pad", node.name, "negative pads")
        index[a] = slice(begin, g.shape[a] - end)
    return [np.ascontiguousarray(g[tuple(index)])] + [None] * (len(node.inputs) - 1)


def _reduce_axes(node, ctx, ndim: int) -> tuple[int, ...]:
    first = 18 if node.op_type == "ReduceMean" else 13
    axes = _input_or_attr(node, ctx, 1, "axes", first)
    if not axes:
        if node.attrs.get("noop_with_empty_axes", 0):
            return ()
        return tuple(range(ndim))
    return tuple(sorted(a % ndim for a in axes))


@rule("ReduceMean", "ReduceSum", needs=("shape:in:0", "in:1"))
def reduce_mean(node, ctx, gy, mode):
    """g broadcast back over the reduced axes (divided by their size for the mean)."""
    shape = ctx.shape(node.inputs[0])
    axes = _reduce_axes(node, ctx, len(shape))
    g = gy[0]
    if not node.attrs.get("keepdims", 1):
        g = np.expand_dims(g, axes)
    g = np.broadcast_to(g, shape)
    if node.op_type == "ReduceMean":
        g = g / np.asarray(np.prod([shape[a] for a in axes]), dtype=g.dtype)
    return [np.ascontiguousarray(g)] + [None] * (len(node.inputs) - 1)


@rule("Expand", broadcast=True)
def expand(node, ctx, gy, mode):
    """g summed back to the input's shape (by the engine)."""
    return [gy[0], None]


@rule("Gather", needs=("in:1", "shape:in:0"))
def gather(node, ctx, gy, mode):
    """g added back at the gathered indices along the axis."""
    shape = ctx.shape(node.inputs[0])
    axis = node.attrs.get("axis", 0) % len(shape)
    idx = np.asarray(ctx.value(node.inputs[1])).astype(np.int64)
    idx = np.where(idx < 0, idx + shape[axis], idx)
    gx = np.zeros(shape, dtype=gy[0].dtype)
    moved = np.moveaxis(gx, axis, 0)
    g = np.moveaxis(gy[0], list(range(axis, axis + idx.ndim)), list(range(idx.ndim)))
    np.add.at(moved, idx, g)
    return [gx, None]
