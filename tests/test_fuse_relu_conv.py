"""The fused Relu -> Conv backward step (engine.fuse_relu): where a Conv reads a Relu's output
and nothing else does, one step runs the Conv's backward and then the Relu's. It must give the
same numbers as the two steps, bit for bit, in every mode, on every backend and on every path of
the C++ conv kernel (Winograd F(2×2) and F(4×4), GEMM + col2im, strided, batched small planes,
1×1, depthwise, float64); a Relu whose output has another reader stays its own step."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from fusion import fused_and_unfused, walk_ops
from onnx import TensorProto, helper, numpy_helper

import pydevis
from pydevis import kernels

MODES = kernels.MODES

# n, c, m, (h, w), (kh, kw), stride, pad, group: one per path of the C++ kernel
PATHS = {
    "winograd2": (3, 32, 24, (13, 13), (3, 3), 1, 1, 1),
    "winograd4": (3, 24, 16, (28, 30), (3, 3), 1, 1, 1),
    "gemm": (1, 6, 8, (17, 15), (5, 5), 1, 2, 1),
    "strided": (2, 3, 8, (23, 21), (5, 5), 3, 2, 1),
    "batched": (4, 8, 12, (7, 7), (3, 3), 1, 1, 1),
    "one_by_one": (2, 8, 12, (9, 10), (1, 1), 1, 0, 1),
    "one_by_one_split": (1, 8, 12, (30, 28), (1, 1), 1, 0, 1),  # pixels split across threads
    "depthwise": (2, 6, 6, (11, 9), (3, 3), 1, 1, 6),
    "depthwise_wide": (1, 4, 4, (9, 70), (3, 3), 1, 1, 4),  # rectified row by row
    "depthwise_wide_strided": (2, 4, 4, (7, 67), (3, 3), 2, 1, 4),
}


def _conv_case(name, dtype, seed=0):
    n, c, m, (h, w), (kh, kw), s, p, group = PATHS[name]
    rng = np.random.default_rng(seed)
    ho, wo = (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1
    g = rng.standard_normal((n, m, ho, wo)).astype(dtype)
    wt = rng.standard_normal((m, c // group, kh, kw)).astype(dtype)
    y = np.maximum(rng.standard_normal((n, c, h, w)), 0).astype(dtype)  # a Relu output
    y[0, 0, 1, 2] = np.inf
    return g, wt, y, ((h, w), (s, s), (p, p, p, p), (1, 1), group)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", sorted(PATHS))
def test_kernel_rectify_matches_the_two_kernels(backend, path, mode, dtype):
    if backend.NAME == "cuda":
        pytest.skip("host arrays here")
    g, wt, y, args = _conv_case(path, dtype)
    for constant in (False, True):
        fused = kernels.conv2d_backward_data(g, wt, *args, constant_weight=constant,
                                             rectify=mode, y=y, module=backend)
        two = kernels.rectifier_backward(
            kernels.conv2d_backward_data(g, wt, *args, constant_weight=constant,
                                         module=backend), y, mode, module=backend)
        assert fused.dtype == dtype and np.any(two != 0) and np.any(two == 0)
        np.testing.assert_array_equal(fused, two)


def test_cpp_checks_the_relu_arguments(backends):
    if "cpp" not in backends:
        pytest.skip("C++ backend absent")
    from pydevis import _C

    g, wt, y, args = _conv_case("gemm", np.float32)
    with pytest.raises(ValueError, match="rectify"):
        _C.conv2d_backward_data(g, wt, *args, None, y, 3)
    with pytest.raises(ValueError, match="y"):
        _C.conv2d_backward_data(g, wt, *args, None, None, 0)
    with pytest.raises(ValueError, match="y: shape"):
        _C.conv2d_backward_data(g, wt, *args, None, np.ascontiguousarray(y[:, :, 1:]), 0)
    with pytest.raises(ValueError, match="y"):
        _C.conv2d_backward_data(g, wt, *args, None, y.astype(np.float64), 0)


def _relu_conv_net(path, fan_out=False):
    """conv -> relu r1 -> conv -> relu r2 -> conv -> GAP -> Gemm; with fan_out, r1 also feeds
    the second relu's sum (an Add of a 1×1 conv of r1)."""
    rng = np.random.default_rng(0)
    inits = {"w1": rng.standard_normal((6, 3, 3, 3)).astype(np.float32),
             "w2": rng.standard_normal((8, 6, 3, 3)).astype(np.float32) * 0.3,
             "w3": rng.standard_normal((8, 8, 1, 1)).astype(np.float32) * 0.3,
             "wx": rng.standard_normal((8, 6, 1, 1)).astype(np.float32) * 0.3,
             "wf": rng.standard_normal((5, 8)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["input", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1])]
    if fan_out:
        nodes += [helper.make_node("Conv", ["r1", "wx"], ["cx"]),
                  helper.make_node("Add", ["c2", "cx"], ["s2"]),
                  helper.make_node("Relu", ["s2"], ["r2"])]
    else:
        nodes += [helper.make_node("Relu", ["c2"], ["r2"])]
    nodes += [helper.make_node("Conv", ["r2", "w3"], ["c3"]),
              helper.make_node("GlobalAveragePool", ["c3"], ["g"]),
              helper.make_node("Flatten", ["g"], ["f"]),
              helper.make_node("Gemm", ["f", "wf"], ["logits"], transB=1)]
    graph = helper.make_graph(
        nodes, "relu_conv",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 12, 12])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("mode", MODES)
def test_fused_equals_unfused_bit_for_bit(tmp_path, mode, backend, monkeypatch):
    monkeypatch.setenv("PYDEVIS_BACKEND", backend.NAME)
    path = _relu_conv_net(tmp_path / "rc.onnx")
    x = np.random.default_rng(1).standard_normal((3, 3, 12, 12)).astype(np.float32)
    fused, plain, got, want = fused_and_unfused(path, x, [0, 3, 4], mode, monkeypatch,
                                                size=(12, 12))
    assert walk_ops(fused).count("Relu+Conv") == 2 and "Relu" not in walk_ops(fused)
    assert "Relu+Conv" not in walk_ops(plain) and walk_ops(plain).count("Relu") == 2
    np.testing.assert_array_equal(got, want)


def test_relu_read_elsewhere_is_not_fused(tmp_path):
    model = pydevis.load(_relu_conv_net(tmp_path / "fan.onnx", fan_out=True), size=(12, 12))
    ops = walk_ops(model)
    assert ops.count("Relu+Conv") == 1  # r2 -> conv3 only; r1 feeds two convs
    assert ops.count("Relu") == 1


def test_relu_output_as_target_is_not_fused(tmp_path):
    model = pydevis.load(_relu_conv_net(tmp_path / "rc.onnx"), size=(12, 12))
    assert walk_ops(model, "r1") == ["Conv", "Relu"]
    assert walk_ops(model, "c2") == ["Conv", "Relu+Conv"]
