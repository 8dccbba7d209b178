"""Kill and resume (issue 7, item 6): an experiment SIGKILLed at random moments, several times in
a row, then resumed, ends with exactly the results of an uninterrupted run: no duplicate rows,
no temp files, every saved file whole."""

from __future__ import annotations

import csv
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image

from hostile import leftovers
from tiny import tiny_classifier

pytestmark = pytest.mark.slow

CONFIG = '''out = "{out}"
seed = 5
generators = ["g.onnx"]
scorers = ["s.onnx"]
classes = [0, "thing 3", "random:2"]
methods = [{{ name = "gradient", steps = 12 }}, {{ name = "deconv-prior", steps = 8 }}]
batch_size = 1
sanity = true
bootstrap = 20
'''
RUN = "from pydevis.evaluation.experiment import run_experiment; run_experiment({!r})"
COUNTER = itertools.count()


def _start(cfg: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", RUN.format(str(cfg))], env=os.environ.copy(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _rows(run: Path) -> list[dict]:
    with open(run / "results.csv") as f:
        return sorted(csv.DictReader(f), key=lambda r: (r["image"], r["scoring_model"]))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, and how long it took (kill moments are fractions of that)."""
    d = tmp_path_factory.mktemp("resume")
    tiny_classifier(d / "g.onnx", seed=0)
    tiny_classifier(d / "s.onnx", seed=1)
    cfg = d / "reference.toml"
    cfg.write_text(CONFIG.format(out="reference"))
    start = time.monotonic()
    proc = _start(cfg)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()
    return d, _rows(d / "reference"), time.monotonic() - start


def _check_whole(run: Path) -> None:
    """Every file that is not a temp file is complete: PNGs decode, JSON parses."""
    for p in run.rglob("*"):
        if not p.is_file() or p.name.startswith(".tmp-"):
            continue
        if p.suffix == ".png":
            with Image.open(p) as im:
                im.load()
        elif p.suffix == ".json":
            json.loads(p.read_text())


@settings(max_examples=2, deadline=None, database=None, phases=[Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(kills=st.lists(st.floats(0.2, 1.0), min_size=3, max_size=5))
def test_sigkill_at_random_moments_then_resume(reference, kills):
    d, want, duration = reference
    name = f"killed{next(COUNTER)}"
    cfg = d / f"{name}.toml"
    cfg.write_text(CONFIG.format(out=name))
    run = d / name
    done = 0
    for frac in kills:
        proc = _start(cfg)
        try:
            proc.wait(timeout=frac * duration)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        # a finished run exits 0; a killed one dies by the signal, never by an error of its own
        assert proc.returncode in (0, -signal.SIGKILL), err.decode()
        if run.exists():
            _check_whole(run)
            markers = len(list(run.rglob("chunk*.json")))
            assert markers >= done  # finished chunks are never lost
            done = markers
    proc = _start(cfg)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()
    got = _rows(run)
    key = [(r["image"], r["scoring_model"]) for r in got]
    assert len(set(key)) == len(key)  # no duplicate rows
    assert got == want
    assert leftovers(run) == []
    _check_whole(run)
