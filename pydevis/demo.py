"""The bundled models and the demo run."""

from __future__ import annotations

from pathlib import Path

from .errors import PydevisError

BUNDLED = ("cifar10_alexnet", "cifar10_inception", "cifar10_resnet")


def models_dir() -> Path:
    """Where the bundled models are: inside the installed package, or the repo's models/."""
    here = Path(__file__).resolve().parent
    for d in (here / "models", here.parent / "models"):
        if all((d / f"{m}.onnx").is_file() for m in BUNDLED):
            return d
    raise PydevisError("the bundled models are missing (pydevis/models or models/): "
                       "reinstall pydevis or train them with models/train_cifar10.py")


def write_demo_config(out: Path, steps: int = 60) -> Path:
    """A config for every method (``fourier`` included) on the AlexNet-style model, scored on
    all three."""
    d = models_dir()
    out.mkdir(parents=True, exist_ok=True)
    gen = d / "cifar10_alexnet.onnx"
    scorers = [d / f"{m}.onnx" for m in BUNDLED[1:]]
    methods = ", ".join(
        [f'{{ name = "{m}", steps = {steps} }}' for m in
         ("gradient", "guided", "deconv", "deconv-prior", "deconv-prior-reg")]
        + [f'{{ name = "yosinski", preset = {p}, steps = {steps} }}' for p in (1, 2, 3, 4)]
        + [f'{{ name = "fourier", steps = {steps} }}'])
    text = (f'out = "."\nseed = 0\ngenerators = ["{gen}"]\n'
            f"scorers = [{', '.join(repr(str(s)).replace(chr(39), chr(34)) for s in scorers)}]\n"
            f"classes = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\nmethods = [{methods}]\n"
            "batch_size = 10\nsanity = true\nbootstrap = 500\n")
    path = out / "demo.toml"
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path
