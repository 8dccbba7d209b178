"""Every backward rule in ``gradient`` mode against a float64 finite difference of the ONNX
reference implementation (onnx.reference), along random directions:
<u, VJP(v)> ≈ <v, (f(x+εu) − f(x−εu)) / 2ε>. The models are tiny graphs built here, with
dimensions N≠C≠H≠W, feeding each op the attribute variants that real exports use.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import pydevis

X_SHAPE = (2, 3, 9, 7)


def build(nodes, inits, opset=17, dtype=np.float32, x_shape=X_SHAPE):
    """A model with image input ``x`` and output ``y``; float initializers in ``dtype``."""
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    tensors = []
    for name, value in inits.items():
        value = np.asarray(value)
        if value.dtype.kind == "f":
            value = value.astype(dtype)
        tensors.append(numpy_helper.from_array(value, name))
    graph = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("x", elem, ["N", *x_shape[1:]])],
        [helper.make_empty_tensor_value_info("y")], tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    inferred = onnx.shape_inference.infer_shapes(model)
    typed = [vi for vi in inferred.graph.value_info if vi.name == "y"]
    y = typed[0] if typed else helper.make_tensor_value_info("y", elem, None)
    if not y.type.tensor_type.HasField("shape"):
        y.type.tensor_type.shape.SetInParent()
    model.graph.output[0].CopyFrom(y)
    return model


def check_vjp(tmp_path, nodes, inits, opset=17, x_shape=X_SHAPE, seed=0, positive=False,
              oracle=None):
    """``oracle(x) -> y`` in float64 replaces onnx.reference where the latter is wrong or
    computes in float32 (its LRN, opset-11 Softmax and Erf)."""
    rng = np.random.default_rng(seed)
    path = tmp_path / "m.onnx"
    onnx.save(build(nodes, inits, opset, np.float32, x_shape), path)
    model = pydevis.load(path)
    if oracle is None:
        evaluator = ReferenceEvaluator(build(nodes, inits, opset, np.float64, x_shape))

        def oracle(z):
            return evaluator.run(None, {"x": z})[0]

    x = rng.standard_normal(x_shape)
    if positive:
        x = np.abs(x) + 0.5
    y = oracle(x)
    v = rng.standard_normal(y.shape)
    u = rng.standard_normal(x.shape)
    grad = model.vjp(x.astype(np.float32), "y", v.astype(np.float32))
    lhs = float((u * grad).sum())
    eps = 1e-6
    fd = (oracle(x + eps * u) - oracle(x - eps * u)) / (2 * eps)
    rhs = float((v * fd).sum())
    assert lhs == pytest.approx(rhs, rel=2e-4, abs=1e-6), f"VJP {lhs} vs finite difference {rhs}"


rng0 = np.random.default_rng(1)
W = rng0.standard_normal((4, 3, 3, 3)) * 0.3
WG = rng0.standard_normal((6, 1, 3, 2)) * 0.3
N = helper.make_node

CASES = {
    "conv_same_lower_stride": (
        [N("Conv", ["x", "w"], ["y"], auto_pad="SAME_LOWER", strides=[2, 1])], {"w": W}, 17),
    "conv_dilation_pads": (
        [N("Conv", ["x", "w"], ["y"], pads=[2, 1, 0, 2], strides=[1, 2], dilations=[2, 3])],
        {"w": W}, 17),
    "conv_same_upper_bias": (
        [N("Conv", ["x", "w", "b"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])],
        {"w": W, "b": np.arange(4.0)}, 17),
    "conv_grouped_asym_pads": (
        [N("Conv", ["x", "w"], ["y"], group=3, pads=[0, 1, 2, 1], strides=[1, 2])],
        {"w": WG}, 17),
    "relu": ([N("Relu", ["x"], ["y"])], {}, 17),
    "clip_inputs": ([N("Clip", ["x", "lo", "hi"], ["y"])], {"lo": np.array(-0.5),
                                                         "hi": np.array(0.7)}, 13),
    "clip_attrs_opset6": ([N("Clip", ["x"], ["y"], min=0.0, max=0.6)], {}, 6),
    "leaky_relu": ([N("LeakyRelu", ["x"], ["y"], alpha=0.2)], {}, 17),
    "prelu_broadcast": ([N("PRelu", ["x", "s"], ["y"])], {"s": [[[0.1]], [[0.3]], [[-0.2]]]}, 17),
    "sigmoid": ([N("Sigmoid", ["x"], ["y"])], {}, 17),
    "tanh": ([N("Tanh", ["x"], ["y"])], {}, 17),
    "hard_sigmoid": ([N("HardSigmoid", ["x"], ["y"], alpha=0.3, beta=0.4)], {}, 17),
    "hard_swish": ([N("Mul", ["x", "k"], ["x3"]), N("HardSwish", ["x3"], ["y"])],
                   {"k": np.array(3.0)}, 17),
    "elu": ([N("Elu", ["x"], ["y"], alpha=0.7)], {}, 17),
    "softplus": ([N("Softplus", ["x"], ["y"])], {}, 17),
    "erf": ([N("Erf", ["x"], ["y"])], {}, 17),
    "softmax_opset11_axis1": ([N("Softmax", ["x"], ["y"], axis=1)], {}, 11),
    "softmax_opset13_axis1": ([N("Softmax", ["x"], ["y"], axis=1)], {}, 13),
    "log_softmax": ([N("LogSoftmax", ["x"], ["y"])], {}, 13),
    "mul_both_data": ([N("Sigmoid", ["x"], ["s"]), N("Mul", ["x", "s"], ["y"])], {}, 17),
    "div_both_data": ([N("Sigmoid", ["x"], ["s"]), N("Div", ["x", "s"], ["y"])], {}, 17),
    "add_sub_broadcast": ([N("Add", ["x", "c"], ["a"]), N("Sub", ["c", "a"], ["y"])],
                          {"c": rng0.standard_normal((3, 1, 1))}, 17),
    "sum_neg": ([N("Neg", ["x"], ["n"]), N("Sum", ["x", "n", "x", "c"], ["y"])],
                {"c": rng0.standard_normal((7,))}, 17),
    "pow_sqrt_exp": ([N("Pow", ["x", "p"], ["q"]), N("Sqrt", ["q"], ["r"]), N("Exp", ["r"], ["y"])],
                     {"p": np.array(2.0)}, 17),
    "pad_opset11": ([N("Pad", ["x", "p"], ["y"])], {"p": np.array([0, 0, 1, 2, 0, 1, 3, 0])}, 11),
    "pad_opset18_axes": ([N("Pad", ["x", "p", "", "ax"], ["y"])],
                         {"p": np.array([2, 1, 0, 3]), "ax": np.array([2, 3])}, 18),
    "slice_steps": ([N("Slice", ["x", "s", "e", "a", "st"], ["y"])],
                    {"s": np.array([-2, 1]), "e": np.array([0, 7]), "a": np.array([2, 3]),
                     "st": np.array([-2, 2])}, 13),
    "slice_opset9": ([N("Slice", ["x"], ["y"], starts=[1, 0], ends=[3, -1], axes=[1, 3])], {}, 9),
    "reduce_mean_opset18": ([N("ReduceMean", ["x", "ax"], ["y"], keepdims=0)],
                            {"ax": np.array([2, 3])}, 18),
    "reduce_mean_opset13": ([N("ReduceMean", ["x"], ["y"], axes=[1], keepdims=1)], {}, 13),
    "reduce_sum": ([N("ReduceSum", ["x", "ax"], ["y"], keepdims=0)], {"ax": np.array([-1])}, 13),
    "split_concat": ([N("Split", ["x", "sp"], ["a", "b", "c"], axis=1),
                      N("Concat", ["c", "a", "c"], ["y"], axis=1)],
                     {"sp": np.array([1, 1, 1])}, 13),
    "split_unused_output": ([N("Split", ["x"], ["a", "b"], axis=2, split=[4, 5]),
                             N("Relu", ["b"], ["y"])], {}, 11),
    "gather": ([N("Gather", ["x", "i"], ["y"], axis=3)], {"i": np.array([[0, 2], [2, -1]])}, 13),
    "expand": ([N("ReduceMean", ["x"], ["m"], axes=[2], keepdims=1),
                N("Expand", ["m", "sh"], ["y"])], {"sh": np.array([1, 3, 4, 7])}, 13),
    "transpose_squeeze": ([N("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
                           N("Unsqueeze", ["t", "a"], ["u"]), N("Squeeze", ["u", "a"], ["y"])],
                          {"a": np.array([2])}, 13),
    "flatten_gemm_trans": ([N("Flatten", ["x"], ["f"]), N("Transpose", ["f"], ["ft"]),
                            N("Gemm", ["ft", "b", "c"], ["y"], transA=1, transB=1, alpha=0.7,
                              beta=0.3)],
                           {"b": rng0.standard_normal((5, 189)), "c": rng0.standard_normal((5,))},
                           13),
    "matmul_batched": ([N("MatMul", ["x", "b"], ["y"])], {"b": rng0.standard_normal((7, 4))}, 13),
    "matmul_both_data": ([N("Transpose", ["x"], ["t"], perm=[0, 1, 3, 2]),
                          N("MatMul", ["x", "t"], ["y"])], {}, 13),
    "matmul_vector": ([N("MatMul", ["x", "b"], ["y"])], {"b": rng0.standard_normal((7,))}, 13),
    "avg_pool_ceil_include_pad": ([N("AveragePool", ["x"], ["y"], kernel_shape=[3, 2],
                                     strides=[2, 2], pads=[1, 0, 1, 1], ceil_mode=1,
                                     count_include_pad=1)], {}, 17),
    "avg_pool_exclude_pad": ([N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3],
                                strides=[2, 1], pads=[1, 1, 1, 1])], {}, 17),
    "max_pool_overlap_ceil": ([N("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                 ceil_mode=1)], {}, 17),
    "max_pool_pads_dilation": ([N("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], pads=[1, 0, 1, 1],
                                  dilations=[2, 1])], {}, 17),
    "global_pools": ([N("GlobalMaxPool", ["x"], ["a"]), N("GlobalAveragePool", ["x"], ["b"]),
                      N("Add", ["a", "b"], ["y"])], {}, 17),
    "batch_norm": ([N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)],
                   {"s": [0.5, 2.0, -1.0], "b": [0.1, 0.2, 0.3], "m": [0.3, -0.2, 0.0],
                    "v": [0.5, 2.0, 1.5]}, 15),
    "lrn": ([N("LRN", ["x"], ["y"], size=3, alpha=0.05, beta=0.6, bias=1.5)], {}, 13),
    "identity_dropout": ([N("Identity", ["x"], ["a"]), N("Dropout", ["a"], ["y"])], {}, 13),
    "reshape_dynamic_shape": ([N("Shape", ["x"], ["s"]), N("Gather", ["s", "z"], ["n"]),
                               N("Concat", ["n1", "m1"], ["sh"], axis=0),
                               N("Unsqueeze", ["n", "z1"], ["n1"]),
                               N("Reshape", ["x", "sh"], ["y"])],
                              {"z": np.array(0), "z1": np.array([0]), "m1": np.array([-1])}, 13),
}
# keep topological order for the dynamic-shape case
_dyn = CASES["reshape_dynamic_shape"][0]
_dyn[:] = [_dyn[i] for i in (0, 1, 3, 2, 4)]
POSITIVE = {"pow_sqrt_exp"}


def lrn64(x, size=3, alpha=0.05, beta=0.6, bias=1.5):
    """ONNX LRN in float64, channel windows [c − ⌊(size−1)/2⌋, c + ⌈(size−1)/2⌉]."""
    sq = np.zeros_like(x)
    c = x.shape[1]
    for i in range(c):
        lo, hi = max(0, i - (size - 1) // 2), min(c - 1, i + (size - 1 + 1) // 2)
        sq[:, i] = (x[:, lo:hi + 1] ** 2).sum(axis=1)
    return x / (bias + alpha / size * sq) ** beta


def softmax_coerced_axis1(x):
    z = x.reshape(x.shape[0], -1)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).reshape(x.shape)


ORACLES = {
    "lrn": lrn64,
    "softmax_opset11_axis1": softmax_coerced_axis1,
    "erf": np.vectorize(math.erf),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rule_matches_finite_difference(tmp_path, case):
    nodes, inits, opset = CASES[case]
    check_vjp(tmp_path, nodes, inits, opset, positive=case in POSITIVE, oracle=ORACLES.get(case))


def test_check_can_fail(tmp_path):
    """The oracle catches a wrong rule: a Tanh graph checked against Sigmoid's reference."""
    nodes = [N("Tanh", ["x"], ["y"])]
    path = tmp_path / "m.onnx"
    onnx.save(build(nodes, {}), path)
    model = pydevis.load(path)
    ref = ReferenceEvaluator(build([N("Sigmoid", ["x"], ["y"])], {}, dtype=np.float64))
    rng = np.random.default_rng(0)
    x = rng.standard_normal(X_SHAPE)
    u, v = rng.standard_normal(X_SHAPE), rng.standard_normal(X_SHAPE)
    lhs = float((u * model.vjp(x.astype(np.float32), "y", v.astype(np.float32))).sum())
    fd = (ref.run(None, {"x": x + 1e-6 * u})[0] - ref.run(None, {"x": x - 1e-6 * u})[0]) / 2e-6
    assert lhs != pytest.approx(float((v * fd).sum()), rel=2e-4)


@pytest.mark.parametrize("op", ["Relu", "Clip"])
def test_rectifier_modes(tmp_path, op):
    """deconvnet = max(g, 0) ignoring the forward; guided = deconvnet · [x > 0]."""
    inits = {"lo": np.array(0.0), "hi": np.array(6.0)} if op == "Clip" else {}
    nodes = [N(op, ["x", "lo", "hi"] if op == "Clip" else ["x"], ["y"])]
    path = tmp_path / "m.onnx"
    onnx.save(build(nodes, inits), path)
    model = pydevis.load(path)
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(X_SHAPE) * 4).astype(np.float32)
    g = rng.standard_normal(X_SHAPE).astype(np.float32)
    mask = (x > 0) & (x < (6 if op == "Clip" else np.inf))
    np.testing.assert_array_equal(model.vjp(x, "y", g, "gradient"), g * mask)
    np.testing.assert_array_equal(model.vjp(x, "y", g, "deconvnet"), np.maximum(g, 0))
    np.testing.assert_array_equal(model.vjp(x, "y", g, "guided"), np.maximum(g, 0) * mask)


def test_clip_not_at_zero_is_not_a_rectifier(tmp_path):
    nodes = [N("Clip", ["x", "lo", "hi"], ["y"])]
    path = tmp_path / "m.onnx"
    onnx.save(build(nodes, {"lo": np.array(-1.0), "hi": np.array(1.0)}), path)
    model = pydevis.load(path)
    rng = np.random.default_rng(4)
    x = rng.standard_normal(X_SHAPE).astype(np.float32)
    g = rng.standard_normal(X_SHAPE).astype(np.float32)
    np.testing.assert_array_equal(model.vjp(x, "y", g, "deconvnet"),
                                  g * ((x > -1) & (x < 1)))


def test_unsupported_op_names_op_and_node(tmp_path):
    nodes = [N("Relu", ["x"], ["r"]), N("Celu", ["r"], ["y"], name="my_celu")]
    path = tmp_path / "m.onnx"
    onnx.save(build(nodes, {}), path)
    with pytest.raises(pydevis.UnsupportedOpError, match=r"op Celu \(node 'my_celu'\)"):
        pydevis.load(path)
