"""The ascent kept on the device (``DeviceImage``: pydevis._cuda.AscentWorkspace) against the
host ascent, and the ``ort`` backend's CUDA branch end to end where onnxruntime-gpu is present.

Needs a CUDA device: skipped without one, an error with PYDEVIS_REQUIRE_CUDA=1 (run.sh).
``test_device_image_ascent_equals_the_host_one`` drives DeviceImage with a stand-in for the
session's IOBinding (the model's own signal, computed on the host from the bound device input and
written into the bound device output), so the device state, pixel map, jitter, step and best
iterate are checked on any GPU machine; ``test_ort_cuda_provider_ascent`` checks the real
binding of ONNX Runtime's CUDA provider when onnxruntime-gpu is installed."""

from __future__ import annotations

import os

import numpy as np
import pytest

import pydevis
import pydevis.kernels as K
from pydevis import targets as targets_mod
from pydevis.export import ort_ascent
from pydevis.methods import ascent as A
from pydevis.model import BackwardPass
from tiny import tiny_classifier

_REASON = K.available()["cuda"]
if _REASON is not None and os.environ.get("PYDEVIS_REQUIRE_CUDA") == "1":
    raise RuntimeError(f"PYDEVIS_REQUIRE_CUDA=1 but the CUDA backend is unavailable: {_REASON}")
if _REASON is not None:
    pytest.skip(f"CUDA backend unavailable: {_REASON}", allow_module_level=True)

pytestmark = pytest.mark.cuda

from pydevis import _cuda as C  # noqa: E402


class StandInBinding:
    """What DeviceImage needs of ort_ascent._Binding, with the model's own signal in place of
    ONNX Runtime: run() reads the bound device input, writes the signal into the bound device
    output."""

    device = "cuda"

    def __init__(self, model, units, mode, x_shape):
        self.model, self.units, self.mode = model, units, mode
        self.x = C.to_device(np.zeros(x_shape, np.float32))
        self.gx = C.to_device(np.zeros(x_shape, np.float32))
        self.value = None

    def run(self):
        sig = self.model.backward_pass(self.x.to_host(), self.units, self.mode)
        self.gx.copy_from(np.ascontiguousarray(sig.grad, np.float32))
        self.value = sig.target_value

    def backward_pass(self):
        _, objective = targets_mod.seed(self.value, self.units)
        return BackwardPass(np.empty((0,), np.float32), objective, self.value)

    def device_views(self):
        return self.x, self.gx


@pytest.mark.parametrize("method, preset, targets", [
    ("yosinski", 3, [1, 4, 2]), ("guided", None, ["relu2:3", "relu2:7"]),
    ("gradient", None, [0, 5])])
def test_device_image_ascent_equals_the_host_one(tmp_path, monkeypatch, method, preset, targets):
    """Both runs with the CUDA kernels (PYDEVIS_BACKEND=cuda: the host state's update composes
    the same kernels the workspace runs), so they differ only in the per-row sums of squares'
    summation order (the step sizes, in the last bits)."""
    monkeypatch.setenv("PYDEVIS_BACKEND", "cuda")
    path = tiny_classifier(tmp_path / "tiny.onnx", lrn=True)
    model = pydevis.load(path)
    config = A.method_config(method, preset, steps=8)
    host = A.ascend(model, targets, config, seed=2)
    states = []

    def device_state(model, space, v, lo, hi, targets, mode, priors):
        units = targets_mod.parse(targets, v.shape[0])
        b = StandInBinding(model, units, mode, (v.shape[0], *model.input_dims()))
        states.append(ort_ascent.DeviceImage(space, v, lo, hi, b))
        return states[-1]

    monkeypatch.setattr(A, "image_state", device_state)
    dev = A.ascend(model, targets, config, seed=2)
    assert states and isinstance(states[0], ort_ascent.DeviceImage)
    for d, h in zip(dev, host, strict=True):
        assert d.status == h.status and d.best_step == h.best_step
        np.testing.assert_allclose(d.pixels, h.pixels, atol=1e-3, rtol=0)
        np.testing.assert_allclose(d.best_objective, h.best_objective, rtol=1e-4)


def test_ort_cuda_provider_ascent(tmp_path, monkeypatch):
    """backend="ort" with onnxruntime-gpu: the bound image is a DeviceImage (the CUDA provider),
    and its ascent equals the ort backend's unbound one (the same session, signals copied to the
    host and the update on host arrays)."""
    import onnxruntime as ort

    from pydevis.session import cuda_usable

    if "CUDAExecutionProvider" not in ort.get_available_providers() or not cuda_usable():
        pytest.skip("onnxruntime has no usable CUDA provider (onnxruntime-gpu not installed)")
    path = tiny_classifier(tmp_path / "tiny.onnx", lrn=True)
    config = A.method_config("gradient", steps=8)  # no clip: no threshold to flip
    model = pydevis.load(path, backend="ort")
    states = []
    real = A.image_state
    monkeypatch.setattr(A, "image_state",
                        lambda *a, **k: states.append(real(*a, **k)) or states[-1])
    dev = A.ascend(model, [1, 4], config, seed=2)
    assert isinstance(states[0], ort_ascent.DeviceImage)
    monkeypatch.setattr(ort_ascent.BoundImage, "create", classmethod(lambda *a, **k: None))
    host = A.ascend(pydevis.load(path, backend="ort"), [1, 4], config, seed=2)
    assert type(states[-1]) is not ort_ascent.DeviceImage
    for d, h in zip(dev, host, strict=True):
        np.testing.assert_allclose(d.pixels, h.pixels, atol=1e-2, rtol=0)
