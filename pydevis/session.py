"""ONNX Runtime sessions that expose the tensors the backward rules need.

The base model is rewritten once so that the batch dimension is free (exports with a fixed batch of
1 then still run any batch), and so that ops ONNX Runtime runs slowly are replaced by equivalent
fast ones (:func:`fast_ops`: ``LRN``).

Memory. Sessions are built from a weightless copy of the model: the weights (initializers of at
least ``SHARED_MIN_BYTES``) reach ONNX Runtime as external initializers wrapping the arrays the
backward rules read anyway (``Graph.constants``), so no ``ModelProto`` copy or serialised model
holds them again. ONNX Runtime 1.32 still copies them into each session (``add_initializer``,
meant for sharing, is bypassed by the graph optimisers, which read and transform the weights
themselves), so the number of sessions is what bounds memory: with ``MERGE_MIN_BYTES`` of weights
or more, each batch mode (free batch, or the original fixed-batch model) has one session, exposing
the union of every tensor set requested so far (a request it does not cover replaces it by a
session exposing the union); smaller models keep one session per tensor set. Fixed-batch
sessions are dropped once the free-batch rewrite is known to work (every batch size then uses
it). VGG-16 (528 MB of weights), after load, a batch-1 and a batch-8 ``signal`` and ``forward``:
3.1 GB RSS, was 8.2 GB with one session per tensor set and batch mode.
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
from .kernels import park_workers


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
    for node in g.node:
        if (node.op_type != "Reshape" or len(node.input) < 2
                or node.input[1] not in graph.constants):
            continue
        shape = np.array(graph.constants[node.input[1]], copy=True)
        if shape.ndim == 1 and shape.size > 1 and shape[0] == 1:
            shape[0] = 0
            name = node.input[1] + "::freebatch::" + node.name
            g.initializer.append(numpy_helper.from_array(shape.astype(np.int64), name))
            node.input[1] = name
    return m


SHARED_MIN_BYTES = 1 << 16  # initializers at least this big are shared, smaller ones stay inline
# With at least this much in weights, a batch mode keeps one session exposing the union of the
# tensor sets asked for; below, one session per set (exposing tensors costs the forward: 27 % on
# SqueezeNet 1.1 at batch 8 with every ReLU output exposed, nothing measurable on AlexNet).
MERGE_MIN_BYTES = 64 << 20
_SHARED_LOCATION = "pydevis-shared-initializer"  # never read: ONNX Runtime gets the OrtValue


def weightless(model: onnx.ModelProto, shared: Iterable[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose ``shared`` initializers keep their name, type and shape but no
    data (marked external; the data comes from ``SessionOptions.add_external_initializers``).

    Built field by field, so that the weights are never copied on the way.
    """
    shared = set(shared)
    out = onnx.ModelProto()
    for field, value in model.ListFields():
        if field.name != "graph":
            _copy_field(out, field.name, value)
    for field, value in model.graph.ListFields():
        if field.name != "initializer":
            _copy_field(out.graph, field.name, value)
    for t in model.graph.initializer:
        if t.name not in shared:
            out.graph.initializer.add().CopyFrom(t)
            continue
        stub = out.graph.initializer.add()
        stub.name, stub.data_type = t.name, t.data_type
        stub.dims.extend(t.dims)
        stub.data_location = onnx.TensorProto.EXTERNAL
        stub.external_data.add(key="location", value=_SHARED_LOCATION)
    return out


def _copy_field(dst, name: str, value) -> None:
    if hasattr(value, "extend"):  # repeated field
        getattr(dst, name).extend(value)
    elif hasattr(value, "CopyFrom"):  # message
        getattr(dst, name).CopyFrom(value)
    else:
        setattr(dst, name, value)


def fast_ops(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace, in place, the float32 4-D ``LRN`` nodes of known channel count by ops that ONNX
    Runtime runs ~6x faster (AlexNet's first LRN at batch 8, 1 thread: 86 ms as ``LRN``, 15 ms
    so): ``s = bias + α/size·Σ_window x²`` as a 1×1 ``Conv`` of ``x²`` with a banded (C, C)
    weight, then ``y = x·exp(−β·log s)``. Same values to ~2e-7 relative; the LRN's input and
    output keep their names, so the backward rule and the exposed tensors are unchanged.
    """
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a model shape inference cannot follow keeps its LRN nodes
        return model
    types = {vi.name: vi.type.tensor_type for vi in
             list(inferred.graph.value_info) + list(inferred.graph.input)}
    nodes = []
    for node in model.graph.node:
        tt = types.get(node.input[0]) if node.op_type == "LRN" else None
        channels = _static_channels(tt)
        if node.domain not in ("", "ai.onnx") or channels is None:
            nodes.append(node)
            continue
        nodes.extend(_lrn_nodes(model.graph, node, channels))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def _static_channels(tt) -> int | None:
    """Dimension 1 of a float32 4-D tensor type when it is a known number, else None."""
    if tt is None or tt.elem_type != onnx.TensorProto.FLOAT or len(tt.shape.dim) != 4:
        return None
    dim = tt.shape.dim[1]
    return dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None


def _lrn_nodes(graph: onnx.GraphProto, node: onnx.NodeProto, channels: int) -> list:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    size = int(attrs["size"])
    alpha, beta = attrs.get("alpha", 1e-4), attrs.get("beta", 0.75)
    bias = attrs.get("bias", 1.0)
    x, y = node.input[0], node.output[0]
    band = np.zeros((channels, channels, 1, 1), np.float32)
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2  # window of channel c: [c-lo, c+hi]
    for c in range(channels):
        band[c, max(0, c - lo):min(channels, c + hi + 1)] = alpha / size
    t = f"{y}::lrn::"
    graph.initializer.extend([
        numpy_helper.from_array(band, t + "band"),
        numpy_helper.from_array(np.full(channels, bias, np.float32), t + "bias"),
        numpy_helper.from_array(np.array(-beta, np.float32), t + "neg_beta")])
    return [helper.make_node("Mul", [x, x], [t + "sq"], name=t + "sq"),
            helper.make_node("Conv", [t + "sq", t + "band", t + "bias"], [t + "s"], name=t + "s"),
            helper.make_node("Log", [t + "s"], [t + "log"], name=t + "log"),
            helper.make_node("Mul", [t + "log", t + "neg_beta"], [t + "e"], name=t + "e"),
            helper.make_node("Exp", [t + "e"], [t + "pow"], name=t + "pow"),
            helper.make_node("Mul", [x, t + "pow"], [y], name=node.name or t + "y")]


class Runner:
    """Runs the model in ONNX Runtime, returning any tensors asked for (see the module doc)."""

    def __init__(self, model: onnx.ModelProto, graph: Graph, threads: int | None = None):
        self.graph = graph
        self.threads = threads  # ONNX Runtime intra-op threads (None: its own choice)
        # The shared weights: the IR's own arrays (the rules read them), wrapped without a copy.
        self._arrays = {t.name: graph.constants[t.name] for t in model.graph.initializer
                        if _shareable(graph.constants.get(t.name))}
        self._values = {k: ort.OrtValue.ortvalue_from_numpy(a) for k, a in self._arrays.items()}
        self.original = fast_ops(weightless(model, self._arrays))
        self.model = free_batch(self.original, graph)
        self.batchable: bool | None = None  # unknown until the first batch > 1
        # batch mode -> {exposed tensors: session}; one session per mode for big models
        self._sessions: dict[bool, dict[frozenset[str], ort.InferenceSession]] = {}
        self._merge = sum(a.nbytes for a in self._arrays.values()) >= MERGE_MIN_BYTES
        self._profile_prefix: str | None = None

    def start_profiling(self, prefix: str) -> None:
        """Build the sessions from now on with ONNX Runtime's profiler on (a JSON trace with
        each node's time, files starting with ``prefix``); drops the sessions built so far."""
        self._profile_prefix = prefix
        self._sessions.clear()

    def end_profiling(self) -> list[str]:
        """Stop profiling: the trace files of the profiled sessions (which are dropped)."""
        files = [s.end_profiling() for c in self._sessions.values() for s in c.values()]
        self._profile_prefix = None
        self._sessions.clear()
        return files

    def _session(self, outputs: tuple[str, ...], batchable: bool) -> ort.InferenceSession:
        want = frozenset(outputs)
        cached = self._sessions.setdefault(batchable, {})
        if want in cached:
            return cached[want]
        if self._merge:  # at most one session: reuse it, or replace it by the union
            for have, sess in cached.items():
                if have >= want:
                    return sess
            want = want.union(*cached)
            cached.clear()  # free the old session before building its successor
        sess = self._make_session(tuple(sorted(want)), self.model if batchable else self.original)
        cached[want] = sess
        return sess

    def _make_session(self, outputs: tuple[str, ...], base: onnx.ModelProto):
        m = copy.deepcopy(base)  # weightless: cheap
        g = m.graph
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
        # shared weights no kept node reads (subgraphs included) would have no data: drop them
        read = _inputs(g.node)
        used = [t.name for t in g.initializer if t.name in self._values and t.name in read]
        live = [t for t in g.initializer if t.name not in self._values or t.name in read]
        del g.initializer[:]
        g.initializer.extend(live)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # ORT worker threads spin after a run by default; they would steal the cores from the
        # backward kernels that run right after.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self.threads:
            opts.intra_op_num_threads = self.threads
        if self._profile_prefix:
            opts.enable_profiling = True
            opts.profile_file_prefix = self._profile_prefix
        if used:
            opts.add_external_initializers(used, [self._values[k] for k in used])
        try:
            return ort.InferenceSession(m.SerializeToString(), opts, providers=providers())
        except Exception as exc:
            raise ModelError(f"ONNX Runtime cannot run the model: {_first_line(exc)}") from None

    def batches(self, x: np.ndarray) -> bool:
        """Whether ``x`` (N, C, H, W) runs as one batch; False: row by row. The free-batch
        rewrite is checked once, on the first batch > 1 (:meth:`_check_batching`)."""
        if x.shape[0] > 1 and self.batchable is None:
            self.batchable = self._check_batching(x)
        return x.shape[0] == 1 or bool(self.batchable)

    def run(self, x: np.ndarray, outputs: Iterable[str]) -> dict[str, np.ndarray]:
        """Forward ``x`` (N, C, H, W) and return the named tensors."""
        names = tuple(dict.fromkeys(outputs))
        if self.batches(x):
            return self._run(x, names, batchable=bool(self.batchable))
        rows = [self._run(x[i:i + 1], names, batchable=False) for i in range(x.shape[0])]
        return {k: np.concatenate([r[k] for r in rows]) for k in names}

    def _run(self, x: np.ndarray, names: tuple[str, ...], batchable: bool):
        sess = self._session(names, batchable)
        park_workers()  # the backward kernels' pool sleeps while ONNX Runtime's runs
        try:
            values = sess.run(list(names), {self.graph.input_name: x})
        except Exception as exc:
            raise ModelError(f"ONNX Runtime failed on input of shape {tuple(x.shape)}: "
                             f"{_first_line(exc)}") from None
        return dict(zip(names, values, strict=True))

    def _check_batching(self, x: np.ndarray) -> bool:
        """Does the free-batch rewrite give, row for row, what the original model gives?

        When it does, every later run uses the free-batch session (batch 1 included) and the
        fixed-batch one is dropped.
        """
        outs = tuple(self.graph.output_names)
        try:
            both = self._run(x[:2], outs, batchable=True)
        except ModelError:
            self._sessions.pop(True, None)
            return False
        for i in range(2):
            one = self._run(x[i:i + 1], outs, batchable=False)
            for k in outs:
                a, b = both[k][i:i + 1], one[k]
                if a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=1e-5):
                    self._sessions.pop(True, None)
                    return False
        self._sessions.pop(False, None)
        return True


def _inputs(nodes) -> set[str]:
    """Every tensor name read by ``nodes`` or by the nodes of their subgraphs (If, Loop...)."""
    names: set[str] = set()
    for node in nodes:
        names.update(node.input)
        for a in node.attribute:
            for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                names |= _inputs(sub.node)
    return names


def _shareable(a) -> bool:
    """Large numeric arrays are handed to ONNX Runtime as shared initializers."""
    return (isinstance(a, np.ndarray) and a.nbytes >= SHARED_MIN_BYTES
            and a.dtype.kind in "fiub" and a.flags.c_contiguous)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
