"""Graph-building helpers for the exported backward pass.

A :class:`Builder` appends nodes and initializers to a copy of the forward model. Translations
(``rules_*.py``) read what the backward rules read from the forward pass — tensor *names* instead
of values (the forward runs in the same graph), constant values, and shapes — and emit ONNX nodes.

Shapes. Each tensor's shape is known as a *template* of ``(a, b)`` pairs, one per dimension,
meaning ``a + b·N`` at batch ``N`` (measured by ``Model.shape_templates``); a dimension with
``b == 0`` is static and may be baked into the graph, a batch-dependent one is read at run time
with ``Shape``.
Ops whose operands moved from attributes to inputs (ReduceSum, Split, Squeeze/Unsqueeze at opset
13) are written in the form of the model's opset.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import ModelError
from ..graph import Graph, Node

PREFIX = "pydevis_bwd/"
INT_MAX = np.iinfo(np.int64).max


class ExportError(ModelError):
    """The backward pass of an op cannot be written as ONNX (one line, exit code 2)."""

    def __init__(self, op_type: str, node_name: str, detail: str = "") -> None:
        msg = f"op {op_type} (node {node_name!r}) has no ONNX translation of its backward rule"
        super().__init__(msg + (f": {detail}" if detail else ""))
        self.op_type = op_type
        self.node_name = node_name


class Builder:
    """Collects backward nodes; every name it makes starts with :data:`PREFIX`."""

    def __init__(self, graph: Graph, templates: dict[str, tuple[tuple[int, int], ...]],
                 opset: int, taken: set[str]):
        self.graph = graph
        self.templates = templates
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.indices: dict[int, str] = {}  # forward MaxPool node index -> its added Indices output
        self.data: set[str] = set()  # tensors that depend on the image (set by the exporter)
        self._taken = set(taken)
        self._consts: dict[tuple, str] = {}
        self._count = 0

    # ---- names, constants, nodes -----------------------------------------------------------
    def fresh(self, hint: str) -> str:
        while True:
            self._count += 1
            name = f"{PREFIX}{hint}_{self._count}"
            if name not in self._taken:
                self._taken.add(name)
                return name

    def const(self, value, dtype=np.float32) -> str:
        """An initializer holding ``value`` (deduplicated by content)."""
        arr = np.ascontiguousarray(np.asarray(value, dtype=dtype))
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            name = self.fresh("const")
            self.initializers.append(numpy_helper.from_array(arr, name))
            self._consts[key] = name
        return self._consts[key]

    def ints(self, values) -> str:
        return self.const(np.asarray(values, np.int64).reshape(-1), np.int64)

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs):
        """Append one node; returns its output name (or the list of them when ``n_out > 1``)."""
        outs = [self.fresh(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.fresh(op_type),
                                           **attrs))
        return outs if n_out > 1 else outs[0]

    # ---- what rules read -------------------------------------------------------------------
    def value(self, name: str) -> np.ndarray:
        """A constant's value (initializer or Constant output)."""
        return self.graph.constants[name]

    def wants_grad(self, name: str) -> bool:
        return bool(name) and name in self.data

    def is_const(self, name: str) -> bool:
        return bool(name) and name in self.graph.constants

    def template(self, name: str) -> tuple[tuple[int, int], ...]:
        if name in self.graph.constants:
            return tuple((int(d), 0) for d in self.graph.constants[name].shape)
        return self.templates[name]

    def rank(self, name: str) -> int:
        return len(self.template(name))

    def dim(self, name: str, axis: int, node: Node) -> int:
        """A static dimension; a batch-dependent one is an :class:`ExportError`."""
        a, b = self.template(name)[axis]
        if b:
            raise ExportError(node.op_type, node.name,
                              f"axis {axis} of {name!r} depends on the batch size")
        return a

    def static_shape(self, name: str, node: Node, axes=None) -> tuple[int, ...]:
        axes = range(self.rank(name)) if axes is None else axes
        return tuple(self.dim(name, a, node) for a in axes)

    def maxpool_indices(self, node: Node) -> str:
        """The name of ``node``'s Indices output (the exporter adds it to the forward node)."""
        if len(node.outputs) > 1 and node.outputs[1]:
            return node.outputs[1]
        if node.index not in self.indices:
            self.indices[node.index] = self.fresh("indices")
        return self.indices[node.index]

    # ---- helpers ---------------------------------------------------------------------------
    def shape_of(self, name: str) -> str:
        return self.op("Shape", [name])

    def zeros_like(self, name: str) -> str:
        zero = helper.make_tensor("value", onnx.TensorProto.FLOAT, [1], [0.0])
        return self.op("ConstantOfShape", [self.shape_of(name)], value=zero)

    def reshape_like(self, g: str, like: str) -> str:
        return self.op("Reshape", [g, self.shape_of(like)])

    def mul(self, a: str, b: str) -> str:
        return self.op("Mul", [a, b])

    def scale(self, g: str, k: float) -> str:
        return g if k == 1.0 else self.op("Mul", [g, self.const(k)])

    def add_all(self, names: list[str]) -> str:
        return names[0] if len(names) == 1 else self.op("Sum", names)

    def reduce_sum(self, g: str, axes, keepdims: int) -> str:
        axes = [int(a) for a in axes]
        if self.opset >= 13:
            return self.op("ReduceSum", [g, self.ints(axes)], keepdims=keepdims)
        return self.op("ReduceSum", [g], axes=axes, keepdims=keepdims)

    def unsqueeze(self, g: str, axes) -> str:
        axes = [int(a) for a in axes]
        if self.opset >= 13:
            return self.op("Unsqueeze", [g, self.ints(axes)])
        return self.op("Unsqueeze", [g], axes=axes)

    def squeeze(self, g: str, axes) -> str:
        axes = [int(a) for a in axes]
        if self.opset >= 13:
            return self.op("Squeeze", [g, self.ints(axes)])
        return self.op("Squeeze", [g], axes=axes)

    def split(self, g: str, sizes, axis: int) -> list[str]:
        if len(sizes) == 1:
            return [self.op("Identity", [g])]
        if self.opset >= 13:
            return self.op("Split", [g, self.ints(sizes)], n_out=len(sizes), axis=axis)
        return self.op("Split", [g], n_out=len(sizes), axis=axis, split=[int(s) for s in sizes])

    def slice(self, g: str, starts, ends, axes, steps=None) -> str:
        ins = [g, self.ints(starts), self.ints(ends), self.ints(axes)]
        if steps is not None:
            ins.append(self.ints(steps))
        return self.op("Slice", ins)

    def unbroadcast(self, g: str, g_template, in_name: str) -> str:
        """Sum ``g`` (shape ``g_template``) down to the shape of ``in_name`` (numpy rules)."""
        shape = self.template(in_name)
        extra = len(g_template) - len(shape)
        if extra > 0:
            g = self.reduce_sum(g, range(extra), keepdims=0)
        axes = [i for i, (a, b) in enumerate(zip(g_template[extra:], shape, strict=True))
                if b == (1, 0) and a != (1, 0)]
        if axes:
            g = self.reduce_sum(g, axes, keepdims=1)
        return g

    def transpose_pads(self, in_hw, out_hw, kernel, strides, pads, dilations):
        """ConvTranspose pads and output_padding giving back exactly ``in_hw`` from ``out_hw``:
        begin pads as in the forward, the end pad (or output padding) making up the rest."""
        begin, end, extra = [], [], []
        for i in range(2):
            full = strides[i] * (out_hw[i] - 1) + (kernel[i] - 1) * dilations[i] + 1
            rest = full - pads[i] - in_hw[i]
            begin.append(int(pads[i]))
            end.append(max(rest, 0))
            extra.append(max(-rest, 0))
        return begin + end, extra
