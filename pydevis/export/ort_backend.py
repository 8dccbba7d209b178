"""``load(..., backend="ort")``: signals from the exported backward graph in ONNX Runtime.

One session per (target tensor, mode), built on first use from :func:`export_backward`; the
forward and the backward then run as one ``InferenceSession.run`` (on the CUDA provider when it
is usable, as the forward sessions do). The image goes to the session and the signal comes back
to the host each call: the device-resident loop (IOBinding) is not built.
"""

from __future__ import annotations

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
        sess = self.session(tensor, mode)
        value = SCORES if tensor == self.model.scores else ACTIVATION
        feed = {self.model.graph.input_name: x, SEED: np.ascontiguousarray(cot, np.float32)}
        signal, act = sess.run([SIGNAL, value], feed)
        return signal, act

    def signal(self, x: np.ndarray, tensor: str, units, mode: str):
        """:meth:`pydevis.Model.signal` for ``units`` at ``tensor``."""
        from ..model import Signal

        shape = self.model.shapes((tensor,), x.shape[0])[tensor]
        seed, _ = targets.seed(np.zeros(shape, np.float32), units)
        grad, value = self.run(x, tensor, seed, mode)
        _, objective = targets.seed(value, units)
        return Signal(grad, objective, value)

    def vjp(self, x: np.ndarray, tensor: str, cotangent, mode: str) -> np.ndarray:
        """:meth:`pydevis.Model.vjp`."""
        shape = self.model.shapes((tensor,), x.shape[0])[tensor]
        cot = np.asarray(cotangent, dtype=np.float32)
        if cot.shape != tuple(shape):
            raise ValueError(f"cotangent shape {cot.shape} != shape of {tensor!r} {shape}")
        return self.run(x, tensor, cot, mode)[0]
