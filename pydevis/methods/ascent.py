"""Class (or unit) images by ascent, batched over targets: x ← r(x + η·signal(x)).

Methods (``METHODS``): ``gradient`` (Simonyan et al. 2013), ``yosinski`` presets 1–4 (Yosinski
et al. 2015, Table 1 as given in their toolbox's doc/running-optimize-image.md), ``guided``
(Springenberg et al. 2015 signal), and the seed's three deconvnet variants: ``deconv`` (plain),
``deconv-prior`` (total variation + α-norm prior, Mahendran & Vedaldi 2015, with jitter) and
``deconv-prior-reg`` (prior + Yosinski's r(x), preset 3); ``fourier`` (Olah et al. 2017, Lucid's
Fourier and decorrelated-colour parameterization with transformation robustness and Adam:
fourier.py, configured by ``FourierConfig``).
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from .. import kernels
from ..model import Model
from . import regularizers as R
from .ascent_state import HostImage
from .pixels import PixelSpace

_KINDS: dict[str, Any] = {"int": numbers.Integral, "float": numbers.Real, "str": str}
#: the most ascent steps one call may ask for (a config, --steps): beyond it a run would take days
MAX_STEPS = 100_000


@dataclass(frozen=True)
class AscentConfig:
    """Hyper-parameters of one ascent; pixel units (0..255 scale) throughout."""

    mode: str = "gradient"  # the backward mode (kernels.MODES): gradient | deconvnet | guided
    steps: int = 200
    # "constant": a step of step_size; "progress": the step that gains 2 in the objective
    # (η = 2/‖g‖², Yosinski's toolbox), at most step_size.
    step_rule: str = "progress"
    step_size: float = 1e8
    # "rms": step_size is the RMS pixel change of one step (the gradient is scaled to unit RMS
    # per image), the same on every model; "none": η·g with the raw gradient, the papers' literal
    # rule, whose scale belongs to the network it was tuned on (Caffe AlexNet).
    step_norm: str = "rms"
    decay: float = 0.0
    blur_sigma: float = 0.0
    blur_every: int = 0
    norm_pct: float = 0.0
    contrib_pct: float = 0.0
    tv_weight: float = 0.0
    tv_beta: float = 2.0
    alpha_weight: float = 0.0
    alpha: float = 6.0
    jitter: int = 0
    start: str = "mean"  # "mean" (zero) or "noise" (mean + N(0, start_std²))
    start_std: float = 0.0

    def validate(self) -> AscentConfig:
        for f in fields(self):  # wrong types (steps = 2.5) fail here, not in the middle of a run
            v: Any = getattr(self, f.name)
            kind = _KINDS[str(f.type)]
            if isinstance(v, bool) or not isinstance(v, kind):
                raise TypeError(f"invalid ascent setting: {f.name} must be {f.type}, got {v!r}")
            if not isinstance(v, (numbers.Integral, str)) and not np.isfinite(v):
                raise ValueError(f"invalid ascent setting: {f.name} must be finite, got {v!r}")
        checks = [(self.mode in ("gradient", "deconvnet", "guided"), "mode"),
                  (self.steps >= 1, "steps must be >= 1"),
                  (self.steps <= MAX_STEPS, f"steps must be <= {MAX_STEPS}"),
                  (self.blur_sigma <= 100 and self.blur_every <= MAX_STEPS,
                   f"blur_sigma must be <= 100 and blur_every <= {MAX_STEPS}"),
                  (self.jitter <= 1024, "jitter must be <= 1024"),
                  (self.step_rule in ("constant", "progress"), "step_rule"),
                  (self.step_norm in ("rms", "none"), "step_norm must be rms or none"),
                  (self.step_size > 0, "step_size must be > 0"),
                  (0 <= self.decay < 1, "decay must be in [0, 1)"),
                  (self.blur_sigma >= 0 and self.blur_every >= 0, "blur"),
                  (0 <= self.norm_pct < 100 and 0 <= self.contrib_pct < 100, "percentiles"),
                  (self.jitter >= 0, "jitter must be >= 0"),
                  (self.start in ("mean", "noise"), "start must be mean or noise")]
        for ok, what in checks:
            if not ok:
                raise ValueError(f"invalid ascent setting: {what} ({self})")
        return self


# Yosinski et al. (2015), Table 1: decay, blur, percentiles and iterations as published. Their step
# sizes (constant 100; progress capped at 100) multiply the raw gradient of Caffe AlexNet; on other
# nets the same numbers move pixels by ~0.01 per step and the picture never forms (measured: target
# probability 0.02-0.05 on the bundled models and MobileNet). So the steps here are RMS pixel
# changes (step_norm = "rms"), the same on every model. Preset 1 takes a constant step: its
# progress rule (objective gain 2 per step) leaves contrast below one grey level on MobileNet (RMS
# 0.9 of 255), which the 8-bit PNG erases. The literal rule is method_config("yosinski", preset,
# step_norm="none", step_size=100) (and step_rule="progress" for preset 1).
YOSINSKI = {
    1: AscentConfig(decay=0.0, blur_sigma=0.5, blur_every=4, norm_pct=50, contrib_pct=0,
                    step_rule="constant", step_size=8.0, steps=500),
    2: AscentConfig(decay=0.3, blur_sigma=0.0, blur_every=0, norm_pct=20, contrib_pct=0,
                    step_rule="constant", step_size=8.0, steps=750),
    3: AscentConfig(decay=0.0001, blur_sigma=1.0, blur_every=4, norm_pct=0, contrib_pct=0,
                    step_rule="constant", step_size=2.0, steps=1000),
    4: AscentConfig(decay=0.0, blur_sigma=0.5, blur_every=4, norm_pct=0, contrib_pct=90,
                    step_rule="progress", step_size=1e8, steps=1000),
}
_PRIOR: dict[str, Any] = dict(tv_weight=0.05, tv_beta=2.0, alpha_weight=1e-9, alpha=6.0, jitter=4)
# Simonyan et al. (2013) and the seed's signals: a constant step, 2 grey levels RMS. The progress
# rule (2/||g||^2) takes sub-grey-level steps on ImageNet nets (measured on squeezenet1_1_caffe:
# image contrast 0.5 grey levels RMS, min class probability 0.003 on the saved PNG; constant 2:
# 1.000), and the deconvnet and guided signals are not gradients, so "objective gain" means nothing.
_SIGNAL_STEP: dict[str, Any] = dict(step_rule="constant", step_size=2.0, steps=200)


@dataclass(frozen=True)
class FourierConfig(AscentConfig):
    """The ``fourier`` method (fourier.py): ``step_size`` is Adam's learning rate (Lucid's
    0.05), ``steps`` 512 (Lucid's default number of steps in ``render_vis``); ``pad`` and
    ``jitter`` are pixels at 224² (Lucid's pad 12, jitter 8), scaled with the input side;
    scales 1 ± ``scale_range`` and rotations ± ``angle_max`` degrees (Lucid: 0.9..1.1, ±10).
    The pixel-space fields (rule, decay, blur, clips, priors, start) do not apply."""

    steps: int = 512
    step_rule: str = "constant"
    step_size: float = 0.05
    jitter: int = 8
    pad: int = 12
    scale_range: float = 0.1
    angle_max: float = 10.0
    decay_power: float = 1.0
    init_std: float = 0.01

    def validate(self) -> FourierConfig:
        super().validate()
        checks = [(0 <= self.pad <= 1024, "pad must be in 0..1024"),
                  (0 <= self.scale_range < 0.5, "scale_range must be in [0, 0.5)"),
                  (0 <= self.angle_max <= 180, "angle_max must be in [0, 180]"),
                  (0 <= self.decay_power <= 4, "decay_power must be in [0, 4]"),
                  (self.init_std > 0, "init_std must be > 0"),
                  (self.mode == "gradient", "fourier ascends the gradient only")]
        for ok, what in checks:
            if not ok:
                raise ValueError(f"invalid fourier setting: {what} ({self})")
        return self


METHODS: dict[str, AscentConfig] = {
    "gradient": AscentConfig(mode="gradient", decay=1e-4, **_SIGNAL_STEP),
    "yosinski": YOSINSKI[3],
    "guided": AscentConfig(mode="guided", **_SIGNAL_STEP),
    "deconv": AscentConfig(mode="deconvnet", **_SIGNAL_STEP),
    "deconv-prior": AscentConfig(mode="deconvnet", **_SIGNAL_STEP, **_PRIOR),
    "deconv-prior-reg": replace(YOSINSKI[3], mode="deconvnet", steps=200, **_PRIOR),
    "fourier": FourierConfig(),
}


def method_config(name: str, preset: int | None = None, **overrides) -> AscentConfig:
    """The defaults of ``name`` (``yosinski`` takes ``preset`` 1–4), with ``overrides``."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    if preset is not None and name != "yosinski":
        raise ValueError("--preset applies to the yosinski method only")
    if name == "yosinski" and preset is not None and preset not in YOSINSKI:
        raise ValueError(f"yosinski preset must be 1-4, got {preset!r}")
    base = YOSINSKI[preset] if name == "yosinski" and preset else METHODS[name]
    given = {k: v for k, v in overrides.items() if v is not None}
    if "signal" in given:  # the old name of ``mode``
        given.setdefault("mode", given.pop("signal"))
    return replace(base, **given).validate()


@dataclass
class AscentResult:
    """One target's outcome; ``pixels`` (H, W, 3) float in 0..255 is the best iterate."""

    target: Any  # as the caller gave it: an int class, a unit string or a targets.Unit
    pixels: np.ndarray
    best_objective: float
    final_objective: float
    best_step: int
    success_step: int  # first iteration at which the target was the arg-max of its layer (-1)
    status: str  # ok | zero-gradient | diverged
    config: dict = field(default_factory=dict)
    # std (grey levels) of the noise a row dead at the mean image restarted from (0: none)
    restart_std: float = 0.0


def ascend(model: Model, targets: list, config: AscentConfig, seed: int = 0,
           start: np.ndarray | None = None, progress=None) -> list[AscentResult]:
    """Run one batched ascent, one row per target (see module docstring).

    ``start``: optional (N, H, W, 3) pixels to start from instead of ``config.start``.
    ``progress``: optional callable ``progress(t, steps)``. A ``FourierConfig`` runs the
    ``fourier`` method (fourier.py; ``start`` does not apply).
    """
    if isinstance(config, FourierConfig):
        from .fourier import fourier_ascend

        if start is not None:
            raise ValueError("the fourier method starts from its own spectrum, not from pixels")
        return fourier_ascend(model, targets, config, seed=seed, progress=progress)
    config.validate()
    rng = np.random.default_rng(seed)
    space = PixelSpace(model)
    n = len(targets)
    _, h, w = model.input_dims()
    if start is not None:
        v = space.from_pixels(start)
    else:
        v = np.zeros((n, 3, h, w), np.float32)
        if config.start == "noise":
            v += rng.normal(0, config.start_std, v.shape).astype(np.float32)
    lo, hi = space.lo, space.hi
    v = kernels.clamp_channels(v, lo, hi)
    priors = [p for p in (R.TotalVariation(config.tv_weight, config.tv_beta),
                          R.AlphaNorm(config.alpha_weight, config.alpha)) if p.weight > 0]
    state = image_state(model, space, v, lo, hi, targets, config.mode, bool(priors))
    best_obj = np.full(n, -np.inf)
    best_step = np.zeros(n, int)
    success = np.full(n, -1)
    status = np.array(["ok"] * n, dtype=object)
    active = np.ones(n, bool)
    last_obj = np.full(n, np.nan)
    restart = np.zeros(n)
    for t in range(config.steps + 1):
        dy, dx = R.jitter_offsets(rng, config.jitter)
        sig = state.backward_pass(targets, config.mode, dy, dx)
        if t == 0 and start is None and config.start == "mean":
            sig, restart = _revive(state, sig, targets, config.mode, (dy, dx), seed, lo, hi)
            if restart.any():
                state.keep_best(np.ones(n, bool))
        obj = sig.objective
        blown = active & ~np.isfinite(obj)  # NaN/Inf objective: stop, keep the best finite iterate
        status[blown], active[blown] = "diverged", False
        last_obj = np.where(active, obj, last_obj)
        better = active & (obj > best_obj)
        state.keep_best(better)
        best_obj[better], best_step[better] = obj[better], t
        hit = active & (success < 0) & _is_argmax(sig.target_value, targets)
        success[hit] = t
        if t == config.steps:
            break
        state.add_prior_grads(priors)
        sq = state.grad_sumsq()  # non-finite iff a gradient entry is; 0 iff all are
        bad = active & ~np.isfinite(sq)
        status[bad], active[bad] = "diverged", False
        zero = active & (sq == 0)
        status[zero], active[zero] = "zero-gradient", False
        if not active.any():
            break
        eta = _step_sizes(np.where(active, sq, 0.0), v[0].size, config)
        # x + η·g, then r(x) = R.compose([R.blur, R.clip_norm, R.clip_contribution, R.clamp])
        state.step(eta, config.decay, R.blur_sigma_at(config.blur_sigma, config.blur_every, t),
                   config.norm_pct, config.contrib_pct, active)
        if progress is not None:
            progress(t + 1, config.steps)
    pixels = state.best_pixels()
    cfg = asdict(config)
    return [AscentResult(targets[i], pixels[i], float(best_obj[i]), float(last_obj[i]),
                         int(best_step[i]), int(success[i]), str(status[i]), cfg,
                         float(restart[i]))
            for i in range(n)]


def image_state(model: Model, space: PixelSpace, v: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                targets: list, mode: str, priors: bool):
    """Where the ascent keeps its image (ascent_state.py): bound to the exported graph's session
    with the ``ort`` backend and no prior (the priors read the image on the host), else on the
    host."""
    if model.signal_backend == "ort" and not priors:
        from ..export.ort_ascent import BoundImage

        bound = BoundImage.create(model, space, v, lo, hi, targets, mode)
        if bound is not None:
            return bound
    return HostImage(space, v, lo, hi)


# Noise levels (grey levels RMS) tried, in turn, for rows whose signal is exactly zero at the mean
# image: a target with every path to the pixels shut there never moves from it (measured:
# squeezenet1_0_deepcompression class 401, whose logit is a ReLU of a map the mean image reaches
# only through its bias; 9 of 10 classes reached p >= 0.99, that one stayed at 0.001).
REVIVE_STDS = (4.0, 16.0, 64.0)


def _revive(state, sig, targets: list, mode: str, shift: tuple[int, int], seed: int,
            lo: np.ndarray, hi: np.ndarray):
    """Restart each row whose signal is exactly zero from seeded Gaussian noise of
    ``REVIVE_STDS`` grey levels, the first that opens a path; a row still dead after the last
    keeps the mean image (and ends with status "zero-gradient"). Returns (sig, std per row, 0
    where not restarted). The other rows' images are untouched."""
    dead = state.grad_sumsq() == 0
    restart = np.zeros(dead.size)
    if not dead.any():
        return sig, restart
    rng = np.random.default_rng([seed, 1])  # not the ascent's stream: its jitter stays the same
    v = state.image()
    mean = v.copy()
    for std in REVIVE_STDS:
        v = v.copy()
        v[dead] = kernels.clamp_channels(
            rng.normal(0, std, v[dead].shape).astype(np.float32), lo, hi)
        restart[dead] = std
        state.set_image(v)
        sig = state.backward_pass(targets, mode, *shift)
        dead &= state.grad_sumsq() == 0
        if not dead.any():
            return sig, restart
    v[dead], restart[dead] = mean[dead], 0.0
    state.set_image(v)
    return state.backward_pass(targets, mode, *shift), restart


def _step_sizes(sq: np.ndarray, size: int, config: AscentConfig) -> np.ndarray:
    """η per row from the squared norm ``sq`` of its gradient of ``size`` entries (see
    AscentConfig.step_rule and step_norm); 0 where the gradient is zero."""
    with np.errstate(divide="ignore"):
        if config.step_norm == "rms":
            cap = np.where(sq > 0, config.step_size / np.sqrt(sq / size), 0.0)
        else:
            cap = np.full(sq.shape[0], config.step_size)
        if config.step_rule == "constant":
            return cap
        return np.minimum(cap, np.where(sq > 0, 2.0 / sq, 0.0))


def _is_argmax(value: np.ndarray, targets: list) -> np.ndarray:
    """Whether each row's target unit is the arg-max of its layer (class score or channel)."""
    out = np.zeros(len(targets), bool)
    for i, t in enumerate(targets):
        if isinstance(t, (int, np.integer)):
            out[i] = int(np.argmax(value[i].reshape(-1))) == int(t)
        else:
            from ..targets import parse_one

            u = parse_one(t)
            per_channel = value[i].reshape(value.shape[1], -1).mean(axis=1)
            out[i] = int(np.argmax(per_channel)) == u.channel
    return out
