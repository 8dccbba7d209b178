"""ONNX Runtime sessions that expose the tensors the backward rules need.

The base model is rewritten once so that the batch dimension is free (exports with a fixed batch of
1 then still run any batch); each set of requested tensors gets its own pruned model and session,
cached. MaxPool switches are exposed by giving the node its optional ``Indices`` output.
"""

from __future__ import annotations

import copy
import ctypes
import functools
import os
from collections.abc import Iterable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from .errors import ModelError
from .graph import Graph

INDICES_SUFFIX = "::indices"


def indices_name(maxpool_output: str) -> str:
    """Name under which the switches of the MaxPool producing ``maxpool_output`` are exposed."""
    return maxpool_output + INDICES_SUFFIX


@functools.cache
def cuda_usable() -> bool:
    """True when ONNX Runtime has a CUDA provider *and* the driver reports a device."""
    if os.environ.get("PYDEVIS_ORT_CUDA", "1") == "0":
        return False
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        count = ctypes.c_int(0)
        return cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(count)) == 0 \
            and count.value > 0
    except OSError:
        return False


def providers() -> list[str]:
    return (["CUDAExecutionProvider"] if cuda_usable() else []) + ["CPUExecutionProvider"]


def free_batch(model: onnx.ModelProto, graph: Graph) -> onnx.ModelProto:
    """A copy of ``model`` whose input and outputs have a symbolic batch dimension.

    Reshape nodes whose constant target shape starts with the exported batch of 1 get 0 there
    ("copy the input's dimension"), the usual way fixed-batch exports bake the batch in. Whether
    this worked is checked by :class:`Runner` on the first batch > 1 (else it runs row by row).
    """
    m = copy.deepcopy(model)
    g = m.graph
    del g.value_info[:]
    for vi in list(g.input) + list(g.output):
        if vi.name in graph.constants:
            continue
        dims = vi.type.tensor_type.shape.dim
        if len(dims) > 0:
            dims[0].Clear()
            dims[0].dim_param = "N"
    inits = {t.name: t for t in g.initializer}
    for node in g.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        shape = numpy_helper.to_array(inits[node.input[1]]).copy()
        if shape.ndim == 1 and shape.size > 1 and shape[0] == 1:
            shape[0] = 0
            name = node.input[1] + "::freebatch::" + node.name
            g.initializer.append(numpy_helper.from_array(shape.astype(np.int64), name))
            node.input[1] = name
    return m


class Runner:
    """Runs the model in ONNX Runtime, returning any tensors asked for, cached per output set."""

    def __init__(self, model: onnx.ModelProto, graph: Graph, threads: int | None = None):
        self.graph = graph
        self.original = model
        self.model = free_batch(model, graph)
        self.batchable: bool | None = None  # unknown until the first batch > 1
        self._sessions: dict[tuple[str, ...], ort.InferenceSession] = {}
        self._threads = threads

    def _session(self, outputs: tuple[str, ...], batchable: bool) -> ort.InferenceSession:
        key = (*outputs, "::free" if batchable else "::fixed")
        sess = self._sessions.get(key)
        if sess is None:
            sess = self._make_session(outputs, self.model if batchable else self.original)
            self._sessions[key] = sess
        return sess

    def _make_session(self, outputs: tuple[str, ...], base: onnx.ModelProto):
        m = copy.deepcopy(base)
        g = m.graph
        want = set(outputs)
        for node in g.node:
            if node.op_type == "MaxPool" and indices_name(node.output[0]) in want:
                if len(node.output) == 1:
                    node.output.append(indices_name(node.output[0]))
                else:  # the model already exposes its switches under its own name
                    raise ModelError(f"MaxPool {node.name!r} already has an Indices output")
        keep = {o for o in outputs}
        pruned = []
        for node in reversed(list(g.node)):
            if any(o in keep for o in node.output):
                pruned.append(node)
                keep.update(i for i in node.input if i)
        pruned.reverse()
        del g.node[:]
        g.node.extend(pruned)
        del g.output[:]
        g.output.extend(helper.make_empty_tensor_value_info(o) for o in outputs)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # ORT worker threads spin after a run by default; they would steal the cores from the
        # backward kernels that run right after.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self._threads:
            opts.intra_op_num_threads = self._threads
        try:
            return ort.InferenceSession(m.SerializeToString(), opts, providers=providers())
        except Exception as exc:
            raise ModelError(f"ONNX Runtime cannot run the model: {_first_line(exc)}") from None

    def run(self, x: np.ndarray, outputs: Iterable[str]) -> dict[str, np.ndarray]:
        """Forward ``x`` (N, C, H, W) and return the named tensors."""
        names = tuple(dict.fromkeys(outputs))
        if x.shape[0] > 1 and self.batchable is None:
            self.batchable = self._check_batching(x)
        if x.shape[0] == 1 or self.batchable:
            return self._run(x, names, batchable=x.shape[0] > 1)
        rows = [self._run(x[i:i + 1], names, batchable=False) for i in range(x.shape[0])]
        return {k: np.concatenate([r[k] for r in rows]) for k in names}

    def _run(self, x: np.ndarray, names: tuple[str, ...], batchable: bool):
        sess = self._session(names, batchable)
        try:
            values = sess.run(list(names), {self.graph.input_name: x})
        except Exception as exc:
            raise ModelError(f"ONNX Runtime failed on input of shape {tuple(x.shape)}: "
                             f"{_first_line(exc)}") from None
        return dict(zip(names, values, strict=True))

    def _check_batching(self, x: np.ndarray) -> bool:
        """Does the free-batch rewrite give, row for row, what the original model gives?"""
        outs = tuple(self.graph.output_names)
        try:
            both = self._run(x[:2], outs, batchable=True)
        except ModelError:
            return False
        for i in range(2):
            one = self._run(x[i:i + 1], outs, batchable=False)
            for k in outs:
                a, b = both[k][i:i + 1], one[k]
                if a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=1e-5):
                    return False
        return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
