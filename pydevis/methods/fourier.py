"""The ``fourier`` method: feature visualization as in Olah, Mordvintsev & Schubert, "Feature
Visualization" (Distill 2017), with Lucid's parameterization (tensorflow/lucid,
``lucid/optvis/param/spatial.py`` ``fft_image`` and ``color.py`` ``to_valid_rgb``):

* the image is a real FFT spectrum (N, 3, H, W//2+1) of complex numbers, scaled per frequency f
  by ``1 / max(f, 1/max(H, W)) ** decay_power`` (decay_power 1) and by √(H·W), inverse-FFT'd and
  divided by 4 (Lucid's constants), started from N(0, 0.01²);
* its three channels live in a decorrelated colour space: RGB = M · channels, M the square root
  of ImageNet's colour correlation matrix as Lucid gives it (``color_correlation_svd_sqrt``,
  below) divided by its largest column norm;
* pixels = 255 · sigmoid(RGB), so the image stays in 0..255 without clipping;
* each step the image goes through a fresh random transform (``transforms.RandomTransform``:
  padding, jitter, scale, rotation, bilinear) before the model, and the gradient comes back
  through the transform's adjoint and the chain above, to the spectrum, which Adam ascends
  (learning rate 0.05, Lucid's default).

All of it in numpy; the model's gradient comes from ``PixelSpace.signal`` (mode "gradient").
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from ..model import Model
from .pixels import PixelSpace
from .transforms import RandomTransform

#: the square root of ImageNet's colour correlation matrix, Lucid's ``color_correlation_svd_sqrt``
#: (lucid/optvis/param/color.py); rows R, G, B
COLOR_CORRELATION_SQRT = np.array([[0.26, 0.09, 0.02],
                                   [0.27, 0.00, -0.05],
                                   [0.27, -0.09, 0.03]])
#: normalized by its largest column norm, as Lucid does
COLOR = COLOR_CORRELATION_SQRT / np.max(np.linalg.norm(COLOR_CORRELATION_SQRT, axis=0))


def frequency_scale(h: int, w: int, decay_power: float = 1.0) -> np.ndarray:
    """(H, W//2+1): √(H·W) / max(f, 1/max(H, W)) ** decay_power, f the frequency magnitude."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    return np.sqrt(h * w) / np.maximum(f, 1.0 / max(h, w)) ** decay_power


def _column_weight(w: int) -> np.ndarray:
    """How many times each rfft column counts in the full spectrum: 1 for column 0 and, for an
    even width, the Nyquist column; 2 for the others (their mirrors are implicit)."""
    c = np.full(w // 2 + 1, 2.0)
    c[0] = 1.0
    if w % 2 == 0:
        c[-1] = 1.0
    return c


class FourierImage:
    """The map spectrum (N, 3, H, W//2+1, 2) [real, imaginary] → pixels (N, 3, H, W) in 0..255,
    and its adjoint (``backward``: d/d pixels → d/d spectrum at the last ``forward``)."""

    def __init__(self, h: int, w: int, decay_power: float = 1.0):
        self.h, self.w = h, w
        self.scale = frequency_scale(h, w, decay_power)
        self._sig: np.ndarray | None = None  # the sigmoid of the last forward

    def shape(self, n: int) -> tuple[int, ...]:
        return (n, 3, self.h, self.w // 2 + 1, 2)

    def forward(self, p: np.ndarray) -> np.ndarray:
        spec = self.scale * (p[..., 0] + 1j * p[..., 1])
        img = np.fft.irfft2(spec, s=(self.h, self.w)) / 4.0
        rgb = np.einsum("cd,ndhw->nchw", COLOR, img)
        self._sig = 1.0 / (1.0 + np.exp(-rgb))
        return 255.0 * self._sig

    def backward(self, g: np.ndarray) -> np.ndarray:
        sig = self._sig
        if sig is None:
            raise RuntimeError("backward needs a forward first")
        g_rgb = 255.0 * sig * (1.0 - sig) * g
        g_img = np.einsum("cd,nchw->ndhw", COLOR, g_rgb) / 4.0
        # adjoint of irfft2 (norm 1/(H·W)) on (real, imaginary) parts
        G = np.fft.rfft2(g_img) / (self.h * self.w) * _column_weight(self.w) * self.scale
        return np.stack([G.real, G.imag], axis=-1)


def fourier_ascend(model: Model, targets: list, config, seed: int = 0, progress=None) -> list:
    """Adam ascent of the targets' objective over the spectrum, one row per target, through a
    fresh random transform each step (module docstring). Returns ``AscentResult``s whose
    ``pixels`` are the last iterate (as Lucid); ``best_objective`` is the best objective seen
    (on transformed images)."""
    from .ascent import AscentResult, _is_argmax

    config.validate()
    rng = np.random.default_rng(seed)
    space = PixelSpace(model)
    n = len(targets)
    _, h, w = model.input_dims()
    fi = FourierImage(h, w, config.decay_power)
    p = rng.normal(0.0, config.init_std, fi.shape(n))
    side = max(h, w) / 224.0  # pad and jitter are pixels at 224², scaled with the input
    pad = max(1, round(config.pad * side))
    jit = max(1, round(config.jitter * side))
    m1, m2 = np.zeros_like(p), np.zeros_like(p)
    b1, b2, eps = 0.9, 0.999, 1e-8
    center = space.center.astype(np.float64)[None, :, None, None]
    best_obj, last_obj = np.full(n, -np.inf), np.full(n, np.nan)
    best_step, success = np.zeros(n, int), np.full(n, -1)
    status = np.array(["ok"] * n, dtype=object)
    for t in range(config.steps):
        pixels = fi.forward(p)
        tr = RandomTransform.draw(rng, (h, w), pad, jit, config.scale_range, config.angle_max)
        v = (tr(pixels - center)).astype(np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            sig, g = space.backward_pass(v, targets, "gradient")
        obj = sig.objective
        last_obj = obj.astype(np.float64)
        better = obj > best_obj
        best_obj[better], best_step[better] = obj[better], t
        hit = (success < 0) & _is_argmax(sig.target_value, targets)
        success[hit] = t
        grad = fi.backward(tr.adjoint(g.astype(np.float64)))
        bad = ~np.isfinite(grad).reshape(n, -1).all(axis=1) | ~np.isfinite(obj)
        status[bad] = "diverged"
        grad[bad] = 0.0
        # Adam, ascending
        m1 = b1 * m1 + (1 - b1) * grad
        m2 = b2 * m2 + (1 - b2) * grad * grad
        step = config.step_size * (m1 / (1 - b1 ** (t + 1))) / \
            (np.sqrt(m2 / (1 - b2 ** (t + 1))) + eps)
        p = p + step
        if progress is not None:
            progress(t + 1, config.steps)
    out = fi.forward(p).transpose(0, 2, 3, 1).astype(np.float32)
    cfg = asdict(config)
    return [AscentResult(targets[i], out[i], float(best_obj[i]), float(last_obj[i]),
                         int(best_step[i]), int(success[i]), str(status[i]), cfg)
            for i in range(n)]
