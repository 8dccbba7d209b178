"""The numba backend's conv2d_backward_data: which kernel runs (``_numba_conv._conv_path``), the
OpenBLAS GEMM path on shapes large enough for the thread team and its channel blocks, and the
fallback to the direct kernel when scipy-openblas32 cannot be loaded.

test_parity_conv.py checks every path against the reference on small hypothesis cases.
"""

from __future__ import annotations

import numpy as np
import pytest

import pydevis.kernels as K
from pydevis.kernels import (  # a project module: an import error fails
    _numba,
    _numba_conv,
    _numba_gemm,
)
from pydevis.kernels import _reference as R

if _numba.unavailable_reason() is not None:  # numba itself missing: the only reason to skip
    pytest.skip(f"numba backend unavailable: {_numba.unavailable_reason()}",
                allow_module_level=True)

needs_blas = pytest.mark.skipif(_numba_gemm.unavailable_reason() is not None,
                                reason=f"{_numba_gemm.unavailable_reason()}")

RTOL = {np.float32: 1e-4, np.float64: 1e-10}


def conv_case(n, c, m, group, hw, k, s, p, dtype, seed=0):
    rng = np.random.default_rng(seed)
    ho = R.conv_out_size(hw[0], k, s, p, p, 1)
    wo = R.conv_out_size(hw[1], k, s, p, p, 1)
    g = rng.standard_normal((n, m, ho, wo)).astype(dtype)
    w = rng.standard_normal((m, c // group, k, k)).astype(dtype)
    return g, w, (hw, (s, s), (p, p, p, p), (1, 1), group)


def check(got, want, dtype):
    rtol = RTOL[dtype]
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())


@needs_blas
@pytest.mark.parametrize(("case", "path"), [
    ((1, 64, 64, 1, (56, 56), 3, 1, 1), "gemm"),  # ResNet 3x3
    ((1, 3, 64, 1, (224, 224), 7, 2, 3), "gemm"),  # ResNet conv1
    ((8, 256, 64, 1, (56, 56), 1, 1, 0), "gemm"),  # 1x1
    ((1, 96, 256, 2, (27, 27), 5, 1, 2), "gemm"),  # AlexNet conv2, grouped
    ((8, 144, 144, 144, (56, 56), 3, 1, 1), "depthwise"),
    ((8, 32, 64, 32, (56, 56), 3, 1, 1), "gemm"),  # depthwise with a channel multiplier 2
    ((2, 64, 4, 1, (28, 28), 3, 1, 1), "direct"),  # few output channels
    ((2, 64, 16, 8, (28, 28), 3, 1, 1), "direct"),  # grouped, 2 output channels per group
    ((1, 1, 2, 1, (28, 28), 3, 1, 1), "gemm"),  # but one input channel per group: GEMM
])
def test_conv_path(case, path):
    n, c, m, group, hw, k, _s, _p = case
    assert _numba_conv._conv_path((n, m, 1, 1), (m, c // group, k, k), hw, group) == path


@needs_blas
def test_conv_path_int32_overflow_is_direct():
    # a BLAS dimension beyond int32 (C/group*kH*kW here) keeps the direct kernel
    assert _numba_conv._conv_path((1, 64, 1, 1), (64, 2**31, 1, 1), (1, 1), 1) == "direct"
    assert _numba_conv._conv_path((1, 64, 1, 1), (64, 2**31 - 1, 1, 1), (1, 1), 1) == "gemm"


@needs_blas
def test_typical_conv_runs_the_gemm_kernel(monkeypatch):
    calls = []
    real = _numba_gemm.conv2d_backward_data
    monkeypatch.setattr(_numba_gemm, "conv2d_backward_data",
                        lambda *a: calls.append(a) or real(*a))
    g, w, args = conv_case(2, 16, 32, 1, (12, 10), 3, 1, 1, np.float32)
    check(K.conv2d_backward_data(g, w, *args, module=_numba), R.conv2d_backward_data(g, w, *args),
          np.float32)
    assert len(calls) == 1
    g, w, args = conv_case(2, 16, 4, 1, (12, 10), 3, 1, 1, np.float32)  # Mg = 4: direct
    K.conv2d_backward_data(g, w, *args, module=_numba)
    assert len(calls) == 1


@needs_blas
@pytest.mark.parametrize(("n", "m", "blas"), [(1, 1000, True), (8, 64, True), (2, 4, False)])
def test_linear_backward_data_runs_the_gemm_kernel(monkeypatch, n, m, blas):
    # G·W through the 1×1 conv (OpenBLAS single-threaded), not numpy's multi-threaded product,
    # unless M is below the conv's GEMM threshold
    calls = []
    real = _numba_gemm.conv2d_backward_data
    monkeypatch.setattr(_numba_gemm, "conv2d_backward_data",
                        lambda *a: calls.append(a) or real(*a))
    rng = np.random.default_rng(n)
    g = rng.standard_normal((n, m)).astype(np.float32)
    w = rng.standard_normal((m, 96)).astype(np.float32)
    check(K.linear_backward_data(g, w, module=_numba), g.astype(np.float64) @ w, np.float32)
    assert len(calls) == blas


# Large enough for the thread team (above _numba_base._MIN_PARALLEL_WORK), one picture (channel
# blocks), a 1x1 whose GEMM writes grad_in directly, its 1x1-map GEMV, a grouped conv, a col
# buffer cut into several Ho-row tiles, a depthwise conv.
PARALLEL_CASES = {
    "3x3/2 blocks": (1, 48, 32, 1, (40, 38), 3, 2, 1),
    "1x1 direct": (3, 64, 40, 1, (20, 18), 1, 1, 0),
    "1x1 gemv": (4, 512, 300, 1, (1, 1), 1, 1, 0),
    "grouped 5x5": (3, 24, 32, 2, (15, 13), 5, 1, 2),
    "tiled 3x3": (1, 64, 16, 1, (64, 60), 3, 1, 1),
    "depthwise 3x3/2": (16, 16, 16, 16, (48, 44), 3, 2, 1),
}


@needs_blas
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(PARALLEL_CASES))
@pytest.mark.parametrize("threads", [1, 2])
def test_blas_kernels_against_the_reference(name, dtype, threads):
    import numba

    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"numba has {numba.config.NUMBA_NUM_THREADS} thread(s)")
    g, w, args = conv_case(*PARALLEL_CASES[name], dtype, seed=len(name))
    assert _numba_conv._conv_path(g.shape, w.shape, args[0], args[-1]) != "direct"
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        got = _numba.conv2d_backward_data(g, w, *args)
    finally:
        numba.set_num_threads(before)
    check(got, R.conv2d_backward_data(g, w, *args), dtype)


@needs_blas
def test_blas_runs_single_threaded_and_restores():
    lib = _numba_gemm._LIB
    before = lib.scipy_openblas_get_num_threads()
    seen = []
    with _numba_gemm.single_threaded():
        seen.append(lib.scipy_openblas_get_num_threads())
        with _numba_gemm.single_threaded():
            seen.append(lib.scipy_openblas_get_num_threads())
        seen.append(lib.scipy_openblas_get_num_threads())
    assert seen == [1, 1, 1]
    assert lib.scipy_openblas_get_num_threads() == before


def test_loader_failure_is_a_reason(monkeypatch):
    def missing():
        raise OSError("no libscipy_openblas here")

    monkeypatch.setattr(_numba_gemm, "_find_library", missing)
    lib, reason = _numba_gemm._load()
    assert lib is None
    assert "no libscipy_openblas here" in reason


def test_without_blas_every_conv_runs_the_direct_kernel(monkeypatch):
    monkeypatch.setattr(_numba_gemm, "_REASON", "scipy-openblas32 is unusable here (test)")

    def forbidden(*_args):
        raise AssertionError("the BLAS kernels ran")

    monkeypatch.setattr(_numba_gemm, "conv2d_backward_data", forbidden)
    for case in ((2, 16, 32, 1, (12, 10), 3, 1, 1), (2, 8, 8, 8, (12, 10), 3, 2, 1)):
        g, w, args = conv_case(*case, np.float64)
        assert _numba_conv._conv_path(g.shape, w.shape, args[0], args[-1]) == "direct"
        check(K.conv2d_backward_data(g, w, *args, module=_numba),
              R.conv2d_backward_data(g, w, *args), np.float64)
