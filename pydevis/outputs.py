"""What every command's files share: the output folder check, strict JSON written atomically,
file-name slugs and the metadata common to every side file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import kernels
from .atomic import atomic_open
from .errors import PydevisError

if TYPE_CHECKING:
    from .model import Model


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as JSON atomically."""
    with atomic_open(path) as f:
        json.dump(finite(data), f, indent=1, default=jsonable, allow_nan=False)
    return Path(path)


def finite(o: Any) -> Any:
    """``o`` with NaN/±Inf numbers replaced by None: strict JSON (a diverged ascent's objective
    is written as null, not as the non-standard NaN/Infinity)."""
    if isinstance(o, (float, np.floating)):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, np.ndarray):
        return finite(o.tolist())
    if isinstance(o, dict):
        return {k: finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [finite(v) for v in o]
    return o


def jsonable(o: Any) -> Any:
    """``json.dump``'s ``default``: numpy scalars and arrays, paths."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def check_out(out: str | os.PathLike) -> Path:
    """``out`` as a folder that can be written, checked before any work is done and without
    creating anything: refused when it (or the first existing folder above it) is a file, or
    not writable (a read-only file system, permissions)."""
    out = Path(out)
    for parent in (out, *out.parents):
        if parent.exists():
            if not parent.is_dir():
                raise PydevisError(f"{out}: cannot be an output folder ({parent} is a file)")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise PydevisError(f"{out}: output folder is not writable ({parent})")
            break
    return out


def slug(text: str) -> str:
    """A file-name part: the first comma-separated part of ``text``, lower case, every other
    character than letters and digits an underscore, at most 40 characters."""
    keep = "".join(c if c.isalnum() else "_" for c in text.split(",")[0].strip().lower())
    return keep.strip("_")[:40] or "x"


def meta(model: Model, **extra) -> dict[str, Any]:
    """The side-file metadata of a picture made with ``model``, plus ``extra``."""
    return {"model": str(model.path), "backend": kernels.backend(),
            "signal_backend": model.signal_backend, **extra}


def spec_meta(model: Model) -> dict[str, Any]:
    """The model's preprocessing, as recorded in side files."""
    s = model.spec
    return {"size": list(s.size), "channels": s.channels, "mean": list(s.mean),
            "std": list(s.std)}
