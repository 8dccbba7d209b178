"""The experiment config (TOML): what to generate, with what, and who scores it.

```toml
out = "runs/first"            # the run folder
seed = 0
generators = ["models/cifar10_alexnet.onnx"]
scorers = ["models/cifar10_inception.onnx", "models/cifar10_resnet.onnx"]
classes = [0, "cat", "random:2"]          # or "random:N"; indices or label names
methods = ["gradient", { name = "yosinski", preset = 3, steps = 300 }, "deconv"]
batch_size = 16               # optional
sanity = true                 # optional: also run on a weight-randomized copy (Adebayo 2018)
bootstrap = 1000              # optional: resamples for the confidence intervals
images_per_class = 1          # optional: images per class and method, each with its own seed

[train_on_generated]          # optional: train a small net on each method's images, test on
dataset = "cifar10.npz"       # the real test images of the same classes (see train_on_generated.py)
test_images = 1000            # optional: size of the balanced test subset
baseline = true               # optional: also train on as many real train-split images
hidden = 128                  # optional, and epochs, size, batch, lr, weight_decay, noise

[executor]                    # optional: where the cells run (the CLI's --executor,
kind = "ray"                  # --address, --workers win); "local" (default) or "ray"
address = "auto"              # optional: join a running Ray cluster; else a local Ray starts
workers = 8                   # optional: 1..4096 (default: the CPUs of the machine or cluster)
```
Paths are relative to the config file. Unknown keys are rejected, with a did-you-mean.

Ranges (checked before any work; see ``RANGES``): ``seed`` 0..2**63-1, ``batch_size`` 1..1024,
``bootstrap`` 1..100000, ``images_per_class`` 1..1000, at most 10000 ``classes`` entries and
100000 images per (generator, method); method settings as :class:`~pydevis.methods.ascent.
AscentConfig` checks them (``steps`` 1..100000, finite numbers); in ``[train_on_generated]``
``test_images`` 1..1000000, ``hidden`` 0..4096, ``epochs`` 1..10000, ``size`` 1..256,
``batch`` 1..65536, ``lr`` in (0, 10], ``weight_decay`` and ``noise`` 0..100.
A method's ``label`` names its folders: it becomes a safe name (letters, digits, ``._+-``; see
:func:`pydevis.files.safe_name`), unique in the run, so no config writes outside its ``out``.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PydevisError
from ..files import MAX_CONFIG_BYTES, check_regular, read_text, safe_name
from ..methods.ascent import METHODS, method_config
from .smallnet import NetSpec


class ConfigError(PydevisError):
    """The experiment config is malformed."""


_TOP: dict[str, type | tuple[type, ...]] = {
    "out": str, "seed": int, "generators": list, "scorers": list, "methods": list,
    "classes": (list, str), "batch_size": int, "sanity": bool, "bootstrap": int,
    "images_per_class": int, "train_on_generated": dict, "executor": dict}
_REQUIRED = ("out", "generators", "scorers", "methods", "classes")
# (low, high) of every number of the config, inclusive
RANGES = {"seed": (0, 2**63 - 1), "batch_size": (1, 1024), "bootstrap": (1, 100_000),
          "images_per_class": (1, 1000), "test_images": (1, 1_000_000), "hidden": (0, 4096),
          "epochs": (1, 10_000), "size": (1, 256), "batch": (1, 65536), "lr": (0, 10),
          "weight_decay": (0, 100), "noise": (0, 100)}
MAX_CLASS_ENTRIES = 10_000
MAX_IMAGES_PER_METHOD = 100_000
MAX_DATASET_BYTES = 8 << 30
_METHOD_KEYS = {"name", "preset", "label", "steps", "step_size", "step_rule", "step_norm", "decay",
                "blur_sigma", "blur_every", "norm_pct", "contrib_pct", "tv_weight", "tv_beta",
                "alpha_weight", "alpha", "jitter", "start", "start_std",
                "pad", "scale_range", "angle_max", "decay_power", "init_std"}  # fourier
_TRAIN_KEYS = {"dataset": str, "test_images": int, "baseline": bool, "hidden": int, "epochs": int,
             "size": int, "batch": int, "lr": float, "weight_decay": float, "noise": float}


@dataclass(frozen=True)
class MethodSpec:
    label: str  # unique name of this method in the run (folder and table name)
    name: str
    preset: int | None
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainOnGeneratedSpec:
    """The ``[train_on_generated]`` table: train on generated images, test on real ones."""

    dataset: Path
    test_images: int = 1000
    baseline: bool = True
    net: NetSpec = field(default_factory=NetSpec)


@dataclass(frozen=True)
class ExecutorSpec:
    """The ``[executor]`` table (see :mod:`.executors`): where the cells run."""

    kind: str = "local"
    address: str | None = None
    workers: int | None = None


EXECUTORS = ("local", "ray")
MAX_WORKERS = 4096
_EXECUTOR = {"kind": str, "address": str, "workers": int}


def check_executor(spec: ExecutorSpec, where: str) -> ExecutorSpec:
    """``spec`` if every value is valid, else a one-line :class:`ConfigError`."""
    if spec.kind not in EXECUTORS:
        close = difflib.get_close_matches(str(spec.kind), EXECUTORS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{where}: executor kind must be local or ray, got "
                          f"{str(spec.kind)[:40]!r}{hint}")
    if spec.workers is not None and (isinstance(spec.workers, bool)
                                     or not 1 <= spec.workers <= MAX_WORKERS):
        raise ConfigError(f"{where}: executor workers must be in [1, {MAX_WORKERS}], got "
                          f"{str(spec.workers)[:40]}")
    if spec.address is not None:
        a = spec.address.strip()
        if not a or any(c.isspace() or not c.isprintable() for c in a) or len(a) > 300:
            raise ConfigError(f"{where}: executor address must be 'auto', HOST:PORT or "
                              f"ray://HOST:PORT, got {spec.address[:40]!r}")
        if spec.kind != "ray":
            raise ConfigError(f"{where}: an executor address needs kind \"ray\" (--executor ray)")
    return spec


def _executor(table: dict, p: Path) -> ExecutorSpec:
    where = f"{p}: [executor]"
    for key, value in table.items():
        if key not in _EXECUTOR:
            raise _unknown(key, _EXECUTOR, where)
        if not isinstance(value, _EXECUTOR[key]) or isinstance(value, bool):
            raise ConfigError(f"{where}: {key!r} has the wrong type ({type(value).__name__})")
    return check_executor(ExecutorSpec(table.get("kind", "local"), table.get("address"),
                                       table.get("workers")), where)


@dataclass(frozen=True)
class Config:
    path: Path
    out: Path
    seed: int
    generators: tuple[Path, ...]
    scorers: tuple[Path, ...]
    methods: tuple[MethodSpec, ...]
    classes: tuple[Any, ...]
    batch_size: int = 16
    sanity: bool = False
    bootstrap: int = 1000
    images_per_class: int = 1
    train_on_generated: TrainOnGeneratedSpec | None = None
    executor: ExecutorSpec = field(default_factory=ExecutorSpec)


def _unknown(key: str, allowed, where: str) -> ConfigError:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{where}: unknown key {key!r}{hint}")


def load_config(path: str | Path) -> Config:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: no such file")
    try:
        raw = tomllib.loads(read_text(p, "config", MAX_CONFIG_BYTES, ConfigError))
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from None
    for key, value in raw.items():
        if key not in _TOP:
            raise _unknown(key, _TOP, str(p))
        if not isinstance(value, _TOP[key]) or (_TOP[key] is int and isinstance(value, bool)):
            raise ConfigError(f"{p}: {key!r} has the wrong type ({type(value).__name__})")
        if key in RANGES:
            _in_range(key, value, str(p))
    for key in _REQUIRED:
        if key not in raw:
            raise ConfigError(f"{p}: missing required key {key!r}")
    base = p.parent

    def paths(key: str) -> tuple[Path, ...]:
        items = raw[key]
        if not items or not all(isinstance(s, str) for s in items):
            raise ConfigError(f"{p}: {key!r} must be a non-empty list of model paths")
        out = tuple((base / s) if not Path(s).is_absolute() else Path(s) for s in items)
        for m in out:
            if not m.is_file():
                raise ConfigError(f"{p}: {key}: no such model file {m}")
        return out

    classes = raw["classes"] if isinstance(raw["classes"], list) else [raw["classes"]]
    if not classes:
        raise ConfigError(f"{p}: 'classes' is empty")
    if len(classes) > MAX_CLASS_ENTRIES:
        raise ConfigError(f"{p}: 'classes' has {len(classes)} entries (at most "
                          f"{MAX_CLASS_ENTRIES})")
    if not isinstance(raw["out"], str) or not raw["out"].strip():
        raise ConfigError(f"{p}: 'out' must name a folder")
    for c in classes:
        if isinstance(c, bool) or not isinstance(c, (int, str)):
            raise ConfigError(f"{p}: class {c!r} must be an index or a label name")
        if isinstance(c, int) and c < 0:
            raise ConfigError(f"{p}: class index {c} is negative")
    for c in classes:
        if isinstance(c, str) and c.startswith("random:"):
            n = c.split(":", 1)[1].strip()
            if not n.isdigit() or not 1 <= int(n) <= MAX_IMAGES_PER_METHOD:
                raise ConfigError(f"{p}: {c!r}: expected random:N with N in "
                                  f"1..{MAX_IMAGES_PER_METHOD}")
    methods = _methods(raw["methods"], p)
    per_class = int(raw.get("images_per_class", 1))
    draws = sum(int(c.split(":", 1)[1]) if isinstance(c, str) and c.startswith("random:") else 1
                for c in classes)
    if draws * per_class > MAX_IMAGES_PER_METHOD:
        raise ConfigError(f"{p}: {draws} classes x {per_class} images_per_class is over "
                          f"{MAX_IMAGES_PER_METHOD} images per method")
    if per_class > 1:
        _check_random(methods, p)
    train = (_train_on_generated(raw["train_on_generated"], p)
             if "train_on_generated" in raw else None)
    executor = _executor(raw["executor"], p) if "executor" in raw else ExecutorSpec()
    return Config(p, base / raw["out"], int(raw.get("seed", 0)), paths("generators"),
                  paths("scorers"), methods, tuple(classes),
                  int(raw.get("batch_size", 16)), bool(raw.get("sanity", False)),
                  int(raw.get("bootstrap", 1000)), per_class, train, executor)


def _in_range(key: str, value, where: str) -> None:
    low, high = RANGES[key]
    if not (low <= value <= high) or (key == "lr" and value <= 0):  # NaN fails both
        raise ConfigError(f"{where}: {key!r} must be in {'(' if key == 'lr' else '['}{low}, "
                          f"{high}], got {value!r}")


def _check_random(methods: tuple[MethodSpec, ...], p: Path) -> None:
    """Several images per class differ only by seed: refuse a method that ignores its seed."""
    for spec in methods:
        c = method_config(spec.name, spec.preset, **spec.settings)
        if c.jitter == 0 and not (c.start == "noise" and c.start_std > 0):
            raise ConfigError(f"{p}: method {spec.label!r} does not depend on its seed (no "
                              "jitter, start from the mean): images_per_class > 1 would repeat "
                              "one image; set start = \"noise\" with start_std > 0, or jitter")


def _train_on_generated(table: dict, p: Path) -> TrainOnGeneratedSpec:
    where = f"{p}: [train_on_generated]"
    for key, value in table.items():
        if key not in _TRAIN_KEYS:
            raise _unknown(key, _TRAIN_KEYS, where)
        kind = _TRAIN_KEYS[key]
        ok = isinstance(value, (int, float) if kind is float else kind)
        if not ok or (kind is not bool and isinstance(value, bool)):
            raise ConfigError(f"{where}: {key!r} has the wrong type ({type(value).__name__})")
        if key in RANGES:
            _in_range(key, value, where)
    if "dataset" not in table:
        raise ConfigError(f"{where}: missing required key 'dataset'")
    dataset = Path(table["dataset"])
    dataset = dataset if dataset.is_absolute() else p.parent / dataset
    if not dataset.exists():
        raise ConfigError(f"{where}: no such dataset file {dataset}")
    check_regular(dataset, "dataset", MAX_DATASET_BYTES, ConfigError)
    net: dict[str, Any] = {k: (float(v) if _TRAIN_KEYS[k] is float else v) for k, v in table.items()
           if k not in ("dataset", "test_images", "baseline")}
    return TrainOnGeneratedSpec(dataset, int(table.get("test_images", 1000)),
                        bool(table.get("baseline", True)), NetSpec(**net))


def _methods(items: list, p: Path) -> tuple[MethodSpec, ...]:
    if not items:
        raise ConfigError(f"{p}: 'methods' is empty")
    specs: list[MethodSpec] = []
    for item in items:
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or "name" not in item:
            raise ConfigError(f"{p}: each method is a name or a table with 'name'")
        for key in item:
            if key not in _METHOD_KEYS:
                raise _unknown(key, _METHOD_KEYS, f"{p}: method {item.get('name')!r}")
        name = item["name"]
        if name not in METHODS:
            close = difflib.get_close_matches(str(name), list(METHODS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{p}: unknown method {name!r}{hint}")
        preset = item.get("preset")
        settings = {k: v for k, v in item.items() if k not in ("name", "preset", "label")}
        try:
            method_config(name, preset, **settings)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{p}: method {name!r}: {exc}") from None
        label = item.get("label") or (f"{name}{preset}" if preset else name)
        if not isinstance(label, str):
            raise ConfigError(f"{p}: method {name!r}: 'label' must be a string")
        label = safe_name(label)  # a folder name: never a path ("../x", "/abs")
        if any(s.label.lower() == label.lower() for s in specs):  # case-insensitive file systems
            raise ConfigError(f"{p}: method label {label!r} appears twice (give each a "
                              "distinct 'label')")
        specs.append(MethodSpec(label, name, preset, settings))
    return tuple(specs)
