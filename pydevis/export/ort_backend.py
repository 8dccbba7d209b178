"""``load(..., backend="ort")``: signals from the exported backward graph in ONNX Runtime.

One session per (target tensor, mode), built on first use from :func:`export_backward`; the
forward and the backward then run as one ``run_with_iobinding`` (on the CUDA provider when it
is usable, as the forward sessions do). Each session keeps one IOBinding whose input, cotangent
and output OrtValues live on the session's device ('cuda' when the CUDA provider is active, else
'cpu') and are reused while the shapes repeat: a step copies the image and the cotangent into
them and copies the signal and the target's value back once: that is what ``Model.signal`` and
``Model.vjp`` (the projections, single signals) do.

The ascent binds further (``ort_ascent.py``): its image, gradient and update stay on the
session's device for the whole run — on the CUDA provider in a ``pydevis._cuda.AscentWorkspace``
over the OrtValues' device memory (only the target's value and per-row numbers cross to the host
each step); on the CPU provider in numpy buffers the OrtValues wrap without a copy, updated by
the host kernels.
"""

from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort

from .. import targets
from ..session import providers
from . import ACTIVATION, SCORES, SEED, SIGNAL, export_backward


class OrtBackward:
    """The exported graphs of one :class:`pydevis.Model` and their sessions."""

    def __init__(self, model, threads: int | None = None):
        self.model = model
        self.threads = threads
        self._sessions: dict[tuple[str, str], ort.InferenceSession] = {}
        self._bound: dict[tuple[str, str], _Bound] = {}  # the last shapes' binding per session
        self._lock = threading.Lock()  # a binding's buffers serve one run at a time

    def session(self, tensor: str, mode: str) -> ort.InferenceSession:
        key = (tensor, mode)
        if key not in self._sessions:
            m = self.model
            proto = export_backward(m, mode, None if tensor == m.scores else tensor)
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            # as the forward sessions: no spinning workers left to steal the cores afterwards
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            if self.threads:
                opts.intra_op_num_threads = self.threads
            self._sessions[key] = ort.InferenceSession(proto.SerializeToString(), opts,
                                                       providers=providers())
        return self._sessions[key]

    def run(self, x: np.ndarray, tensor: str, cot: np.ndarray,
            mode: str) -> tuple[np.ndarray, np.ndarray]:
        """(signal, value of ``tensor``) for cotangent ``cot`` at ``tensor``."""
        key = (tensor, mode)
        sess = self.session(tensor, mode)
        value = SCORES if tensor == self.model.scores else ACTIVATION
        x = np.ascontiguousarray(x, np.float32)
        cot = np.ascontiguousarray(cot, np.float32)
        with self._lock:
            b = self._bound.get(key)
            if b is None or b.shapes != (x.shape, cot.shape):
                b = self._bound[key] = _Bound(sess, self.model.graph.input_name, value,
                                              x.shape, cot.shape)
            b.image.update_inplace(x)
            b.cot.update_inplace(cot)
            sess.run_with_iobinding(b.binding)
            signal, act = b.binding.copy_outputs_to_cpu()  # copies: the buffers are reused
        return signal, act

    def backward_pass(self, x: np.ndarray, tensor: str, units, mode: str):
        """:meth:`pydevis.Model.signal` for ``units`` at ``tensor``."""
        from ..model import BackwardPass

        shape = self.model.shapes((tensor,), x.shape[0])[tensor]
        seed, _ = targets.seed(np.zeros(shape, np.float32), units)
        grad, value = self.run(x, tensor, seed, mode)
        _, objective = targets.seed(value, units)
        return BackwardPass(grad, objective, value)

    def vjp(self, x: np.ndarray, tensor: str, cotangent, mode: str) -> np.ndarray:
        """:meth:`pydevis.Model.vjp`."""
        shape = self.model.shapes((tensor,), x.shape[0])[tensor]
        cot = np.asarray(cotangent, dtype=np.float32)
        if cot.shape != tuple(shape):
            raise ValueError(f"cotangent shape {cot.shape} != shape of {tensor!r} {shape}")
        return self.run(x, tensor, cot, mode)[0]


def device(sess: ort.InferenceSession) -> str:
    """'cuda' when ``sess`` runs on the CUDA provider, else 'cpu' (ONNX Runtime device names)."""
    return "cuda" if sess.get_providers()[0] == "CUDAExecutionProvider" else "cpu"


class _Bound:
    """One IOBinding of a backward session for one (image, cotangent) shape: the image and the
    cotangent bound as OrtValues and the signal and the target's value bound to preallocated
    OrtValues, all on the session's device (device 0 for CUDA, the provider's default)."""

    def __init__(self, sess, image: str, value: str, x_shape, cot_shape):
        self.shapes = (tuple(x_shape), tuple(cot_shape))
        dev = device(sess)

        def alloc(shape):
            return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.float32, dev, 0)

        self.image, self.cot = alloc(x_shape), alloc(cot_shape)
        # the signal is shaped like the image, the target's value (scores or activation) like
        # the cotangent
        self.signal, self.value = alloc(x_shape), alloc(cot_shape)
        self.binding = sess.io_binding()
        self.binding.bind_ortvalue_input(image, self.image)
        self.binding.bind_ortvalue_input(SEED, self.cot)
        self.binding.bind_ortvalue_output(SIGNAL, self.signal)  # the order copy_outputs_to_cpu
        self.binding.bind_ortvalue_output(value, self.value)   # returns them in
