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
import json
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

# the script's siblings (python models/train_cifar10.py puts models/ on the path)
from cifar10_data import CLASSES, Cifar, augment, load_data
from cifar10_nets import ARCHS, DESCRIPTIONS

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "cifar10" / "cifar10_jpeg_q75.npz"
OPSET = 17


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
