"""A small numpy classifier for "train on generated images, test on real ones".

A one-hidden-layer ReLU MLP (``hidden = 0``: softmax regression) on per-image standardized
pixels, downsampled to ``size × size``, trained with Adam on a cross-entropy loss plus L2 weight
decay. Every epoch sees a fresh augmented copy of the training set: a random crop of the image
padded by ``size // 8`` (edge pixels repeated), a random horizontal flip and Gaussian noise —
a handful of images per class then gives a classifier that generalizes at all. Deterministic
for a given ``np.random.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class NetSpec:
    """Hyper-parameters of the small net."""

    hidden: int = 128  # hidden ReLU units; 0 = softmax regression
    epochs: int = 150
    size: int = 16  # images are resized to size × size
    batch: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-3
    noise: float = 0.1  # std of the added noise, in units of the image's own std


def standardize(pixels: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, 3) pixels (0..255) → (N, size, size, 3) float32, each image resized (box
    filter) and shifted/scaled to mean 0, std 1: colour casts and contrast are not features."""
    out = np.empty((len(pixels), size, size, 3), np.float32)
    for i, p in enumerate(pixels):
        img = Image.fromarray(np.clip(np.rint(p), 0, 255).astype(np.uint8), mode="RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BOX)
        out[i] = np.asarray(img, np.float32)
    out -= out.mean(axis=(1, 2, 3), keepdims=True)
    out /= np.maximum(out.std(axis=(1, 2, 3), keepdims=True), 1.0 / 255)
    return out


def augment(x: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Random crop of the edge-padded image, random horizontal flip, Gaussian noise."""
    n, s = len(x), x.shape[1]
    pad = max(1, s // 8)
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    dy = rng.integers(0, 2 * pad + 1, n)
    dx = rng.integers(0, 2 * pad + 1, n)
    flip = rng.random(n) < 0.5
    out = np.empty_like(x)
    for i in range(n):
        crop = padded[i, dy[i]:dy[i] + s, dx[i]:dx[i] + s]
        out[i] = crop[:, ::-1] if flip[i] else crop
    if noise > 0:
        out += rng.normal(0, noise, out.shape).astype(np.float32)
    return out


class SmallNet:
    """``fit(x, y)`` on standardized images, ``predict(x)`` → class indices."""

    def __init__(self, n_in: int, n_classes: int, spec: NetSpec, rng: np.random.Generator):
        self.spec, self.rng = spec, rng
        sizes = [n_in, spec.hidden, n_classes] if spec.hidden else [n_in, n_classes]
        self.params: list[np.ndarray] = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):  # He init, zero biases
            self.params += [rng.normal(0, np.sqrt(2.0 / a), (a, b)).astype(np.float32),
                            np.zeros(b, np.float32)]

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        acts = [x]
        for k in range(0, len(self.params), 2):
            z = acts[-1] @ self.params[k] + self.params[k + 1]
            acts.append(np.maximum(z, 0) if k + 2 < len(self.params) else z)
        return acts[-1], acts

    def _grads(self, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
        """∂/∂θ of mean cross-entropy + weight_decay/2 · Σ‖W‖²."""
        logits, acts = self._forward(x)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(y)), y] -= 1
        delta = p / len(y)
        grads: list[np.ndarray] = [np.empty(0)] * len(self.params)
        for k in range(len(self.params) - 2, -1, -2):
            grads[k] = acts[k // 2].T @ delta + self.spec.weight_decay * self.params[k]
            grads[k + 1] = delta.sum(axis=0)
            if k:
                delta = (delta @ self.params[k].T) * (acts[k // 2] > 0)
        return grads

    def fit(self, x: np.ndarray, y: np.ndarray) -> SmallNet:
        """Adam (β = 0.9, 0.999) over ``spec.epochs`` epochs of augmented mini-batches."""
        spec, rng = self.spec, self.rng
        m = [np.zeros_like(p) for p in self.params]
        v = [np.zeros_like(p) for p in self.params]
        t = 0
        for _ in range(spec.epochs):
            xa = augment(x, rng, spec.noise).reshape(len(x), -1)
            order = rng.permutation(len(x))
            for s in range(0, len(x), spec.batch):
                idx = order[s:s + spec.batch]
                t += 1
                for k, g in enumerate(self._grads(xa[idx], y[idx])):
                    m[k] = 0.9 * m[k] + 0.1 * g
                    v[k] = 0.999 * v[k] + 0.001 * g * g
                    step = spec.lr * np.sqrt(1 - 0.999**t) / (1 - 0.9**t)
                    self.params[k] -= (step * m[k] / (np.sqrt(v[k]) + 1e-8)).astype(np.float32)
        return self

    def predict(self, x: np.ndarray, batch: int = 1024) -> np.ndarray:
        flat = x.reshape(len(x), -1)
        return np.concatenate([self._forward(flat[s:s + batch])[0].argmax(axis=1)
                               for s in range(0, len(flat), batch)])


def fit_predict(train_px: np.ndarray, train_y: np.ndarray, test_px: np.ndarray,
                n_classes: int, spec: NetSpec, rng: np.random.Generator) -> np.ndarray:
    """Train a :class:`SmallNet` on (train_px, train_y) (pixels 0..255, labels
    0..n_classes-1) and return its predicted labels of ``test_px``."""
    if len(train_px) != len(train_y):
        raise ValueError("training images and labels differ in length")
    x = standardize(train_px, spec.size)
    net = SmallNet(x[0].size, n_classes, spec, rng).fit(x, np.asarray(train_y, np.int64))
    return net.predict(standardize(test_px, spec.size))
