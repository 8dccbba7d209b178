"""Train one of pydevis's bundled CIFAR-10 classifiers, export it to ONNX and write its card.

    python models/train_cifar10.py --arch alexnet|inception|resnet [--seed 0] [--data PATH]

``--data`` is the project's JPEG archive (``../shared/datasets/cifar10/cifar10_jpeg_q75.npz``, the
default) or the standard CIFAR-10 python download, the ``cifar-10-batches-py`` folder (or the
folder that holds it). Images are decoded once into memory; nothing is written but
``models/cifar10_ARCH.onnx`` and its card ``cifar10_ARCH.onnx.json`` (``--out`` moves them).

Training runs on the CPU with one thread: SGD with Nesterov momentum, a one-cycle learning rate,
label smoothing, random 4-pixel-padded crops and horizontal flips, bfloat16 autocast for the
convolutions (the weights and the exported model stay float32). BatchNorm, used in all three nets
to train fast, is folded into the preceding convolution by the exporter, so the ONNX graphs hold
only Conv / Relu / LRN / MaxPool / Concat / Add / GlobalAveragePool / Gemm.
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from pydevis import torch_export

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "cifar10" / "cifar10_jpeg_q75.npz"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
OPSET = 17


# ------------------------------------------------------------------------------------- data
@dataclass
class Cifar:
    """Images as (N, 32, 32, 3) uint8 RGB, labels as int64, class names in label order."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    source: str


def _decode(jpeg: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(Image.open(io.BytesIO(jpeg[a:b].tobytes())).convert("RGB"))
                     for a, b in zip(offsets[:-1], offsets[1:], strict=True)])


def load_npz(path: Path) -> Cifar:
    """The project's archive: JPEG bytes + offsets + labels per split, and ``class_names``."""
    z = np.load(path)
    split = {s: (_decode(z[f"{s}_jpeg"], z[f"{s}_offsets"]), z[f"{s}_labels"].astype(np.int64))
             for s in ("train", "test")}
    classes = tuple(str(c) for c in z["class_names"]) if "class_names" in z.files else CLASSES
    return Cifar(*split["train"], *split["test"], classes, f"{path.name}: JPEG, quality ~75")


def _unpickle(path: Path) -> dict:
    with path.open("rb") as f:  # the official format is a pickle: only open files you trust
        return pickle.load(f, encoding="bytes")


def _batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path)
    x = np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), np.asarray(d[b"labels"], np.int64)


def load_batches_py(folder: Path) -> Cifar:
    """The official python download: ``data_batch_1..5``, ``test_batch``, ``batches.meta``."""
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    train = [_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
    x_test, y_test = _batch(folder / "test_batch")
    classes = CLASSES
    if (folder / "batches.meta").exists():
        classes = tuple(n.decode() for n in _unpickle(folder / "batches.meta")[b"label_names"])
    return Cifar(np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train]),
                 x_test, y_test, classes, "python pickles: the original pixels")


def load_data(path: Path) -> Cifar:
    """A ``cifar-10-batches-py`` folder (or its parent), else the project's ``.npz`` archive."""
    if path.is_dir():
        return load_batches_py(path)
    if path.suffix != ".npz":
        raise ValueError(f"{path}: expected the cifar10_jpeg_q75.npz archive or the extracted "
                         "cifar-10-batches-py folder (untar cifar-10-python.tar.gz first)")
    return load_npz(path)


def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random 32x32 crops of the 4-pixel zero-padded images, half of them mirrored."""
    n = len(x)
    padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
    dy, dx = rng.integers(0, 9, size=(2, n))
    r = np.arange(32)
    cols = dx[:, None] + np.where(rng.random(n)[:, None] < 0.5, 31 - r, r)
    return padded[np.arange(n)[:, None, None], (dy[:, None] + r)[:, :, None], cols[:, None, :]]


# ------------------------------------------------------------------------------------- nets
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


# ------------------------------------------------------------------------------------- training
def _to_input(x: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(N, 32, 32, 3) uint8 → (N, 3, 32, 32) float32 in channels-last memory."""
    return (torch.from_numpy(x).permute(0, 3, 1, 2).float() - mean) / std


def _optimizer(model: nn.Module, lr: float, wd: float) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)


def one_cycle(step: int, total: int, warmup: float = 0.2) -> float:
    """Learning-rate factor: linear 0.1 → 1 over the first ``warmup`` of steps, then 1 → 0."""
    t = step / total
    return 0.1 + 0.9 * t / warmup if t < warmup else (1.0 - t) / (1.0 - warmup)


def train_epoch(model, data: Cifar, args, mean, std, opt, sched, rng) -> tuple[float, float]:
    """One pass over the shuffled, augmented training set: (mean loss, accuracy)."""
    model.train()
    perm, loss_sum, correct = rng.permutation(len(data.x_train)), 0.0, 0
    steps = len(perm) // args.batch
    for i in range(steps):
        idx = perm[i * args.batch:(i + 1) * args.batch]
        x = _to_input(augment(data.x_train[idx], rng), mean, std)
        y = torch.from_numpy(data.y_train[idx])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            out = model(x)
        loss = F.cross_entropy(out.float(), y, label_smoothing=args.smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_sum += loss.item()
        correct += int((out.argmax(1) == y).sum())
    return loss_sum / steps, correct / (steps * args.batch)


def train(model: nn.Module, data: Cifar, args, mean, std) -> None:
    rng = np.random.default_rng(args.seed)
    opt = _optimizer(model, args.lr, args.wd)
    steps = args.epochs * (len(data.x_train) // args.batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: one_cycle(s, steps))
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        loss, acc = train_epoch(model, data, args, mean, std, opt, sched, rng)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss:.3f}, train acc {acc:.3f}, "
              f"{time.perf_counter() - t0:.0f} s", flush=True)


@torch.no_grad()
def logits(model: nn.Module, x: np.ndarray, mean, std, batch: int = 1000) -> np.ndarray:
    model.eval()
    return np.concatenate([model(_to_input(x[i:i + batch], mean, std)).numpy()
                           for i in range(0, len(x), batch)])


# ------------------------------------------------------------------------------------- export
def export(model: nn.Module, path: Path) -> onnx.ModelProto:
    """ONNX opset 17, dynamic batch; eval-mode export folds every BatchNorm into its Conv."""
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notes
        torch.onnx.export(
            model, (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False, opset_version=OPSET,
            input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
        )  # fmt: skip
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    ops = {n.op_type for n in proto.graph.node}
    if "BatchNormalization" in ops:
        raise RuntimeError(f"{path}: a BatchNorm was not folded into its Conv")
    return proto


def onnx_predict(path: Path, x: np.ndarray, mean, std, batch: int = 1000) -> np.ndarray:
    """Logits of the exported file under ONNX Runtime (what pydevis runs)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"input": _to_input(x[i:i + batch], mean, std)
                                           .contiguous().numpy()})[0]
                           for i in range(0, len(x), batch)])


def write_card(path: Path, args, data: Cifar, mean, std, accuracy: float, params: int) -> None:
    command = " ".join(["python models/train_cifar10.py", *command_line(args)])
    card = {
        "size": [32, 32], "channels": "RGB",
        "mean": [round(float(v), 2) for v in mean.flatten()],
        "std": [round(float(v), 2) for v in std.flatten()],
        "crop_fraction": 1.0, "labels": "cifar10_labels.txt",
        "resize": "none for 32x32 CIFAR images; others: shorter side to 32, then centre crop",
        "dataset": f"CIFAR-10 (official 50k train / 10k test split, {data.source})",
        "output": "pre-softmax scores over the 10 CIFAR-10 classes, in cifar10_labels.txt order",
        "test_accuracy": round(accuracy, 4), "training_command": command,
        "epochs": args.epochs, "params": params,
        "architecture": DESCRIPTIONS[args.arch] + "; BatchNorm folded into the convolutions",
    }  # fmt: skip
    path.with_name(path.name + ".json").write_text(json.dumps(card, indent=1) + "\n")


# ------------------------------------------------------------------------------------- main
EPOCHS = {"alexnet": 8, "inception": 8, "resnet": 8}


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", choices=sorted(ARCHS), required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help="cifar10_jpeg_q75.npz or the cifar-10-batches-py folder")
    ap.add_argument("--out", type=Path, default=ROOT / "models", help="folder for .onnx + card")
    ap.add_argument("--epochs", type=int, help=f"default: the bundled model's ({EPOCHS})")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=0.2, help="peak learning rate")
    ap.add_argument("--wd", type=float, default=5e-4, help="weight decay (conv/linear weights)")
    ap.add_argument("--smoothing", type=float, default=0.1, help="label smoothing")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--no-bf16", dest="bf16", action="store_false", help="train in float32")
    args = ap.parse_args(argv)
    args.epochs = args.epochs or EPOCHS[args.arch]
    return args


def command_line(args: argparse.Namespace) -> list[str]:
    """``--arch``, ``--seed`` and every option that differs from its default."""
    defaults = vars(parse(["--arch", args.arch]))
    words = [f"--arch {args.arch}", f"--seed {args.seed}"]
    for key, value in vars(args).items():
        if key in ("arch", "seed", "out", "threads") or value == defaults[key]:
            continue
        words.append("--no-bf16" if key == "bf16" else f"--{key} {value}")
    return words


def main(argv=None) -> float:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)
    t0, c0 = time.perf_counter(), time.process_time()
    data = load_data(args.data)
    if data.classes != CLASSES:
        raise ValueError(f"{args.data}: unexpected class order {data.classes}")
    pixels = data.x_train.reshape(-1, 3).astype(np.float64)
    mean = torch.tensor(np.round(pixels.mean(0), 2), dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(np.round(pixels.std(0), 2), dtype=torch.float32).view(1, 3, 1, 1)
    print(f"{args.data}: {len(data.x_train)} train / {len(data.x_test)} test images, "
          f"decoded in {time.perf_counter() - t0:.0f} s", flush=True)
    model = ARCHS[args.arch]().to(memory_format=torch.channels_last)
    train(model, data, args, mean, std)
    expected = logits(model, data.x_test, mean, std)
    path = args.out / f"cifar10_{args.arch}.onnx"
    proto = export(model.to(memory_format=torch.contiguous_format), path)
    got = onnx_predict(path, data.x_test, mean, std)
    gap = float(np.abs(got - expected).max())
    if gap > 1e-4 * float(np.abs(expected).max()):
        raise RuntimeError(f"{path}: ONNX Runtime logits differ from torch's by {gap:.3g}")
    accuracy = float((got.argmax(1) == data.y_test).mean())
    torch_acc = float((expected.argmax(1) == data.y_test).mean())
    params = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
    write_card(path, args, data, mean, std, accuracy, params)
    print(f"{path.name}: {params} parameters, {path.stat().st_size / 1e6:.2f} MB; test accuracy "
          f"{accuracy:.4f} (onnxruntime), {torch_acc:.4f} (torch, max logit gap {gap:.2g}); "
          f"{time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU")
    return accuracy


if __name__ == "__main__":
    main()
