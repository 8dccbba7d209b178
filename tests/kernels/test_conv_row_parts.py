"""conv2d_backward_data, C++ backend, when one picture's conv has too few channel blocks for the
team and its input rows are split across the threads (csrc/cpu/conv.cpp, run_rows): each part
computes the output rows that reach its input rows again and keeps only its own. And the same
bits from any team size, with and without the parts and channel blocks.

Against the naive numpy oracle (``_reference.py``), in a fresh interpreter per team size (the
pool's team is fixed at start-up): 2 (this machine's cores), 3 and 16 (oversubscribed: the split
is the team's, not the machine's). The loop census (``_C.census_start``) shows the split
happened: the conv's one loop has the number of tasks the scheme gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pydevis.kernels import _cpp

pytestmark = pytest.mark.skipif(_cpp._C is None, reason="pydevis._C is not built")
TESTS = Path(__file__).resolve().parent

# name: (n, c, m, (h, w), (kh, kw), strides, pads, dilations, group, rectify)
CASES = {
    "stem 7x7/2 pad 3, 3 channels": (1, 3, 16, (64, 64), (7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 1,
                                     None),
    "stem 3x3/2 pad 1, 3 channels, odd": (1, 3, 8, (57, 50), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1),
                                          1, None),
    "5x5 dilated, asymmetric pads": (1, 5, 4, (80, 33), (5, 5), (1, 1), (2, 0, 1, 3), (2, 2), 1,
                                     None),
    "1x1/2 downsample": (1, 16, 32, (28, 28), (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1, None),
    "2x2/3: rows no window reaches": (1, 2, 6, (40, 40), (2, 2), (3, 3), (0, 0, 0, 0), (1, 1), 1,
                                      None),
    "3x3/2 grouped, rectified": (1, 4, 6, (45, 31), (3, 3), (2, 2), (1, 1, 0, 1), (1, 1), 2,
                                 "guided"),
    "7x7/2 float64": (1, 3, 5, (48, 40), (7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 1, "gradient"),
    # enough channels for channel blocks (8-9 at 2-16 threads; 1 at 1)
    "3x3/2, 64 channels": (1, 64, 32, (30, 30), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1, None),
    "5x5 pad 2, 48 channels": (1, 48, 16, (27, 27), (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), 1,
                               None),
    # a 7×7 plane: the narrow-plane GEMM (small_gemm.cpp) where the CPU has AVX-512; its
    # channel blocks (8 channels: 72 rows, a tail of 8 after two 32-row blocks) differ by team
    "3x3 on 7x7, 64 channels, rectified": (1, 64, 48, (7, 7), (3, 3), (1, 1), (1, 1, 1, 1),
                                           (1, 1), 1, "gradient"),
}

# Batched direct (1×1) convs on small planes (csrc/cpu/conv_batched.cpp): parts are ranges
# of the packed columns (pixels of any samples), not whole samples.
BATCHED = {
    "batched 1x1, 64 <- 384, 14x14": (8, 64, 384, (14, 14), (1, 1), (1, 1), (0, 0, 0, 0),
                                      (1, 1), 1, None),
    "batched 1x1, 160 <- 960, 7x7, guided": (8, 160, 960, (7, 7), (1, 1), (1, 1), (0, 0, 0, 0),
                                             (1, 1), 1, "guided"),
    "batched 1x1, 3 samples of 13x13, parts inside samples": (3, 24, 40, (13, 13), (1, 1), (1, 1),
                                                              (0, 0, 0, 0), (1, 1), 1,
                                                              "gradient"),
}

_SCRIPT = """
import hashlib, json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from parity import check
from pydevis import _C
import pydevis.kernels as K
from pydevis.kernels import _cpp, _reference as R
out = {}
for name, (n, c, m, hw, k, s, p, d, group, rect) in json.loads(sys.argv[2]).items():
    dt = np.float64 if "float64" in name else np.float32
    rng = np.random.default_rng(len(name))
    ho = R.conv_out_size(hw[0], k[0], s[0], p[0], p[2], d[0])
    wo = R.conv_out_size(hw[1], k[1], s[1], p[1], p[3], d[1])
    g = rng.standard_normal((n, m, ho, wo)).astype(dt)
    w = rng.standard_normal((m, c // group, *k)).astype(dt)
    args = (tuple(hw), tuple(s), tuple(p), tuple(d), group)
    want = R.conv2d_backward_data(g, w, *args)
    kw = {}
    if rect:
        y = np.maximum(rng.standard_normal((n, c, *hw)), 0).astype(dt)
        kw = dict(rectify=rect, y=y)
        want = R.rectifier_backward(want, y, K.mode_code(rect))
    _C.census_start()
    got = K.conv2d_backward_data(g, w, *args, module=_cpp, **kw)
    loops = _C.census_stop()
    check(got, want, dt)
    out[name] = [[items for items, _, _ in loops], hashlib.sha256(got.tobytes()).hexdigest()]
print(json.dumps(out))
"""


_RUNS: dict[str, dict] = {}


def _run(threads: str) -> dict:
    if threads in _RUNS:
        return _RUNS[threads]
    env = {**os.environ, "OMP_NUM_THREADS": threads}
    r = subprocess.run([sys.executable, "-P", "-c", _SCRIPT, str(TESTS),
                        json.dumps({**CASES, **BATCHED})],
                       capture_output=True, text=True, env=env, timeout=300,
                       cwd=tempfile.gettempdir())
    assert r.returncode == 0, r.stderr[-3000:]
    _RUNS[threads] = json.loads(r.stdout)
    return _RUNS[threads]


# Tasks of the conv's loop per team size: 2 per thread, at most Ho / (4 · shared rows), a count
# above the team rounded down to a multiple of it. The 3×3/2 stem: Ho 29, 1 shared row (7 parts
# at most); the 7×7/2 one: Ho 32, 3 shared rows (2 parts, its 3 channels no longer cut 1:2;
# on 16 threads 2 channel blocks × 2 parts make the shorter loop).
EXPECTED = {
    "stem 3x3/2 pad 1, 3 channels, odd": {2: 4, 3: 6, 16: 7},
    "stem 7x7/2 pad 3, 3 channels": {2: 2, 3: 2, 16: 4},
    "1x1/2 downsample": {2: 2, 3: 3, 16: 3},
    # enough even channel blocks: kept, no row parts (the rows alone would give 3 tasks)
    "5x5 pad 2, 48 channels": {2: 8, 3: 12, 16: 18},
}


@pytest.mark.parametrize("threads", ["2", "3", "16"])
def test_row_parts_match_the_oracle(threads):
    loops = {k: v[0] for k, v in _run(threads).items()}  # each case checked against the oracle
    nt = int(threads)
    for name, tasks in EXPECTED.items():
        assert loops[name] == [tasks[nt]], name
    assert all(len(loops[k]) == 1 and loops[k][0] > 1 for k in CASES), loops


# Batched 1×1: the pack of grad_out (one loop over M; a dense grad_out's scan for zero
# channels runs no loop), then the tasks: channel
# blocks (1 for 24-64 channels, 2 for 160) × column parts, 2 per thread at most, each of
# >= 64 columns (NP = 1568, 392, 507: 24, 6, 7 parts at most), a count above the team rounded
# down to a multiple of it. With whole samples as parts the 14×14 case had 8 tasks on 16.
EXPECTED_BATCHED = {
    "batched 1x1, 64 <- 384, 14x14": {1: 2, 2: 4, 3: 6, 16: 16},
    "batched 1x1, 160 <- 960, 7x7, guided": {1: 2, 2: 4, 3: 6, 16: 12},
    "batched 1x1, 3 samples of 13x13, parts inside samples": {1: 2, 2: 4, 3: 6, 16: 7},
}


@pytest.mark.parametrize("threads", ["1", "2", "3", "16"])
def test_batched_direct_parts_match_the_oracle(threads):
    loops = {k: v[0] for k, v in _run(threads).items()}  # each case checked against the oracle
    for name, tasks in EXPECTED_BATCHED.items():
        m = BATCHED[name][2]
        assert loops[name] == [m, tasks[int(threads)]], name


def test_same_bits_on_any_team():
    """A part's tiles are the whole plane's, clipped, and the tile height does not depend on
    the channel blocks: each pixel's terms add in the same order, so neither row parts nor
    channel blocks change a bit. One thread: one task per group, no parts, no blocks."""
    one = {k: v[1] for k, v in _run("1").items()}
    assert {k: v[0] for k, v in _run("1").items() if k in CASES} == {
        k: [c[8]] for k, c in CASES.items()}
    for threads in ("2", "3", "16"):
        assert {k: v[1] for k, v in _run(threads).items()} == one, threads
