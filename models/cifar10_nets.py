"""The three bundled CIFAR-10 architectures (AlexNet-, GoogLeNet- and ResNet-style), trained by
``train_cifar10.py``; BatchNorm is folded into the convolutions on export."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pydevis import torch_export


class LRN(torch_export.LRN):
    """``x / (k + alpha/size * sum of x^2 over size channels)^beta``, exported as ONNX ``LRN``.

    The channel-window sum is a 1x1 convolution with a band matrix: the same values as
    ``F.local_response_norm`` (zero padding, divisor ``size``), several times faster to train.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            return super().forward(x)  # the single ONNX LRN node
        c = torch.arange(x.shape[1])
        band = ((c[:, None] - c[None, :]).abs() <= self.size // 2).to(x.dtype)
        window = F.conv2d(x * x, band[:, :, None, None])
        return x * (self.k + self.alpha / self.size * window).pow(-self.beta)


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    """Conv (no bias) + BatchNorm (+ ReLU): one Conv (+ Relu) node once exported."""
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)


class AlexNet(nn.Module):
    """AlexNet for 32x32: conv5-LRN-pool, conv5-LRN-pool, conv3 x3, pool, FC-FC-FC with dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(3, 32, 5), LRN(5, alpha=1.0, beta=0.75, k=1.0), nn.MaxPool2d(3, 2, 1),  # 16
            conv_bn(32, 64, 5), LRN(5, alpha=1.0, beta=0.75, k=1.0), nn.MaxPool2d(3, 2, 1),  # 8
            conv_bn(64, 128, 3), conv_bn(128, 96, 3), conv_bn(96, 64, 3),
            nn.MaxPool2d(3, 2),  # 3x3
        )
        self.classifier = nn.Sequential(
            nn.Dropout(0.3), nn.Linear(64 * 3 * 3, 192), nn.ReLU(),
            nn.Dropout(0.3), nn.Linear(192, 192), nn.ReLU(), nn.Linear(192, 10),
        )  # fmt: skip

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class Inception(nn.Module):
    """GoogLeNet module: 1x1 | 1x1-3x3 | 1x1-5x5 | maxpool 3x3/1-1x1, concatenated."""

    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, cp: int) -> None:
        super().__init__()
        self.b1 = conv_bn(cin, c1, 1)
        self.b2 = nn.Sequential(conv_bn(cin, c3r, 1), conv_bn(c3r, c3, 3))
        self.b3 = nn.Sequential(conv_bn(cin, c5r, 1), conv_bn(c5r, c5, 5))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn(cin, cp, 1))
        self.out_channels = c1 + c3 + c5 + cp

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class GoogLeNet(nn.Module):
    """Stem conv3-pool-conv3, inception, pool, inception x2, global average pool, FC."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 32, 3), nn.MaxPool2d(3, 2, 1), conv_bn(32, 64, 3))
        self.i3a = Inception(64, 32, 48, 64, 8, 16, 16)  # 16x16 -> 128
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.i4a = Inception(128, 48, 64, 96, 16, 32, 16)  # 8x8 -> 192
        self.i4b = Inception(192, 80, 64, 112, 16, 32, 32)  # 8x8 -> 256
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(256, 10)

    def forward(self, x):
        x = self.i4b(self.i4a(self.pool(self.i3a(self.stem(x)))))
        return self.fc(torch.flatten(self.gap(x), 1))


class BasicBlock(nn.Module):
    """relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)); 1x1 projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, cout, 3, stride), conv_bn(cout, cout, 3, relu=False))
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = conv_bn(cin, cout, 1, stride, relu=False)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet for 32x32: stem, one basic block per stage (widths ``w``), global pool, FC."""

    def __init__(self, w: tuple[int, ...] = (24, 48, 96)) -> None:
        super().__init__()
        self.stem = conv_bn(3, w[0], 3)
        strides = [1] + [2] * (len(w) - 1)
        cins = (w[0], *w[:-1])
        self.stages = nn.Sequential(
            *[BasicBlock(a, b, s) for a, b, s in zip(cins, w, strides, strict=True)])
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w[-1], 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.gap(self.stages(self.stem(x))), 1))


ARCHS = {"alexnet": AlexNet, "inception": GoogLeNet, "resnet": ResNet}
DESCRIPTIONS = {  # the cards' "architecture"
    "alexnet": "AlexNet-style: conv5x5 32, LRN, maxpool 3/2; conv5x5 64, LRN, maxpool 3/2; "
               "conv3x3 128, 96, 64; maxpool 3/2; FC 576-192-192-10 with dropout 0.3",
    "inception": "GoogLeNet-style: stem conv3x3 32, maxpool 3/2, conv3x3 64; inception 3a (128) "
                 "at 16x16; maxpool 3/2; inception 4a (192), 4b (256) at 8x8; global average "
                 "pool; FC 256-10",
    "resnet": "ResNet-8: stem conv3x3 24; basic blocks of 24, 48, 96 channels (stride 2 and 1x1 "
              "projection shortcuts in the last two); global average pool; FC 96-10",
}  # fmt: skip
