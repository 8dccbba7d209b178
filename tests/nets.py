"""A zoo of small, randomly initialised torch classifiers and their ONNX export.

Each net is a miniature of a family people visualise (LeNet, AlexNet, VGG, ResNet, GoogLeNet,
SqueezeNet, MobileNetV2, SE/MobileNetV3, ShuffleNet-like plumbing), small enough (< 50k
parameters, inputs of about 3x37x29) for a CPU test suite, and built so that one net in torch and
its ONNX export can be compared rule for rule:

* every rectifier is an ``nn.ReLU`` *module* (Captum's ``Deconvolution`` / ``GuidedBackprop``
  override only ``isinstance(m, nn.ReLU)`` modules), used exactly once per forward, and its input
  tensor feeds nothing else (Captum's hook sits on that tensor and would see the sum of all its
  consumers' gradients);
* ReLU6 is :class:`ReLU6R`, an ``nn.ReLU`` subclass computing ``hardtanh(x, 0, 6)``: it exports to
  ``Clip(0, 6)`` and Captum treats it as a rectifier, which is pydevis's documented choice;
* nothing else is an ``nn.ReLU`` (LeakyReLU, PReLU, Hardswish... keep their true gradient in every
  mode, in Captum as in pydevis);
* ``nn.LocalResponseNorm`` is :class:`pydevis.torch_export.LRN`, which exports to the single ONNX
  ``LRN`` op (torch's own export decomposes it into Pad/AveragePool/If...).

Each :class:`ZooNet` names a *probe*: a hidden tensor for channel / position targets, given as the
k-th ONNX node of one op type and, on the torch side, the k-th call of a module of one exact type.
The two are matched by position in execution order and checked by value in the tests.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from pydevis.torch_export import LRN

# the architectures, from where this module came from (tests.net_archs or net_archs: see
# conftest.import_nets), so that both are one module object per nets
A = importlib.import_module(f"{__package__}.net_archs" if __package__ else "net_archs")
ReLU6R = A.ReLU6R

__all__ = [
    "LRN",
    "ExportCache",
    "Exported",
    "ZOO",
    "ReLU6R",
    "ZooNet",
    "export_onnx",
    "find_probe_module",
    "logit_module",
    "make_input",
    "probe_tensor_name",
]

OPSET = 17


def _bn_stats(model: nn.Module, gen: torch.Generator, gamma: tuple[float, float] = (0.5, 1.5)):
    """Non-trivial eval statistics and affine parameters for every BatchNorm in ``model``."""
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=gen))
                m.weight.copy_(gamma[0] + (gamma[1] - gamma[0]) * torch.rand(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))


# --------------------------------------------------------------------------- the zoo


@dataclass(frozen=True)
class ZooNet:
    """One zoo entry.

    ``probe = (onnx_op_type, torch_module_type, k)``: the hidden tensor used for channel targets
    is the output of the k-th (0-based) ONNX node of ``onnx_op_type`` in graph order and, in
    torch, the output of the k-th call of a module whose type is exactly ``torch_module_type``.
    """

    name: str
    factory: Callable[[], nn.Module]
    input_shape: tuple[int, int, int]
    num_classes: int
    probe: tuple[str, type, int]
    fixed_batch: bool = False
    softmax: str | None = None  # "Softmax" / "LogSoftmax" when the graph ends in one
    seed: int = 0
    init: Callable[[nn.Module, torch.Generator], None] | None = None

    def build(self) -> nn.Module:
        """The net in eval mode, its weights a function of ``seed`` only."""
        torch.manual_seed(self.seed)
        model = self.factory()
        gen = torch.Generator().manual_seed(self.seed + 1)
        _bn_stats(model, gen)
        if self.init is not None:
            self.init(model, gen)
        return model.eval()


def _mobilenet_init(model: nn.Module, gen: torch.Generator) -> None:
    # Large BN gains push some ReLU6 inputs above 6, so the upper clip matters in the tests.
    _bn_stats(model, gen, gamma=(1.0, 4.0))


def _squeezenet_init(model: nn.Module, gen: torch.Generator) -> None:
    # Positive class biases before the final ReLU, so that no class score is dead (constant).
    conv = model.classifier[1]
    with torch.no_grad():
        conv.bias.copy_(0.3 + 0.2 * torch.rand(conv.bias.shape, generator=gen))


def _prelu_init(model: nn.Module, gen: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, nn.PReLU):
            with torch.no_grad():
                m.weight.copy_(-0.3 + 0.8 * torch.rand(m.weight.shape, generator=gen))


_RGB = (3, 37, 29)
ZOO: dict[str, ZooNet] = {
    z.name: z
    for z in [
        ZooNet("lenet", A.LeNet, (1, 32, 28), 10, ("Relu", nn.ReLU, 1), fixed_batch=True),
        ZooNet("alexnet", A.AlexNetS, _RGB, 7, ("Relu", nn.ReLU, 1), fixed_batch=True, seed=1),
        ZooNet("vgg", A.VGGS, _RGB, 10, ("Relu", nn.ReLU, 1), seed=2),
        ZooNet("resnet", A.ResNetS, _RGB, 10, ("Relu", nn.ReLU, 2), seed=3),
        ZooNet("inception", A.InceptionS, _RGB, 7, ("Concat", A.Inception, 0), seed=4),
        ZooNet("squeezenet", A.SqueezeNetS, _RGB, 10, ("Relu", nn.ReLU, 3), seed=5,
               init=_squeezenet_init),  # fmt: skip
        ZooNet("mobilenetv2", A.MobileNetV2S, _RGB, 10, ("Clip", ReLU6R, 1), seed=6,
               init=_mobilenet_init),  # fmt: skip
        ZooNet("senet", A.SENetS, _RGB, 7, ("LeakyRelu", nn.LeakyReLU, 0), seed=7),
        ZooNet("softmax", A.SoftmaxNetS, (3, 35, 27), 7, ("Relu", nn.ReLU, 1), softmax="Softmax",
               seed=8),  # fmt: skip
        ZooNet("logsoftmax", lambda: A.SoftmaxNetS(log=True), (3, 35, 27), 7, ("Relu", nn.ReLU, 0),
               softmax="LogSoftmax", seed=9),  # fmt: skip
        ZooNet("miscops", A.MiscOpsS, _RGB, 10, ("PRelu", nn.PReLU, 0), seed=10, init=_prelu_init),
    ]
}


def logit_module(model: nn.Module) -> nn.Module:
    """The module whose output is the pre-softmax class score (``pre_softmax`` if it has one)."""
    return getattr(model, "pre_softmax", model)


def make_input(net: ZooNet, n: int, seed: int) -> np.ndarray:
    """A float32 (n, C, H, W) input drawn from an explicit generator."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *net.input_shape), dtype=np.float32)


def find_probe_module(model: nn.Module, x: torch.Tensor, module_type: type, k: int) -> nn.Module:
    """The module instance making the k-th call of a ``module_type`` module in one forward."""
    calls: list[nn.Module] = []
    handles = [
        m.register_forward_hook(lambda mod, inp, out: calls.append(mod))
        for m in model.modules()
        if type(m) is module_type
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    if len(calls) <= k:
        raise LookupError(f"only {len(calls)} calls of {module_type.__name__}, wanted #{k}")
    if len(set(map(id, calls))) != len(calls):
        raise AssertionError(f"a {module_type.__name__} module is called twice in one forward")
    return calls[k]


def export_onnx(model: nn.Module, net: ZooNet, path: Path, fixed_batch: bool = False) -> Path:
    """Export ``model`` to ``path`` (opset 17, TorchScript exporter); dynamic batch unless
    ``fixed_batch``, in which case the graph's input and output have batch dimension 1."""
    x = torch.from_numpy(make_input(net, 1, seed=1234))
    kw = {} if fixed_batch else {"dynamic_axes": {"input": {0: "N"}, "logits": {0: "N"}}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
        torch.onnx.export(
            model, (x,), str(path), dynamo=False, opset_version=OPSET,
            input_names=["input"], output_names=["logits"], **kw,
        )  # fmt: skip
    return path


def probe_tensor_name(proto: onnx.ModelProto, op_type: str, k: int) -> str:
    """The first output of the k-th (0-based, graph order) node of ``op_type``."""
    nodes = [n for n in proto.graph.node if n.op_type == op_type]
    if len(nodes) <= k:
        raise LookupError(f"the graph has {len(nodes)} {op_type} nodes, wanted #{k}")
    return nodes[k].output[0]


@dataclass
class Exported:
    """A zoo net, its torch model and its ONNX export."""

    net: ZooNet
    model: nn.Module
    path: Path
    proto: onnx.ModelProto
    fixed_batch: bool
    probe_tensor: str


@dataclass
class ExportCache:
    """Exports each (net, fixed_batch) once into ``directory`` and keeps the result."""

    directory: Path
    _cache: dict[tuple[str, bool], Exported] = field(default_factory=dict)

    def get(self, name: str, fixed_batch: bool = False) -> Exported:
        key = (name, fixed_batch)
        if key not in self._cache:
            net = ZOO[name]
            model = net.build()
            path = self.directory / f"{name}{'-b1' if fixed_batch else ''}.onnx"
            export_onnx(model, net, path, fixed_batch)
            proto = onnx.load(str(path))
            tensor = probe_tensor_name(proto, net.probe[0], net.probe[2])
            self._cache[key] = Exported(net, model, path, proto, fixed_batch, tensor)
        return self._cache[key]
