"""The fused Clip -> Conv backward step (engine.fuse_relu): ReLU6 (MobileNet's Clip(0, 6)) and
any Clip whose bounds the graph fixes are fused into the backward of the Conv that reads them,
as Relus are (tests/test_fuse_relu_conv.py). Same numbers as the two steps, bit for bit, in every
mode, on every path of the C++ conv kernel; a Clip whose bound is computed is not fused."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from fusion import fused_and_unfused, walk_ops
from onnx import TensorProto, helper, numpy_helper

import pydevis
from pydevis import kernels

MODES = kernels.MODES

# n, c, m, (h, w), (kh, kw), stride, pad, group: the C++ kernel's paths
PATHS = {
    "winograd4": (2, 24, 16, (28, 30), (3, 3), 1, 1, 1),
    "gemm": (1, 6, 8, (17, 15), (5, 5), 1, 2, 1),
    "batched": (4, 8, 12, (7, 7), (3, 3), 1, 1, 1),
    "one_by_one": (2, 8, 12, (9, 10), (1, 1), 1, 0, 1),
    "one_by_one_split": (1, 8, 12, (30, 28), (1, 1), 1, 0, 1),
    "depthwise": (2, 6, 6, (31, 29), (3, 3), 1, 1, 6),
    "depthwise_strided": (2, 6, 6, (11, 9), (3, 3), 2, 1, 6),
    # rows of 64 and more: rectified row by row as the kernel writes them (depthwise.cpp)
    "depthwise_wide": (1, 4, 4, (9, 70), (3, 3), 1, 1, 4),
    "depthwise_wide_strided": (2, 4, 4, (7, 67), (3, 3), 2, 1, 4),
}


def _case(name, lo, hi, dtype=np.float32, seed=0):
    n, c, m, (h, w), (kh, kw), s, p, group = PATHS[name]
    rng = np.random.default_rng(seed)
    ho, wo = (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1
    g = rng.standard_normal((n, m, ho, wo)).astype(dtype)
    wt = rng.standard_normal((m, c // group, kh, kw)).astype(dtype)
    y = np.clip(rng.standard_normal((n, c, h, w)) * 4, lo, hi).astype(dtype)  # a Clip output
    return g, wt, y, ((h, w), (s, s), (p, p, p, p), (1, 1), group)


@pytest.mark.parametrize("bounds", [(0.0, 6.0), (-1.0, 1.0)])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", sorted(PATHS))
def test_kernel_clip_matches_the_two_kernels(backend, path, mode, bounds):
    if backend.NAME == "cuda":
        pytest.skip("host arrays here")
    lo, hi = bounds
    g, wt, y, args = _case(path, lo, hi)
    assert np.any(y == lo) and np.any(y == hi) and np.any((y > lo) & (y < hi))
    fused = kernels.conv2d_backward_data(g, wt, *args, rectify=mode, y=y, lo=lo, hi=hi,
                                         module=backend)
    two = kernels.rectifier_backward(kernels.conv2d_backward_data(g, wt, *args, module=backend),
                                     y, mode, lo, hi, module=backend)
    assert np.any(two != 0) and np.any(two == 0)
    np.testing.assert_array_equal(fused, two)


def test_cpp_checks_the_bounds(backends):
    if "cpp" not in backends:
        pytest.skip("C++ backend absent")
    from pydevis import _C

    g, wt, y, args = _case("gemm", 0.0, 6.0)
    for lo, hi in ((np.nan, 6.0), (0.0, np.nan), (6.0, 0.0)):
        with pytest.raises(ValueError, match="^lo, hi: "):
            _C.conv2d_backward_data(g, wt, *args, None, y, 0, lo, hi)


def _clip_net(path, opset=17, bounds=((0.0, 6.0), (-1.0, 1.0)), computed_max=False):
    """conv -> clip k1 -> depthwise conv -> clip k2 -> 1×1 conv -> GAP -> Gemm. Opset 17: the
    bounds are constant inputs (computed_max: k1's max is Abs(a constant), a node's output);
    opset 10: attributes."""
    rng = np.random.default_rng(0)
    inits = {"w1": rng.standard_normal((6, 3, 3, 3)).astype(np.float32) * 2,
             "w2": rng.standard_normal((6, 1, 3, 3)).astype(np.float32),
             "w3": rng.standard_normal((8, 6, 1, 1)).astype(np.float32),
             "wf": rng.standard_normal((5, 8)).astype(np.float32),
             "bf": np.zeros(5, np.float32)}
    nodes = [helper.make_node("Conv", ["input", "w1"], ["c1"], pads=[1, 1, 1, 1])]

    def clip(name, x, y, lo, hi):
        if opset < 11:
            return [helper.make_node("Clip", [x], [y], min=lo, max=hi, name=name)]
        inits[f"{name}_lo"] = np.array(lo, np.float32)
        inits[f"{name}_hi"] = np.array(hi, np.float32)
        hi_name = f"{name}_hi"
        extra = []
        if computed_max and name == "k1":
            extra = [helper.make_node("Abs", [hi_name], [f"{name}_abs"])]
            hi_name = f"{name}_abs"
        return extra + [helper.make_node("Clip", [x, f"{name}_lo", hi_name], [y], name=name)]

    nodes += clip("k1", "c1", "r1", *bounds[0])
    nodes += [helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=6)]
    nodes += clip("k2", "c2", "r2", *bounds[1])
    nodes += [helper.make_node("Conv", ["r2", "w3"], ["c3"]),
              helper.make_node("GlobalAveragePool", ["c3"], ["g"]),
              helper.make_node("Flatten", ["g"], ["f"]),
              helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1)]
    graph = helper.make_graph(
        nodes, "clip_conv",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 12, 12])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("opset", [17, 10])
@pytest.mark.parametrize("mode", MODES)
def test_fused_equals_unfused_bit_for_bit(tmp_path, mode, opset, backend, monkeypatch):
    monkeypatch.setenv("PYDEVIS_BACKEND", backend.NAME)
    path = _clip_net(tmp_path / "cc.onnx", opset)
    x = np.random.default_rng(1).standard_normal((3, 3, 12, 12)).astype(np.float32)
    fused, plain, got, want = fused_and_unfused(path, x, [0, 3, 4], mode, monkeypatch,
                                                size=(12, 12))
    assert walk_ops(fused).count("Clip+Conv") == 2 and "Clip" not in walk_ops(fused)
    assert "Clip+Conv" not in walk_ops(plain) and walk_ops(plain).count("Clip") == 2
    np.testing.assert_array_equal(got, want)


def test_computed_bound_is_not_fused(tmp_path):
    model = pydevis.load(_clip_net(tmp_path / "cm.onnx", computed_max=True), size=(12, 12))
    ops = walk_ops(model)
    assert ops.count("Clip+Conv") == 1 and ops.count("Clip") == 1  # k2 only


def test_clip_output_as_target_is_not_fused(tmp_path):
    model = pydevis.load(_clip_net(tmp_path / "cc.onnx"), size=(12, 12))
    assert walk_ops(model, "r1") == ["Conv", "Clip"]
    assert walk_ops(model, "c2") == ["Conv", "Clip+Conv"]
