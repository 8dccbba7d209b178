"""Cross-scoring: every image × every model → the intended class's softmax probability, its
rank, top-1/top-5 hit, the entropy of the prediction and the top-5 labels; and, with
``robust=True``, the intended class's probability after each perturbation of
:mod:`.perturb` (``p_jpeg``, ``p_blur``, ``p_half``, ``p_crop``).

Each model applies its own preprocessing and input size to the same pixels. Class identity
across models comes from the label lists: identical lists map by index; otherwise classes are
matched by name (the first comma-separated synonym, case-insensitive), and images whose class
has no counterpart in a scoring model are skipped for it, with the reason recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ..image import to_uint8
from ..model import Model
from .perturb import perturb_all


@dataclass
class Score:
    image: str
    scoring_model: str
    target_class: int  # in the scoring model's label space
    target_label: str
    probability: float
    rank: int  # 1 = top
    top1: bool
    top5: bool
    entropy: float  # nats
    top5_labels: list[str]
    # intended-class probability after each perturbation (None: not measured)
    p_jpeg: float | None = None
    p_blur: float | None = None
    p_half: float | None = None
    p_crop: float | None = None

    def row(self) -> dict:
        d = asdict(self)
        d["top5_labels"] = "|".join(self.top5_labels)
        return d


def _key(label: str) -> str:
    return label.split(",")[0].strip().lower()


def class_map(source: Sequence[str], target: Sequence[str]) -> dict[int, int]:
    """Source class index → target class index (identity for identical label lists)."""
    if list(source) == list(target):
        return {i: i for i in range(len(source))}
    index: dict[str, int] = {}
    for j, label in enumerate(target):
        index.setdefault(_key(label), j)
    return {i: index[_key(s)] for i, s in enumerate(source) if _key(s) in index}


def score_images(pixels: np.ndarray, names: Sequence[str], classes: Sequence[int],
                 labels: Sequence[str], models: dict[str, Model],
                 batch: int = 32, robust: bool = False) -> tuple[list[Score], list[str]]:
    """Score (N, H, W, 3) pixels (rounded to 8 bits, as saved) whose intended classes are
    ``classes`` in the label list ``labels``, on every model of ``models`` (name → Model);
    with ``robust``, also the perturbed copies (see :mod:`.perturb`).

    Returns the scores and the list of skipped (image, model, reason) messages.
    """
    px = np.stack([to_uint8(p) for p in pixels]).astype(np.float32)
    variants = perturb_all(px) if robust else {}
    scores: list[Score] = []
    skipped: list[str] = []
    for mname, model in models.items():
        cmap = class_map(labels, model.labels)
        keep = [i for i, c in enumerate(classes) if int(c) in cmap]
        for i, c in enumerate(classes):
            if int(c) not in cmap:
                skipped.append(f"{names[i]} on {mname}: class {labels[int(c)]!r} is not in "
                               "its labels")
        if not keep:
            continue
        probs = _probabilities(model, px[keep], batch)
        robust_p = {k: _probabilities(model, v[keep], batch) for k, v in variants.items()}
        for j, (i, p) in enumerate(zip(keep, probs, strict=True)):
            t = cmap[int(classes[i])]
            order = np.argsort(-p, kind="stable")
            rank = int(np.nonzero(order == t)[0][0]) + 1
            ent = float(-(p * np.log(np.clip(p, 1e-30, None))).sum())
            extra = {f"p_{k}": float(robust_p[k][j, t]) for k in robust_p}
            scores.append(Score(names[i], mname, t, model.labels[t], float(p[t]), rank,
                                rank == 1, rank <= 5, ent, [model.labels[k] for k in order[:5]],
                                **extra))
    return scores, skipped


def _probabilities(model: Model, px: np.ndarray, batch: int) -> np.ndarray:
    """Softmax class probabilities of (N, H, W, 3) pixels, ``batch`` images per forward."""
    return np.concatenate([model.predict(model.preprocess(px[s:s + batch]))
                           for s in range(0, len(px), batch)])
