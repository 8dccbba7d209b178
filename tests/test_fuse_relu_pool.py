"""The fused Relu -> MaxPool backward step (engine.fuse_relu): where a MaxPool reads a
Relu's output and nothing else does, one step does both backwards. It must give the same numbers
as the two steps one after the other, bit for bit, in every mode and on every backend; pairs
whose Relu output is read elsewhere (or is the target) stay two steps."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from fusion import fused_and_unfused, walk_ops
from onnx import TensorProto, helper, numpy_helper

import pydevis
from pydevis import kernels
from tiny import tiny_classifier

MODES = kernels.MODES


def test_plan_steps_keep_the_graph_nodes(tiny):
    steps = [n.op_type for n, _ in pydevis.load(tiny).plan("logits").steps]
    assert "Relu+MaxPool" not in steps and steps.count("Relu") == 2 and "MaxPool" in steps


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_classifier(tmp_path_factory.mktemp("fuse") / "tiny.onnx")


@pytest.mark.parametrize("mode", MODES)
def test_fused_equals_unfused_bit_for_bit(tiny, mode, backend, monkeypatch):
    monkeypatch.setenv("PYDEVIS_BACKEND", backend.NAME)
    x = np.random.default_rng(1).standard_normal((3, 3, 20, 18)).astype(np.float32) * 60
    fused, plain, got, want = fused_and_unfused(tiny, x, [0, 3, 5], mode, monkeypatch)
    assert "Relu+MaxPool" in walk_ops(fused) and walk_ops(fused).count("Relu") == 1
    assert "Relu+MaxPool" not in walk_ops(plain) and walk_ops(plain).count("Relu") == 2
    np.testing.assert_array_equal(got, want)


def _fan_out_net(path):
    """conv -> relu r -> maxpool, and r also feeds a 1x1 conv added back after the pool."""
    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
             "wf": rng.standard_normal((5, 4)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("AveragePool", ["r"], ["a"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Add", ["p", "a"], ["s"]),
             helper.make_node("GlobalAveragePool", ["s"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "wf"], ["logits"], transB=1)]
    graph = helper.make_graph(
        nodes, "fan", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_relu_read_elsewhere_is_not_fused(tmp_path):
    model = pydevis.load(_fan_out_net(tmp_path / "fan.onnx"), size=(8, 8))
    assert "Relu+MaxPool" not in walk_ops(model) and "Relu" in walk_ops(model)


def test_relu_output_as_target_is_not_fused(tiny):
    model = pydevis.load(tiny)
    assert walk_ops(model, "r1") == ["Conv", "Relu"]  # the Relu's output is the target
    assert walk_ops(model, "p1") == ["Conv", "Relu+MaxPool"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", MODES)
def test_kernel_rectify_matches_the_two_kernels(backend, mode, dtype):
    """Overlapping 3x3/2 windows with padding; y a Relu output with zeros and +inf."""
    if backend.NAME == "cuda":
        pytest.skip("host arrays here")
    rng = np.random.default_rng(2)
    y = np.maximum(rng.standard_normal((2, 3, 11, 9)), 0).astype(dtype)
    y[0, 0, 2, 3] = np.inf
    g = rng.standard_normal((2, 3, 6, 5)).astype(dtype)
    args = ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1))
    fused = kernels.max_pool2d_backward(g, y, *args, rectify=mode, module=backend)
    two = kernels.rectifier_backward(kernels.max_pool2d_backward(g, y, *args, module=backend),
                                     y, mode, module=backend)
    assert fused.dtype == dtype and np.any(two != 0)
    np.testing.assert_array_equal(fused, two)


def test_cpp_rejects_a_bad_rectify_code(backends):
    if "cpp" not in backends:
        pytest.skip("C++ backend absent")
    from pydevis import _C

    g, y = np.ones((1, 1, 2, 2), np.float32), np.ones((1, 1, 4, 4), np.float32)
    with pytest.raises(ValueError, match="rectify"):
        _C.max_pool2d_backward(g, y, [2, 2], [2, 2], [0, 0, 0, 0], [1, 1], 3)
