"""The torch side of test_backward_torch.py: the norm-wise row comparison, and the oracles
(torch autograd with the rectifier rules overridden, Captum, torch logits, the probe tensor, ONNX
Runtime) that pydevis's signals are checked against. Needs torch: import it after
``pytest.importorskip("torch")``."""

from __future__ import annotations

import contextlib
import functools
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

try:
    from tests import nets
except ImportError:
    import nets

TOL = 1e-4  # float32 signal, norm-wise per row


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
