"""Sanity checks of a visualization method.

- Model randomization (Adebayo et al. 2018): the same method on a copy of the model whose
  Conv/Gemm/MatMul weights are redrawn (same shape, same std, seeded): a faithful method's
  pictures should change and lose their class.
- Class sensitivity: the mean Pearson correlation between the images a method made for
  different classes on one model (near 1: the method ignores the class).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ..atomic import atomic_open
from ..errors import ModelError
from ..files import MAX_CARD_BYTES, read_json
from ..image import read_rgb

_WEIGHTED = {"Conv": 1, "Gemm": 1, "MatMul": 1}


def randomized_copy(path: Path, folder: Path, seed: int) -> Path:
    """Write (once) a weight-randomized copy of the model and its card into ``folder``."""
    out = folder / f"{path.stem}~randomized.onnx"
    if out.is_file():
        return out
    folder.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(path))
    rng = np.random.default_rng(seed)
    weights = {n.input[i] for n in model.graph.node if n.op_type in _WEIGHTED
               for i in (_WEIGHTED[n.op_type],) if len(n.input) > i}
    for t in model.graph.initializer:
        if t.name in weights:
            a = numpy_helper.to_array(t)
            if a.dtype.kind == "f" and a.size > 1:
                new = rng.normal(0, float(a.std()) or 1e-2, a.shape).astype(a.dtype)
                t.CopyFrom(numpy_helper.from_array(new, t.name))
    # Every file goes through a temp file unique to this writer (atomic_open: mkstemp), renamed
    # into place: two processes making the same copy never share or delete each other's temp
    # file, and a reader sees either no copy or a whole one. The card goes first, so a copy
    # that exists always has its card.
    card = path.with_name(path.name + ".json")
    if card.is_file():
        data = read_json(card, "model card", MAX_CARD_BYTES, ModelError)
        if isinstance(data, dict) and isinstance(data.get("labels"), str):
            data["labels"] = str((card.parent / data["labels"]).resolve())  # keep it reachable
        with atomic_open(out.with_name(out.name + ".json")) as f:
            f.write(json.dumps(data, indent=1))
    with atomic_open(out, "wb") as f:
        f.write(model.SerializeToString())
    return out


def class_sensitivity(out: Path) -> list[dict]:
    """Per (generating model, method): mean correlation between images of different classes.

    Each image is centred per colour channel first: a low-contrast image sits on the model's
    mean pixel, whose colour cast (Caffe BGR means: brownish grey) is the same in every image
    and would otherwise make any two images of one model correlate, whatever they show."""
    result = []
    for folder in sorted((out / "images").glob("*/*")):
        files = sorted(folder.glob("*.png"))
        cls = np.array([p.stem.split("_")[0] for p in files])  # CLASS_label[_copy].png
        if len(set(cls)) < 2:
            continue
        px = np.stack([read_rgb(p) for p in files]).astype(np.float64)  # (N, H, W, 3)
        px -= px.mean(axis=(1, 2), keepdims=True)
        a = px.reshape(len(files), -1)
        norm = np.linalg.norm(a, axis=1)
        norm[norm == 0] = 1
        c = (a @ a.T) / np.outer(norm, norm)
        off = c[cls[:, None] != cls[None, :]]  # pairs of different classes only
        result.append({"generating_model": folder.parent.name, "method": folder.name,
                       "mean_interclass_correlation": float(off.mean()), "images": len(a)})
    return result
