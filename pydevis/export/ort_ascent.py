"""The image of an ascent bound to the exported backward graph's session (``backend="ort"``).

:class:`BoundImage` is the image state (``pydevis/methods/ascent_state.py``) of the ``ort``
backend: one IOBinding of the session of :mod:`pydevis.export.ort_backend` whose model input,
cotangent, signal and target value stay bound to the same buffers for the whole ascent, on the
session's device.

- CUDA provider (onnxruntime-gpu on a machine with a GPU): every buffer is device memory. The
  image, its best iterate, the gradient and the update's scratch live in a
  ``pydevis._cuda.AscentWorkspace``; each step the workspace writes the jittered, preprocessed
  image into the input OrtValue, ONNX Runtime runs the graph, the workspace reads the signal
  OrtValue back into the pixel gradient and runs the update (blur, clips, clamp) in place. What
  crosses to the host per step: the target tensor's value (the class scores, or the target
  layer), N sums of squares and, the other way, N step sizes and flags.
- CPU provider: the buffers are numpy arrays the bound OrtValues wrap without a copy (ONNX
  Runtime reads the input from and writes the outputs into them); the pixel map, jitter and
  update are the host path's own numpy and kernel calls, so the result is bit for bit that of
  the ``ort`` backend without binding (tests/test_ort_ascent.py checks both, and that no
  per-step copy into or out of ONNX Runtime happens).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from .. import targets as targets_mod
from ..methods import regularizers as R
from ..methods.ascent_state import HostImage
from ..model import BackwardPass
from . import ACTIVATION, SCORES, SEED, SIGNAL
from .ort_backend import device


class BoundImage(HostImage):
    """The CPU provider's bound image (module doc); :meth:`create` picks the device."""

    def __init__(self, space, v, lo, hi, binding: _Binding):
        super().__init__(space, v, lo, hi)
        self.b = binding

    @classmethod
    def create(cls, model, space, v: np.ndarray, lo, hi, targets: list, mode: str):
        """The bound image state for ``targets`` in ``mode``, or None where the ascent must run
        on the host (rows of several tensors, or a model that does not batch)."""
        n = v.shape[0]
        units = targets_mod.parse(targets, n)
        tensors = {model.resolve_tensor(u) for u in units}
        if len(tensors) != 1:
            return None
        tensor = tensors.pop()
        if not model.runner.batches(space.to_input(v)):
            return None
        sess = model.ort_backward.session(tensor, mode)
        binding = _Binding(model, sess, tensor, units, (n, *model.input_dims()))
        if binding.device == "cuda":
            from ..kernels import _cuda

            if _cuda.unavailable_reason() is not None:  # ORT sees the GPU, pydevis._cuda not
                return None
            return DeviceImage(space, v, lo, hi, binding)
        return cls(space, v, lo, hi, binding)

    def backward_pass(self, targets: list, mode: str, dy: int, dx: int) -> BackwardPass:
        b = self.b
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is checked by the caller
            b.x[...] = self.space.to_input(R.roll(self.v, dy, dx))
            b.run()
            self.g = R.roll(self.space.grad_to_pixels(b.gx), -dy, -dx)
        return b.backward_pass()


class _Binding:
    """The session's IOBinding for one ascent: input, cotangent (the targets' seed, constant),
    signal and target value, bound once to buffers on the session's device."""

    def __init__(self, model, sess: ort.InferenceSession, tensor: str, units, x_shape):
        self.sess, self.units = sess, units
        self.device = device(sess)
        cot_shape = tuple(model.shapes((tensor,), x_shape[0])[tensor])
        seed, _ = targets_mod.seed(np.zeros(cot_shape, np.float32), units)
        value_name = SCORES if tensor == model.scores else ACTIVATION
        if self.device == "cuda":
            def alloc(shape):
                return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.float32,
                                                                 "cuda", 0)
            self.x_ov, self.gx_ov, self.value_ov = (alloc(x_shape), alloc(x_shape),
                                                    alloc(cot_shape))
            self.seed_ov = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(seed),
                                                            "cuda", 0)
        else:  # numpy buffers, wrapped (not copied) by CPU OrtValues
            self.x = np.zeros(x_shape, np.float32)
            self.gx = np.zeros(x_shape, np.float32)
            self.value = np.zeros(cot_shape, np.float32)
            self.seed = np.ascontiguousarray(seed, np.float32)
            wrap = ort.OrtValue.ortvalue_from_numpy
            self.x_ov, self.gx_ov = wrap(self.x), wrap(self.gx)
            self.value_ov, self.seed_ov = wrap(self.value), wrap(self.seed)
        self.binding = sess.io_binding()
        self.binding.bind_ortvalue_input(model.graph.input_name, self.x_ov)
        self.binding.bind_ortvalue_input(SEED, self.seed_ov)
        self.binding.bind_ortvalue_output(SIGNAL, self.gx_ov)
        self.binding.bind_ortvalue_output(value_name, self.value_ov)

    def run(self) -> None:
        self.sess.run_with_iobinding(self.binding)

    def backward_pass(self) -> BackwardPass:
        """The objective and target value of the last run, on the host (a copy: the buffers
        are reused); the signal stays in its buffer (an empty grad on CUDA)."""
        if self.device == "cpu":
            value, grad = np.array(self.value), self.gx
        else:
            value, grad = self.value_ov.numpy(), np.empty((0,), np.float32)
        _, objective = targets_mod.seed(value, self.units)
        return BackwardPass(grad, objective, value)

    def device_views(self):
        """(input, signal) as ``__cuda_array_interface__`` objects (CUDA provider)."""
        return _DeviceView(self.x_ov), _DeviceView(self.gx_ov)


class _DeviceView:
    """An OrtValue in CUDA memory seen through ``__cuda_array_interface__`` (no copy)."""

    def __init__(self, ov: ort.OrtValue):
        self.__cuda_array_interface__ = {
            "shape": tuple(ov.shape()), "typestr": "<f4", "data": (ov.data_ptr(), False),
            "version": 3, "strides": None, "stream": None}


def pixel_map(space) -> tuple[list[float], list[float], list[float], list[float]]:
    """(A, center, mean, std) of ``AscentWorkspace.set_pixel_map``: the model's preprocessing
    x[c] = (Σ_k A[c, k]·(v[k] + center[k]) − mean[c]) / std[c] (``PixelSpace.to_input``)."""
    s = space.model.spec
    if s.channels == "L":
        a = np.array([[0.299, 0.587, 0.114]], np.float32)
    elif s.channels == "BGR":
        a = np.eye(3, dtype=np.float32)[::-1]
    else:
        a = np.eye(3, dtype=np.float32)
    return ([float(x) for x in a.ravel()], [float(x) for x in space.center],
            [float(x) for x in np.asarray(s.mean, np.float32)],
            [float(x) for x in np.asarray(s.std, np.float32)])


class DeviceImage:
    """The CUDA provider's bound image (module doc): the ascent's state in an AscentWorkspace."""

    def __init__(self, space, v: np.ndarray, lo, hi, binding: _Binding):
        from ..kernels._cuda import AscentWorkspace

        if AscentWorkspace is None:
            raise RuntimeError("pydevis._cuda is not built")
        self.space, self.b = space, binding
        self.ws = AscentWorkspace(v.shape, np.asarray(lo, np.float64), np.asarray(hi, np.float64),
                                  0)
        self.ws.set_pixel_map(*pixel_map(space))
        self.x, self.gx = binding.device_views()
        self.set_image(v)
        self.keep_best(np.ones(v.shape[0], bool))

    def backward_pass(self, targets: list, mode: str, dy: int, dx: int) -> BackwardPass:
        self.ws.to_input(self.x, dy, dx)
        self.b.run()
        self.ws.grad_from_input(self.gx, dy, dx)
        return self.b.backward_pass()

    def grad_sumsq(self) -> np.ndarray:
        return self.ws.grad_sumsq()

    def add_prior_grads(self, priors: list) -> None:
        if priors:
            raise ValueError("priors read the image on the host: not with a bound image")

    def step(self, eta, decay, blur_sigma, norm_pct, contrib_pct, active) -> None:
        self.ws.step(np.ascontiguousarray(eta, np.float64), float(decay), float(blur_sigma),
                     float(norm_pct), float(contrib_pct), [bool(a) for a in active])

    def keep_best(self, mask) -> None:
        self.ws.keep_best([bool(m) for m in mask])

    def image(self) -> np.ndarray:
        return self.ws.image().to_host()

    def set_image(self, v: np.ndarray) -> None:
        self.ws.image().copy_from(np.ascontiguousarray(v, np.float32))

    def best_pixels(self) -> np.ndarray:
        return self.space.to_pixels(self.ws.best().to_host())
