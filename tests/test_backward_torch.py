"""pydevis's three signals against PyTorch on the same nets.

For every net of the zoo in ``tests/nets.py``, exported to ONNX:

* ``gradient``: ``torch.autograd.grad`` of the pre-softmax class score, of the mean of one hidden
  channel, and of one hidden position;
* ``deconvnet`` / ``guided``: Captum's ``Deconvolution`` / ``GuidedBackprop`` for class targets,
  and for hidden targets an independent torch implementation of the rectifier rules
  (:func:`rectifier_override`), itself checked against Captum on every net;
* ``forward`` / ``predict`` against the torch logits; fixed-batch-1 exports run a batch of 4.

The first block of tests checks the zoo and the oracles themselves and needs no pydevis engine.
Signals are compared norm-wise per batch row: ``||a - b|| / ||b|| <= 1e-4`` in float32.
"""

from __future__ import annotations

import numpy as np
import onnx  # dependencies of pydevis: missing means a broken install, a failure, not a skip
import pytest

import pydevis

torch = pytest.importorskip("torch")  # optional (the test extra): the oracle's own dependency

try:  # the test helpers, from wherever pytest put tests/ (one module object each)
    from tests import nets
    from tests import torch_oracle as O
except ImportError:
    import nets
    import torch_oracle as O

pytestmark = pytest.mark.torch

FWD_TOL = 1e-5  # onnxruntime vs torch logits, norm-wise per row
MODES = pydevis.MODES  # the modes pydevis offers, each checked against torch below
NAMES = sorted(nets.ZOO)
FIXED = sorted(n for n, z in nets.ZOO.items() if z.fixed_batch)
BATCH = 4


# --------------------------------------------------------------------------- the zoo itself


def test_row_comparison_rejects_wrong_signals():
    """The comparison must fail on small but real errors, or the suite proves nothing."""
    rng = np.random.default_rng(7)
    b = rng.standard_normal((BATCH, 3, 37, 29)).astype(np.float32)
    spike = np.zeros_like(b)
    spike[3, 2, 36, 28] = 0.1 * np.abs(b).max()
    noise = rng.standard_normal(b.shape) * np.linalg.norm(b[0]) / np.sqrt(b[0].size)
    O.assert_rows_close(b + 1e-6 * rng.standard_normal(b.shape).astype(np.float32), b)
    bad = {
        "noise 1e-3": b + 1e-3 * noise,
        "one row negated": np.concatenate([b[:1], -b[1:2], b[2:]]),
        "rows swapped": b[[1, 0, 2, 3]],
        "one pixel off": b + spike,
        "zero signal": np.zeros_like(b),
        "scaled 1.001": 1.001 * b,
        "nan": np.where(b > 3.5, np.nan, b),
    }
    for what, a in bad.items():
        with pytest.raises(AssertionError):
            O.assert_rows_close(a.astype(np.float32), b, what=what)
    with pytest.raises(AssertionError, match="vacuous"):
        O.assert_rows_close(np.zeros_like(b), np.zeros_like(b))
    with pytest.raises(AssertionError, match="shape"):
        O.assert_rows_close(b[:1], b)
    zero_row = b.copy()
    zero_row[2] = 0
    O.assert_rows_close(zero_row, zero_row)
    leak = zero_row.copy()
    leak[2] = 1e-3 * b[2]  # a signal where the reference row is exactly zero
    with pytest.raises(AssertionError):
        O.assert_rows_close(leak, zero_row)


@pytest.mark.parametrize("name", NAMES)
def test_zoo_net_is_small_with_distinct_dims(name):
    net = nets.ZOO[name]
    model = net.build()
    assert sum(p.numel() for p in model.parameters()) <= 50_000
    assert len({BATCH, *net.input_shape}) == 4, "N, C, H, W must all differ"
    assert net.num_classes not in net.input_shape[1:]
    for m in model.modules():
        if isinstance(m, torch.nn.ReLU):
            assert type(m) in (torch.nn.ReLU, nets.ReLU6R) and not m.inplace
        if isinstance(m, torch.nn.BatchNorm2d):
            assert not torch.allclose(m.running_var, torch.ones_like(m.running_var))
    assert not model.training
    a, b = net.build(), net.build()
    assert all(torch.equal(p, q)
               for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


_EXPORTS = [(n, False) for n in NAMES] + [(n, True) for n in FIXED]


@pytest.mark.parametrize(
    "name, fixed", _EXPORTS, ids=[f"{n}-{'batch1' if f else 'dynamic'}" for n, f in _EXPORTS]
)
def test_zoo_export_matches_torch(torch_zoo, name, fixed):
    exp = torch_zoo.get(name, fixed_batch=fixed)
    onnx.checker.check_model(exp.proto)
    dim0 = exp.proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert (dim0.dim_value == 1) if fixed else (dim0.dim_param == "N")
    x = nets.make_input(exp.net, BATCH, seed=11)
    for rows in ([slice(0, 1)] if fixed else [slice(0, 1), slice(0, BATCH)]):
        (y,) = O.ort_run(exp.path, x[rows])
        ref = exp.model(torch.from_numpy(x[rows])).detach().numpy()
        O.assert_rows_close(y, ref, FWD_TOL, f"{name} onnxruntime vs torch")
    if exp.net.softmax:
        assert exp.proto.graph.node[-1].op_type == exp.net.softmax


@pytest.mark.parametrize("name", NAMES)
def test_zoo_probe_tensor_is_the_hooked_torch_tensor(torch_zoo, name):
    exp = torch_zoo.get(name)
    assert ":" not in exp.probe_tensor
    x = nets.make_input(exp.net, BATCH, seed=12)
    _, act = O.ort_run(exp.path, x, extra=(exp.probe_tensor,))
    ref = O.probe_activation(exp, x)
    assert act.ndim == 4 and len({*act.shape}) == 4, act.shape
    O.assert_rows_close(act, ref, FWD_TOL, f"{name} probe {exp.probe_tensor}")


@pytest.mark.parametrize("name", NAMES)
def test_zoo_rectifiers_are_modules_with_private_inputs(torch_zoo, name):
    """Every Relu / Clip of the graph is an nn.ReLU module of the torch net (so Captum overrides
    it), and its input feeds nothing else (so Captum's tensor hook sees only its gradient)."""
    exp = torch_zoo.get(name)
    graph = exp.proto.graph
    consumers: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    outputs = {o.name for o in graph.output}
    rect = [n for n in graph.node if n.op_type in ("Relu", "Clip")]
    for n in rect:
        assert consumers[n.input[0]] == 1 and n.input[0] not in outputs, n.name
    calls = []
    handles = [m.register_forward_hook(lambda m, i, o: calls.append(type(m)))
               for m in exp.model.modules() if isinstance(m, torch.nn.ReLU)]  # fmt: skip
    try:
        with torch.no_grad():
            exp.model(torch.from_numpy(nets.make_input(exp.net, 1, seed=0)))
    finally:
        for h in handles:
            h.remove()
    assert len(calls) == len(rect) > 0
    assert calls.count(nets.ReLU6R) == sum(n.op_type == "Clip" for n in rect)


@pytest.mark.parametrize("mode", ["deconvnet", "guided"])
@pytest.mark.parametrize("name", NAMES)
def test_zoo_captum_agrees_with_rectifier_override(torch_zoo, name, mode):
    """Captum and the override implement the same rule here, so either can be the oracle."""
    exp = torch_zoo.get(name)
    x = nets.make_input(exp.net, BATCH, seed=13)
    classes = O.classes_for(exp.net, BATCH)
    ref = O.torch_signal(exp, x, classes, mode)
    O.assert_rows_close(O.captum_signal(exp, x, classes, mode), ref, 1e-6, f"{name} {mode}")


@pytest.mark.parametrize("name", NAMES)
def test_zoo_modes_are_distinguishable(torch_zoo, name):
    """The three signals differ enough on each net that a mode mix-up fails the 1e-4 bound."""
    exp = torch_zoo.get(name)
    x = nets.make_input(exp.net, BATCH, seed=14)
    classes = O.classes_for(exp.net, BATCH)
    s = {mode: O.torch_signal(exp, x, classes, mode) for mode in MODES}
    for mode, sig in s.items():
        assert np.linalg.norm(sig.reshape(BATCH, -1), axis=1).min() > 0, f"dead class ({mode})"
    for a, b in [("gradient", "deconvnet"), ("gradient", "guided"), ("deconvnet", "guided")]:
        assert O.row_errors(s[a], s[b]).min() > 100 * O.TOL, (a, b, O.row_errors(s[a], s[b]))
    if any(getattr(m, "upper", None) for m in exp.model.modules()):
        loose = O.torch_signal(exp, x, classes, "guided", relu6_upper_mask=False)
        assert O.row_errors(loose, s["guided"]).min() > 100 * O.TOL, "ReLU6's upper bound unused"


# --------------------------------------------------------------------------- the engine


@pytest.fixture(scope="module")
def engine(torch_zoo):
    """``get(name, fixed_batch=False)`` -> a loaded ``pydevis`` model, cached per module."""
    cache = {}  # a renamed or missing pydevis.load fails every engine test, never skips

    def get(name: str, fixed_batch: bool = False):
        if (name, fixed_batch) not in cache:
            exp = torch_zoo.get(name, fixed_batch)
            cache[name, fixed_batch] = (exp, pydevis.load(exp.path))
        return cache[name, fixed_batch]

    return get


@pytest.mark.parametrize("name", NAMES)
def test_forward_and_predict_match_torch(engine, name):
    exp, m = engine(name)
    x = nets.make_input(exp.net, BATCH, seed=21)
    logits = O.torch_logits(exp, x)
    O.assert_rows_close(m.forward(x), logits, FWD_TOL, f"{name} forward (pre-softmax scores)")
    probs = torch.softmax(torch.from_numpy(logits).double(), 1).numpy()
    p = m.predict(x)
    O.assert_rows_close(p, probs, FWD_TOL, f"{name} predict")
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)


_CLASS_CASES = [(1, "int"), (BATCH, "list"), (BATCH, "int")]


@pytest.mark.parametrize("batch, kind", _CLASS_CASES, ids=["b1-int", "b4-list", "b4-int"])
@pytest.mark.parametrize("name", NAMES)
def test_gradient_of_class_score(engine, name, batch, kind):
    exp, m = engine(name)
    x = nets.make_input(exp.net, batch, seed=22 + batch)
    classes = exp.net.num_classes - 2 if kind == "int" else O.classes_for(exp.net, batch)
    got = m.backward(x, classes, "gradient")
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    ref = O.torch_signal(exp, x, classes, "gradient")
    O.assert_rows_close(got, ref, what=f"{name} gradient class {classes}")


def _hidden_target(exp, c: int, pos) -> str:
    return f"{exp.probe_tensor}:{c}" + ("" if pos is None else f"@{pos[0]},{pos[1]}")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("where", ["mean", "position"])
@pytest.mark.parametrize("name", NAMES)
def test_signal_of_hidden_unit(engine, name, where, mode):
    exp, m = engine(name)
    x = nets.make_input(exp.net, BATCH, seed=31)
    c, pos = O.hidden_unit(exp, x)
    pos = None if where == "mean" else pos
    target = _hidden_target(exp, c, pos)
    got = m.backward(x, target, mode)
    O.assert_rows_close(got, O.torch_signal(exp, x, (c, pos), mode), what=f"{name} {mode} {target}")


@pytest.mark.parametrize("kind", ["list", "int"])
@pytest.mark.parametrize("mode", ["deconvnet", "guided"])
@pytest.mark.parametrize("name", NAMES)
def test_rectifier_modes_match_captum(engine, name, mode, kind):
    exp, m = engine(name)
    x = nets.make_input(exp.net, BATCH, seed=41)
    classes = exp.net.num_classes - 3 if kind == "int" else O.classes_for(exp.net, BATCH)
    got = m.backward(x, classes, mode)
    ref = O.captum_signal(exp, x, classes, mode)
    O.assert_rows_close(got, ref, what=f"{name} {mode} class {classes}")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", FIXED)
def test_fixed_batch1_export_runs_any_batch(engine, name, mode):
    exp, m = engine(name, fixed_batch=True)
    x = nets.make_input(exp.net, BATCH, seed=51)
    classes = O.classes_for(exp.net, BATCH)
    O.assert_rows_close(m.forward(x), O.torch_logits(exp, x), FWD_TOL, f"{name}-b1 forward")
    got = m.backward(x, classes, mode)
    rows = np.concatenate([m.backward(x[i : i + 1], classes[i], mode) for i in range(BATCH)])
    O.assert_rows_close(got, rows, 1e-6, f"{name}-b1 {mode}: batch of 4 vs 4 batches of 1")
    O.assert_rows_close(got, O.torch_signal(exp, x, classes, mode), what=f"{name}-b1 {mode} class")
    c, pos = O.hidden_unit(exp, x)
    got = m.backward(x, _hidden_target(exp, c, pos), mode)
    O.assert_rows_close(got, O.torch_signal(exp, x, (c, pos), mode),
                        what=f"{name}-b1 {mode} hidden")
