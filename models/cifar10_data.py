"""CIFAR-10 for ``train_cifar10.py``: the project's JPEG archive or the standard python download,
decoded once into memory, and the training augmentation (padded crops, flips)."""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

@dataclass
class Cifar:
    """Images as (N, 32, 32, 3) uint8 RGB, labels as int64, class names in label order."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    source: str


def _decode(jpeg: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(Image.open(io.BytesIO(jpeg[a:b].tobytes())).convert("RGB"))
                     for a, b in zip(offsets[:-1], offsets[1:], strict=True)])


def load_npz(path: Path) -> Cifar:
    """The project's archive: JPEG bytes + offsets + labels per split, and ``class_names``."""
    z = np.load(path)
    split = {s: (_decode(z[f"{s}_jpeg"], z[f"{s}_offsets"]), z[f"{s}_labels"].astype(np.int64))
             for s in ("train", "test")}
    classes = tuple(str(c) for c in z["class_names"]) if "class_names" in z.files else CLASSES
    return Cifar(*split["train"], *split["test"], classes, f"{path.name}: JPEG, quality ~75")


def _unpickle(path: Path) -> dict:
    with path.open("rb") as f:  # the official format is a pickle: only open files you trust
        return pickle.load(f, encoding="bytes")


def _batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path)
    x = np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), np.asarray(d[b"labels"], np.int64)


def load_batches_py(folder: Path) -> Cifar:
    """The official python download: ``data_batch_1..5``, ``test_batch``, ``batches.meta``."""
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    train = [_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
    x_test, y_test = _batch(folder / "test_batch")
    classes = CLASSES
    if (folder / "batches.meta").exists():
        classes = tuple(n.decode() for n in _unpickle(folder / "batches.meta")[b"label_names"])
    return Cifar(np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train]),
                 x_test, y_test, classes, "python pickles: the original pixels")


def load_data(path: Path) -> Cifar:
    """A ``cifar-10-batches-py`` folder (or its parent), else the project's ``.npz`` archive."""
    if path.is_dir():
        return load_batches_py(path)
    if path.suffix != ".npz":
        raise ValueError(f"{path}: expected the cifar10_jpeg_q75.npz archive or the extracted "
                         "cifar-10-batches-py folder (untar cifar-10-python.tar.gz first)")
    return load_npz(path)


def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random 32x32 crops of the 4-pixel zero-padded images, half of them mirrored."""
    n = len(x)
    padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
    dy, dx = rng.integers(0, 9, size=(2, n))
    r = np.arange(32)
    cols = dx[:, None] + np.where(rng.random(n)[:, None] < 0.5, 31 - r, r)
    return padded[np.arange(n)[:, None, None], (dy[:, None] + r)[:, :, None], cols[:, None, :]]
