"""A small IR over an ONNX graph: nodes in topological order, attributes with the ONNX defaults
filled in, static values (initializers and Constant outputs) as numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import ModelError


@dataclass
class Node:
    """One ONNX node; ``attrs`` holds every attribute of the schema, defaults included."""

    name: str
    op_type: str
    domain: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]
    since_version: int = 1
    index: int = 0

    def __repr__(self) -> str:
        return f"Node({self.op_type} {self.name!r})"


@dataclass
class Graph:
    """Topologically ordered nodes with the lookup tables the engine needs."""

    nodes: list[Node]
    constants: dict[str, np.ndarray]
    input_name: str
    output_names: list[str]
    opset: int
    producer: dict[str, Node] = field(default_factory=dict)
    consumers: dict[str, list[Node]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for node in self.nodes:
            for out in node.outputs:
                if out:
                    self.producer[out] = node
            for inp in node.inputs:
                if inp:
                    self.consumers.setdefault(inp, []).append(node)

    def node_by_name(self, name: str) -> Node | None:
        for node in self.nodes:
            if node.name == name:
                return node
        return None

    def tensor_names(self) -> set[str]:
        names = {self.input_name} | set(self.constants)
        for node in self.nodes:
            names.update(o for o in node.outputs if o)
        return names

    def ancestors(self, targets: set[str]) -> list[Node]:
        """Nodes needed to compute ``targets``, in topological order."""
        needed = set(targets)
        keep: list[Node] = []
        for node in reversed(self.nodes):
            if any(o in needed for o in node.outputs):
                keep.append(node)
                needed.update(i for i in node.inputs if i)
        keep.reverse()
        return keep

    def data_dependent(self, nondiff: frozenset[str]) -> set[str]:
        """Tensors that depend differentiably on the image input.

        Outputs of ops in ``nondiff`` (Shape, Size, ...) carry no gradient, nor do integer outputs
        such as MaxPool's Indices (handled by the rules returning ``None``).
        """
        data = {self.input_name}
        for node in self.nodes:
            if node.op_type in nondiff:
                continue
            if any(i in data for i in node.inputs if i):
                data.update(o for o in node.outputs if o)
        return data


def _attr_defaults(op_type: str, domain: str, opset: int) -> tuple[dict[str, Any], int]:
    try:
        schema = onnx.defs.get_schema(op_type, opset, domain)
    except Exception:
        return {}, 1
    defaults: dict[str, Any] = {}
    for name, attr in schema.attributes.items():
        if attr.default_value is not None and attr.default_value.type != 0:
            defaults[name] = _decode(helper.get_attribute_value(attr.default_value))
    return defaults, schema.since_version


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def build(model: onnx.ModelProto) -> Graph:
    """Build the IR of ``model`` (already checked).

    The single non-initializer input is the image.
    """
    g = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    constants = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    inputs = [i.name for i in g.input if i.name not in constants]
    if len(inputs) != 1:
        raise ModelError(f"expected exactly one image input, found {len(inputs)}: {inputs}")
    nodes: list[Node] = []
    for k, n in enumerate(g.node):
        defaults, since = _attr_defaults(n.op_type, n.domain, opset)
        attrs = dict(defaults)
        for a in n.attribute:
            attrs[a.name] = _decode(helper.get_attribute_value(a))
        node = Node(n.name or f"{n.op_type}_{k}", n.op_type, n.domain, list(n.input),
                    list(n.output), attrs, since, k)
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
            constants[n.output[0]] = _constant_value(node)
        nodes.append(node)
    return Graph(nodes, constants, inputs[0], [o.name for o in g.output], opset)


def _constant_value(node: Node) -> np.ndarray:
    a = node.attrs
    if "value" in a:
        return np.asarray(a["value"])
    for key, dtype in (("value_float", np.float32), ("value_int", np.int64),
                       ("value_floats", np.float32), ("value_ints", np.int64)):
        if key in a:
            return np.asarray(a[key], dtype=dtype)
    raise ModelError(f"Constant node {node.name!r} has an unsupported value attribute")
