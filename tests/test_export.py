"""``pydevis.export_backward`` / ``pydevis export``: the backward pass as one ONNX graph.

The exported graph, checked by ``onnx.checker`` (full check) and run by ONNX Runtime on the CPU,
must give what ``Model.backward`` / ``Model.vjp`` give (norm-wise per row, <= 1e-4 relative), in
every mode: on every single-op case of ``test_rules.py`` (batch 1 and 4, random cotangents), on
the tiny classifier of ``tiny.py`` and on every net of the torch-oracle zoo (``nets.py``: class
and hidden-unit targets, batch 1 and 4; ``Model.backward`` itself is checked against torch and
Captum in ``test_backward_torch.py``), and on the models of ``../shared/models`` (one batch size,
a class target and a hidden unit each, the modes taken in turn; skipped when absent).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import pydevis
from pydevis.export import ExportError, export_backward, translated_ops
from tiny import tiny_classifier

try:
    from tests import test_rules
except ImportError:
    import test_rules

TOL = 1e-4
MODES = pydevis.MODES
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MODELS = sorted((SHARED / "models").glob("*.onnx")) if (SHARED / "models").is_dir() else []


def session(proto: onnx.ModelProto) -> ort.InferenceSession:
    onnx.checker.check_model(proto, full_check=True)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # no warnings about the source model's unused initializers
    return ort.InferenceSession(proto.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def run(sess, model, x, cot) -> dict[str, np.ndarray]:
    names = [o.name for o in sess.get_outputs()]
    feed = {model.graph.input_name: x, "cotangent": cot}
    return dict(zip(names, sess.run(names, feed), strict=True))


def row_errors(actual, expected) -> np.ndarray:
    a = np.asarray(actual, np.float64).reshape(len(actual), -1)
    b = np.asarray(expected, np.float64).reshape(len(expected), -1)
    assert np.isfinite(a).all()
    nb = np.linalg.norm(b, axis=1)
    assert nb.max() > 0, "the reference is zero: the comparison would be vacuous"
    return np.linalg.norm(a - b, axis=1) / np.where(nb > 0, nb, nb.max())


def assert_close(actual, expected, what: str) -> float:
    assert actual.shape == expected.shape, f"{what}: {actual.shape} != {expected.shape}"
    err = row_errors(actual, expected)
    assert (err <= TOL).all(), f"{what}: relative error per row {err}"
    return float(err.max())


def check_vjp(model, sess, x, tensor: str, cot, mode: str, what: str) -> float:
    out = run(sess, model, x, cot)
    ref = model.vjp(x, tensor, cot, mode)
    return assert_close(out["signal"], ref, f"{what} {mode} batch {len(x)}")


def one_hot_units(value: np.ndarray) -> np.ndarray:
    """Per row, 1 at the largest entry of the tensor below 6 (a live unit, not one a ReLU6
    saturates, whose gradient is zero), else 0."""
    flat = value.reshape(len(value), -1)
    cot = np.zeros_like(flat)
    cot[np.arange(len(flat)), np.where(flat < 6, flat, -np.inf).argmax(axis=1)] = 1.0
    return cot.reshape(value.shape)


# ---- single-op cases ------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(test_rules.CASES))
def test_rule_case(tmp_path, case):
    nodes, inits, opset = test_rules.CASES[case]
    path = tmp_path / "m.onnx"
    onnx.save(test_rules.build(nodes, inits, opset), path)
    model = pydevis.load(path)
    if opset < 11:
        with pytest.raises(pydevis.ModelError, match="export needs opset >= 11"):
            export_backward(model, "gradient", tensor="y")
        return
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((n, *test_rules.X_SHAPE[1:])).astype(np.float32) for n in (1, 4)]
    if case in test_rules.POSITIVE:
        xs = [np.abs(x) + 0.5 for x in xs]
    for mode in MODES:
        proto = export_backward(model, mode, tensor="y")
        assert proto.ir_version == 8 and proto.opset_import[0].version == opset
        sess = session(proto)
        for x in xs:
            y = model.run(x, ["y"])["y"]
            cot = rng.standard_normal(y.shape).astype(np.float32)
            check_vjp(model, sess, x, "y", cot, mode, case)


def test_every_backward_rule_has_a_translation():
    from pydevis.backward.registry import supported_ops

    assert set(supported_ops()) <= set(translated_ops())


# ---- the tiny classifier --------------------------------------------------------------------
@pytest.fixture(scope="module", params=[False, True], ids=["plain", "lrn"])
def tiny(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    return pydevis.load(tiny_classifier(path, lrn=request.param))


@pytest.mark.parametrize("mode", MODES)
def test_tiny_class_and_hidden_targets(tiny, mode):
    rng = np.random.default_rng(1)
    class_sess = session(export_backward(tiny, mode))
    hidden_sess = session(export_backward(tiny, mode, tensor="relu1"))  # a node name
    for n in (1, 4):
        x = rng.standard_normal((n, *tiny.input_dims())).astype(np.float32)
        classes = list(range(n))
        out = run(class_sess, tiny, x, np.eye(tiny.num_classes, dtype=np.float32)[classes])
        assert_close(out["scores"], tiny.forward(x), "scores")
        assert_close(out["signal"], tiny.backward(x, classes, mode), f"class {mode} batch {n}")
        act = tiny.run(x, ["r1"])["r1"]
        cot = one_hot_units(act)
        out = run(hidden_sess, tiny, x, cot)
        np.testing.assert_array_equal(out["activation"], act)
        assert_close(out["signal"], tiny.vjp(x, "r1", cot, mode), f"hidden {mode} batch {n}")


def test_interface_and_free_batch(tiny):
    proto = export_backward(tiny, "guided")
    ins = {i.name: i for i in proto.graph.input}
    assert [o.name for o in proto.graph.output] == ["scores", "signal"]
    assert set(ins) == {"input", "cotangent"}
    dims = [d.dim_param or d.dim_value for d in ins["cotangent"].type.tensor_type.shape.dim]
    assert dims == ["N", tiny.num_classes]
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    assert {p.key: p.value for p in proto.metadata_props}["pydevis.mode"] == "guided"


def test_interface_names_win_over_forward_tensors(tmp_path):
    """A forward tensor called 'scores' is renamed; the graph still computes the same."""
    nodes = [helper.make_node("Relu", ["x"], ["scores"]),
             helper.make_node("GlobalAveragePool", ["scores"], ["signal"]),
             helper.make_node("Flatten", ["signal"], ["y"])]
    path = tmp_path / "m.onnx"
    onnx.save(test_rules.build(nodes, {}), path)
    model = pydevis.load(path)
    x = np.random.default_rng(2).standard_normal((3, *test_rules.X_SHAPE[1:])).astype(np.float32)
    cot = np.random.default_rng(3).standard_normal((3, 3)).astype(np.float32)
    for mode in MODES:
        out = run(session(export_backward(model, mode)), model, x, cot)
        assert_close(out["scores"], model.forward(x), "scores")
        assert_close(out["signal"], model.vjp(x, "y", cot, mode), mode)


# ---- the torch-oracle zoo -------------------------------------------------------------------
try:
    from tests import nets
except ImportError:
    try:
        import nets
    except ImportError:  # no torch: the zoo test is skipped
        nets = None


@pytest.mark.torch
@pytest.mark.skipif(nets is None, reason="torch is not installed")
@pytest.mark.parametrize("name", sorted(nets.ZOO) if nets else [])
def test_zoo_net(torch_zoo, name):
    """Class and probe-unit targets, every mode, batch 1 and 4; and the fixed-batch-1 export
    of the same net at batch 4 (gradient)."""
    exp = torch_zoo.get(name)
    model = pydevis.load(exp.path)
    rng = np.random.default_rng(4)
    xs = [nets.make_input(exp.net, n, seed=10 + n) for n in (1, 4)]
    for mode in MODES:
        for tensor in (None, exp.probe_tensor):
            sess = session(export_backward(model, mode, tensor))
            t = tensor or model.scores
            for x in xs:
                value = model.run(x, [t])[t]
                if tensor:
                    cot = one_hot_units(value)
                else:
                    cot = np.eye(value.shape[1], dtype=np.float32)[
                        rng.integers(0, value.shape[1], len(x))]
                check_vjp(model, sess, x, t, cot, mode, f"{name} {t}")
    fixed = pydevis.load(torch_zoo.get(name, fixed_batch=True).path)
    classes = [0, 1, 2, 1]
    out = run(session(export_backward(fixed, "gradient")), fixed, xs[1],
              np.eye(fixed.num_classes, dtype=np.float32)[classes])
    assert_close(out["signal"], fixed.backward(xs[1], classes), f"{name} fixed batch")


# ---- the shared ImageNet models -------------------------------------------------------------
def _hidden_tensor(model) -> str:
    """The output of the rectifier about two thirds of the way along the graph."""
    rect = [n for n in model.graph.nodes if n.op_type in ("Relu", "Clip")]
    return rect[2 * len(rect) // 3].outputs[0]


@pytest.mark.models
@pytest.mark.skipif(not MODELS, reason="../shared/models is absent")
@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_shared_model(path):
    model = pydevis.load(path)
    k = MODELS.index(path)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, *model.input_dims())).astype(np.float32)
    mode = MODES[k % 3]
    sess = session(export_backward(model, mode))
    scores = model.run(x, [model.scores])[model.scores]
    classes = [int(c) for c in np.argsort(-scores.reshape(2, -1), axis=1)[:, 1]]
    cot = np.zeros_like(scores).reshape(2, -1)
    cot[[0, 1], classes] = 1.0
    out = run(sess, model, x, cot.reshape(scores.shape))
    assert_close(out["scores"], scores, "scores")
    assert_close(out["signal"], model.backward(x, classes, mode), f"{path.stem} class {mode}")
    mode = MODES[(k + 1) % 3]
    t = _hidden_tensor(model)
    sess = session(export_backward(model, mode, tensor=t))
    check_vjp(model, sess, x, t, one_hot_units(model.run(x, [t])[t]), mode,
              f"{path.stem} {t}")


# ---- errors and the command line ------------------------------------------------------------
@pytest.fixture
def storage_order_model(tmp_path):
    """A MaxPool whose Indices would be column-major: a backward rule, no translation."""
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2], storage_order=1,
                              name="pool_cm"),
             helper.make_node("GlobalAveragePool", ["p"], ["g"]),
             helper.make_node("Flatten", ["g"], ["y"])]
    path = tmp_path / "cm.onnx"
    onnx.save(test_rules.build(nodes, {}), path)
    return path


def test_untranslatable_op_is_a_one_line_error(storage_order_model):
    model = pydevis.load(storage_order_model)
    model.backward(np.ones((1, *model.input_dims()), np.float32), 0)  # the rule runs
    with pytest.raises(ExportError) as info:
        export_backward(model, "gradient")
    msg = str(info.value)
    assert isinstance(info.value, pydevis.PydevisError)
    assert "\n" not in msg and "MaxPool" in msg and "'pool_cm'" in msg


def _cli(*args):
    code = "from pydevis.cli import main; main()"
    p = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                       text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def test_cli_export(tmp_path, storage_order_model):
    tiny = pydevis.load(tiny_classifier(tmp_path / "tiny.onnx"))
    out = tmp_path / "sig.onnx"
    rc, stdout, stderr = _cli("export", tiny.path, "--mode", "deconvnet", "--out", out,
                              "--tensor", "r2")
    assert rc == 0, stderr
    assert "wrote" in stdout
    proto = onnx.load(str(out))
    assert [o.name for o in proto.graph.output] == ["scores", "signal", "activation"]
    x = np.random.default_rng(6).standard_normal((2, *tiny.input_dims())).astype(np.float32)
    act = tiny.run(x, ["r2"])["r2"]
    check_vjp(tiny, session(proto), x, "r2", one_hot_units(act), "deconvnet", "cli")
    rc, stdout, stderr = _cli("export", storage_order_model, "--out", tmp_path / "x.onnx")
    assert rc == 2 and stderr.count("\n") == 1 and "MaxPool" in stderr, stderr
    assert not (tmp_path / "x.onnx").exists()


# ---- load(..., backend="ort") ---------------------------------------------------------------
def test_ort_backend_signals_and_ascent(tmp_path):
    """Signals, VJPs and a short ascent through the exported graph equal pydevis's own."""
    from pydevis import api

    path = tiny_classifier(tmp_path / "tiny.onnx", lrn=True)
    own, viaort = pydevis.load(path), pydevis.load(path, backend="ort")
    x = np.random.default_rng(7).standard_normal((3, *own.input_dims())).astype(np.float32)
    for mode in MODES:
        a, b = own.backward_pass(x, [0, 4, 5], mode), viaort.backward_pass(x, [0, 4, 5], mode)
        assert_close(b.grad, a.grad, f"signal {mode}")
        np.testing.assert_allclose(b.objective, a.objective, rtol=1e-5, atol=1e-6)
        a, b = own.backward_pass(x, "relu2:3", mode), viaort.backward_pass(x, "relu2:3", mode)
        assert_close(b.grad, a.grad, f"unit {mode}")
        cot = one_hot_units(own.run(x, ["r1"])["r1"])
        assert_close(viaort.vjp(x, "r1", cot, mode), own.vjp(x, "r1", cot, mode), "vjp")
    runs = [api.visualize(m, [1, 2], method="gradient", steps=4) for m in (own, viaort)]
    for r, s in zip(*runs, strict=True):
        np.testing.assert_allclose(s.pixels, r.pixels, atol=1e-2)
    with pytest.raises(ValueError, match="backend"):
        pydevis.load(path, backend="tensorflow")


def test_ort_backend_runs_through_iobinding(tmp_path, monkeypatch):
    """Every run of the exported graph goes through one IOBinding per session whose OrtValues
    are reused while the shapes repeat; the signals are bit-identical to a plain
    ``InferenceSession.run`` of the same session (and equal pydevis's own within TOL)."""
    from pydevis.export import ort_backend

    path = tiny_classifier(tmp_path / "tiny.onnx", lrn=True)
    own, viaort = pydevis.load(path), pydevis.load(path, backend="ort")
    ob = viaort._ort
    rng = np.random.default_rng(11)
    calls = {"io_binding": 0, "run_with_iobinding": 0}
    for mode in MODES:
        for tensor in (own.scores, "r1"):
            sess = ob.session(tensor, mode)
            assert ort_backend.device(sess) == "cpu"  # no CUDA provider here
            value = "scores" if tensor == own.scores else "activation"

            def spy(name, f):
                def wrapped(*a, **k):
                    calls[name] += 1
                    return f(*a, **k)
                return wrapped

            plain = sess.run
            monkeypatch.setattr(sess, "io_binding", spy("io_binding", sess.io_binding))
            monkeypatch.setattr(sess, "run_with_iobinding",
                                spy("run_with_iobinding", sess.run_with_iobinding))
            monkeypatch.setattr(sess, "run", lambda *a, **k: pytest.fail("sess.run was called"))
            before = dict(calls)
            for batch in (3, 3, 1, 3):
                x = rng.standard_normal((batch, *own.input_dims())).astype(np.float32)
                cot = one_hot_units(own.run(x, [tensor])[tensor])
                bound = ob._bound.get((tensor, mode))
                ptrs = bound and [v.data_ptr() for v in (bound.image, bound.cot)]
                got = viaort.vjp(x, tensor, cot, mode)
                b = ob._bound[(tensor, mode)]
                if bound is not None and bound.shapes[0] == x.shape:  # same shapes: reused
                    assert b is bound and [v.data_ptr() for v in (b.image, b.cot)] == ptrs
                else:
                    assert b is not bound and b.shapes[0] == x.shape
                outs = b.binding.get_outputs()
                assert [o.data_ptr() for o in outs] == [b.signal.data_ptr(), b.value.data_ptr()]
                ref_signal, ref_value = plain(["signal", value],
                                              {own.graph.input_name: x, "cotangent": cot})
                assert np.array_equal(got, ref_signal), f"{mode} {tensor} batch {batch}"
                assert not np.shares_memory(got, b.signal.numpy())  # a copy, not the buffer
                _, act = ob.run(x, tensor, cot, mode)
                assert np.array_equal(act, ref_value)
                assert_close(got, own.vjp(x, tensor, cot, mode), f"{mode} {tensor} {batch}")
            # batch 3 → 3 (reused) → 1 (new) → 3 (new): three bindings for eight runs
            assert calls["io_binding"] - before["io_binding"] == 3
            assert calls["run_with_iobinding"] - before["run_with_iobinding"] == 8
            monkeypatch.undo()
