"""Reading an ONNX file for :func:`pydevis.load`: every check that can refuse it, each a one-line
:class:`ModelError`, before anything else reads it."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx import external_data_helper

from .errors import ModelError


def read_onnx(p: Path) -> onnx.ModelProto:
    """The ONNX model at ``p``, checked (a graph, a known opset, external data inside the model's
    folder, onnx.checker) before pydevis uses it; a one-line ModelError otherwise."""
    if not p.is_file():
        raise ModelError(f"{p}: no such file")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{p}: not an ONNX model ({type(exc).__name__})") from None
    if not proto.graph.node:
        raise ModelError(f"{p}: not an ONNX model (no graph nodes)")
    newest = onnx.defs.onnx_opset_version()
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx") and not 1 <= imp.version <= newest:
            raise ModelError(f"{p}: ONNX opset {imp.version} is not supported "
                             f"(this onnx knows opsets 1..{newest})")
    _check_external(p, proto)
    try:
        external_data_helper.load_external_data_for_model(proto, str(p.parent))
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ModelError(f"{p}: invalid ONNX model: {str(exc).strip().splitlines()[0]}") from None
    return proto


def _check_external(p: Path, proto: onnx.ModelProto) -> None:
    """Refuse external-data locations outside the model's folder, before reading any of them."""
    root = p.parent.resolve()
    for tensor in external_data_helper._get_all_tensors(proto):
        if not external_data_helper.uses_external_data(tensor):
            continue
        info = {e.key: e.value for e in tensor.external_data}
        loc = info.get("location", "")
        target = (root / loc).resolve()
        if os.path.isabs(loc) or ".." in Path(loc).parts or not target.is_relative_to(root):
            raise ModelError(f"{p}: tensor {tensor.name!r} has external data outside the model's "
                             f"folder ({loc!r}); refused")
