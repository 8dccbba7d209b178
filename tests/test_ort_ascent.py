"""The ascent of the ``ort`` backend with its image bound to the exported graph's session
(pydevis/export/ort_ascent.py): on the CPU provider the same code path as on CUDA, with numpy
buffers the bound OrtValues wrap. Checked here: bit for bit the ascent of the ``ort`` backend
without the binding, no per-step copy into or out of ONNX Runtime, the buffers never move, and
the host path where the binding does not apply (priors). The CUDA branch (DeviceImage) runs in
tests/gpu/run.sh."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import pydevis
from pydevis.export import ort_ascent
from pydevis.methods import ascent as A
from pydevis.methods.ascent_state import HostImage
from tiny import tiny_classifier

CASES = {
    "classes, Yosinski preset 3 (blur, clips, jitter 0)": (dict(method="yosinski", preset=3),
                                                           [1, 4, 2]),
    "hidden unit, guided": (dict(method="guided"), ["relu2:3", "relu2:7"]),
    "deconv, noise start": (dict(method="deconv", start="noise"), [0, 5]),
}


def _run(model, targets, spec, steps=6):
    config = A.method_config(spec["method"], spec.get("preset"), steps=steps,
                             **({"start": spec["start"]} if "start" in spec else {}))
    return A.ascend(model, targets, config, seed=3)


@pytest.mark.parametrize("case", list(CASES))
def test_bound_ascent_equals_the_unbound_one(tmp_path, monkeypatch, case):
    spec, targets = CASES[case]
    path = tiny_classifier(tmp_path / "tiny.onnx", lrn=True)
    states = []
    real = A.image_state

    def record(*a, **k):
        states.append(real(*a, **k))
        return states[-1]

    monkeypatch.setattr(A, "image_state", record)
    bound = _run(pydevis.load(path, backend="ort"), targets, spec)
    assert type(states[-1]) is ort_ascent.BoundImage
    monkeypatch.setattr(ort_ascent.BoundImage, "create", classmethod(lambda *a, **k: None))
    plain = _run(pydevis.load(path, backend="ort"), targets, spec)
    assert type(states[-1]) is HostImage
    for b, p in zip(bound, plain, strict=True):
        np.testing.assert_array_equal(b.pixels, p.pixels)
        assert (b.best_objective, b.final_objective, b.best_step, b.status) == \
            (p.best_objective, p.final_objective, p.best_step, p.status)
    assert len({r.pixels.tobytes() for r in bound}) == len(bound)  # the rows did move apart


def test_bound_ascent_copies_nothing_per_step(tmp_path, monkeypatch):
    """One run_with_iobinding per step on the same bound buffers; nothing copies the image into
    ONNX Runtime (OrtValue.update_inplace) or the outputs out of it (copy_outputs_to_cpu), and
    the plain runs (the forward sessions' setup: shapes, the batching check) do not grow with
    the number of steps."""
    path = tiny_classifier(tmp_path / "tiny.onnx")
    runs, plain, seen = [], [], []
    real_bound = ort.InferenceSession.run_with_iobinding
    real_plain = ort.InferenceSession.run

    def refuse(name):
        def f(*a, **k):
            pytest.fail(f"{name} was called during a bound ascent")
        return f

    monkeypatch.setattr(ort.InferenceSession, "run_with_iobinding",
                        lambda sess, b, *a, **k: runs.append(b) or real_bound(sess, b, *a, **k))
    monkeypatch.setattr(ort.InferenceSession, "run",
                        lambda sess, *a, **k: plain.append(1) or real_plain(sess, *a, **k))
    monkeypatch.setattr(ort.OrtValue, "update_inplace", refuse("OrtValue.update_inplace"))
    monkeypatch.setattr(ort.IOBinding, "copy_outputs_to_cpu", refuse("copy_outputs_to_cpu"))
    real_create = ort_ascent.BoundImage.create.__func__

    def create(cls, *a, **k):
        seen.append(real_create(cls, *a, **k))
        return seen[-1]

    monkeypatch.setattr(ort_ascent.BoundImage, "create", classmethod(create))
    setup = []
    for steps in (2, 5):
        runs.clear(), plain.clear()
        _run(pydevis.load(path, backend="ort"), [0, 3], dict(method="gradient"), steps=steps)
        state = seen[-1]
        b = state.b
        assert len(runs) == steps + 1 and all(r is b.binding for r in runs)
        setup.append(len(plain))
        for arr, ov in ((b.x, b.x_ov), (b.gx, b.gx_ov), (b.value, b.value_ov),
                        (b.seed, b.seed_ov)):
            assert ov.data_ptr() == arr.ctypes.data  # the OrtValue wraps the numpy buffer
        assert np.abs(b.gx).max() > 0  # ONNX Runtime wrote its signal into the bound buffer
    assert setup[0] == setup[1]


def test_priors_keep_the_image_on_the_host(tmp_path, monkeypatch):
    path = tiny_classifier(tmp_path / "tiny.onnx")
    states = []
    real = A.image_state
    monkeypatch.setattr(A, "image_state", lambda *a, **k: states.append(real(*a, **k)) or
                        states[-1])
    A.ascend(pydevis.load(path, backend="ort"), [1],
             A.method_config("deconv-prior", steps=2), seed=0)
    assert type(states[-1]) is HostImage


def test_pixel_map_states_the_preprocessing(tmp_path):
    """The (A, center, mean, std) handed to the CUDA workspace reproduce PixelSpace.to_input
    (checked here with numpy; the CUDA kernel against it in
    tests/kernels/test_cuda_conv_workspace.py)."""
    from pydevis.methods.pixels import PixelSpace

    path = tiny_classifier(tmp_path / "tiny.onnx")
    for channels in ("RGB", "BGR"):
        model = pydevis.load(path, channels=channels)
        space = PixelSpace(model)
        a, center, mean, std = (np.asarray(t, np.float32) for t in ort_ascent.pixel_map(space))
        v = np.random.default_rng(0).uniform(-100, 100, (2, 3, 20, 18)).astype(np.float32)
        a = a.reshape(-1, 3)
        x = (np.einsum("ck,nkhw->nchw", a, v + center[None, :, None, None])
             - mean[None, :, None, None]) / std[None, :, None, None]
        np.testing.assert_array_equal(x.astype(np.float32), space.to_input(v))
