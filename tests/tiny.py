"""A tiny classifier built with onnx.helper (no torch): conv-relu-maxpool-conv-relu-GAP-gemm,
random weights, input 3×20×18, 6 classes; and its model card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tiny_classifier(path: Path, seed: int = 0, classes: int = 6, lrn: bool = False) -> Path:
    rng = np.random.default_rng(seed)

    def w(*shape, scale=0.4):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    inits = {"w1": w(8, 3, 3, 3), "b1": w(8, scale=0.1), "w2": w(12, 8, 3, 3, scale=0.2),
             "b2": w(12, scale=0.1) + 0.1, "wf": w(classes, 12), "bf": w(classes, scale=0.1)}
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1")]
    last = "r1"
    if lrn:
        nodes.append(helper.make_node("LRN", ["r1"], ["n1"], size=3, alpha=1e-3))
        last = "n1"
    nodes += [helper.make_node("MaxPool", [last], ["p1"], kernel_shape=[3, 3], strides=[2, 2]),
              helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
              helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
              helper.make_node("Flatten", ["g"], ["f"]),
              helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1)]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 20, 18])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    card = {"size": [20, 18], "channels": "RGB", "mean": [120.0, 115.0, 100.0],
            "std": [60.0, 58.0, 57.0], "crop_fraction": 1.0,
            "labels": [f"thing {i}" for i in range(classes)]}
    path.with_name(path.name + ".json").write_text(json.dumps(card))
    return path


def tiny_with_images(folder: Path, images: int) -> Path:
    """``tiny_classifier`` in ``folder`` with ``images`` random 30×26 PNGs beside it
    (``img0.png``...), the fixture of the CLI tests."""
    from PIL import Image

    path = tiny_classifier(folder / "tiny.onnx")
    rng = np.random.default_rng(0)
    for i in range(images):
        Image.fromarray(rng.integers(0, 255, (30, 26, 3), dtype=np.uint8)).save(
            folder / f"img{i}.png")
    return path
