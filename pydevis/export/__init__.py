"""The backward pass as an ONNX graph.

:func:`export_backward` writes one ONNX model that computes, besides the forward pass, the
gradient, deconvnet or guided signal of :meth:`pydevis.Model.vjp`: inputs the original image
input and ``cotangent`` (shaped like the class scores ``Model.backward`` starts from, or like
``tensor``), outputs ``scores`` (the class scores, before a final Softmax), ``signal`` (shaped
like the input) and, for a hidden ``tensor``, ``activation`` (that tensor). A one-hot row of the
cotangent is a class (or unit) target. The batch dimension is free. The graph needs no pydevis
and no custom op: any ONNX Runtime build and execution provider runs it.

Each op on the backward path is translated by the function registered for it in ``rules_*.py``
(one per op family, mirroring ``pydevis/backward/rules``); an op with a backward rule but no
translation is an :class:`ExportError` naming the op and its node.
"""

from __future__ import annotations

import onnx
from onnx import helper

from ..errors import ModelError
from ..kernels import MODES
from ..session import free_batch
from .builder import Builder, ExportError
from .registry import lookup, translated_ops

__all__ = ["ExportError", "export_backward", "translated_ops"]

MIN_OPSET = 11  # ScatterElements, Pad/Slice with inputs, Where with broadcasting
SEED, SCORES, SIGNAL, ACTIVATION = "cotangent", "scores", "signal", "activation"


def export_backward(model, mode: str = "gradient", tensor: str | None = None) -> onnx.ModelProto:
    """The forward and backward pass of ``model`` (a :class:`pydevis.Model`) in ``mode`` as one
    ONNX model (same opset and IR version as the model's); see the module doc."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    graph = model.graph
    if graph.opset < MIN_OPSET:
        raise ModelError(f"{model.path}: opset {graph.opset}; export needs opset >= {MIN_OPSET} "
                         "(convert the model with onnx.version_converter)")
    target = model.resolve_tensor(tensor)
    plan = model.plan(target)  # an op without a backward rule is an UnsupportedOpError here
    steps = []
    for node, _ in plan.steps:
        t = lookup(node.op_type, node.domain)
        if t is None:
            raise ExportError(node.op_type, node.name)
        steps.append((node, t))

    templates = _templates(model, plan, target)
    b = Builder(graph, templates, graph.opset, graph.tensor_names())
    b.data = model.data
    seed = b.fresh("seed")
    grads: dict[str, list[str]] = {target: [seed]}
    for node, t in reversed(steps):
        gy = [b.add_all(grads.pop(o)) if o in grads else None for o in node.outputs]
        if all(g is None for g in gy):
            continue
        gx = t(node, b, gy, mode)
        if len(gx) != len(node.inputs):
            raise RuntimeError(f"translation {t.op_type} returned {len(gx)} grads for "
                               f"{len(node.inputs)} inputs")
        for name, g in zip(node.inputs, gx, strict=True):
            if g is None or name not in model.data:
                continue
            if t.broadcast:
                g = b.unbroadcast(g, b.template(node.outputs[0]), name)
            grads.setdefault(name, []).append(g)
    inp = graph.input_name
    signal = b.add_all(grads[inp]) if inp in grads else b.zeros_like(inp)
    outs = {SCORES: model.scores, SIGNAL: signal}
    if target != model.scores:
        outs[ACTIVATION] = target
    return _assemble(model, b, seed, target, outs, mode)


def _templates(model, plan, target: str) -> dict[str, tuple[tuple[int, int], ...]]:
    """Shape templates ``(a, b)`` = ``a + b·N`` of every non-constant tensor a step touches."""
    names = {model.graph.input_name, target, model.scores}
    for node, _ in plan.steps:
        names.update(n for n in list(node.inputs) + list(node.outputs)
                     if n and n not in model.graph.constants)
    return model.shape_templates(sorted(names))


def _value_info(name: str, template) -> onnx.ValueInfoProto:
    dims = [a if not bb else ("N" if (a, bb) == (0, 1) else None) for a, bb in template]
    return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, dims)


def _assemble(model, b: Builder, seed: str, target: str, outs: dict[str, str],
              mode: str) -> onnx.ModelProto:
    m = free_batch(model.proto, model.graph)
    g = m.graph
    for k, name in b.indices.items():  # the switches of the MaxPools on the path
        node = g.node[k]
        if len(node.output) < 2:
            node.output.append(name)
        else:
            node.output[1] = name
    finals = [helper.make_node("Identity", [src], [b.fresh(key)], name=b.fresh(key))
              for key, src in outs.items()]
    nodes = list(g.node) + b.nodes + finals
    # the interface names win: a forward tensor called "scores" (etc.) is renamed
    rename = {n: n + "::forward" for n in (SEED, SCORES, SIGNAL, ACTIVATION)
              if n in model.graph.tensor_names()}
    rename[seed] = SEED
    rename.update({f.output[0]: key for f, key in zip(finals, outs, strict=True)})
    for node in nodes:
        node.input[:] = [rename.get(i, i) for i in node.input]
        node.output[:] = [rename.get(o, o) for o in node.output]
    for t in g.initializer:
        t.name = rename.get(t.name, t.name)
    image = next(vi for vi in g.input if vi.name == model.graph.input_name)
    image.name = rename.get(image.name, image.name)
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(b.initializers)
    g.input.append(_value_info(SEED, b.template(target)))
    del g.output[:]
    g.output.extend([_value_info(SCORES, b.template(model.scores)),
                     _value_info(SIGNAL, b.template(model.graph.input_name))])
    if ACTIVATION in outs:
        g.output.append(_value_info(ACTIVATION, b.template(target)))
    g.name = f"{g.name or 'model'}_backward_{mode}"
    m.doc_string = (f"pydevis {mode} backward pass: inputs {image.name!r} and 'cotangent' "
                    f"(at {target!r}), outputs 'scores' and 'signal'")
    helper.set_model_props(m, {**{p.key: p.value for p in m.metadata_props},
                               "pydevis.mode": mode, "pydevis.target": target})
    return m
