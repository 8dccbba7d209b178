"""The ONNX Runtime side (``pydevis/session.py``): the rewritten models give the original's values,
hold no copy of the weights, and the session cache stays small."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import pydevis
from pydevis import session

N, C, H, W = 2, 3, 9, 5  # input; the conv makes M channels
M = 6


def _model(path, lrn_size=3, big=False):
    """x → Conv(M) → Relu → LRN → MaxPool → Flatten → Gemm(4): scores."""
    rng = np.random.default_rng(0)
    ho, wo = (H - 1) // 2, (W - 1) // 2
    fc_in = M * ho * wo
    hidden = 8192 if big else 4  # 1.7 MB of weights: "big" for the tests below
    inits = {"w": rng.standard_normal((M, C, 3, 3)).astype(np.float32),
             "b": rng.standard_normal(M).astype(np.float32),
             "fc": rng.standard_normal((hidden, fc_in)).astype(np.float32),
             "fc2": rng.standard_normal((4, hidden)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("LRN", ["r"], ["n"], size=lrn_size, alpha=0.2, beta=0.75, bias=1.5),
             helper.make_node("MaxPool", ["n"], ["p"], kernel_shape=[3, 3], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["h"], transB=1),
             helper.make_node("Gemm", ["h", "fc2"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", C, H, W])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _plain(path, x, names):
    """ONNX Runtime on the original model, ``names`` exposed as outputs."""
    m = onnx.load(path)
    m.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names
                          if n not in {o.name for o in m.graph.output})
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip(names, sess.run(names, {"x": x}), strict=True))


def _lrn(x, size, alpha=0.2, beta=0.75, bias=1.5):
    """ONNX LRN in float64: channel window [c − ⌊(size−1)/2⌋, c + ⌈(size−1)/2⌉]."""
    x = x.astype(np.float64)
    sq = np.zeros_like(x)
    for c in range(x.shape[1]):
        lo, hi = max(0, c - (size - 1) // 2), min(x.shape[1], c + size // 2 + 1)
        sq[:, c] = (x[:, lo:hi] ** 2).sum(axis=1)
    return x / (bias + alpha / size * sq) ** beta


@pytest.mark.parametrize("lrn_size", [3, 4])
def test_rewritten_lrn_gives_the_lrn_values(tmp_path, lrn_size):
    """Odd size: ONNX Runtime's own LRN; even size (which ONNX Runtime refuses): the spec."""
    path = _model(tmp_path / "m.onnx", lrn_size)
    model = pydevis.load(path)
    assert "LRN" not in {n.op_type for n in model.runner.model.graph.node}
    x = np.random.default_rng(1).standard_normal((N, C, H, W)).astype(np.float32) * 3
    got = model.runner.run(x, ["r", "n", "y"])
    want = _plain(path, x, ["n", "y"]) if lrn_size % 2 else {"n": _lrn(got["r"], lrn_size)}
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, rtol=2e-6, atol=2e-6 * np.abs(v).max())


def test_session_protos_hold_no_weights(tmp_path):
    path = _model(tmp_path / "m.onnx", big=True)
    model = pydevis.load(path)
    weights = sum(a.nbytes for a in model.graph.constants.values())
    assert weights > 1.5e6
    assert model.runner.model.ByteSize() < 1e5 and model.runner.original.ByteSize() < 1e5
    x = np.random.default_rng(2).standard_normal((2, C, H, W)).astype(np.float32)
    np.testing.assert_allclose(model.forward(x), _plain(path, x, ["y"])["y"], rtol=1e-5,
                               atol=1e-4)


def test_big_models_keep_one_session_per_batch_mode(tmp_path, monkeypatch):
    monkeypatch.setattr(session, "MERGE_MIN_BYTES", 1 << 20)
    model = pydevis.load(_model(tmp_path / "m.onnx", big=True))
    x = np.random.default_rng(3).standard_normal((4, C, H, W)).astype(np.float32)
    scores = model.forward(x)
    model.backward_pass(x, [0, 1, 2, 3])
    a = model.runner.run(x, ["r"])
    b = model.runner.run(x, ["n", "p"])
    assert model.runner.batchable
    assert list(model.runner._sessions) == [True]  # fixed-batch session dropped after the check
    (exposed,) = model.runner._sessions[True]  # one session exposing the union
    assert {"r", "n", "p", "y"} <= exposed
    np.testing.assert_array_equal(model.forward(x), scores)
    np.testing.assert_array_equal(model.runner.run(x, ["r"])["r"], a["r"])
    np.testing.assert_array_equal(model.runner.run(x, ["p"])["p"], b["p"])


def test_small_models_keep_one_session_per_tensor_set(tmp_path):
    model = pydevis.load(_model(tmp_path / "m.onnx"))
    x = np.random.default_rng(4).standard_normal((2, C, H, W)).astype(np.float32)
    model.forward(x)
    model.runner.run(x, ["r"])
    sets = model.runner._sessions[True]
    assert frozenset({"y"}) in sets and frozenset({"r"}) in sets
