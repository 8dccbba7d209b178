"""Helpers of the hostile-input suite (tests/test_hostile_*.py): the real CLI in a subprocess,
the checks every refusal must pass, and small hostile ONNX models built with onnx.helper."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CLI = "from pydevis.cli import main; main()"


def run_cli(*args, prelude: str = "", timeout: float = 300, cwd=None):
    """``pydevis ARGS`` in a fresh interpreter: (exit code, stdout, stderr). ``prelude`` is
    Python run before the CLI in that interpreter (to simulate a full disk, for example)."""
    code = f"{prelude}\n{CLI}" if prelude else CLI
    p = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                       text=True, env=os.environ.copy(), timeout=timeout, cwd=cwd)
    return p.returncode, p.stdout, p.stderr


def assert_user_error(result, *fragments: str) -> str:
    """Exit code 2, one line on stderr starting with ``error:`` and holding every fragment, the
    process ended normally (no signal, no traceback)."""
    code, _, err = result
    assert code == 2, f"exit code {code} (a negative code is a signal), stderr: {err}"
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for f in fragments:
        assert f in lines[0], f"{f!r} not in {lines[0]!r}"
    return lines[0]


def assert_ok(result) -> str:
    code, out, err = result
    assert code == 0, f"exit code {code}, stderr: {err}"
    assert "Traceback" not in err and "Warning" not in err, err
    return out


def leftovers(folder: Path) -> list[str]:
    """Temp files (``.tmp-*``) anywhere under ``folder``."""
    return sorted(str(p) for p in Path(folder).rglob(".tmp-*")) if Path(folder).exists() else []


def files(folder: Path) -> list[str]:
    """Every file under ``folder`` (relative), empty if it does not exist."""
    folder = Path(folder)
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# ---- models ----------------------------------------------------------------------------------
def save_model(path: Path, nodes, inp, out, inits: dict, opset: int = 17, domains=(),
               check: bool = True, card: dict | None = None) -> Path:
    graph = helper.make_graph(nodes, path.stem, [inp], [out],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, ir_version=8,
                              opset_imports=[helper.make_opsetid("", opset), *domains])
    if check:
        onnx.checker.check_model(model)
    onnx.save(model, path)
    if card is not None:
        path.with_name(path.name + ".json").write_text(json.dumps(card))
    return path


def convnet(path: Path, middle=(), shape=("N", 3, 8, 8), classes: int = 5, opset: int = 17,
            domains=(), weight=None, elem=TensorProto.FLOAT, card: dict | None = None,
            check: bool = True) -> Path:
    """input → Conv "conv" (→ c) → ``middle`` nodes (the last one's output is "a"; default: a
    Relu)
    → GlobalAveragePool → Flatten → (N, classes) output "y"."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((classes, shape[1], 3, 3)).astype(np.float32) if weight is None \
        else weight
    middle = list(middle) or [helper.make_node("Relu", ["c"], ["a"], name="relu")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             *middle, helper.make_node("GlobalAveragePool", ["a"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["y"], name="flatten")]
    return save_model(path, nodes, helper.make_tensor_value_info("x", elem, list(shape)),
                      helper.make_tensor_value_info("y", elem, ["N", classes]), {"w": w},
                      opset, domains, check, card)


def exp_model(path: Path, classes: int = 3, scale: float = 60.0) -> Path:
    """Scores exp(scale · GAP(1×1 conv(x))): finite at the mean image, overflowing to +Inf (and
    its gradient with it) a few ascent steps later."""
    rng = np.random.default_rng(1)
    inits = {"w": rng.standard_normal((classes, 3, 1, 1)).astype(np.float32),
             "s": np.array(scale, np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("GlobalAveragePool", ["c"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Mul", ["f", "s"], ["z"]),
             helper.make_node("Exp", ["z"], ["y"])]
    return save_model(path, nodes,
                      helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6]),
                      helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes]),
                      inits, card={"labels": [f"c{i}" for i in range(classes)]})
