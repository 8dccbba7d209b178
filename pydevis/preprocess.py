"""Preprocessing specs: how pixels (RGB, 0..255) become a model's input and back.

A spec comes from, in this order of precedence: explicit arguments (CLI flags), the model card
``MODEL.onnx.json`` beside the file, the model's ``metadata_props``, the ImageNet default.
The model input is ``x = (pixel[channels] − mean) / std`` with mean and std in pixel units.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelError
from .files import MAX_CARD_BYTES, MAX_TEXT_BYTES, read_json, read_text

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
_CARD_KEYS = ("size", "channels", "mean", "std", "crop_fraction", "labels")
# Largest input H×W accepted (4096²); beyond it a single forward/backward pass would need tens
# of GB, so it is refused before any session is built or array allocated.
MAX_INPUT_PIXELS = 4096 * 4096


@dataclass(frozen=True)
class Spec:
    """Input size (H, W), channel order, mean and std in 0..255 pixel units, centre-crop
    fraction."""

    size: tuple[int, int]
    channels: str = "RGB"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    crop_fraction: float = 0.875
    labels: tuple[str, ...] | None = None
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def to_input(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) RGB pixels → (N, C, H, W) float32 model input."""
        p = pixels.astype(np.float32)
        if self.channels == "BGR":
            p = p[..., ::-1]
        elif self.channels == "L":
            p = (p @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
        x = (p - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _check_values(name: str, values: Any, n: int, origin: str) -> tuple[float, ...]:
    vals = tuple(float(v) for v in np.atleast_1d(np.asarray(values, dtype=np.float64)))
    if len(vals) == 1:
        vals = vals * n
    if len(vals) != n:
        raise ModelError(f"{origin}: {name} needs {n} values, got {len(vals)}")
    # the input is computed in float32: a value that is 0 or not finite there is refused
    with np.errstate(over="ignore"):  # 1e300 becomes inf here, refused just below
        as32 = np.asarray(vals, np.float64).astype(np.float32)
    if not np.isfinite(as32).all():
        raise ModelError(f"{origin}: {name} must be finite numbers (in float32), got "
                         f"{list(vals)}")
    if name == "std" and (as32 == 0).any():
        raise ModelError(f"{origin}: std must not be zero (in float32), got {list(vals)}")
    return vals


def read_card(path: Path) -> dict[str, Any]:
    """The model card JSON (only the preprocessing keys matter here)."""
    card = read_json(path, "model card", MAX_CARD_BYTES, ModelError)
    if not isinstance(card, dict):
        raise ModelError(f"{path}: model card must be a JSON object")
    return card


def read_labels(path: Path) -> tuple[str, ...]:
    """One label per non-empty line, from a regular file of bounded size (a FIFO or a device
    such as /dev/zero is refused, without blocking)."""
    lines = read_text(path, "labels file", MAX_TEXT_BYTES, ModelError).splitlines()
    return tuple(line.strip() for line in lines if line.strip())


def resolve(model_path: Path, input_shape: tuple, metadata: dict[str, str],
            overrides: dict[str, Any] | None = None, card_path: Path | None = None) -> Spec:
    """Merge flags > card > metadata_props > defaults into a :class:`Spec`."""
    n_channels = input_shape[1] if isinstance(input_shape[1], int) else 3
    layers: list[tuple[str, dict[str, Any], Path | None]] = []
    try:
        meta = {k: json.loads(v) if k in ("size", "mean", "std") else v
                for k, v in metadata.items() if k in _CARD_KEYS}
    except json.JSONDecodeError:
        raise ModelError(f"{model_path}: metadata_props: size/mean/std must be JSON") from None
    layers.append(("metadata_props", meta, model_path.parent))
    explicit = card_path is not None
    card_path = card_path or model_path.with_name(model_path.name + ".json")
    if explicit or card_path.exists():  # read_card refuses what is not a regular file
        card = {k: v for k, v in read_card(card_path).items() if k in _CARD_KEYS}
        layers.append((f"card {card_path.name}", card, card_path.parent))
    if overrides:
        layers.append(("flags", {k: v for k, v in overrides.items() if v is not None},
                       Path.cwd()))
    h, w = input_shape[2], input_shape[3]
    spec = Spec(size=(h, w) if isinstance(h, int) and isinstance(w, int) else (224, 224),
                channels="RGB" if n_channels == 3 else "L")
    sources = {k: "model input" if k == "size" else "default" for k in _CARD_KEYS}
    for origin, values, base in layers:
        for key, value in values.items():
            try:
                spec = _apply(spec, key, value, origin, base, n_channels)
            except (TypeError, ValueError, OverflowError):  # e.g. "size": "big"
                raise ModelError(f"{origin}: invalid {key} {value!r:.60}") from None
            sources[key] = origin
    if sources["size"] == "model input" and not (isinstance(h, int) and isinstance(w, int)
                                                 and h > 0 and w > 0):
        raise ModelError(f"{model_path}: the input's height and width ({h}, {w}) are not fixed "
                         "positive sizes; give them with --size H,W or a model card's \"size\"")
    if spec.size[0] * spec.size[1] > MAX_INPUT_PIXELS:
        raise ModelError(f"{model_path}: input size {spec.size[0]}x{spec.size[1]} "
                         f"[{sources['size']}] is too large (over {MAX_INPUT_PIXELS} pixels)")
    if n_channels == 1 and spec.channels != "L":
        spec = replace(spec, channels="L")
    return replace(spec, sources=sources)


def _apply(spec: Spec, key: str, value: Any, origin: str, base: Path | None,
           n_channels: int) -> Spec:
    if key == "size":
        size = tuple(int(v) for v in np.atleast_1d(value))
        size = size * 2 if len(size) == 1 else size
        if len(size) != 2 or min(size) < 1:
            raise ModelError(f"{origin}: size must be [H, W] of positive integers, got {value}")
        return replace(spec, size=size)
    if key == "channels":
        ch = str(value).upper()
        if ch not in ("RGB", "BGR", "L"):
            raise ModelError(f"{origin}: channels must be RGB, BGR or L, got {value!r}")
        return replace(spec, channels=ch)
    if key == "mean":
        return replace(spec, mean=_check_values(key, value, n_channels, origin))
    if key == "std":
        return replace(spec, std=_check_values(key, value, n_channels, origin))
    if key == "crop_fraction":
        frac = float(value)
        if not 0 < frac <= 1:
            raise ModelError(f"{origin}: crop_fraction must be in (0, 1], got {value}")
        return replace(spec, crop_fraction=frac)
    if key == "labels":
        if isinstance(value, list):
            return replace(spec, labels=tuple(str(v) for v in value))
        path = Path(value)
        path = path if path.is_absolute() or base is None else base / path
        return replace(spec, labels=read_labels(path))
    return spec
