"""pydevis.memory: after ``pydevis.load`` the process keeps freed memory, so a large array
allocated again and again is not faulted in again (the step-to-step page faults that made an
ascent step's time swing, see the module); ``PYDEVIS_KEEP_MEMORY=0`` leaves glibc's default,
under which every 64 MiB allocation is a fresh mmap faulted in anew. Each case runs in its own
process (the policy is process-wide)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from pydevis import demo

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")

SCRIPT = f"""
import resource, numpy as np, pydevis
kept = pydevis.load({str(demo.models_dir() / "cifar10_alexnet.onnx")!r}) is not None
from pydevis.memory import keep_freed_memory
faults = []
for i in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = np.empty(16 * 2**20, np.float32)  # 64 MiB, above glibc's largest mmap threshold
    a.fill(1.0)
    del a
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(keep_freed_memory(), *faults[1:])
"""


def _faults(keep: str | None) -> tuple[str, list[int]]:
    env = {k: v for k, v in os.environ.items() if k != "PYDEVIS_KEEP_MEMORY"}
    if keep is not None:
        env["PYDEVIS_KEEP_MEMORY"] = keep
    out = subprocess.run([sys.executable, "-P", "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout.split()
    return out[0], [int(v) for v in out[1:]]


def test_load_keeps_freed_memory():
    policy, faults = _faults(None)
    assert policy == "True"
    assert max(faults) <= 2, faults  # the block is reused: nothing to fault in


def test_opt_out_leaves_the_allocator_alone():
    policy, faults = _faults("0")
    assert policy == "False"
    # each 64 MiB is faulted in anew: 16384 small pages, or 32 transparent huge pages at least
    assert min(faults) >= 32, faults
