"""``pydevis info`` and ``pydevis predict``."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import kernels
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

ModelArg = Annotated[str, typer.Argument(metavar="MODEL",
                                         help="Path to an .onnx image classifier.")]


@app.command()
def info(model: ModelArg,
         tensors: Annotated[bool, typer.Option(
             "--tensors", help="List every tensor a unit can be taken from (for --unit, "
                               "project, top9): name, shape, op, node, backward support.")
         ] = False,
         filter: Annotated[str | None, typer.Option(
             "--filter", metavar="TEXT",
             help="With --tensors: only tensors whose name, op or node contains this text "
                  "(case-insensitive), e.g. relu.  [default: all]")
         ] = None,
         size: SizeOpt = None, bgr: BgrOpt = False, mean: MeanOpt = None,
         std: StdOpt = None, labels: LabelsOpt = None, json: JsonOpt = False,
         quiet: QuietOpt = False):
    """Input, preprocessing (and where it came from), labels, ops and their backward rules;
    with --tensors, the tensors to take units from.

    Example: pydevis info ../shared/models/squeezenet1_1_caffe.onnx --tensors --filter relu
    """
    m = load_model(model, size, bgr, mean, std, labels)
    if tensors or filter is not None:
        _tensors(m, filter, json, quiet)
        return
    s = m.spec
    ops = m.op_report()
    data = {"model": str(m.path), "input": {"name": m.graph.input_name,
                                            "shape": list(m.input_shape)},
            "scores": m.scores, "size": list(s.size), "channels": s.channels,
            "mean": list(s.mean), "std": list(s.std), "crop_fraction": s.crop_fraction,
            "sources": s.sources, "classes": m.num_classes,
            "labels": list(m.labels[:5]) + (["..."] if m.num_classes > 5 else []),
            "ops": ops, "opset": m.graph.opset, "backend": kernels.backend(),
            "backends": kernels.available(), "signal_backend": m.signal_backend}
    lines = [f"model      {m.path}",
             f"input      {m.graph.input_name} {list(m.input_shape)}  (scores: {m.scores})",
             f"size       {s.size[0]}x{s.size[1]}  [{s.sources.get('size')}]",
             f"channels   {s.channels}  [{s.sources.get('channels')}]",
             f"mean       {', '.join(f'{v:g}' for v in s.mean)}  [{s.sources.get('mean')}]",
             f"std        {', '.join(f'{v:g}' for v in s.std)}  [{s.sources.get('std')}]",
             f"labels     {m.num_classes} classes  [{s.sources.get('labels')}]: "
             + ", ".join(m.labels[:3]) + (", ..." if m.num_classes > 3 else ""),
             f"opset      {m.graph.opset}",
             "ops        " + ", ".join(f"{op}{'' if ok else ' (NO backward rule)'}"
                                       for op, ok in sorted(ops.items())),
             f"backend    {kernels.backend()}  (available: "
             + ", ".join(k for k, v in kernels.available().items() if v is None) + ")",
             f"signals    {m.signal_backend}"
             + ("  (exported backward graph in ONNX Runtime)" if m.signal_backend == "ort"
                else "  (pydevis's backward engine)")]
    emit(data, json, quiet, "\n".join(lines))


def _tensors(m, pattern: str | None, as_json: bool, quiet: bool) -> None:
    from ..tensors import list_tensors

    rows = list_tensors(m, pattern)
    data = {"model": str(m.path), "filter": pattern, "tensors": [r.row() for r in rows]}
    if not rows:
        text = f"no tensor matches {pattern!r}" if pattern else "no tensors"
    else:
        shapes = ["×".join(map(str, r.shape)) for r in rows]
        wn = max(len(r.name) for r in rows)
        ws = max(len(s) for s in shapes)
        wo = max(len(r.op) for r in rows)
        wd = max(len(r.node) for r in rows)
        head = f"{'tensor':{wn}s}  {'shape':{ws}s}  {'op':{wo}s}  {'node':{wd}s}  backward"
        text = "\n".join([head] + [
            f"{r.name:{wn}s}  {s:{ws}s}  {r.op:{wo}s}  {r.node:{wd}s}  "
            + ("yes" if r.backward else f"no: {r.reason}")
            for r, s in zip(rows, shapes, strict=True)]
            + [f"{len(rows)} tensors; a unit is TENSOR:CHANNEL or TENSOR:CHANNEL@Y,X "
               "(N is the batch)"])
    emit(data, as_json, quiet, text)


@app.command()
def predict(model: ModelArg,
            images: Annotated[list[str], typer.Argument(
                metavar="IMAGES...", help="Image files, folders or glob patterns (quoted).")],
            top: Annotated[int, typer.Option("--top", min=1, metavar="K",
                                             help="How many classes.")] = 5,
            size: SizeOpt = None, bgr: BgrOpt = False, mean: MeanOpt = None,
            std: StdOpt = None, labels: LabelsOpt = None, json: JsonOpt = False,
            quiet: QuietOpt = False):
    """Top-k classes with label names, one block per image.

    Pixels: an image at the model's input size is used as it is; any other (a photo) gets the
    ImageNet evaluation transform: shorter side resized (bilinear) to size / crop_fraction of
    the model card, then the centre crop (see pydevis.scoring).

    Example: pydevis predict model.onnx cat.jpg dog.png --top 3
    """
    from ..class_scores import top_k
    from ..scoring import expand_paths, pixels_for

    m = load_model(model, size, bgr, mean, std, labels)
    k = min(top, m.num_classes)
    out, blocks = [], []
    for path in map(str, expand_paths(images)):
        p = m.predict(m.preprocess(pixels_for(m, path, photo=True)))[0]
        best = top_k(p, k)  # O(K), not a full sort of K classes
        out.append({"image": path, "top": [{"class": int(i), "label": m.labels[i],
                                            "probability": float(p[i])} for i in best]})
        blocks.append(path + "\n" + "\n".join(f"  {p[i]:6.3f}  {i:4d}  {m.labels[i]}"
                                              for i in best))
    emit(out, json, quiet, "\n".join(blocks))
