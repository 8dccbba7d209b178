"""``pydevis export``: the backward pass as one ONNX model (:mod:`pydevis.export`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import PydevisError
from .app import JsonOpt, QuietOpt, SizeOpt, app, emit, load_model

ModeOpt = Annotated[str, typer.Option(
    "--mode", metavar="gradient|deconvnet|guided",
    help="Which signal the graph computes: the gradient, the deconvnet signal (rectifiers pass "
         "max(g, 0)) or guided backprop (both rules).")]


@app.command("export")
def export(model: Annotated[str, typer.Argument(metavar="MODEL",
                                                help="Path to an .onnx image classifier.")],
           out: Annotated[str, typer.Option(
               "--out", metavar="SIGNAL.onnx", help="Where to write the exported model.")],
           mode: ModeOpt = "gradient",
           tensor: Annotated[str | None, typer.Option(
               "--tensor", metavar="NAME",
               help="Start the backward pass at this tensor (or node) instead of the class "
                    "scores: the 'cotangent' input then has its shape, and the graph also "
                    "outputs it as 'activation'.  [default: the class scores]")] = None,
           size: SizeOpt = None, json: JsonOpt = False, quiet: QuietOpt = False):
    """Write one ONNX model computing the class scores and the input-space signal: inputs the
    model's image input and 'cotangent' (a one-hot row is a class target), outputs 'scores'
    and 'signal'. Runs in any ONNX Runtime, on any execution provider, without pydevis.

    Example: pydevis export ../shared/models/squeezenet1_1_caffe.onnx --mode guided
    --out squeezenet_guided.onnx
    """
    from ..atomic import atomic_open
    from ..export import export_backward

    if mode not in ("gradient", "deconvnet", "guided"):
        raise PydevisError(f"--mode: expected gradient, deconvnet or guided, got {mode!r}")
    dest = Path(out)
    if dest.is_dir():
        raise PydevisError(f"--out: {dest} is a folder; give a file name")
    m = load_model(model, size)
    proto = export_backward(m, mode, tensor)
    with atomic_open(dest, "wb") as f:
        f.write(proto.SerializeToString())
    data = {"model": str(m.path), "mode": mode, "out": str(dest), "files": [str(dest)],
            "inputs": [i.name for i in proto.graph.input if i.name not in
                       {t.name for t in proto.graph.initializer}],
            "outputs": [o.name for o in proto.graph.output],
            "opset": m.graph.opset, "ir_version": proto.ir_version,
            "nodes": len(proto.graph.node)}
    emit(data, json, quiet, f"wrote {dest} ({mode}; inputs {', '.join(data['inputs'])}; "
                            f"outputs {', '.join(data['outputs'])}; {data['nodes']} nodes)")
