"""``PYDEVIS_BACKEND=ort``: ``pydevis.load`` defaults to ``backend="ort"`` (signals from the
exported backward graph in ONNX Runtime) while the kernels still called take the default order;
an unknown value still fails loudly. Through the installed command, in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import pytest

import pydevis
from pydevis import kernels
from pydevis.errors import BackendError
from pydevis.kernels import _dispatch
from tiny import tiny_classifier


def _cli(*args, backend: str):
    env = dict(os.environ, PYDEVIS_BACKEND=backend)
    p = subprocess.run([sys.executable, "-c", "from pydevis.cli import main; main()",
                        *map(str, args)], capture_output=True, text=True, env=env, timeout=300,
                       cwd=tempfile.gettempdir())
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_classifier(tmp_path_factory.mktemp("ortenv") / "tiny.onnx")


def test_visualize_with_ort_env(tiny, tmp_path):
    rc, _, err = _cli("visualize", tiny, "--class", "2", "--method", "gradient", "--steps", "3",
                      "--out", tmp_path, "--quiet", backend="ort")
    assert rc == 0, err
    sides = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert sides and all(s["signal_backend"] == "ort" for s in sides), sides
    # the kernels the ascent still calls ran on an ordinary kernel backend
    assert all(s["backend"] in ("cpp", "numba") for s in sides), sides
    rc, out, err = _cli("info", tiny, "--json", backend="ort")
    assert rc == 0, err
    info = json.loads(out)
    assert info["signal_backend"] == "ort" and info["backend"] in ("cpp", "numba")


@pytest.mark.parametrize("cmd", [["info"], ["visualize", "--class", "1", "--steps", "2"]])
def test_invalid_env_fails_loudly(tiny, tmp_path, cmd):
    args = [cmd[0], tiny, *cmd[1:]] + (["--out", tmp_path] if cmd[0] == "visualize" else [])
    rc, _, err = _cli(*args, backend="tensorflow")
    assert rc == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "PYDEVIS_BACKEND" in err and "ort" in err, err
    assert not list(tmp_path.glob("*.png"))


def test_env_in_process(tiny, monkeypatch):
    monkeypatch.setenv("PYDEVIS_BACKEND", "ort")
    assert _dispatch.forced() is None and _dispatch.signal_backend() == "ort"
    assert kernels.backend() in ("cpp", "numba")  # the default kernel order
    assert pydevis.load(tiny).signal_backend == "ort"
    assert pydevis.load(tiny, backend="pydevis").signal_backend == "pydevis"  # explicit wins
    monkeypatch.setenv("PYDEVIS_BACKEND", "cpp")
    assert pydevis.load(tiny).signal_backend == "pydevis"
    monkeypatch.setenv("PYDEVIS_BACKEND", " ORT ")
    assert pydevis.load(tiny).signal_backend == "ort"
    monkeypatch.setenv("PYDEVIS_BACKEND", "tensorflow")
    with pytest.raises(BackendError, match="cpp, numba, cuda, ort"):
        pydevis.load(tiny)
    with pytest.raises(BackendError):
        kernels.backend()
