"""The conv backward's GEMM on narrow planes (csrc/cpu/small_gemm.cpp): ``_C.small_gemm_tn``
against a float64 numpy product; the same bits for a row or column wherever a call puts it
(the conv's tasks cut rows and columns differently on each team size); its argument checks;
and the conv backward on planes of <= 64 pixels, which takes this path at batch 1, against the
numpy oracle."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import pytest

import pydevis.kernels as K
from parity import check
from pydevis.kernels import _cpp
from pydevis.kernels import _reference as R

pytestmark = pytest.mark.skipif(_cpp._C is None, reason="pydevis._C is not built")

# k, lda, m, n: ResNet-18's 512-channel 7×7 task (576 rows of 4608, 49 columns); a tail of
# fewer than 32 rows only; tails after whole blocks; one column; 64 columns; k = 1
SHAPES = [(512, 4608, 576, 49), (9, 45, 45, 7), (300, 100, 70, 1), (64, 64, 33, 64),
          (1, 40, 40, 8), (17, 50, 3, 13), (130, 96, 96, 36)]


def _operands(k, lda, n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((k, lda)).astype(np.float32),
            rng.standard_normal((k, n)).astype(np.float32))


@pytest.mark.parametrize("k,lda,m,n", SHAPES)
def test_small_gemm_matches_numpy(k, lda, m, n):
    a, b = _operands(k, lda, n)
    got = _cpp._C.small_gemm_tn(a, b, m)
    want = a[:, :m].astype(np.float64).T @ b.astype(np.float64)
    assert got.shape == (m, n) and got.dtype == np.float32
    # float32 sums of k terms: |error| <= ~k·eps·sum|terms|
    bound = 2 * k * np.finfo(np.float32).eps * (np.abs(a[:, :m]).T @ np.abs(b)) + 1e-30
    assert np.all(np.abs(got - want) <= bound)


@pytest.mark.parametrize("k,lda,m,n", SHAPES)
def test_small_gemm_same_bits_wherever_a_row_or_column_sits(k, lda, m, n):
    a, b = _operands(k, lda, n, seed=1)
    whole = _cpp._C.small_gemm_tn(a, b, m)
    for r in sorted({1, m // 3, m // 2, m - 1} - {0, m}):  # rows [0, r) and [r, m) apart
        top = _cpp._C.small_gemm_tn(np.ascontiguousarray(a[:, :r]), b, r)
        rest = _cpp._C.small_gemm_tn(np.ascontiguousarray(a[:, r:m]), b, m - r)
        assert np.array_equal(np.vstack([top, rest]), whole), r
    for j in sorted({1, n // 2, n - 1} - {0, n}):  # columns [0, j) and [j, n) apart
        left = _cpp._C.small_gemm_tn(a, np.ascontiguousarray(b[:, :j]), m)
        right = _cpp._C.small_gemm_tn(a, np.ascontiguousarray(b[:, j:]), m)
        assert np.array_equal(np.hstack([left, right]), whole), j


def test_small_gemm_available_where_avx512():
    flags = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    expected = platform.machine() in ("x86_64", "AMD64") and "avx512f" in flags
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo to compare with")
    assert _cpp._C.small_gemm_available() is expected


@pytest.mark.parametrize("bad,match", [
    (lambda a, b: (a.astype(np.float64), b, 4), "float32"),
    (lambda a, b: (a, np.zeros((a.shape[0], 65), np.float32), 4), "columns, expected 1..64"),
    (lambda a, b: (a, b[:-1].copy(), 4), "rows"),
    (lambda a, b: (a, b, 0), "m = 0"),
    (lambda a, b: (a, b, a.shape[1] + 1), "expected 1..8"),
    (lambda a, b: (a[:, ::2], b, 2), "C-contiguous"),
])
def test_small_gemm_refuses_bad_arguments(bad, match):
    a, b = _operands(5, 8, 3)
    with pytest.raises(ValueError, match=match):
        _cpp._C.small_gemm_tn(*bad(a, b))


# conv backward at batch 1 on planes of <= 64 pixels: n, c, m, (h, w), k, stride, pad, rectify
NARROW = {
    "3x3 on 7x7, 512 -> 96": (1, 96, 512, (7, 7), 3, 1, 1, None),
    "3x3/2 to 7x7, 40 -> 72, rectified": (1, 40, 72, (14, 14), 3, 2, 1, "gradient"),
    "1x1 on 8x8, 160 -> 960": (1, 160, 960, (8, 8), 1, 1, 0, None),
    "1x1 on 1x5, 33 -> 70, guided": (1, 33, 70, (1, 5), 1, 1, 0, "guided"),
    "5x5 on 3x4, pad 2": (1, 7, 20, (3, 4), 5, 1, 2, None),
}


@pytest.mark.parametrize("label", list(NARROW))
def test_conv_backward_on_narrow_planes(label):
    n, c, m, (h, w), k, s, p, rect = NARROW[label]
    rng = np.random.default_rng(len(label))
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    assert ho * wo <= 64
    g = rng.standard_normal((n, m, ho, wo)).astype(np.float32)
    wt = rng.standard_normal((m, c, k, k)).astype(np.float32)
    args = ((h, w), (s, s), (p, p, p, p), (1, 1), 1)
    want = R.conv2d_backward_data(g, wt, *args)
    kw = {}
    if rect:
        y = np.maximum(rng.standard_normal((n, c, h, w)), 0).astype(np.float32)
        kw = dict(rectify=rect, y=y)
        want = R.rectifier_backward(want, y, K.mode_code(rect))
    check(K.conv2d_backward_data(g, wt, *args, module=_cpp, **kw), want, np.float32)
