"""kernels.add (the backward walk's sums of fan-out gradients), the C++ strided copy (views
made contiguous for the kernels) and the C++ pool's loop census.

add: numpy's ``a + b`` is the oracle (an add rounds the same in any split), at sizes below and
above the pool's threshold, in a fresh interpreter per team size; mismatched operands are a
ValueError from the binding and numpy's own behaviour from ``kernels.add``.
Census: the loops a known kernel must run are recorded with their item counts, and only while
the census is on; bench/scaling_census.py's bound is checked on hand-made records."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from pydevis import kernels
from pydevis.kernels import _cpp

ROOT = Path(__file__).resolve().parents[2]
needs_cpp = pytest.mark.skipif(_cpp._C is None, reason="pydevis._C is not built")


def _in_team(script: str, threads: str) -> str:
    """stdout of ``script`` in a fresh interpreter whose pool has ``threads`` members."""
    env = {**os.environ, "OMP_NUM_THREADS": threads}
    r = subprocess.run([sys.executable, "-P", "-c", script], capture_output=True, text=True,
                       env=env, timeout=120, cwd=tempfile.gettempdir())
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@needs_cpp
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(0,), (7,), (3, 5, 11), (1 << 18,), (2, 3, 70001),
                                   (8, 64, 56, 56)])
def test_add_matches_numpy(shape, dtype):
    rng = np.random.default_rng(len(shape))
    a = rng.standard_normal(shape).astype(dtype)
    b = rng.standard_normal(shape).astype(dtype)
    a.flat[::97] = np.nan
    b.flat[5::89] = np.inf
    for out in (_cpp._C.add(a, b), kernels.add(a, b, module=_cpp)):
        assert out.dtype == dtype and out.shape == shape
        np.testing.assert_array_equal(out, a + b)


@needs_cpp
@pytest.mark.parametrize("threads", ["2", "3"])
def test_add_pooled_same_bits(threads):
    script = ("import numpy as np, hashlib; from pydevis import _C\n"
              "r = np.random.default_rng(3); a = r.standard_normal(3_000_001).astype(np.float32)\n"
              "b = r.standard_normal(a.size).astype(np.float32)\n"
              "assert (_C.add(a, b) == a + b).all(); _C.census_start(); _C.add(a, b)\n"
              "print(_C.census_stop())")
    loops = eval(_in_team(script, threads))  # noqa: S307 (our subprocess's repr of tuples)
    assert [(n, pooled) for n, pooled, _ in loops] == [(46, True)]  # ceil(3000001 / 65536)


def _views(dtype):
    """Views of every layout: channel slices at batch > 1 (a Concat backward's), transposes,
    negative and stepped strides, size-1 dims, 0-d, empty; small and above the threshold."""
    r = np.random.default_rng(5)
    big = r.standard_normal((8, 128, 27, 27)).astype(dtype)
    small = r.standard_normal((3, 4, 5, 6)).astype(dtype)
    yield "channel slice", big[:, 64:]
    yield "channel slice, small", small[:, 1:3]
    yield "transposed", big.transpose(0, 2, 3, 1)
    yield "reversed", big[::-1, :, ::-1]
    yield "stepped last dim", big[..., ::2]
    yield "size-1 dims", big[:, 3:4, :, 5:6]
    yield "0-d", small[1, 2, 3, 4, ...]
    yield "empty", small[:, 2:2]
    yield "2-D transposed", r.standard_normal((700, 900)).astype(dtype).T


@needs_cpp
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_contiguous_copies_any_view(dtype):
    for label, view in _views(dtype):
        assert view.dtype == dtype and (view.ndim == 0 or view.size == 0
                                        or not view.flags.c_contiguous
                                        or label == "size-1 dims"), label
        for out in (_cpp._C.contiguous(view), kernels._contiguous(view)):
            assert out.flags.c_contiguous and out.dtype == dtype, label
            np.testing.assert_array_equal(out, np.ascontiguousarray(view), err_msg=label)


@needs_cpp
def test_contiguous_views_stay_views_until_copied():
    a = np.random.default_rng(1).standard_normal((8, 128, 27, 27)).astype(np.float32)
    v = a[:, 64:]
    out = kernels._contiguous(v)
    assert not np.shares_memory(out, a)
    np.testing.assert_array_equal(out, v)
    assert kernels._contiguous(a) is a  # already contiguous: no copy


@needs_cpp
@pytest.mark.parametrize("threads", ["2", "3"])
def test_contiguous_pooled(threads):
    script = ("import numpy as np; from pydevis import _C\n"
              "a = np.random.default_rng(3).standard_normal((8, 128, 55, 55)).astype(np.float32)\n"
              "v = a[:, 64:]; _C.census_start(); out = _C.contiguous(v); loops = _C.census_stop()\n"
              "assert (out == v).all() and out.flags.c_contiguous\n"
              "w = a.transpose(0, 2, 3, 1)[:, ::-1]; assert (_C.contiguous(w) == w).all()\n"
              "print(loops[0][:2])")
    # 8 runs of 64 x 55 x 55 = 193 600 elements, each in pieces of 65 536: 8 x 3 items
    assert _in_team(script, threads) == "(24, True)"


@needs_cpp
def test_contiguous_rejects():
    with pytest.raises((ValueError, TypeError)):
        _cpp._C.contiguous(np.zeros((4, 4), np.int32)[:, ::2])
    buf = np.zeros(4 * 6 + 1, np.uint8)
    mis = np.frombuffer(buf.data, dtype=np.float32, count=6, offset=1).reshape(2, 3)
    with pytest.raises(ValueError, match="aligned"):
        _cpp._C.contiguous(mis)


@needs_cpp
def test_add_binding_rejects_mismatch():
    a = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="b"):
        _cpp._C.add(a, np.zeros((3, 2), np.float32))
    with pytest.raises((ValueError, TypeError)):
        _cpp._C.add(a, np.zeros((2, 3), np.float64))
    with pytest.raises((ValueError, TypeError)):
        _cpp._C.add(a.astype(np.int32), a.astype(np.int32))


def test_add_falls_back_to_numpy():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(kernels.add(a, np.float32(2)), a + 2)  # broadcast: numpy's
    np.testing.assert_array_equal(kernels.add(a, a.astype(np.float64)), a + a.astype(np.float64))
    np.testing.assert_array_equal(kernels.add(a.T, a.T), a.T + a.T)


_CENSUS = """
import numpy as np
from pydevis import _C
g = np.ones(1 << 19, np.float32)
rect = lambda a: _C.rectifier_backward(a, a, 0, 0.0, float("inf"))
assert _C.census_stop() == []  # never started: nothing kept
rect(g)
_C.census_start()
rect(g)
rect(g[:1000])  # below the threshold: no loop at all
loops = _C.census_stop()
rect(g)
assert _C.census_stop() == [], "recorded after stop"
print([(n, p) for n, p, ms in loops], all(ms >= 0 for _, _, ms in loops))
"""


@needs_cpp
@pytest.mark.parametrize("threads, want", [("1", "[]"), ("2", "[(8, True)]")])
def test_census_records_only_while_on(threads, want):
    # one loop of (1 << 19) / 65536 = 8 chunks on a team of 2; none on a team of 1 (the kernel
    # then runs its serial path without a loop)
    assert _in_team(_CENSUS, threads) == f"{want} True"


def _census_module():
    spec = importlib.util.spec_from_file_location("scaling_census", ROOT / "bench" /
                                                  "scaling_census.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_census_bound():
    bound = _census_module().bound
    # 10 ms in a pooled loop of 3 items on 16 threads: one item's time, 3.33 ms; a serial loop
    # and the time outside loops count in full
    assert bound([(3, True, 10.0)], 10.0, 16) == pytest.approx(10.0 / 3)
    assert bound([(32, True, 8.0)], 8.0, 16) == pytest.approx(0.5)
    assert bound([(33, True, 33.0)], 33.0, 16) == pytest.approx(3.0)
    assert bound([(8, False, 4.0), (16, True, 16.0)], 21.0, 16) == pytest.approx(1.0 + 4.0 + 1.0)


_NEST = """import json, time
from pydevis import _C
out = []
for pooled in (False, True):
    _C.census_start()
    t0 = time.perf_counter()
    _C.census_nest(3, 4, 2000, pooled)
    wall = (time.perf_counter() - t0) * 1e3
    out.append([wall, _C.census_stop()])
print(json.dumps(out))
"""


@needs_cpp
def test_census_counts_nested_loops_once():
    # A serial outer loop (3 items) whose items each run a pooled loop of 4 items busy 2 ms: the
    # three inner loops are recorded, pooled, and the outer one with only its own time (its
    # items' bookkeeping), so that the records add up to the wall time, not twice it. An outer
    # loop on the pool runs the inner ones inside its tasks: one record.
    import json

    (wall_s, serial), (wall_p, pooled) = json.loads(_in_team(_NEST, "2"))
    assert [(n, p) for n, p, _ in serial] == [(4, True)] * 3 + [(3, False)]
    assert all(ms >= 2.0 * 4 / 2 * 0.9 for _, _, ms in serial[:3])  # 2 items each, per member
    assert serial[3][2] < 0.25 * wall_s  # was the whole wall time, inner loops included
    assert sum(ms for _, _, ms in serial) <= wall_s * 1.01
    assert [(n, p) for n, p, _ in pooled] == [(3, True)]
    assert pooled[0][2] <= wall_p * 1.01 and pooled[0][2] >= 2.0 * 4 * 2 * 0.9
