"""``Model``: an ONNX classifier with its preprocessing, forward passes in ONNX Runtime and
input-space signals (gradient, deconvnet, guided backprop) from our own backward engine.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from . import graph as graph_mod
from . import preprocess, targets
from .backward import engine
from .backward.registry import NONDIFF, lookup
from .class_scores import DefaultLabels, softmax
from .errors import ModelError, TargetError
from .kernels import MODES
from .memory import keep_freed_memory
from .onnx_file import read_onnx
from .session import Runner

_PASS_THROUGH = ("Identity", "Reshape", "Flatten", "Squeeze")


@dataclass
class BackwardPass:
    """One backward pass: the signal at the input and the objective per row."""

    grad: np.ndarray  # (N, C, H, W), d objective / d input (or its deconvnet/guided variant)
    objective: np.ndarray  # (N,) the target unit's value
    target_value: np.ndarray  # the whole target tensor (class scores for class targets)


Signal = BackwardPass  # the old name ("signal" is the array at the input, ``grad`` here)


def load(path: str | os.PathLike, *, card: str | os.PathLike | None = None,
         threads: int | None = None, backend: str | None = None,
         **spec_overrides: Any) -> Model:
    """Load an ONNX image classifier.

    Parameters
    ----------
    path : the ``.onnx`` file. A model card ``path + ".json"`` beside it sets preprocessing and
        labels (format of ``../shared/models/*.onnx.json``).
    card : another model card to use instead.
    threads : ONNX Runtime intra-op threads (default: its own choice).
    backend : ``"ort"`` computes signals with the exported backward graph in ONNX Runtime
        (:mod:`pydevis.export`); ``"pydevis"``: pydevis's own backward engine. Default: ``"ort"``
        when ``PYDEVIS_BACKEND=ort``, else ``"pydevis"``.
    spec_overrides : ``size``, ``channels`` ("RGB"/"BGR"), ``mean``, ``std`` (pixel units),
        ``labels`` (file or list), ``crop_fraction``; they win over the card.
    """
    if backend is None:
        from .kernels._dispatch import signal_backend

        backend = signal_backend()  # "ort" with PYDEVIS_BACKEND=ort; a bad value fails here
    p = Path(path)
    proto = read_onnx(p)
    keep_freed_memory()  # the allocator keeps freed blocks: no page faults step after step
    model = Model(p, proto, spec_overrides, Path(card) if card else None, threads)
    model.set_signal_backend(backend)
    if model.spec.labels is not None:
        model.labels  # noqa: B018  (a label list of the wrong length is a load-time error)
    return model


class Model:
    """An ONNX image classifier. See :func:`load`."""

    def __init__(self, path: Path, proto: onnx.ModelProto, overrides: dict[str, Any],
                 card: Path | None, threads: int | None):
        self.path = path
        self.card_path = card  # the card given to load (None: the sidecar, if any)
        self.proto = proto
        self._labels: Sequence[str] | None = None
        self._label_index: dict[str, list[int]] | None = None
        self.graph = graph_mod.build(proto)
        self.input_shape = self._input_shape()
        meta = {e.key: e.value for e in proto.metadata_props}
        self.spec = preprocess.resolve(path, self.input_shape, meta, overrides, card)
        self.runner = Runner(proto, self.graph, threads)
        self.scores = self._score_tensor()
        self.data = self.graph.data_dependent(NONDIFF)
        self._plans: dict[str, engine.Plan] = {}
        self._templates: dict[str, tuple[tuple[int, int], ...]] = {}
        try:
            self.plan(self.scores)  # unsupported ops on the class path are a load-time error
        except ModelError as exc:  # name the file: several models load in one command
            exc.args = (f"{path}: {exc}",)
            raise

    # ---- structure -------------------------------------------------------------------------
    def _input_shape(self) -> tuple:
        vi = next(i for i in self.proto.graph.input if i.name == self.graph.input_name)
        tt = vi.type.tensor_type
        if tt.elem_type != onnx.TensorProto.FLOAT:
            kind = onnx.TensorProto.DataType.Name(tt.elem_type)
            raise ModelError(f"{self.path}: input {vi.name!r} is {kind}; only float32 is supported")
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                     for d in tt.shape.dim)
        if len(dims) != 4:
            raise ModelError(f"{self.path}: input {vi.name!r} has shape {list(dims)}; "
                             "an image classifier needs a 4-D N×C×H×W input")
        if dims[1] not in (1, 3):
            raise ModelError(f"{self.path}: input {vi.name!r} has {dims[1]} channels; "
                             "expected 1 or 3 (NCHW layout)")
        if isinstance(dims[0], int) and dims[0] > 1:  # batch 1 (made free) or symbolic only
            raise ModelError(f"{self.path}: input {vi.name!r} has a fixed batch of {dims[0]}; "
                             "pydevis needs a batch of 1 or a free batch dimension (re-export "
                             "with a dynamic batch axis)")
        return dims

    def _score_tensor(self) -> str:
        name = self.graph.output_names[0]
        node = self.graph.producer.get(name)
        while node is not None and node.op_type in _PASS_THROUGH:
            node = self.graph.producer.get(node.inputs[0])
        if node is not None and node.op_type in ("Softmax", "LogSoftmax"):
            return node.inputs[0]
        return name

    @property
    def labels(self) -> Sequence[str]:
        """One name per class, built once: the card's or flags' labels (their number must be
        the number of classes), else ``class_0``, ``class_1``... made on demand (a model with
        10^7 classes does not build 10^7 strings to name its top 5)."""
        if self._labels is None:
            given = self.spec.labels
            if given is not None and len(given) != self.num_classes:
                where = self.spec.sources.get("labels")
                raise ModelError(f"{self.path}: {len(given)} labels [{where}] for "
                                 f"{self.num_classes} classes; the label list must name every "
                                 "class, one per line")
            self._labels = given if given is not None else DefaultLabels(self.num_classes)
        return self._labels

    @property
    def label_index(self) -> dict[str, list[int]]:
        """Lower-cased label line and each comma-separated synonym (spaces normalized) → the
        classes it names; built once per model, so a name lookup is a dict lookup."""
        if self._label_index is None:
            index: dict[str, list[int]] = {}
            for i, label in enumerate(self.labels):
                keys = {" ".join(label.lower().split())}
                keys.update(" ".join(s.lower().split()) for s in label.split(","))
                for key in keys:
                    index.setdefault(key, []).append(i)
            self._label_index = index
        return self._label_index

    @property
    def num_classes(self) -> int:
        if not hasattr(self, "_num_classes"):
            x = np.zeros((1, *self.input_dims()), np.float32)
            self._num_classes = int(self.forward(x).shape[1])
        return self._num_classes

    def input_dims(self) -> tuple[int, int, int]:
        """(C, H, W) of the model input."""
        return (int(self.input_shape[1]), *self.spec.size)

    def op_report(self) -> dict[str, bool]:
        """Every op type in the graph → whether it has a backward rule (or needs none)."""
        return {n.op_type: n.op_type in NONDIFF or n.op_type == "Constant"
                or lookup(n.op_type, n.domain) is not None for n in self.graph.nodes}

    # ---- preprocessing ---------------------------------------------------------------------
    def preprocess(self, pixels: np.ndarray) -> np.ndarray:
        """RGB pixels in 0..255, (H, W, 3) or (N, H, W, 3) → model input (N, C, H, W).

        Images of another size are resized (bilinear) to the model's input size.
        """
        from .image import resize_pixels

        p = np.asarray(pixels, dtype=np.float32)
        p = p[None] if p.ndim == 3 else p
        if p.ndim != 4 or p.shape[-1] != 3:
            raise ValueError(f"pixels must be (N, H, W, 3) RGB, got shape {p.shape}")
        if p.shape[1:3] != self.spec.size:
            p = resize_pixels(p, self.spec.size)
        return self.spec.to_input(p)

    # ---- forward ---------------------------------------------------------------------------
    def _check_x(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1:] != self.input_dims():
            raise ValueError(f"input must be (N, {', '.join(map(str, self.input_dims()))}), "
                             f"got {x.shape}")
        return x

    def run(self, x: np.ndarray, outputs: Iterable[str]) -> dict[str, np.ndarray]:
        """Forward ``x`` (N, C, H, W) in ONNX Runtime; the tensors named in ``outputs``
        (canonical tensor names, see :meth:`resolve_tensor`) by name."""
        return self.runner.run(self._check_x(x), outputs)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Pre-softmax class scores (N, K)."""
        out = self.run(x, [self.scores])[self.scores]
        if sum(d != 1 for d in out.shape[1:]) > 1:  # (N, K), (N, K, 1, 1), (N, 1, K) are scores
            raise ModelError(f"{self.path}: output {self.scores!r} has shape {list(out.shape)}; "
                             "not class scores (N, K): pydevis needs an image classifier")
        if not np.isfinite(out).all():
            raise ModelError(f"{self.path}: non-finite output (NaN or Inf) of {self.scores!r}; "
                             "are the weights finite?")
        return out.reshape(out.shape[0], -1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Softmax probabilities (N, K)."""
        return softmax(self.forward(x))

    # ---- backward --------------------------------------------------------------------------
    _ort = None  # pydevis.export.ort_backend.OrtBackward with backend="ort"

    def set_signal_backend(self, backend: str | None) -> None:
        """``"ort"``: signals from the exported backward graph in ONNX Runtime; ``None`` or
        ``"pydevis"``: pydevis's own backward engine."""
        if backend not in (None, "pydevis", "ort"):
            raise ValueError(f"backend {backend!r} is not one of pydevis, ort")
        self._ort = None
        if backend == "ort":
            from .export.ort_backend import OrtBackward

            self._ort = OrtBackward(self, self.runner.threads)

    @property
    def signal_backend(self) -> str:
        """``"ort"`` (the exported backward graph in ONNX Runtime) or ``"pydevis"``."""
        return "pydevis" if self._ort is None else "ort"

    @property
    def ort_backward(self):
        """The exported-graph backend (``pydevis.export.ort_backend.OrtBackward``) when
        :attr:`signal_backend` is ``"ort"``, else None."""
        return self._ort

    def plan(self, tensor: str) -> engine.Plan:
        if tensor not in self._plans:
            self._plans[tensor] = engine.make_plan(self.graph, tensor, self.data)
        return self._plans[tensor]

    def resolve_tensor(self, unit: targets.Unit | str | None) -> str:
        """The canonical tensor name of a unit's tensor, or of a tensor or node name (a node
        stands for its first output); ``None`` (or a class unit) is the score tensor."""
        name = unit.tensor if isinstance(unit, targets.Unit) else unit
        if name is None:
            return self.scores
        if name in self.graph.tensor_names():
            return name
        node = self.graph.node_by_name(name)
        if node is not None:
            return node.outputs[0]
        from .tensors import suggestion

        raise TargetError(f"no tensor or node named {name!r} in {self.path.name}"
                          + suggestion(name, self))

    def backward_pass(self, x: np.ndarray, target, mode: str = "gradient") -> BackwardPass:
        """Forward then backward: the signal at the input for ``target`` in ``mode``.

        ``mode`` is ``gradient`` (Simonyan et al. 2013), ``deconvnet`` (Zeiler & Fergus 2014) or
        ``guided`` (Springenberg et al. 2015); they differ only at the rectifiers.
        """
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        x = self._check_x(x)
        units = targets.parse(target, x.shape[0])
        tensors = {self.resolve_tensor(u) for u in units}
        if len(tensors) > 1:
            raise TargetError("all rows of one call must target the same tensor")
        tensor = tensors.pop()
        if not self.runner.batches(x):
            rows = [self.backward_pass(x[i:i + 1], [units[i]], mode) for i in range(x.shape[0])]
            return BackwardPass(np.concatenate([r.grad for r in rows]),
                          np.concatenate([r.objective for r in rows]),
                          np.concatenate([r.target_value for r in rows]))
        if self._ort is not None:
            return self._ort.backward_pass(x, tensor, units, mode)
        values, walk = self.pullback(x, tensor, mode)
        seed, objective = targets.seed(values[tensor], units)
        return BackwardPass(walk(seed), objective, values[tensor])

    signal = backward_pass  # the old name, kept for scripts (bench/ calls it)

    def pullback(self, x: np.ndarray, tensor: str, mode: str = "gradient"
                 ) -> tuple[dict[str, np.ndarray], Callable[[np.ndarray], np.ndarray]]:
        """One forward of ``x`` with what the backward walk from ``tensor`` (a canonical
        tensor name) needs; returns ``(values, walk)``: the forward's tensors by name
        (``tensor`` among them) and ``walk(cotangent at tensor) → signal at the input`` in
        ``mode``, callable any number of times on that one forward. Always pydevis's own
        backward engine, whatever :attr:`signal_backend` says.
        """
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        x = self._check_x(x)
        plan = self.plan(tensor)
        values = self.runner.run(x, plan.values)
        shapes = self.shapes(plan.shapes + (self.graph.input_name,), x.shape[0])
        ctx = engine.Context(self.graph, values, shapes, self.data)

        def walk(seed: np.ndarray) -> np.ndarray:
            grad = engine.run(plan, ctx, seed, self.data, self.graph.input_name, mode)
            return grad.astype(np.float32, copy=False)

        return values, walk

    def vjp(self, x: np.ndarray, tensor: str, cotangent: np.ndarray,
            mode: str = "gradient") -> np.ndarray:
        """The signal at the input for any ``cotangent`` at ``tensor`` (a tensor or node name).

        With the activation map of one unit as cotangent (the rest of its layer zeroed), in
        ``deconvnet`` mode, this is Zeiler & Fergus's projection of that unit to pixels.
        """
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        x = self._check_x(x)
        tensor = self.resolve_tensor(tensor)
        if not self.runner.batches(x):
            return np.concatenate([self.vjp(x[i:i + 1], tensor, cotangent[i:i + 1], mode)
                                   for i in range(x.shape[0])])
        if self._ort is not None:
            return self._ort.vjp(x, tensor, cotangent, mode)
        values, walk = self.pullback(x, tensor, mode)
        cot = np.asarray(cotangent, dtype=values[tensor].dtype)
        if cot.shape != values[tensor].shape:
            raise ValueError(f"cotangent shape {cot.shape} != shape of {tensor!r} "
                             f"{values[tensor].shape}")
        grad = walk(np.ascontiguousarray(cot))
        if not np.isfinite(grad).all():
            raise ModelError(f"{self.path}: non-finite signal (NaN or Inf) from {tensor!r} "
                             "back to the input; are the weights finite?")
        return grad

    def backward(self, x: np.ndarray, target, mode: str = "gradient") -> np.ndarray:
        """The signal at the input (same shape as ``x``); see :meth:`backward_pass`."""
        return self.backward_pass(x, target, mode).grad

    # ---- shapes ----------------------------------------------------------------------------
    def shapes(self, names: Iterable[str], batch: int) -> dict[str, tuple[int, ...]]:
        """Actual shapes of the tensors ``names`` at batch ``batch``; see
        :meth:`shape_templates`."""
        return {n: tuple(a + b * batch for a, b in t)
                for n, t in self.shape_templates(names).items()}

    def shape_templates(self, names: Iterable[str]) -> dict[str, tuple[tuple[int, int], ...]]:
        """Each tensor's shape as ``(a, b)`` per dimension, meaning ``a + b·N`` at batch ``N``,
        from a probe of ONNX Runtime at batch 2 and 3 (once per tensor).

        This covers batch dims and batch-proportional reshapes; static shape inference is not
        trusted (it disagrees with ONNX Runtime on ceil_mode pooling).
        """
        names = tuple(dict.fromkeys(names))
        missing = [n for n in names if n not in self._templates]
        if missing:
            self._probe(missing)
        return {n: self._templates[n] for n in names}

    def _probe(self, names: list[str]) -> None:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((3, *self.input_dims())).astype(np.float32)
        sizes = (2, 3) if self.runner.batches(x) else (1,)
        runs = [self.runner.run(x[:n], names) for n in sizes]
        for name in names:
            if len(runs) == 1:
                self._templates[name] = tuple((d, 0) for d in runs[0][name].shape)
                continue
            s2, s3 = runs[0][name].shape, runs[1][name].shape
            self._templates[name] = tuple((d2 - 2 * (d3 - d2), d3 - d2)
                                          for d2, d3 in zip(s2, s3, strict=True))
