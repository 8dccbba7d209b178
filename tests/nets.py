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

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from pydevis.torch_export import LRN

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


class ReLU6R(nn.ReLU):
    """ReLU6 as an ``nn.ReLU`` subclass: exports to ``Clip(0, 6)``, Captum treats it as a ReLU."""

    upper = 6.0  # the clip's upper bound, read by the tests' rectifier override

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.hardtanh(x, 0.0, 6.0)


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


# --------------------------------------------------------------------------- the architectures


class LeNet(nn.Module):
    """conv-relu-maxpool x2, Flatten, Linear-relu-Linear (1x32x28 -> 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.relu1, self.pool1 = nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2)
        self.conv2, self.relu2, self.pool2 = nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2)
        self.fc1, self.relu3, self.fc2 = nn.Linear(16 * 5 * 4, 48), nn.ReLU(), nn.Linear(48, 10)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc2(self.relu3(self.fc1(torch.flatten(x, 1))))


class AlexNetS(nn.Module):
    """Strided padded conv, LRN, overlapping 3x3/2 max-pool, dropout, view(N, -1) (3x37x29 -> 7)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 12, 5, stride=2, padding=2),  # 19x15
            nn.ReLU(),
            LRN(5, alpha=0.5, beta=0.75, k=1.0),
            nn.MaxPool2d(3, 2),  # 9x7
            nn.Conv2d(12, 24, 3, padding=1),
            nn.ReLU(),
            LRN(5, alpha=0.3, beta=0.75, k=2.0),
            nn.MaxPool2d(3, 2),  # 4x3
            nn.Conv2d(24, 20, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(20, 16, 3, padding=1),
            nn.ReLU(),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(16 * 4 * 3, 40), nn.ReLU(), nn.Dropout(0.5), nn.Linear(40, 7)
        )

    def forward(self, x):
        x = self.features(x)
        return self.classifier(x.view(x.size(0), -1))


class VGGS(nn.Module):
    """3x3 conv stacks with BatchNorm (one BN after the ReLU, so export cannot fold it)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(8),
            nn.MaxPool2d(2),  # 18x14
            nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(),
            nn.Conv2d(12, 12, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(12),
            nn.MaxPool2d(2),  # 9x7
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(12 * 9 * 7, 32), nn.BatchNorm1d(32), nn.ReLU(),
            nn.Linear(32, 10),
        )  # fmt: skip

    def forward(self, x):
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1, self.relu1 = nn.BatchNorm2d(cout), nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2, self.relu2 = nn.BatchNorm2d(cout), nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + self.shortcut(x))


class ResNetS(nn.Module):
    """Stem, an identity block, a stride-2 block with 1x1 projection, global pool (-> 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU())  # fmt: skip
        self.block1 = BasicBlock(8, 8, 1)
        self.block2 = BasicBlock(8, 12, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        x = self.block2(self.block1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def _conv_relu(cin: int, cout: int, k: int, **kw) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, **kw), nn.ReLU())


class Inception(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.b1 = _conv_relu(cin, 8, 1)
        self.b2 = nn.Sequential(_conv_relu(cin, 6, 1), _conv_relu(6, 8, 3, padding=1))
        self.b3 = nn.Sequential(_conv_relu(cin, 4, 1), _conv_relu(4, 6, 5, padding=2))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, padding=1), _conv_relu(cin, 6, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class InceptionS(nn.Module):
    """GoogLeNet miniature: stem, one inception module (1x1 | 3x3 | 5x5 | pool) (-> 7)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv_relu(3, 12, 3, padding=1),
                                  nn.MaxPool2d(3, 2, ceil_mode=True))  # fmt: skip
        self.inception = Inception(12)  # 28 channels
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.gap, self.drop, self.fc = nn.AdaptiveAvgPool2d(1), nn.Dropout(0.4), nn.Linear(28, 7)

    def forward(self, x):
        x = self.gap(self.pool(self.inception(self.stem(x))))
        return self.fc(self.drop(torch.flatten(x, 1)))


class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, e1: int, e3: int) -> None:
        super().__init__()
        self.squeeze = _conv_relu(cin, squeeze, 1)
        self.expand1 = _conv_relu(squeeze, e1, 1)
        self.expand3 = _conv_relu(squeeze, e3, 3, padding=1)

    def forward(self, x):
        x = self.squeeze(x)
        return torch.cat([self.expand1(x), self.expand3(x)], 1)


class SqueezeNetS(nn.Module):
    """Fire modules, ceil_mode max-pool, final 1x1 conv classifier + global average pool."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(),  # 18x14
            nn.MaxPool2d(3, 2, ceil_mode=True),  # 9x7 (floor mode would give 8x6)
            Fire(16, 4, 8, 8), Fire(16, 6, 8, 8),
            nn.MaxPool2d(3, 2, ceil_mode=True),  # 4x3
            Fire(16, 6, 12, 12),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Conv2d(24, 10, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1)
        )

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.body = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), ReLU6R(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), ReLU6R(),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )  # fmt: skip

    def forward(self, x):
        return x + self.body(x) if self.use_res else self.body(x)


class MobileNetV2S(nn.Module):
    """Depthwise convs, ReLU6 (-> Clip), inverted residual Add (-> 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8),
                                  ReLU6R())  # fmt: skip
        self.blocks = nn.Sequential(InvertedResidual(8, 8, 1, 3), InvertedResidual(8, 16, 2, 3))
        self.head = nn.Sequential(nn.Conv2d(16, 40, 1, bias=False), nn.BatchNorm2d(40), ReLU6R())
        self.pool, self.drop, self.fc = nn.AdaptiveAvgPool2d(1), nn.Dropout(0.2), nn.Linear(40, 10)

    def forward(self, x):
        x = self.pool(self.head(self.blocks(self.stem(x))))
        return self.fc(self.drop(torch.flatten(x, 1)))


class SEConv(nn.Module):
    """Squeeze-excitation with 1x1 convs: GlobalAveragePool, Conv, Relu, Conv, Sigmoid, Mul."""

    def __init__(self, c: int, r: int) -> None:
        super().__init__()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.relu, self.fc2 = nn.Conv2d(c, r, 1), nn.ReLU(), nn.Conv2d(r, c, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        return x * self.gate(self.fc2(self.relu(self.fc1(self.gap(x)))))


class SELinear(nn.Module):
    """Squeeze-excitation with Linear layers and a HardSigmoid gate (MobileNetV3 style)."""

    def __init__(self, c: int, r: int) -> None:
        super().__init__()
        self.fc1, self.relu, self.fc2 = nn.Linear(c, r), nn.ReLU(), nn.Linear(r, c)
        self.gate = nn.Hardsigmoid()

    def forward(self, x):
        s = x.mean(dim=(2, 3))
        s = self.gate(self.fc2(self.relu(self.fc1(s))))
        return x * s.view(s.size(0), s.size(1), 1, 1)


class SENetS(nn.Module):
    """SE blocks, HardSwish, LeakyReLU, AvgPool (count_include_pad both ways), dilated groups."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 12, 3, padding=1)
        self.bn1, self.relu1 = nn.BatchNorm2d(12), nn.ReLU()
        self.conv2 = nn.Conv2d(12, 12, 3, padding=2, dilation=2, groups=3)
        self.leaky = nn.LeakyReLU(0.1)
        self.se1 = SEConv(12, 5)
        self.hswish1 = nn.Hardswish()
        self.pool1 = nn.AvgPool2d(3, 2, padding=1, count_include_pad=True)  # 19x15
        self.conv3 = nn.Conv2d(12, 16, 3)  # 17x13
        self.hswish2 = nn.Hardswish()
        self.pool2 = nn.AvgPool2d(3, 2, padding=1, count_include_pad=False)  # 9x7
        self.se2 = SELinear(16, 6)
        self.gap, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(16, 7)

    def forward(self, x):
        x = self.leaky(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        x = self.pool1(self.hswish1(self.se1(x)))
        x = self.se2(self.pool2(self.hswish2(self.conv3(x))))
        return self.fc(torch.flatten(self.gap(x), 1))


class SoftmaxNetS(nn.Module):
    """A classifier whose graph ends in Softmax / LogSoftmax; ``pre_softmax`` gives the logits."""

    def __init__(self, log: bool = False) -> None:
        super().__init__()
        self.pre_softmax = nn.Sequential(
            nn.Conv2d(3, 10, 3, stride=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(10, 14, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(14, 7),
        )  # fmt: skip
        self.final = nn.LogSoftmax(dim=1) if log else nn.Softmax(dim=1)

    def forward(self, x):
        return self.final(self.pre_softmax(x))


class MiscOpsS(nn.Module):
    """Sub/Div, Pad, PRelu, channel shuffle, Split, Tanh, strided Slice, ReduceMean, Unsqueeze,
    MatMul, Squeeze, Gemm (alpha, beta), GlobalMaxPool."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 12, 3)
        self.prelu = nn.PReLU(12)
        self.conv2 = nn.Conv2d(12, 10, 3, padding=1, groups=2)
        self.relu = nn.ReLU()
        self.tanh = nn.Tanh()
        self.gmp = nn.AdaptiveMaxPool2d(1)
        self.w_mm = nn.Parameter(0.3 * torch.randn(10, 16))
        self.w_gemm = nn.Parameter(0.2 * torch.randn(16, 9))
        self.b_gemm = nn.Parameter(0.1 * torch.randn(9))
        self.fc = nn.Linear(9 + 10, 10)

    def forward(self, x):
        x = (x - 0.25) / 1.5
        x = F.pad(x, (1, 2, 2, 0), value=0.5)  # 3x39x32
        x = self.prelu(self.conv1(x))  # 12x37x30
        n, c, h, w = x.shape
        x = x.view(n, 3, c // 3, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        a, b = torch.split(x, [5, 7], dim=1)
        x = torch.cat([self.tanh(a), self.relu(b)], 1)
        x = self.conv2(x[:, :, 1:-2, ::2])  # 10x34x15
        v = x.mean(dim=(2, 3)).unsqueeze(1)  # N x 1 x 10
        v = torch.matmul(v, self.w_mm).squeeze(1)  # N x 16
        v = torch.addmm(self.b_gemm, v, self.w_gemm, beta=0.5, alpha=2.0)  # N x 9
        return self.fc(torch.cat([v, torch.flatten(self.gmp(x), 1)], 1))


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
        ZooNet("lenet", LeNet, (1, 32, 28), 10, ("Relu", nn.ReLU, 1), fixed_batch=True),
        ZooNet("alexnet", AlexNetS, _RGB, 7, ("Relu", nn.ReLU, 1), fixed_batch=True, seed=1),
        ZooNet("vgg", VGGS, _RGB, 10, ("Relu", nn.ReLU, 1), seed=2),
        ZooNet("resnet", ResNetS, _RGB, 10, ("Relu", nn.ReLU, 2), seed=3),
        ZooNet("inception", InceptionS, _RGB, 7, ("Concat", Inception, 0), seed=4),
        ZooNet("squeezenet", SqueezeNetS, _RGB, 10, ("Relu", nn.ReLU, 3), seed=5,
               init=_squeezenet_init),  # fmt: skip
        ZooNet("mobilenetv2", MobileNetV2S, _RGB, 10, ("Clip", ReLU6R, 1), seed=6,
               init=_mobilenet_init),  # fmt: skip
        ZooNet("senet", SENetS, _RGB, 7, ("LeakyRelu", nn.LeakyReLU, 0), seed=7),
        ZooNet("softmax", SoftmaxNetS, (3, 35, 27), 7, ("Relu", nn.ReLU, 1), softmax="Softmax",
               seed=8),  # fmt: skip
        ZooNet("logsoftmax", lambda: SoftmaxNetS(log=True), (3, 35, 27), 7, ("Relu", nn.ReLU, 0),
               softmax="LogSoftmax", seed=9),  # fmt: skip
        ZooNet("miscops", MiscOpsS, _RGB, 10, ("PRelu", nn.PReLU, 0), seed=10, init=_prelu_init),
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
