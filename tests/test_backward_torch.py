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

import contextlib
import functools
import warnings

import numpy as np
import onnx  # dependencies of pydevis: missing means a broken install, a failure, not a skip
import onnxruntime as ort
import pytest

import pydevis

torch = pytest.importorskip("torch")  # optional (the test extra): the oracle's own dependency

try:
    from tests import nets
except ImportError:
    import nets

pytestmark = pytest.mark.torch

TOL = 1e-4  # float32 signal, norm-wise per row
FWD_TOL = 1e-5  # onnxruntime vs torch logits, norm-wise per row
MODES = pydevis.MODES  # the modes pydevis offers, each checked against torch below
NAMES = sorted(nets.ZOO)
FIXED = sorted(n for n, z in nets.ZOO.items() if z.fixed_batch)
BATCH = 4


# --------------------------------------------------------------------------- comparison


def row_errors(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Per batch row ``||a - b|| / ||b||``; a row where ``b`` is exactly zero is measured
    against the largest row norm of ``b`` instead."""
    a = np.asarray(actual, dtype=np.float64).reshape(len(actual), -1)
    b = np.asarray(expected, dtype=np.float64).reshape(len(expected), -1)
    nb = np.linalg.norm(b, axis=1)
    scale = np.where(nb > 0, nb, nb.max(initial=0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.linalg.norm(a - b, axis=1) / scale
    return np.where(np.isnan(err), np.inf, err)


def assert_rows_close(actual, expected, tol: float = TOL, what: str = "") -> None:
    """Fail unless every row of ``actual`` is within ``tol`` (norm-wise) of ``expected``."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.isfinite(actual).all(), f"{what}: non-finite values"
    assert np.linalg.norm(expected) > 0, f"{what}: the reference is zero, the test is vacuous"
    err = row_errors(actual, expected)
    norms = np.linalg.norm(expected.reshape(len(expected), -1), axis=1)
    assert (err <= tol).all(), (
        f"{what}: relative error per row {np.array2string(err, precision=3)} > {tol:g} "
        f"(|ref| per row {np.array2string(norms, precision=3)})"
    )


# --------------------------------------------------------------------------- torch oracles


class _Rectifier(torch.autograd.Function):
    """ReLU / ReLU6 forward with the deconvnet or guided backward rule."""

    @staticmethod
    def forward(ctx, x, upper, mode):  # type: ignore[override]
        ctx.mode = mode
        inside = x > 0 if upper is None else (x > 0) & (x < upper)
        ctx.save_for_backward(inside)
        return x.clamp(0, upper)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (inside,) = ctx.saved_tensors
        g = g.clamp(min=0)
        return (g if ctx.mode == "deconvnet" else g * inside), None, None


def _rectify(x, upper, mode):
    return _Rectifier.apply(x, upper, mode)


@contextlib.contextmanager
def rectifier_override(model, mode: str, relu6_upper_mask: bool = True):
    """Within the block every ``nn.ReLU`` module (``ReLU6R`` included) of ``model`` uses the
    backward rule of ``mode``; ``gradient`` leaves the model as it is."""
    patched = []
    if mode != "gradient":
        for m in model.modules():
            if isinstance(m, torch.nn.ReLU):
                upper = getattr(m, "upper", None)  # nets.ReLU6R: 6
                if upper is not None and not relu6_upper_mask:
                    upper = float("inf")
                m.forward = functools.partial(_rectify, upper=upper, mode=mode)
                patched.append(m)
    try:
        yield model
    finally:
        for m in patched:
            del m.forward


def _class_rows(classes, n: int) -> torch.Tensor:
    rows = [classes] * n if isinstance(classes, int) else list(classes)
    return torch.tensor(rows, dtype=torch.long).view(n, 1)


def torch_signal(exp, x: np.ndarray, target, mode: str, **override) -> np.ndarray:
    """d(target scalar of row n)/d(x[n]) in torch with the rectifier rules of ``mode``.

    ``target``: an int or list of ints (pre-softmax class score) or ``(channel, pos)`` on the
    probe tensor, ``pos`` None for the spatial mean."""
    model = exp.model
    xt = torch.from_numpy(x).requires_grad_(True)
    captured = []
    handle = None
    if isinstance(target, tuple):
        probe = nets.find_probe_module(model, xt.detach(), exp.net.probe[1], exp.net.probe[2])
        handle = probe.register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        with rectifier_override(model, mode, **override):
            logits = nets.logit_module(model)(xt)
            if isinstance(target, tuple):
                (act,) = captured
                c, pos = target
                obj = act[:, c].mean(dim=(1, 2)) if pos is None else act[:, c, pos[0], pos[1]]
            else:
                obj = logits.gather(1, _class_rows(target, len(x))).view(-1)
            (g,) = torch.autograd.grad(obj.sum(), xt)
    finally:
        if handle is not None:
            handle.remove()
    return g.numpy()


def captum_signal(exp, x: np.ndarray, classes, mode: str) -> np.ndarray:
    """Captum's Deconvolution (``deconvnet``) or GuidedBackprop (``guided``) of a class score."""
    attr = pytest.importorskip("captum.attr")
    method = {"deconvnet": attr.Deconvolution, "guided": attr.GuidedBackprop}[mode]
    target = classes if isinstance(classes, int) else list(classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Setting backward hooks on ReLU activations..."
        a = method(nets.logit_module(exp.model)).attribute(torch.from_numpy(x), target=target)
    return a.detach().numpy()


def torch_logits(exp, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return nets.logit_module(exp.model)(torch.from_numpy(x)).numpy()


def probe_activation(exp, x: np.ndarray) -> np.ndarray:
    """The probe tensor in torch (forward hook on the probe module)."""
    xt = torch.from_numpy(x)
    probe = nets.find_probe_module(exp.model, xt, exp.net.probe[1], exp.net.probe[2])
    out = []
    handle = probe.register_forward_hook(lambda m, i, o: out.append(o.detach()))
    try:
        with torch.no_grad():
            exp.model(xt)
    finally:
        handle.remove()
    return out[0].numpy()


def hidden_unit(exp, x: np.ndarray) -> tuple[int, tuple[int, int]]:
    """A live channel of the probe tensor (largest mean on row 0) and its arg-max position."""
    act = probe_activation(exp, x)
    c = int(np.argmax(act[0].mean(axis=(1, 2))))
    y, xx = np.unravel_index(int(np.argmax(act[0, c])), act.shape[2:])
    return c, (int(y), int(xx))


def classes_for(net, n: int) -> list[int]:
    k = net.num_classes
    return [3, 0, k - 1, 5 % k][:n] if n <= 4 else [(3 * i + 1) % k for i in range(n)]


def ort_run(path, x: np.ndarray, extra: tuple[str, ...] = ()) -> list[np.ndarray]:
    proto = onnx.load(str(path))
    for name in extra:
        info = onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        proto.graph.output.append(info)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})


# --------------------------------------------------------------------------- the zoo itself


def test_row_comparison_rejects_wrong_signals():
    """The comparison must fail on small but real errors, or the suite proves nothing."""
    rng = np.random.default_rng(7)
    b = rng.standard_normal((BATCH, 3, 37, 29)).astype(np.float32)
    spike = np.zeros_like(b)
    spike[3, 2, 36, 28] = 0.1 * np.abs(b).max()
    noise = rng.standard_normal(b.shape) * np.linalg.norm(b[0]) / np.sqrt(b[0].size)
    assert_rows_close(b + 1e-6 * rng.standard_normal(b.shape).astype(np.float32), b)
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
            assert_rows_close(a.astype(np.float32), b, what=what)
    with pytest.raises(AssertionError, match="vacuous"):
        assert_rows_close(np.zeros_like(b), np.zeros_like(b))
    with pytest.raises(AssertionError, match="shape"):
        assert_rows_close(b[:1], b)
    zero_row = b.copy()
    zero_row[2] = 0
    assert_rows_close(zero_row, zero_row)
    leak = zero_row.copy()
    leak[2] = 1e-3 * b[2]  # a signal where the reference row is exactly zero
    with pytest.raises(AssertionError):
        assert_rows_close(leak, zero_row)


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
        (y,) = ort_run(exp.path, x[rows])
        ref = exp.model(torch.from_numpy(x[rows])).detach().numpy()
        assert_rows_close(y, ref, FWD_TOL, f"{name} onnxruntime vs torch")
    if exp.net.softmax:
        assert exp.proto.graph.node[-1].op_type == exp.net.softmax


@pytest.mark.parametrize("name", NAMES)
def test_zoo_probe_tensor_is_the_hooked_torch_tensor(torch_zoo, name):
    exp = torch_zoo.get(name)
    assert ":" not in exp.probe_tensor
    x = nets.make_input(exp.net, BATCH, seed=12)
    _, act = ort_run(exp.path, x, extra=(exp.probe_tensor,))
    ref = probe_activation(exp, x)
    assert act.ndim == 4 and len({*act.shape}) == 4, act.shape
    assert_rows_close(act, ref, FWD_TOL, f"{name} probe {exp.probe_tensor}")


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
    classes = classes_for(exp.net, BATCH)
    ref = torch_signal(exp, x, classes, mode)
    assert_rows_close(captum_signal(exp, x, classes, mode), ref, 1e-6, f"{name} {mode}")


@pytest.mark.parametrize("name", NAMES)
def test_zoo_modes_are_distinguishable(torch_zoo, name):
    """The three signals differ enough on each net that a mode mix-up fails the 1e-4 bound."""
    exp = torch_zoo.get(name)
    x = nets.make_input(exp.net, BATCH, seed=14)
    classes = classes_for(exp.net, BATCH)
    s = {mode: torch_signal(exp, x, classes, mode) for mode in MODES}
    for mode, sig in s.items():
        assert np.linalg.norm(sig.reshape(BATCH, -1), axis=1).min() > 0, f"dead class ({mode})"
    for a, b in [("gradient", "deconvnet"), ("gradient", "guided"), ("deconvnet", "guided")]:
        assert row_errors(s[a], s[b]).min() > 100 * TOL, (a, b, row_errors(s[a], s[b]))
    if any(getattr(m, "upper", None) for m in exp.model.modules()):
        loose = torch_signal(exp, x, classes, "guided", relu6_upper_mask=False)
        assert row_errors(loose, s["guided"]).min() > 100 * TOL, "ReLU6's upper bound unused"


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
    logits = torch_logits(exp, x)
    assert_rows_close(m.forward(x), logits, FWD_TOL, f"{name} forward (pre-softmax scores)")
    probs = torch.softmax(torch.from_numpy(logits).double(), 1).numpy()
    p = m.predict(x)
    assert_rows_close(p, probs, FWD_TOL, f"{name} predict")
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)


_CLASS_CASES = [(1, "int"), (BATCH, "list"), (BATCH, "int")]


@pytest.mark.parametrize("batch, kind", _CLASS_CASES, ids=["b1-int", "b4-list", "b4-int"])
@pytest.mark.parametrize("name", NAMES)
def test_gradient_of_class_score(engine, name, batch, kind):
    exp, m = engine(name)
    x = nets.make_input(exp.net, batch, seed=22 + batch)
    classes = exp.net.num_classes - 2 if kind == "int" else classes_for(exp.net, batch)
    got = m.backward(x, classes, "gradient")
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    ref = torch_signal(exp, x, classes, "gradient")
    assert_rows_close(got, ref, what=f"{name} gradient class {classes}")


def _hidden_target(exp, c: int, pos) -> str:
    return f"{exp.probe_tensor}:{c}" + ("" if pos is None else f"@{pos[0]},{pos[1]}")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("where", ["mean", "position"])
@pytest.mark.parametrize("name", NAMES)
def test_signal_of_hidden_unit(engine, name, where, mode):
    exp, m = engine(name)
    x = nets.make_input(exp.net, BATCH, seed=31)
    c, pos = hidden_unit(exp, x)
    pos = None if where == "mean" else pos
    target = _hidden_target(exp, c, pos)
    got = m.backward(x, target, mode)
    assert_rows_close(got, torch_signal(exp, x, (c, pos), mode), what=f"{name} {mode} {target}")


@pytest.mark.parametrize("kind", ["list", "int"])
@pytest.mark.parametrize("mode", ["deconvnet", "guided"])
@pytest.mark.parametrize("name", NAMES)
def test_rectifier_modes_match_captum(engine, name, mode, kind):
    exp, m = engine(name)
    x = nets.make_input(exp.net, BATCH, seed=41)
    classes = exp.net.num_classes - 3 if kind == "int" else classes_for(exp.net, BATCH)
    got = m.backward(x, classes, mode)
    ref = captum_signal(exp, x, classes, mode)
    assert_rows_close(got, ref, what=f"{name} {mode} class {classes}")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", FIXED)
def test_fixed_batch1_export_runs_any_batch(engine, name, mode):
    exp, m = engine(name, fixed_batch=True)
    x = nets.make_input(exp.net, BATCH, seed=51)
    classes = classes_for(exp.net, BATCH)
    assert_rows_close(m.forward(x), torch_logits(exp, x), FWD_TOL, f"{name}-b1 forward")
    got = m.backward(x, classes, mode)
    rows = np.concatenate([m.backward(x[i : i + 1], classes[i], mode) for i in range(BATCH)])
    assert_rows_close(got, rows, 1e-6, f"{name}-b1 {mode}: batch of 4 vs 4 batches of 1")
    assert_rows_close(got, torch_signal(exp, x, classes, mode), what=f"{name}-b1 {mode} class")
    c, pos = hidden_unit(exp, x)
    got = m.backward(x, _hidden_target(exp, c, pos), mode)
    assert_rows_close(got, torch_signal(exp, x, (c, pos), mode), what=f"{name}-b1 {mode} hidden")
