"""The tensors a unit can be taken from, and near names for a name that is not one of them.

A unit (``TENSOR:CHANNEL[@Y,X]``) can be taken from any floating-point tensor that depends on
the image input: the output of every node on a path from the input (the model input itself and
outputs of shape ops excepted). :func:`list_tensors` gives each one's shape (the batch dimension
as ``N``), its producing op and node, and whether its backward path is supported (every op
between it and the input has a backward rule).
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass

import numpy as np

from .errors import PydevisError
from .graph import Node


@dataclass
class TensorInfo:
    name: str
    shape: list  # ints, the batch dimension as "N" (or "2N"... for batch-proportional reshapes)
    op: str
    node: str
    backward: bool  # every op between it and the input has a backward rule
    reason: str = ""  # why not, when backward is False

    @property
    def channels(self) -> int | None:
        return self.shape[1] if len(self.shape) >= 2 and isinstance(self.shape[1], int) else None

    def row(self) -> dict:
        return asdict(self)


def _dim(a: int, b: int) -> int | str:
    if b == 0:
        return int(a)
    n = "N" if b == 1 else f"{b}N"
    return n if a == 0 else f"{n}{a:+d}"


def candidates(model) -> list[tuple[str, Node]]:
    """(tensor name, producing node) of every tensor that depends on the input, in graph order."""
    g = model.graph
    out = []
    for node in g.nodes:
        for k, name in enumerate(node.outputs):
            if name and name in model.data and not (node.op_type == "MaxPool" and k > 0):
                out.append((name, node))
    return out


def list_tensors(model, pattern: str | None = None) -> list[TensorInfo]:
    """Every tensor a unit can be taken from (see the module doc), in graph order; ``pattern``
    keeps those whose name, op or node name contains it (case-insensitive)."""
    cands = candidates(model)
    if pattern:
        p = pattern.lower()
        cands = [(t, n) for t, n in cands
                 if p in t.lower() or p in n.op_type.lower() or p in n.name.lower()]
    if not cands:
        return []
    names = tuple(t for t, _ in cands)
    x = np.zeros((1, *model.input_dims()), np.float32)
    first = model.run(x, names)  # dtypes (integer outputs carry no unit)
    keep = [(t, n) for t, n in cands if np.issubdtype(first[t].dtype, np.floating)]
    templates = model.shape_templates(t for t, _ in keep)
    out = []
    for t, node in keep:
        shape = [_dim(a, b) for a, b in templates[t]]
        try:
            model.plan(t)
            ok, reason = True, ""
        except PydevisError as exc:
            ok, reason = False, str(exc)
        out.append(TensorInfo(t, shape, node.op_type, node.name, ok, reason))
    return out


def names(model) -> list[str]:
    """Tensor and node names a unit may name."""
    out = []
    for t, node in candidates(model):
        out += [t, node.name]
    return list(dict.fromkeys(out))


def near(name: str, choices: list[str], n: int = 5) -> list[str]:
    """Up to ``n`` names near ``name``: those containing it (case-insensitive), then difflib's
    close matches."""
    low = name.lower()
    sub = [c for c in choices if low and low in c.lower()]
    lowered = {c.lower(): c for c in choices}
    close = [lowered[c] for c in difflib.get_close_matches(low, list(lowered), n=n, cutoff=0.5)]
    return list(dict.fromkeys(sub[:n] + close))[:n]


def suggestion(name: str, model) -> str:
    """``"; did you mean 'a', 'b'?"`` or a pointer to ``pydevis info --tensors``."""
    close = near(name, names(model))
    if close:
        return "; did you mean " + ", ".join(repr(c) for c in close) + "?"
    return f"; `pydevis info {model.path} --tensors` lists them"


def expand_units(model, units) -> list[str]:
    """``TENSOR:CHANNEL[@Y,X]`` strings, checked (tensor, backward path, channel and position
    ranges) before any work, with the tensor's canonical name; ``TENSOR:all`` is every channel
    of the tensor."""
    from .errors import TargetError
    from .targets import Unit, parse_one, seed

    out: list[str] = []
    for spec in units:
        text = str(spec).strip()
        head, sep, tail = text.rpartition(":")
        every = bool(sep) and tail.strip().lower() == "all"
        try:
            unit = Unit(head, 0) if every else parse_one(text)
        except TargetError:
            raise TargetError(f"unit {text!r}: expected TENSOR:CHANNEL, TENSOR:CHANNEL@Y,X or "
                              "TENSOR:all") from None
        if unit.tensor is None:
            raise TargetError(f"unit {text!r}: expected TENSOR:CHANNEL (a class index goes to "
                              "--class)")
        name = model.resolve_tensor(unit)
        model.plan(name)  # an op without a backward rule on the way: refused now
        shape = model.shapes((name,), 1)[name]
        if len(shape) < 2:
            raise TargetError(f"unit {text!r}: tensor {name!r} of shape {list(shape)} has no "
                              "channel axis")
        if every:
            out += [f"{name}:{c}" for c in range(shape[1])]
            continue
        unit = Unit(name, unit.channel, unit.pos)
        seed(np.zeros((1, *shape[1:]), np.float32), [unit])  # range checks, with their messages
        out.append(str(unit))
    return out
