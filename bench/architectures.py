"""The benchmarked architectures, defined in torch with seeded random frozen weights.

ImageNet-size nets at 3×224×224 (He-initialised weights, random BatchNorm statistics, eval mode):

- ``alexnet``: torchvision's AlexNet (no LRN, no grouped convs);
- ``caffenet``: the CaffeNet / original AlexNet layout (grouped convs, ONNX ``LRN``);
- ``googlenet``: GoogLeNet v1 (nine inception modules, LRN, ceil-mode pools);
- ``squeezenet``: SqueezeNet 1.1; ``vgg16`` / ``vgg11``: VGG configs D / A;
- ``resnet18``: ResNet-18 (torchvision's layout); ``mobilenetv2``: MobileNetV2 (torchvision's
  layout: depthwise 3×3 convs, ReLU6, inverted residuals).

:func:`build` makes one, :func:`export` writes its ONNX file (opset 17, TorchScript exporter,
dynamic batch; BatchNorm folds into the convs), :func:`count_macs` counts its conv and linear
multiply-accumulates. ``quick`` builds are 1/16 of the width at 32×32 (AlexNets 67×67).
"""

from __future__ import annotations

import warnings
from pathlib import Path

OPSET = 17
NETS = ("alexnet", "caffenet", "squeezenet", "resnet18", "mobilenetv2", "vgg16")
EXTRA_NETS = ("googlenet", "vgg11")


def _torch_nets():
    """Build the module classes lazily (torch is imported only where the nets are needed)."""
    import torch
    from torch import nn

    from pydevis.torch_export import LRN  # exports to the single ONNX LRN node

    def conv(cin, cout, k, s=1, p=0, g=1, bias=True):
        return nn.Conv2d(cin, cout, k, s, p, groups=g, bias=bias)

    class CaffeNet(nn.Module):
        """CaffeNet / AlexNet (Krizhevsky 2012) with its grouped convs and LRN, at 224²."""

        def __init__(self, width=1, classes=1000, size=224):
            super().__init__()
            c = [max(4, v // width) for v in (96, 256, 384, 384, 256)]
            self.features = nn.Sequential(
                conv(3, c[0], 11, 4, 2), nn.ReLU(), LRN(5, 1e-4, 0.75, 1.0), nn.MaxPool2d(3, 2),
                conv(c[0], c[1], 5, 1, 2, g=2), nn.ReLU(), LRN(5, 1e-4, 0.75, 1.0),
                nn.MaxPool2d(3, 2),
                conv(c[1], c[2], 3, 1, 1), nn.ReLU(),
                conv(c[2], c[3], 3, 1, 1, g=2), nn.ReLU(),
                conv(c[3], c[4], 3, 1, 1, g=2), nn.ReLU(), nn.MaxPool2d(3, 2))
            s = size
            s = (s + 4 - 11) // 4 + 1
            for _ in range(3):
                s = (s - 3) // 2 + 1
            fc = 4096 if width == 1 else 64
            self.classifier = nn.Sequential(
                nn.Dropout(), nn.Linear(c[4] * s * s, fc), nn.ReLU(), nn.Dropout(),
                nn.Linear(fc, fc), nn.ReLU(), nn.Linear(fc, classes))

        def forward(self, x):
            return self.classifier(torch.flatten(self.features(x), 1))

    class AlexNet(nn.Module):
        """torchvision's AlexNet (one-GPU variant: no LRN, no groups, 64-192-384-256-256)."""

        def __init__(self, width=1, classes=1000, size=224):
            super().__init__()
            c = [max(4, v // width) for v in (64, 192, 384, 256, 256)]
            self.features = nn.Sequential(
                conv(3, c[0], 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
                conv(c[0], c[1], 5, 1, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
                conv(c[1], c[2], 3, 1, 1), nn.ReLU(), conv(c[2], c[3], 3, 1, 1), nn.ReLU(),
                conv(c[3], c[4], 3, 1, 1), nn.ReLU(), nn.MaxPool2d(3, 2))
            s = (size + 4 - 11) // 4 + 1
            for _ in range(3):
                s = (s - 3) // 2 + 1
            self.pool = nn.AdaptiveAvgPool2d((s, s))  # torchvision's (6, 6) at 224²
            fc = 4096 if width == 1 else 64
            self.classifier = nn.Sequential(
                nn.Dropout(), nn.Linear(c[4] * s * s, fc), nn.ReLU(), nn.Dropout(),
                nn.Linear(fc, fc), nn.ReLU(), nn.Linear(fc, classes))

        def forward(self, x):
            return self.classifier(torch.flatten(self.pool(self.features(x)), 1))

    class Inception(nn.Module):
        def __init__(self, cin, c1, c3r, c3, c5r, c5, cp):
            super().__init__()
            self.b1 = nn.Sequential(conv(cin, c1, 1), nn.ReLU())
            self.b2 = nn.Sequential(conv(cin, c3r, 1), nn.ReLU(), conv(c3r, c3, 3, p=1), nn.ReLU())
            self.b3 = nn.Sequential(conv(cin, c5r, 1), nn.ReLU(), conv(c5r, c5, 5, p=2), nn.ReLU())
            self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), conv(cin, cp, 1),
                                    nn.ReLU())

        def forward(self, x):
            return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)

    class GoogLeNet(nn.Module):
        """GoogLeNet v1 (Szegedy 2014) without the auxiliary heads: LRN, 5×5 branches."""

        CFG = {"3a": (192, 64, 96, 128, 16, 32, 32), "3b": (256, 128, 128, 192, 32, 96, 64),
               "4a": (480, 192, 96, 208, 16, 48, 64), "4b": (512, 160, 112, 224, 24, 64, 64),
               "4c": (512, 128, 128, 256, 24, 64, 64), "4d": (512, 112, 144, 288, 32, 64, 64),
               "4e": (528, 256, 160, 320, 32, 128, 128),
               "5a": (832, 256, 160, 320, 32, 128, 128), "5b": (832, 384, 192, 384, 48, 128, 128)}

        def __init__(self, width=1, classes=1000):
            super().__init__()

            def w(v):
                return max(2, v // width)

            def inc(key):
                return Inception(*[w(v) for v in self.CFG[key]])

            self.stem = nn.Sequential(
                conv(3, w(64), 7, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
                LRN(5, 1e-4, 0.75, 1.0), conv(w(64), w(64), 1), nn.ReLU(),
                conv(w(64), w(192), 3, 1, 1), nn.ReLU(), LRN(5, 1e-4, 0.75, 1.0),
                nn.MaxPool2d(3, 2, ceil_mode=True))
            self.body = nn.Sequential(
                inc("3a"), inc("3b"), nn.MaxPool2d(3, 2, ceil_mode=True),
                inc("4a"), inc("4b"), inc("4c"), inc("4d"), inc("4e"),
                nn.MaxPool2d(3, 2, ceil_mode=True), inc("5a"), inc("5b"))
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.4),
                                      nn.Linear(w(1024), classes))

        def forward(self, x):
            return self.head(self.body(self.stem(x)))

    class Fire(nn.Module):
        def __init__(self, cin, s, e1, e3):
            super().__init__()
            self.squeeze = nn.Sequential(conv(cin, s, 1), nn.ReLU())
            self.e1 = nn.Sequential(conv(s, e1, 1), nn.ReLU())
            self.e3 = nn.Sequential(conv(s, e3, 3, p=1), nn.ReLU())

        def forward(self, x):
            x = self.squeeze(x)
            return torch.cat([self.e1(x), self.e3(x)], 1)

    class SqueezeNet(nn.Module):
        """SqueezeNet 1.1 (torchvision's definition)."""

        def __init__(self, width=1, classes=1000):
            super().__init__()

            def w(v):
                return max(2, v // width)

            self.features = nn.Sequential(
                conv(3, w(64), 3, 2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
                Fire(w(64), w(16), w(64), w(64)), Fire(w(128), w(16), w(64), w(64)),
                nn.MaxPool2d(3, 2, ceil_mode=True),
                Fire(w(128), w(32), w(128), w(128)), Fire(w(256), w(32), w(128), w(128)),
                nn.MaxPool2d(3, 2, ceil_mode=True),
                Fire(w(256), w(48), w(192), w(192)), Fire(w(384), w(48), w(192), w(192)),
                Fire(w(384), w(64), w(256), w(256)), Fire(w(512), w(64), w(256), w(256)))
            self.classifier = nn.Sequential(nn.Dropout(0.5), conv(w(512), classes, 1), nn.ReLU(),
                                            nn.AdaptiveAvgPool2d(1), nn.Flatten())

        def forward(self, x):
            return self.classifier(self.features(x))

    class VGG(nn.Module):
        """VGG-11 (config A) / VGG-16 (config D) with the 4096-wide classifier."""

        CFG = {11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
               16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                    512, 512, 512, "M"]}

        def __init__(self, depth=16, width=1, classes=1000, size=224):
            super().__init__()
            layers, cin = [], 3
            for v in self.CFG[depth]:
                if v == "M":
                    layers.append(nn.MaxPool2d(2, 2))
                    size //= 2
                else:
                    layers += [conv(cin, max(2, v // width), 3, 1, 1), nn.ReLU()]
                    cin = max(2, v // width)
            self.features = nn.Sequential(*layers)
            fc = 4096 if width == 1 else 64
            self.classifier = nn.Sequential(
                nn.Linear(cin * size * size, fc), nn.ReLU(), nn.Dropout(),
                nn.Linear(fc, fc), nn.ReLU(), nn.Dropout(), nn.Linear(fc, classes))

        def forward(self, x):
            return self.classifier(torch.flatten(self.features(x), 1))

    class Basic(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = conv(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = conv(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.r1, self.r2 = nn.ReLU(), nn.ReLU()
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(conv(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.r1(self.b1(self.c1(x)))
            y = self.b2(self.c2(y))
            return self.r2(y + (x if self.down is None else self.down(x)))

    class ResNet18(nn.Module):
        """ResNet-18 (He 2016, torchvision's layout)."""

        def __init__(self, width=1, classes=1000):
            super().__init__()
            c = [max(2, v // width) for v in (64, 128, 256, 512)]
            self.stem = nn.Sequential(conv(3, c[0], 7, 2, 3, bias=False), nn.BatchNorm2d(c[0]),
                                      nn.ReLU(), nn.MaxPool2d(3, 2, 1))
            blocks, cin = [], c[0]
            for i, cout in enumerate(c):
                blocks += [Basic(cin, cout, 1 if i == 0 else 2), Basic(cout, cout, 1)]
                cin = cout
            self.blocks = nn.Sequential(*blocks)
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      nn.Linear(cin, classes))

        def forward(self, x):
            return self.head(self.blocks(self.stem(x)))

    def cbr6(cin, cout, k, s=1, g=1):
        return [conv(cin, cout, k, s, (k - 1) // 2, g=g, bias=False), nn.BatchNorm2d(cout),
                nn.ReLU6()]

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, t):
            super().__init__()
            hid = cin * t
            layers = cbr6(cin, hid, 1) if t != 1 else []
            layers += cbr6(hid, hid, 3, stride, g=hid)
            layers += [conv(hid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
            self.body = nn.Sequential(*layers)
            self.skip = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.body(x) if self.skip else self.body(x)

    class MobileNetV2(nn.Module):
        """MobileNetV2 (Sandler 2018, torchvision's layout): depthwise 3×3 convs, ReLU6."""

        CFG = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1))

        def __init__(self, width=1, classes=1000):
            super().__init__()

            def w(v):
                return max(4, v // width)

            layers, cin = cbr6(3, w(32), 3, 2), w(32)
            for t, c, n, s in self.CFG:
                for i in range(n):
                    layers.append(InvertedResidual(cin, w(c), s if i == 0 else 1, t))
                    cin = w(c)
            layers += cbr6(cin, w(1280), 1)
            self.features = nn.Sequential(*layers)
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2),
                                      nn.Linear(w(1280), classes))

        def forward(self, x):
            return self.head(self.features(x))

    return {"alexnet": AlexNet, "caffenet": CaffeNet, "googlenet": GoogLeNet,
            "mobilenetv2": MobileNetV2, "squeezenet": SqueezeNet,
            "vgg16": lambda **k: VGG(16, **k), "vgg11": lambda **k: VGG(11, **k),
            "resnet18": ResNet18}


def build(name: str, quick: bool = False, seed: int = 0):
    """The torch net ``name`` with seeded random weights, eval mode, parameters frozen.

    ``quick``: 1/16 of the channels (AlexNet: 1/16 via width; inputs then 32×32 elsewhere)."""
    import torch
    from torch import nn

    nets = _torch_nets()
    if name not in nets:
        raise SystemExit(f"unknown net {name!r}; choose from {', '.join(nets)}")
    torch.manual_seed(seed)
    kw = {"width": 16, "classes": 10} if quick else {}
    if quick and name in ("alexnet", "caffenet", "vgg16", "vgg11"):
        kw["size"] = input_size(name, quick)
    model = nets[name](**kw)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(0.01 * torch.randn(m.bias.shape, generator=gen))
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def input_size(name: str, quick: bool) -> int:
    if not quick:
        return 224
    return 67 if name in ("alexnet", "caffenet") else 32


def export(model, path: Path, size: int) -> Path:
    """ONNX export, opset 17, TorchScript exporter, dynamic batch."""
    import torch

    x = torch.zeros(1, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    return path


def count_macs(model, x) -> dict:
    """Multiply-accumulates of the conv and linear layers for one forward of ``x``."""
    import torch
    from torch import nn

    total = {"conv": 0, "linear": 0}

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            total["conv"] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * \
                m.kernel_size[1]
        else:
            total["linear"] += out.numel() * m.in_features

    hs = [m.register_forward_hook(hook) for m in model.modules()
          if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(x)
    for h in hs:
        h.remove()
    total["total"] = total["conv"] + total["linear"]
    return total
