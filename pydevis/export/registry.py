"""ONNX translations of the backward rules, one per op type, registered by an explicit decorator.

A translation is ``fn(node, b, gy, mode) -> list`` with :class:`~.builder.Builder` ``b``, ``gy``
the names of the gradients at the node's outputs (``None`` where none arrives) and one entry per
node input in the result: the name of that input's gradient, or ``None``. It must compute what
the backward rule of the same op type (``pydevis/backward/rules``) computes, in every mode.
``broadcast=True`` makes the exporter sum each returned gradient down to its input's shape, as
the engine does for the rules registered with ``broadcast=True``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TranslateFn = Callable[..., list]


@dataclass(frozen=True)
class Translation:
    op_type: str
    fn: TranslateFn
    broadcast: bool

    def __call__(self, node: Any, b: Any, gy: list, mode: str) -> list:
        return self.fn(node, b, gy, mode)


_TRANSLATIONS: dict[tuple[str, str], Translation] = {}


def translation(*op_types: str, broadcast: bool = False,
                domain: str = "") -> Callable[[TranslateFn], TranslateFn]:
    """Register ``fn`` as the ONNX translation of ``op_types``' backward; twice is an error."""

    def deco(fn: TranslateFn) -> TranslateFn:
        for op in op_types:
            key = (domain, op)
            if key in _TRANSLATIONS:
                raise RuntimeError(f"ONNX translation for {op} registered twice")
            _TRANSLATIONS[key] = Translation(op, fn, broadcast)
        return fn

    return deco


def lookup(op_type: str, domain: str = "") -> Translation | None:
    _load()
    return _TRANSLATIONS.get(("" if domain == "ai.onnx" else domain, op_type))


def translated_ops() -> list[str]:
    _load()
    return sorted(op for _, op in _TRANSLATIONS)


def _load() -> None:
    from . import (  # noqa: F401  (importing the modules registers every translation)
        rules_activation,
        rules_arith,
        rules_conv,
        rules_linear,
        rules_norm,
        rules_pool,
        rules_shape,
    )
