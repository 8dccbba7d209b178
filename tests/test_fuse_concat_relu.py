"""The fused Concat-of-Relus -> MaxPool / Conv backward step (engine.fuse_relu): where a
MaxPool or Conv reads a Concat of Relu outputs (SqueezeNet's fire modules, GoogLeNet's
inceptions) and nothing else reads them, the MaxPool's (Conv's) step rectifies with the Concat's
output and the Concat splits the result among the Relus' inputs: the Relus' own steps go, and
the forward returns the Concat's output instead of theirs. Same numbers as the unfused walk,
bit for bit, in every mode and on every backend."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from fusion import fused_and_unfused, walk_ops
from onnx import TensorProto, helper, numpy_helper

import pydevis
from pydevis import kernels

MODES = kernels.MODES


def _fire_net(path, *, extra_reader=False, plain_input=False):
    """Two fire-like modules: [conv a -> ra, conv b -> rb] -> Concat c1 -> MaxPool 3x3/2 p,
    [conv d -> rd, conv e -> re] on p -> Concat c2 -> Conv f -> GAP -> Gemm. extra_reader: rb
    is also read by an AveragePool added to p's path; plain_input: c2's second input is conv e's
    output, not a Relu's."""
    rng = np.random.default_rng(0)
    inits = {"wa": rng.standard_normal((4, 3, 3, 3)), "wb": rng.standard_normal((5, 3, 1, 1)),
             "wd": rng.standard_normal((6, 9, 1, 1)), "we": rng.standard_normal((6, 9, 3, 3)),
             "wf": rng.standard_normal((7, 12, 3, 3)), "wl": rng.standard_normal((10, 7))}
    e_out = "e" if plain_input else "re"
    nodes = [helper.make_node("Conv", ["input", "wa"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["ra"]),
             helper.make_node("Conv", ["input", "wb"], ["b"]),
             helper.make_node("Relu", ["b"], ["rb"]),
             helper.make_node("Concat", ["ra", "rb"], ["c1"], axis=1),
             helper.make_node("MaxPool", ["c1"], ["p0"], kernel_shape=[3, 3], strides=[2, 2]),
             helper.make_node("Conv", ["p", "wd"], ["d"]),
             helper.make_node("Relu", ["d"], ["rd"]),
             helper.make_node("Conv", ["p", "we"], ["e"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["e"], ["re"]),
             helper.make_node("Concat", ["rd", e_out], ["c2"], axis=1),
             helper.make_node("Conv", ["c2", "wf"], ["f"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["f"], ["g"]),
             helper.make_node("Flatten", ["g"], ["h"]),
             helper.make_node("Gemm", ["h", "wl"], ["logits"], transB=1)]
    if extra_reader:  # rb read twice: its Concat stays unfused
        nodes[5:6] = [
            helper.make_node("MaxPool", ["c1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2]),
            helper.make_node("MaxPool", ["rb"], ["q"], kernel_shape=[3, 3], strides=[2, 2]),
            helper.make_node("Concat", ["p1", "q"], ["p0"], axis=1)]
        inits["wd"] = rng.standard_normal((6, 14, 1, 1))
        inits["we"] = rng.standard_normal((6, 14, 3, 3))
    nodes.insert(nodes.index(next(n for n in nodes if n.output == ["p0"])) + 1,
                 helper.make_node("Identity", ["p0"], ["p"]))
    graph = helper.make_graph(
        nodes, "fire",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 15, 13])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _walk(model, target="logits"):
    return [(n.op_type, list(n.inputs)) for n, _ in model.plan(target).walk]


@pytest.fixture(scope="module")
def fire(tmp_path_factory):
    return _fire_net(tmp_path_factory.mktemp("concat") / "fire.onnx")


def test_concats_of_relus_fuse_into_the_pool_and_the_conv(fire):
    plan = pydevis.load(fire, size=(15, 13)).plan("logits")
    walk = [(n.op_type, list(n.inputs), n.attrs.get("relu_output")) for n, _ in plan.walk]
    assert ("Relu+MaxPool", ["c1"], "c1") in walk
    assert ("Relu+Conv", ["c2", "wf"], "c2") in walk
    assert ("Concat", ["a", "b"], None) in walk and ("Concat", ["d", "e"], None) in walk
    assert not any(op == "Relu" for op, _, _ in walk)
    # the forward returns the Concats' outputs, not the Relus'
    assert {"c1", "c2"} <= set(plan.values)
    assert not {"ra", "rb", "rd", "re"} & set(plan.values)
    assert {"a", "b", "d", "e"} <= set(plan.shapes)
    # Plan.steps keeps the graph's nodes
    steps = [n.op_type for n, _ in plan.steps]
    assert steps.count("Relu") == 4 and steps.count("Concat") == 2


@pytest.mark.parametrize("mode", MODES)
def test_fused_equals_unfused_bit_for_bit(fire, mode, backend, monkeypatch):
    monkeypatch.setenv("PYDEVIS_BACKEND", backend.NAME)
    x = np.random.default_rng(1).standard_normal((3, 3, 15, 13)).astype(np.float32)
    fused, plain, got, want = fused_and_unfused(fire, x, [0, 3, 7], mode, monkeypatch,
                                                size=(15, 13))
    assert "Relu+Conv" in walk_ops(fused) and "Relu" not in walk_ops(fused)
    assert walk_ops(plain).count("Relu") == 4
    assert {"ra", "rb", "rd", "re"} <= set(plain.plan("logits").values)
    np.testing.assert_array_equal(got, want)


def test_a_relu_read_elsewhere_keeps_its_concat_unfused(tmp_path):
    model = pydevis.load(_fire_net(tmp_path / "x.onnx", extra_reader=True), size=(15, 13))
    walk = _walk(model)
    assert ("Concat", ["ra", "rb"]) in walk and ("MaxPool", ["c1"]) in walk
    assert ("Relu+Conv", ["c2", "wf"]) in walk  # the other module still fuses


def test_a_concat_with_an_input_not_from_a_relu_stays_unfused(tmp_path):
    model = pydevis.load(_fire_net(tmp_path / "p.onnx", plain_input=True), size=(15, 13))
    walk = _walk(model)
    assert ("Concat", ["rd", "e"]) in walk and ("Conv", ["c2", "wf"]) in walk
    assert ("Relu+MaxPool", ["c1"]) in walk


def test_a_concat_as_target_or_a_relu_as_target_stays_unfused(fire):
    model = pydevis.load(fire, size=(15, 13))
    assert ("Concat", ["ra", "rb"]) in _walk(model, "c1")
    walk = _walk(model, "p0")  # the MaxPool's output: its Concat fuses
    assert ("Relu+MaxPool", ["c1"]) in walk and ("Concat", ["a", "b"]) in walk
    assert _walk(model, "rb") == [("Conv", ["input", "wb"]), ("Relu", ["b"])]
