"""Targets: which scalar per batch row the backward pass starts from.

- an int: that class's pre-softmax score, for every row; a list of ints: one class per row;
- ``"TENSOR:CHANNEL"``: the mean over the spatial map of that channel of the named tensor
  (a node name stands for its first output); ``"TENSOR:CHANNEL@Y,X"``: one position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .errors import TargetError

_UNIT = re.compile(r"^(?P<tensor>.+):(?P<channel>-?\d+)(?:@(?P<y>-?\d+),(?P<x>-?\d+))?$")


@dataclass(frozen=True)
class Unit:
    """One row's target: ``tensor`` is None for a class score (``channel`` = the class)."""

    tensor: str | None
    channel: int
    pos: tuple[int, int] | None = None

    def __str__(self) -> str:
        if self.tensor is None:
            return f"class {self.channel}"
        at = f"@{self.pos[0]},{self.pos[1]}" if self.pos else ""
        return f"{self.tensor}:{self.channel}{at}"


def parse_one(target) -> Unit:
    if isinstance(target, Unit):
        return target
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return Unit(None, int(target))
    if isinstance(target, str):
        text = target.strip()
        if re.fullmatch(r"\d+", text):
            return Unit(None, int(text))
        m = _UNIT.match(text)
        if m is None:
            raise TargetError(f"target {target!r}: expected a class index, 'TENSOR:CHANNEL' "
                              "or 'TENSOR:CHANNEL@Y,X'")
        pos = (int(m["y"]), int(m["x"])) if m["y"] is not None else None
        return Unit(m["tensor"], int(m["channel"]), pos)
    raise TargetError(f"target {target!r}: expected an int class, a list of them, or a string")


def parse(target, batch: int) -> list[Unit]:
    """One :class:`Unit` per batch row."""
    if isinstance(target, (list, tuple, np.ndarray)):
        units = [parse_one(t) for t in target]
        if len(units) != batch:
            raise TargetError(f"{len(units)} targets for a batch of {batch} rows")
        return units
    return [parse_one(target)] * batch


def seed(value: np.ndarray, units: list[Unit]) -> tuple[np.ndarray, np.ndarray]:
    """(seed gradient at the target tensor, objective value per row).

    ``value`` is the target tensor (N, ...). Class scores are read as (N, K); a hidden channel
    is axis 1, averaged over the remaining axes, or taken at ``pos``.
    """
    n = value.shape[0]
    g = np.zeros_like(value)
    obj = np.zeros(n, dtype=np.float64)
    for i, u in enumerate(units):
        if u.tensor is None:
            flat = value[i].reshape(-1)
            if not 0 <= u.channel < flat.size:
                raise TargetError(f"class {u.channel} out of range 0–{flat.size - 1}")
            g[i].reshape(-1)[u.channel] = 1
            obj[i] = flat[u.channel]
            continue
        if value.ndim < 2:
            raise TargetError(f"{u}: tensor of shape {value.shape} has no channel axis")
        if not 0 <= u.channel < value.shape[1]:
            raise TargetError(f"{u}: channel {u.channel} out of range 0–{value.shape[1] - 1}")
        plane = value[i, u.channel]
        if u.pos is None:
            g[i, u.channel] = 1.0 / max(plane.size, 1)
            obj[i] = float(plane.mean())
            continue
        if plane.ndim != 2 or not (0 <= u.pos[0] < plane.shape[0]
                                   and 0 <= u.pos[1] < plane.shape[1]):
            where = (f"y 0–{plane.shape[0] - 1}, x 0–{plane.shape[1] - 1}" if plane.ndim == 2
                     else f"a {plane.ndim}-D channel of shape {plane.shape}")
            raise TargetError(f"{u}: position out of range ({where})")
        g[i, u.channel, u.pos[0], u.pos[1]] = 1
        obj[i] = float(plane[u.pos])
    return g, obj
