"""The architectures of the torch-oracle zoo (``nets.py`` builds, seeds and exports them):
miniatures of LeNet, AlexNet, VGG, ResNet, GoogLeNet, SqueezeNet, MobileNetV2, SE/MobileNetV3
and ShuffleNet-like plumbing, written to the rules in ``nets.py``'s doc (every rectifier an
``nn.ReLU`` module used once, ReLU6 as :class:`ReLU6R`, LRN as
:class:`pydevis.torch_export.LRN`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pydevis.torch_export import LRN


class ReLU6R(nn.ReLU):
    """ReLU6 as an ``nn.ReLU`` subclass: exports to ``Clip(0, 6)``, Captum treats it as a ReLU."""

    upper = 6.0  # the clip's upper bound, read by the tests' rectifier override

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.hardtanh(x, 0.0, 6.0)



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
