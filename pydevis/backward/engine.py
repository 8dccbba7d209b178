"""The backward walk: from a seed gradient at a target tensor back to the image input.

Only nodes on a path from the input to the target are visited, in reverse topological order;
where a tensor fans out its gradients are summed; broadcasting rules get their gradients summed
down to the input shapes here, not in each rule. Weights and shape tensors never get gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import kernels
from ..errors import ModelError, UnsupportedOpError
from ..graph import Graph, Node
from .registry import NONDIFF, Rule, lookup
from .rules.activation import clip_bounds


@dataclass(frozen=True)
class Plan:
    """What one backward walk to ``target`` visits and reads from the forward pass."""

    target: str
    steps: tuple[tuple[Node, Rule], ...]  # the graph's nodes on the way, with their rules
    values: tuple[str, ...]  # tensors the instrumented forward must return (target first)
    shapes: tuple[str, ...]  # tensors whose shapes the rules read
    walk: tuple[tuple[Node, Rule], ...] = ()  # what run() executes: steps, some fused


class Context:
    """What a rule may read: forward values (static or exposed) and tensor shapes."""

    def __init__(self, graph: Graph, values: dict[str, np.ndarray],
                 shapes: dict[str, tuple[int, ...]], data: set[str] | None = None):
        self.graph = graph
        self._values = values
        self._shapes = shapes
        self._data = data

    def wants_grad(self, name: str) -> bool:
        """Whether ``name`` depends on the image (else its gradient is not worth computing)."""
        return self._data is None or name in self._data

    def value(self, name: str) -> np.ndarray:
        if name in self.graph.constants:
            return self.graph.constants[name]
        return self._values[name]

    def has(self, name: str) -> bool:
        return bool(name) and (name in self.graph.constants or name in self._values)

    def shape(self, name: str) -> tuple[int, ...]:
        if name in self._shapes:
            return self._shapes[name]
        return tuple(self.value(name).shape)


def make_plan(graph: Graph, target: str, data: set[str]) -> Plan:
    """Collect the nodes between the input and ``target`` and what their rules need.

    Raises :class:`UnsupportedOpError` naming the first op on the path that has no rule.
    """
    if target not in data:
        raise ModelError(f"tensor {target!r} does not depend on the input {graph.input_name!r}")
    steps: list[tuple[Node, Rule]] = []
    values: list[str] = [target]
    shapes: list[str] = []
    for node in graph.ancestors({target}):
        if node.op_type in NONDIFF or not any(o in data for o in node.outputs):
            continue
        rule = lookup(node.op_type, node.domain)
        if rule is None:
            custom = node.domain not in ("", "ai.onnx")
            raise UnsupportedOpError(node.op_type, node.name,
                                     f"domain {node.domain!r}" if custom else "")
        steps.append((node, rule))
        needs = list(rule.needs)
        if rule.broadcast:
            needs += [f"shape:in:{i}" for i in range(len(node.inputs))]
        for token in needs:
            _resolve(token, node, graph, data, values, shapes)
    walk = steps
    if FUSE:
        walk, dropped = fuse_relu(steps, graph, target)
        for node, rule in walk:  # what the fused steps read instead
            if "relu_output" in node.attrs:
                values.append(node.attrs["relu_output"])
            if node.op_type == "Concat":
                for token in rule.needs:
                    _resolve(token, node, graph, data, values, shapes)
        values = [v for v in values if v not in dropped]
    return Plan(target, tuple(steps), tuple(dict.fromkeys(values)), tuple(dict.fromkeys(shapes)),
                tuple(walk))


#: Fuse Relu -> MaxPool, Relu -> Conv and Clip -> Conv pairs (:func:`fuse_relu`); False walks
#: them one by one.
FUSE = True


def _clip_bounds(node: Node, graph: Graph) -> tuple[float, float] | None:
    """A Clip's (min, max) when the graph fixes them (attributes before opset 11, one-number
    constant inputs since), read as ``rules.activation.clip`` reads them; None when an input
    sets them or they are not numbers with min <= max (that Clip is then not fused)."""
    if node.since_version >= 11:
        for name in node.inputs[1:3]:
            if name and (name not in graph.constants or graph.constants[name].size != 1):
                return None
    lo, hi = clip_bounds(node, graph.constants.__getitem__)
    return (lo, hi) if lo <= hi else None  # NaN fails too


def fuse_relu(steps: list[tuple[Node, Rule]], graph: Graph,
              target: str) -> tuple[list[tuple[Node, Rule]], set[str]]:
    """The steps run() executes, and the forward tensors they no longer read: one step for each
    MaxPool or Conv whose (first) input is the output of a Relu read by nothing else, and for
    each Conv whose input is such a Clip's output with fixed bounds (ReLU6; Plan.steps keeps
    the graph's nodes for the rest of pydevis).

    The fused step gives the Relu's input the MaxPool's (Conv's) gradient then the Relu's
    backward, the same numbers as the two steps (``rules.pool.max_pool_after_relu``,
    ``rules.conv.conv_after_relu``); on the C++ backend the rectifier runs on each plane (tile
    row, for Winograd convs) while it is in cache. The Relu's output must be read only by that
    node (no fan-out gradient to add first), and be neither the target nor a graph output.

    A Concat of such Relus' outputs (SqueezeNet's fire modules, GoogLeNet's inceptions) read by
    one MaxPool or Conv fuses too: the Concat's output is the concatenation of the Relus', so
    the fused step rectifies with it, and the Concat then splits that gradient among the Relus'
    inputs (its step reads them in place of the Relus' outputs, which the forward then no
    longer returns: they are the dropped set). The Relus' separate passes over the gradient go.
    """
    from .rules.conv import CONV_AFTER_RELU
    from .rules.pool import MAX_POOL_AFTER_RELU

    onnx_domain = ("", "ai.onnx")
    rules = {"MaxPool": MAX_POOL_AFTER_RELU, "Conv": CONV_AFTER_RELU}
    relus = {n.outputs[0]: n for n, _ in steps if n.op_type == "Relu" and n.domain in onnx_domain}
    bounds: dict[str, tuple[float, float]] = {}  # Clip output -> its (min, max)
    for n, _ in steps:
        if n.op_type == "Clip" and n.domain in onnx_domain and n.outputs[0] not in relus:
            b = _clip_bounds(n, graph)
            if b is not None:
                relus[n.outputs[0]], bounds[n.outputs[0]] = n, b
    concats = _concats_of_relus(steps, graph, target, relus, bounds)
    # by node identity (names may be empty or repeated): MaxPool / Conv (and Concat) -> the
    # node replacing it, and the Relus whose backward runs inside a fused step
    fused: dict[int, Node] = {}
    absorbed: set[int] = set()
    dropped: set[str] = set()
    for node, _ in steps:
        if node.op_type not in rules or node.domain not in onnx_domain or not node.inputs:
            continue
        y = node.inputs[0]
        if (y == target or y in graph.output_names or y in node.inputs[1:]
                or len(graph.consumers.get(y, [])) != 1 or len(node.outputs) != 1
                or (y in bounds and node.op_type != "Conv")):
            continue
        if y in concats:
            concat, pieces = concats[y]
            name, op, x = concat.name, "Relu", y
            fused[id(concat)] = Node(name=concat.name, op_type="Concat", domain=concat.domain,
                                     inputs=[r.inputs[0] for r in pieces],
                                     outputs=list(concat.outputs), attrs=dict(concat.attrs),
                                     since_version=concat.since_version, index=concat.index)
            absorbed.update(id(r) for r in pieces)
            dropped.update(r.outputs[0] for r in pieces)
        elif y in relus:
            relu = relus[y]
            name, op, x = relu.name, relu.op_type, relu.inputs[0]
            absorbed.add(id(relu))
        else:
            continue
        lo, hi = bounds.get(y, (0.0, np.inf))
        fused[id(node)] = Node(name=f"{name}+{node.name}", op_type=f"{op}+{node.op_type}",
                               domain="", inputs=[x, *node.inputs[1:]],
                               outputs=list(node.outputs),
                               attrs={**node.attrs, "relu_output": y, "relu_lo": lo,
                                      "relu_hi": hi},
                               since_version=node.since_version, index=node.index)
    out: list[tuple[Node, Rule]] = []
    for node, rule in steps:
        if id(node) in absorbed:
            continue  # its backward runs inside the fused step
        if id(node) in fused:
            out.append((fused[id(node)], rules.get(node.op_type, rule)))
            continue
        out.append((node, rule))
    return out, dropped


def _concats_of_relus(steps: list[tuple[Node, Rule]], graph: Graph, target: str,
                      relus: dict[str, Node],
                      bounds: dict[str, tuple[float, float]]) -> dict[str, tuple[Node, list[Node]]]:
    """Concat output -> (the Concat, its Relus) for each Concat whose inputs are distinct
    outputs of plain Relus (not Clips), each read by that Concat alone and neither the target
    nor a graph output."""
    found: dict[str, tuple[Node, list[Node]]] = {}
    for node, _ in steps:
        ins = node.inputs
        if (node.op_type != "Concat" or node.domain not in ("", "ai.onnx") or not ins
                or len(node.outputs) != 1 or len(set(ins)) != len(ins)):
            continue
        if all(i in relus and i not in bounds and relus[i].op_type == "Relu" and i != target
               and i not in graph.output_names and len(graph.consumers.get(i, [])) == 1
               for i in ins):
            found[node.outputs[0]] = (node, [relus[i] for i in ins])
    return found


def _resolve(token: str, node: Node, graph: Graph, data: set[str], values: list[str],
             shapes: list[str]) -> None:
    parts = token.split(":")
    if parts[0] == "shape":
        names = node.inputs if parts[1] == "in" else node.outputs
        k = int(parts[2])
        if k < len(names) and names[k] and names[k] not in graph.constants:
            shapes.append(names[k])
        return
    names = node.inputs if parts[0] == "in" else node.outputs
    index, _, cond = parts[1].partition("?")
    k = int(index)
    if k >= len(names) or not names[k] or names[k] in graph.constants:
        return
    if cond and not (int(cond) < len(node.inputs) and node.inputs[int(cond)] in data):
        return
    values.append(names[k])


def run(plan: Plan, ctx: Context, seed: np.ndarray, data: set[str], input_name: str,
        mode: str) -> np.ndarray:
    """Walk ``plan`` backwards from ``seed`` (the gradient at the target) to the input."""
    grads: dict[str, np.ndarray] = {plan.target: seed}
    for node, rule in reversed(plan.walk or plan.steps):
        gy = [grads.pop(o, None) if o else None for o in node.outputs]
        if all(g is None for g in gy):
            continue
        gx = rule(node, ctx, gy, mode)
        if len(gx) != len(node.inputs):
            raise RuntimeError(f"rule {rule.op_type} returned {len(gx)} grads for "
                               f"{len(node.inputs)} inputs")
        for name, g in zip(node.inputs, gx, strict=True):
            if g is None or name not in data:
                continue
            if rule.broadcast:
                g = unbroadcast(g, ctx.shape(name))
            prev = grads.get(name)
            grads[name] = g if prev is None else kernels.add(prev, g)
    out = grads.get(input_name)
    if out is None:  # the target does not depend on the input through any differentiable path
        return np.zeros_like(seed, shape=ctx.shape(input_name))
    return out


def unbroadcast(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``g`` over the axes that numpy broadcasting added to reach ``g.shape`` from ``shape``."""
    if g.shape == tuple(shape):
        return g
    extra = g.ndim - len(shape)
    if extra > 0:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, (a, b) in enumerate(zip(g.shape, shape, strict=True))
                 if b == 1 and a != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)
