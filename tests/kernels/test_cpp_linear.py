"""The C++ linear_backward_data kernel (G·W streamed over W once, small N) and its routing.

Values against numpy's float64 product for each vector code the CPU has (the kernel's ``isa``
argument caps it: 0 baseline, 1 AVX2 + FMA, 2 AVX-512), sample counts around its register
blocks (8 on AVX-512, 4 below) and around the front's ``LINEAR_MAX_N``, K not a multiple of
the vector chunk or of the per-thread slab; G with zero columns (the rows of W skipped); the
argument checks; the front's routing.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import pydevis.kernels as K
from parity import check
from pydevis.kernels import _cpp

if _cpp.unavailable_reason() is not None:
    pytest.skip(f"C++ extension not built: {_cpp.unavailable_reason()}", allow_module_level=True)

_C = _cpp._C
ISAS = list(range(_C.linear_isa_level + 1))


def operands(n, m, k, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, m)).astype(dtype), rng.standard_normal((m, k)).astype(dtype))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 33])
def test_matches_numpy(n, dtype, isa):
    # M = 37: two full 16-row blocks and 5 rows; K = 301: chunks of 32 floats or 16 doubles and
    # a tail, split over the threads in whole 128-byte units
    g, w = operands(n, 37, 301, dtype, seed=n)
    check(_C.linear_backward_data(g, w, isa), g.astype(np.float64) @ w, dtype)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m, k", [(1, 1), (1, 5), (3, 1), (16, 32), (17, 33), (200, 1031),
                                  (1000, 77), (2100, 40)])  # W in 1, 2 and 8 row parts
def test_odd_shapes(m, k, isa):
    for n in (1, 6, 8, 11):
        g, w = operands(n, m, k, np.float64, seed=m * k + n)
        check(_C.linear_backward_data(g, w, isa), g @ w, np.float64)


@pytest.mark.parametrize("m", [300, 2100])
def test_large_exact_on_integers(m):
    """Small integers are summed exactly in float32: every element, each part and slab."""
    rng = np.random.default_rng(m)
    g = rng.integers(-3, 4, (8, m)).astype(np.float32)
    w = rng.integers(-3, 4, (m, 9216 + 7)).astype(np.float32)
    want = (g.astype(np.int64) @ w.astype(np.int64)).astype(np.float32)
    for isa in ISAS:
        np.testing.assert_array_equal(_C.linear_backward_data(g, w, isa), want)


def sparse(g, kind, rng):
    """G with zero columns: ReLU-like (half the entries), one-hot rows, a run of zero columns."""
    g = g.copy()
    n, m = g.shape
    if kind == "relu":
        g[rng.random(g.shape) < 0.5] = 0
    elif kind == "onehot":
        g[:] = 0
        g[np.arange(n), rng.integers(0, m, n)] = 1
    elif kind == "run":
        g[:, m // 5: m // 5 + 40] = 0
    elif kind == "one column":
        g[:, np.arange(m) != m // 2] = 0
    return g


SPARSE = ["relu", "onehot", "run", "one column"]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", SPARSE)
def test_zero_columns_match_numpy(kind, dtype, isa):
    """Rows of W whose G column is zero are skipped; the rest are read through row pointers."""
    rng = np.random.default_rng(len(kind))
    for n, m, k in [(1, 37, 301), (3, 300, 77), (8, 2100, 40), (9, 530, 129)]:
        g0, w = operands(n, m, k, dtype, seed=n * m)
        g = sparse(g0, kind, rng)
        assert not (g != 0).any(0).all()  # some rows skipped
        check(_C.linear_backward_data(g, w, isa), g.astype(np.float64) @ w, dtype)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("kind", SPARSE)
def test_zero_columns_sum_as_w_without_those_rows(kind, isa):
    """Same bits as the kernel given only the active rows: the skip changes which rows, not how
    the rest are summed (parts and blocks over the active rows)."""
    rng = np.random.default_rng(7)
    for n, m, k in [(1, 4096, 333), (5, 2100, 999), (8, 1000, 130)]:
        g0, w = operands(n, m, k, np.float32, seed=m + n)
        g = sparse(g0, kind, rng)
        act = (g != 0).any(0)
        want = _C.linear_backward_data(np.ascontiguousarray(g[:, act]), w[act], isa)
        np.testing.assert_array_equal(_C.linear_backward_data(g, w, isa), want)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_zero_grad_gives_zeros(dtype, isa):
    for n, m, k in [(1, 1, 1), (4, 37, 301), (8, 2100, 40)]:
        g = np.zeros((n, m), dtype)
        g[0, 0] = -0.0
        w = operands(n, m, k, dtype)[1]
        w[0, 0] = np.inf  # skipped: a GEMM would give 0 * inf = NaN
        out = _C.linear_backward_data(g, w, isa)
        assert out.dtype == dtype
        np.testing.assert_array_equal(out, np.zeros((n, k), dtype))


@pytest.mark.parametrize("isa", ISAS)
def test_non_finite_weights_in_active_rows_propagate(isa):
    g, w = operands(3, 40, 70, np.float64)
    g[:, 5:] = 0
    w[2, 3], w[30, 4] = np.inf, np.nan  # row 2 active, row 30 skipped
    g[:, 2] = [1.0, -1.0, 0.0]
    out = _C.linear_backward_data(g, w, isa)
    assert out[0, 3] == np.inf and out[1, 3] == -np.inf and np.isnan(out[2, 3])  # 0 * inf
    assert np.isfinite(np.delete(out, 3, axis=1)).all()  # the NaN in row 30 never read
    keep = np.ones(70, bool)
    keep[3] = False
    check(out[:, keep], g @ np.where(np.isfinite(w), w, 0)[:, keep], np.float64)


@pytest.mark.parametrize("m", [300, 2100])
def test_large_exact_on_integers_with_zero_columns(m):
    rng = np.random.default_rng(m + 1)
    g = rng.integers(-3, 4, (8, m)).astype(np.float32)
    g[:, rng.random(m) < 0.6] = 0
    w = rng.integers(-3, 4, (m, 9216 + 7)).astype(np.float32)
    want = (g.astype(np.int64) @ w.astype(np.int64)).astype(np.float32)
    for isa in ISAS:
        np.testing.assert_array_equal(_C.linear_backward_data(g, w, isa), want)


_SCRIPT = """
import sys, numpy as np
from pydevis import _C
rng = np.random.default_rng(5)
g, w = rng.standard_normal((5, 2100)), rng.standard_normal((2100, 999))
sys.stdout.buffer.write(_C.linear_backward_data(g, w).tobytes())
g[:, rng.random(2100) < 0.5] = 0  # about 1050 active rows: 4 parts
sys.stdout.buffer.write(_C.linear_backward_data(g, w).tobytes())
"""


def test_same_bits_for_any_thread_count():
    """The sums' order is a function of the shape alone (row parts, then parts in order)."""
    if not _C.has_openmp:
        pytest.skip("built without OpenMP")
    outs = {t: subprocess.run([sys.executable, "-P", "-c", _SCRIPT], capture_output=True,
                              check=True, env={**os.environ, "OMP_NUM_THREADS": str(t)}).stdout
            for t in (1, 2, 3)}
    assert len(outs[1]) == 2 * 5 * 999 * 8
    assert outs[1] == outs[2] == outs[3]


@pytest.mark.parametrize("n, m, k", [(0, 5, 7), (3, 0, 7), (3, 5, 0), (0, 0, 0)])
def test_zero_sizes(n, m, k):
    g, w = operands(n, m, k, np.float32)
    out = _C.linear_backward_data(g, w)
    assert out.shape == (n, k) and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.zeros((n, k), np.float32))  # M = 0: zeros


G, W = operands(3, 5, 7, np.float32)


@pytest.mark.parametrize("kw, match", [
    ({"grad_out": G.astype(np.int32)}, "^grad_out: dtype int32"),
    ({"weight": W.astype(np.float64)}, "^weight: dtype float64 differs"),
    ({"grad_out": G[None]}, "^grad_out: expected a 2-D array"),
    ({"weight": W[0]}, "^weight: expected a 2-D array"),
    ({"grad_out": np.asfortranarray(operands(3, 5, 7, np.float32)[0])},
     "^grad_out: array must be C-contiguous"),
    ({"weight": operands(3, 5, 14, np.float32)[1][:, ::2]}, "^weight: array must be C-contiguous"),
    ({"weight": W[:4]}, r"^weight: shape \(4, 7\) does not match grad_out shape \(3, 5\)"),
    ({"isa": 3}, "^isa: expected 0"),
    ({"isa": -1}, "^isa: expected 0"),
])
def test_rejects(kw, match):
    with pytest.raises(ValueError, match=match):
        _C.linear_backward_data(**{"grad_out": G, "weight": W, **kw})


def test_output_too_large_rejected_before_allocation():
    g = np.zeros((2**16, 0), np.float32)
    w = np.zeros((0, 2**16), np.float32)
    with pytest.raises(ValueError, match="^grad_in: output shape"):
        _C.linear_backward_data(g, w)


def test_new_array_inputs_untouched():
    g, w = operands(4, 9, 40, np.float64)
    g0, w0 = g.copy(), w.copy()
    out = _C.linear_backward_data(g, w)
    assert out.flags.c_contiguous and not np.shares_memory(out, g) and not np.shares_memory(out, w)
    np.testing.assert_array_equal(g, g0)
    np.testing.assert_array_equal(w, w0)


# ---- the front: routing, non-contiguous inputs, mixed dtypes -----------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_front_routes_small_batches_to_the_kernel(monkeypatch, dtype):
    cpp = K.get("cpp")
    limit = K.LINEAR_MAX_N[cpp.linear_isa_level]
    calls = []
    kernel = cpp.linear_backward_data

    def spy(g, w):
        calls.append(len(g))
        return kernel(g, w)

    monkeypatch.setattr(cpp, "linear_backward_data", spy)
    for n in (1, limit - 1, limit, limit + 1):
        g, w = operands(n, 19, 45, dtype, seed=n)
        check(K.linear_backward_data(g, w, module=cpp), g.astype(np.float64) @ w, dtype)
    assert calls == [1, limit - 1, limit]  # limit + 1 went through the GEMM


@pytest.mark.parametrize("n, m, k", [(0, 5, 7), (3, 0, 7), (3, 5, 0)])
def test_front_zero_sizes(n, m, k):
    g, w = operands(n, m, k, np.float64)
    out = K.linear_backward_data(g, w, module=K.get("cpp"))
    assert out.shape == (n, k) and out.dtype == np.float64
    np.testing.assert_array_equal(out, np.zeros((n, k)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_front_non_contiguous_inputs(dtype):
    g, w = operands(6, 40, 70, dtype)
    gs, ws = np.asfortranarray(g)[:, ::2], w[::2, ::-1]  # strided, reversed
    check(K.linear_backward_data(gs, ws, module=K.get("cpp")),
          gs.astype(np.float64) @ ws.astype(np.float64), dtype)
    # weight cast to grad_out's dtype
    got = K.linear_backward_data(g, w.astype(np.float64 if dtype == np.float32 else np.float32),
                                 module=K.get("cpp"))
    assert got.dtype == dtype


def test_front_rejects_bad_shapes():
    with pytest.raises(ValueError, match="does not match"):
        K.linear_backward_data(G, W[:4], module=K.get("cpp"))
    with pytest.raises(ValueError, match="expected 2-D"):
        K.linear_backward_data(G[None], W, module=K.get("cpp"))
