"""Backward rules, one per ONNX op type, registered by an explicit decorator.

A rule is ``fn(node, ctx, grads_out, mode) -> list`` with one entry per node input: the gradient
for that input, or ``None`` (weights, shapes, integer inputs). ``needs`` names what it reads from
the forward pass, so that only those tensors are exposed by the instrumented forward:

- ``"in:i"`` / ``"out:i"``: the value of input / output ``i``;
- ``"in:i?j"``: the value of input ``i`` only when input ``j`` depends on the image;
- ``"shape:in:i"`` / ``"shape:out:i"``: the shape of input / output ``i``.

``broadcast=True`` makes the engine sum each returned gradient down to its input's shape
(numpy broadcasting), so elementwise rules never do it themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

RuleFn = Callable[..., list[np.ndarray | None]]

# Ops whose outputs carry no gradient (shape arithmetic, integer results): walked past, no rule.
NONDIFF = frozenset({
    "Shape", "Size", "ArgMax", "ArgMin", "ConstantOfShape", "NonZero", "Range", "EyeLike",
    "RandomNormalLike", "RandomUniformLike", "Equal", "Greater", "Less", "GreaterOrEqual",
    "LessOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf", "Round", "Floor", "Ceil", "Sign",
})


@dataclass(frozen=True)
class Rule:
    op_type: str
    fn: RuleFn
    needs: tuple[str, ...]
    broadcast: bool

    def __call__(self, node: Any, ctx: Any, grads_out: list, mode: str) -> list:
        return self.fn(node, ctx, grads_out, mode)


_RULES: dict[tuple[str, str], Rule] = {}


def rule(*op_types: str, needs: tuple[str, ...] = (), broadcast: bool = False,
         domain: str = "") -> Callable[[RuleFn], RuleFn]:
    """Register ``fn`` as the backward rule of ``op_types``; registering an op twice is an error."""

    def deco(fn: RuleFn) -> RuleFn:
        for op in op_types:
            key = (domain, op)
            if key in _RULES:
                raise RuntimeError(f"backward rule for {op} registered twice")
            _RULES[key] = Rule(op, fn, tuple(needs), broadcast)
        return fn

    return deco


def lookup(op_type: str, domain: str = "") -> Rule | None:
    _load_rules()
    return _RULES.get(("" if domain == "ai.onnx" else domain, op_type))


def supported_ops() -> list[str]:
    _load_rules()
    return sorted(op for _, op in _RULES)


def _load_rules() -> None:
    from . import rules  # noqa: F401  (importing the package registers every rule)
