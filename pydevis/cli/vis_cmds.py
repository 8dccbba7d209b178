"""``project``, ``top9``, ``isolate``: the pictures (``visualize``: ascent_cmds.py). ``deconv`` is
``project``'s old name, still accepted (hidden)."""

from __future__ import annotations

import functools
from typing import Annotated

import typer

from .. import api
from . import ascent_cmds  # noqa: F401  (registers visualize)
from .app import (
    BgrOpt,
    JsonOpt,
    LabelsOpt,
    MeanOpt,
    QuietOpt,
    SizeOpt,
    StdOpt,
    app,
    emit,
    load_model,
)
from .model_cmds import ModelArg

OutOpt = Annotated[str, typer.Option("--out", "-o", metavar="DIR", help="Output folder.")]


@app.command()
def project(model: ModelArg, image: Annotated[str, typer.Argument(help="Image file.")],
            unit: Annotated[str, typer.Option("--unit", "-u", help="TENSOR:CHANNEL[@Y,X]")],
            out: OutOpt = "pydevis-out",
            mode: Annotated[str, typer.Option(help="deconvnet, guided or gradient")] = "deconvnet",
            size: SizeOpt = None, bgr: BgrOpt = False, mean: MeanOpt = None,
            std: StdOpt = None, labels: LabelsOpt = None, json: JsonOpt = False,
            quiet: QuietOpt = False):
    """Project one hidden unit of an image back to pixels (Zeiler & Fergus).

    Writes MODE_TENSOR_CH.png (full size), MODE_TENSOR_CH_figure.png (the projection inside
    the receptive field beside the image patch, enlarged), _patch.png and .json in --out.

    Example: pydevis project model.onnx cat.jpg --unit conv2_out:5
    """
    m = load_model(model, size, bgr, mean, std, labels)
    p = api.project(m, image, unit, out, mode)
    data = {"tensor": p.tensor, "channel": p.channel, "pos": p.pos, "activation": p.activation,
            "box": p.box}
    emit(data, json, quiet, f"{p.tensor}:{p.channel} at {p.pos} activation {p.activation:.4g}, "
                            f"receptive field {p.box}\nwritten to {out}")



@app.command("deconv", hidden=True)
@functools.wraps(project)
def _deconv(*args, **kwargs):
    """``project`` under its old name (it read like the ``deconv`` ascent methods)."""
    typer.echo("note: 'pydevis deconv' is now 'pydevis project'", err=True)
    return project(*args, **kwargs)


MAX_CHANNELS = 4096  # channels one top9 call may ask for


def _channels(text: str) -> list[int]:
    """``0-7`` or ``1,4,9``: checked from the ranges' ends (``0-999999999`` is refused without
    building a billion-entry list), at most MAX_CHANNELS channels."""
    spans: list[tuple[int, int]] = []
    for part in text.split(","):
        a, _, b = part.strip().partition("-")
        try:
            lo = int(a)
            hi = int(b) if b else lo
        except ValueError:
            raise typer.BadParameter(f"expected e.g. 0-7 or 1,4,9, got {text!r}") from None
        if lo < 0 or hi < lo:
            raise typer.BadParameter(f"channel range {part.strip()!r}: expected LOW-HIGH with "
                                     "0 <= LOW <= HIGH")
        spans.append((lo, hi))
    total = sum(hi - lo + 1 for lo, hi in spans)
    if total > MAX_CHANNELS:
        raise typer.BadParameter(f"--channels {text!r} asks for {total} channels; at most "
                                 f"{MAX_CHANNELS} per call")
    return [c for lo, hi in spans for c in range(lo, hi + 1)]


@app.command()
def top9(model: ModelArg, image_dir: Annotated[str, typer.Argument(help="Folder of images.")],
         layer: Annotated[str, typer.Option("--layer", "-l", help="Tensor or node name.")],
         channels: Annotated[str, typer.Option("--channels", help="e.g. 0-7 or 1,4,9")] = "0-7",
         mode: Annotated[str, typer.Option(help="deconvnet, guided or gradient")] = "deconvnet",
         out: OutOpt = "pydevis-out", size: SizeOpt = None, bgr: BgrOpt = False,
         mean: MeanOpt = None, std: StdOpt = None, labels: LabelsOpt = None,
         json: JsonOpt = False, quiet: QuietOpt = False):
    """Top-9 activations of channels over a folder, projections beside patches.

    Writes MODE_top9_LAYER.png (per channel, a grid of projections beside the grid of image
    patches, as in Zeiler & Fergus fig. 2) and MODE_top9_LAYER.json in --out.

    Example: pydevis top9 model.onnx photos/ --layer conv3_out --channels 0-7
    """
    m = load_model(model, size, bgr, mean, std, labels)
    hits = api.top9(m, image_dir, layer, _channels(channels), out, mode=mode)
    data = {str(c): [{"image": h.image, "activation": h.activation} for h in hs]
            for c, hs in hits.items()}
    emit(data, json, quiet, "\n".join(f"channel {c}: " + ", ".join(
        f"{h['image']} {h['activation']:.3g}" for h in hs[:3]) + " ..." for c, hs in data.items())
         + f"\nwritten to {out}")


@app.command()
def isolate(model: ModelArg, image: Annotated[str, typer.Argument(
                metavar="IMAGE", help="Photo (ImageNet resize and centre crop).")],
            cls: Annotated[str, typer.Option("--class", "-c", metavar="CLASS",
                                             help="Class index or label name.")],
            out: OutOpt = "pydevis-out",
            steps: Annotated[int, typer.Option(
                min=0, max=100_000, metavar="N",
                help="Most edit steps (it stops once the class has p >= 0.9 and every other "
                     "p <= 0.05).")] = 200,
            step_size: Annotated[float, typer.Option(
                min=0.0, max=255.0, metavar="X",
                help="Largest change of any pixel per step (0..255 scale).")] = 1.0,
            weighting: Annotated[str, typer.Option(
                metavar="softmax|uniform",
                help="Weight of each other class's gradient: its probability (softmax) or "
                     "1 (uniform).")] = "softmax",
            size: SizeOpt = None, bgr: BgrOpt = False, mean: MeanOpt = None,
            std: StdOpt = None, labels: LabelsOpt = None, json: JsonOpt = False,
            quiet: QuietOpt = False):
    """Class isolation: edit a photo, against the gradients of the other classes, until
    only --class is claimed; writes the edited image, the difference map and a JSON.

    Example: pydevis isolate model.onnx cat.jpg --class "tabby, tabby cat"
    """
    m = load_model(model, size, bgr, mean, std, labels)
    written: list = []
    r = api.isolate(m, image, cls, out, written=written, steps=steps, step_size=step_size,
                    weighting=weighting)
    data = {"status": r.status, "steps": r.steps, "start_probability": r.start_probability,
            "target_probability": r.target_probability,
            "max_other_probability": r.max_other_probability,
            "files": [str(p) for p in written]}
    emit(data, json, quiet, f"{r.status} after {r.steps} steps: p {r.start_probability:.3f} -> "
                            f"{r.target_probability:.3f}, max other {r.max_other_probability:.3f}"
                            f"\nwritten to {out}")
