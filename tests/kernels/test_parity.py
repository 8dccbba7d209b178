"""Every kernel of every available backend against the naive numpy oracle (``_reference.py``).

Shapes are drawn by hypothesis and kept small (the oracle is a Python loop): distinct, odd
dimensions, groups (dense, grouped, depthwise, depthwise with a channel multiplier), strides,
dilations, asymmetric pads, ceil_mode pooling shapes, both ``count_include_pad``, overlapping
max-pool windows whose switches repeat. float32 is checked to rtol 1e-4, float64 to 1e-10, both
relative to the largest magnitude of the expected result (sums can cancel to ~0 elementwise).
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import pydevis.kernels as K
from pydevis.kernels import _reference as R

# PYDEVIS_KERNEL_EXAMPLES=500 for a deeper (and randomised) search than the CI default
_EXAMPLES = int(os.environ.get("PYDEVIS_KERNEL_EXAMPLES", "25"))
SETTINGS = settings(deadline=None, max_examples=_EXAMPLES, derandomize=_EXAMPLES <= 25,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
RTOL = {np.float32: 1e-4, np.float64: 1e-10}
dtypes = st.sampled_from([np.float32, np.float64])
seeds = st.integers(0, 2**32 - 1)


def host(a) -> np.ndarray:
    """A backend's result as a numpy array (device arrays are copied back)."""
    if hasattr(a, "get"):  # cupy
        return a.get()
    if hasattr(a, "copy_to_host"):  # numba.cuda
        return a.copy_to_host()
    return np.asarray(a)


def check(actual, expected: np.ndarray, dtype) -> None:
    """Same shape and dtype; values to rtol, with atol = rtol * max|expected|."""
    actual = host(actual)
    assert actual.shape == expected.shape
    assert actual.dtype == np.dtype(dtype)
    rtol = RTOL[dtype]
    scale = float(np.abs(expected.astype(np.float64)).max(initial=0.0))
    np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64),
                               rtol=rtol, atol=rtol * max(scale, 1e-30))


def frozen(*arrays):
    """Copies to check afterwards that the kernel left its inputs alone."""
    return [a.copy() for a in arrays]


# ---------------------------------------------------------------------------------------------
# conv2d_backward_data
# ---------------------------------------------------------------------------------------------
@st.composite
def conv_cases(draw):
    kind = draw(st.sampled_from(["dense", "grouped", "depthwise", "depthwise_mult"]))
    if kind == "dense":
        group, cg, mg = 1, draw(st.integers(1, 5)), draw(st.integers(1, 6))
    elif kind == "grouped":  # group > 1, not depthwise
        group = draw(st.integers(2, 3))
        cg, mg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        if cg == 1 and mg == 1:
            cg = 2
    elif kind == "depthwise":
        group, cg, mg = draw(st.integers(2, 7)), 1, 1
    else:
        group, cg, mg = draw(st.integers(2, 4)), 1, draw(st.integers(2, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    pads = tuple(draw(st.integers(0, 3)) for _ in range(4))
    # the input must hold at least one window (ONNX needs Ho, Wo >= 1)
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - pads[0] - pads[2]), 13))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - pads[1] - pads[3]), 12))
    n = draw(st.integers(1, 3))
    return dict(n=n, c=cg * group, m=mg * group, group=group, hw=(h, w), k=(kh, kw),
                strides=(sh, sw), pads=pads, dilations=(dh, dw), dtype=draw(dtypes),
                seed=draw(seeds))


def _conv_args(case):
    rng = np.random.default_rng(case["seed"])
    (h, w), (kh, kw) = case["hw"], case["k"]
    pt, pl, pb, pr = case["pads"]
    ho = R.conv_out_size(h, kh, case["strides"][0], pt, pb, case["dilations"][0])
    wo = R.conv_out_size(w, kw, case["strides"][1], pl, pr, case["dilations"][1])
    dt = case["dtype"]
    g = rng.standard_normal((case["n"], case["m"], ho, wo)).astype(dt)
    wt = rng.standard_normal((case["m"], case["c"] // case["group"], kh, kw)).astype(dt)
    return g, wt


CONV_EXAMPLES = [
    # N≠C≠H≠W, 3x3 pad 1
    dict(n=2, c=3, m=5, group=1, hw=(9, 7), k=(3, 3), strides=(1, 1), pads=(1, 1, 1, 1),
         dilations=(1, 1), dtype=np.float32, seed=1),
    # strided, dilated, asymmetric pads, rectangular kernel
    dict(n=3, c=4, m=6, group=2, hw=(11, 8), k=(3, 2), strides=(2, 3), pads=(2, 0, 1, 3),
         dilations=(2, 1), dtype=np.float64, seed=2),
    # depthwise 3x3 stride 2 (MobileNet)
    dict(n=2, c=6, m=6, group=6, hw=(9, 10), k=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1),
         dilations=(1, 1), dtype=np.float32, seed=3),
    # 1x1, more output than input channels; and AlexNet-like 11x11 stride 4
    dict(n=1, c=3, m=7, group=1, hw=(5, 6), k=(1, 1), strides=(1, 1), pads=(0, 0, 0, 0),
         dilations=(1, 1), dtype=np.float64, seed=4),
    dict(n=2, c=3, m=4, group=1, hw=(23, 19), k=(11, 11), strides=(4, 4), pads=(2, 2, 2, 2),
         dilations=(1, 1), dtype=np.float32, seed=5),
    # input rows/cols that no window reaches (floor in the output size)
    dict(n=2, c=5, m=3, group=1, hw=(10, 9), k=(2, 2), strides=(3, 3), pads=(0, 0, 0, 0),
         dilations=(1, 1), dtype=np.float64, seed=6),
]


def _with_examples(examples):
    def deco(fn):
        for ex in reversed(examples):
            fn = example(case=ex)(fn)
        return fn
    return deco


@SETTINGS
@given(case=conv_cases())
@_with_examples(CONV_EXAMPLES)
def test_conv2d_backward_data(backend, case):
    g, w = _conv_args(case)
    before = frozen(g, w)
    args = (case["hw"], case["strides"], case["pads"], case["dilations"], case["group"])
    got = K.conv2d_backward_data(g, w, *args, module=backend)
    check(got, R.conv2d_backward_data(g, w, *args), case["dtype"])
    assert host(got).shape == (case["n"], case["c"], *case["hw"])
    for a, b in zip((g, w), before, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("path", ["direct", "blas"])
@SETTINGS
@given(case=conv_cases())
@_with_examples(CONV_EXAMPLES)
def test_numba_conv2d_backward_data_each_path(path, case):
    """numba: both conv kernels on every case, whatever ``_conv_path`` would pick: the direct
    one, and ``_numba_gemm`` (its GEMM path, or its scatter for depthwise convs)."""
    from pydevis.kernels import _numba, _numba_conv, _numba_gemm

    for why in (_numba.unavailable_reason(), path == "blas" and _numba_gemm.unavailable_reason()):
        if why:
            pytest.skip(why)
    g, w = _conv_args(case)
    args = (case["hw"], case["strides"], case["pads"], case["dilations"], case["group"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_numba_conv, "_conv_path", lambda *_: "direct" if path == "direct" else "gemm")
        got = _numba.conv2d_backward_data(g, w, *args)
    check(got, R.conv2d_backward_data(g, w, *args), case["dtype"])


def test_conv2d_backward_data_rejects_bad_shapes(backend):
    g = np.zeros((1, 4, 3, 3), np.float32)
    with pytest.raises(ValueError):  # weight has 6 output channels, grad_out 4
        K.conv2d_backward_data(g, np.zeros((6, 1, 3, 3), np.float32), (5, 5), module=backend)
    with pytest.raises(ValueError):  # group 3 does not divide M = 4
        K.conv2d_backward_data(g, np.zeros((4, 1, 3, 3), np.float32), (5, 5), group=3,
                               module=backend)


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_backward_data(backend, n, dtype):
    """G·W for the Gemm rule (one GEMV when N = 1), against the float64 product."""
    if backend.NAME == "cuda":
        pytest.skip("host arrays only")
    rng = np.random.default_rng(n)
    g = rng.standard_normal((n, 37)).astype(dtype)
    w = rng.standard_normal((37, 53)).astype(dtype)
    check(K.linear_backward_data(g, w, module=backend), g.astype(np.float64) @ w, dtype)


# ---------------------------------------------------------------------------------------------
# max_pool2d_backward: the switches found from the forward input
# ---------------------------------------------------------------------------------------------
@st.composite
def pool_cases(draw, dilation=True):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if dilation else (1, 1)
    # pads smaller than the (dilated) kernel, so that every window sees the input
    pads = (draw(st.integers(0, (dh * (kh - 1) + 1) // 2)),
            draw(st.integers(0, (dw * (kw - 1) + 1) // 2)),
            draw(st.integers(0, (dh * (kh - 1) + 1) // 2)),
            draw(st.integers(0, (dw * (kw - 1) + 1) // 2)))
    # every window must see the input: with dilation (holes) the input must span the kernel
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    h = draw(st.integers(eh if dilation else max(1, eh - pads[0] - pads[2]), 12))
    w = draw(st.integers(ew if dilation else max(1, ew - pads[1] - pads[3]), 11))
    return dict(n=draw(st.integers(1, 3)), c=draw(st.integers(1, 4)), hw=(h, w), k=(kh, kw),
                strides=(sh, sw), pads=pads, dilations=(dh, dw), ceil_mode=draw(st.booleans()),
                dtype=draw(dtypes), seed=draw(seeds))


POOL_EXAMPLES = [
    # AlexNet/CaffeNet-style overlapping 3x3 stride 2, ceil_mode, N≠C≠H≠W
    dict(n=2, c=3, hw=(9, 7), k=(3, 3), strides=(2, 2), pads=(0, 0, 0, 0), dilations=(1, 1),
         ceil_mode=True, dtype=np.float32, seed=11),
    dict(n=3, c=2, hw=(8, 11), k=(3, 3), strides=(2, 2), pads=(1, 0, 0, 1), dilations=(1, 1),
         ceil_mode=False, dtype=np.float64, seed=12),
    # stride larger than the kernel (pixels no window sees), dilated
    dict(n=1, c=5, hw=(10, 9), k=(2, 2), strides=(3, 3), pads=(0, 0, 0, 0), dilations=(2, 1),
         ceil_mode=True, dtype=np.float32, seed=13),
]


def scatter_switches(g, idx, in_shape) -> np.ndarray:
    """``grad_in.flat[idx[i]] += g.flat[i]`` in float64 (flat switches, ONNX's ``Indices``):
    MaxPool's backward stated through a forward's switches, the oracle of the kernels that find
    the switches again from x."""
    out = np.zeros(int(np.prod(in_shape)), np.float64)
    np.add.at(out, np.asarray(idx, np.int64).ravel(), np.asarray(g, np.float64).ravel())
    return out.reshape(in_shape).astype(g.dtype)


def _pool_args(case, smooth=False):
    rng = np.random.default_rng(case["seed"])
    dt = case["dtype"]
    x = rng.standard_normal((case["n"], case["c"], *case["hw"]))
    if smooth:  # a few large values that several overlapping windows all pick
        x = np.round(x * 2) / 2
    x = x.astype(dt)
    _, idx = R.max_pool2d_forward(x, case["k"], case["strides"], case["pads"],
                                  case["dilations"], case["ceil_mode"])
    g = rng.standard_normal(idx.shape).astype(dt)
    return x, g, idx


@SETTINGS
@given(case=pool_cases())
@_with_examples(POOL_EXAMPLES)
def test_max_pool2d_backward(backend, case):
    """Same result as scattering through the reference forward's switches; on half the cases the
    input is on a coarse grid, so that windows hold ties (the first tap in (kh, kw) order wins)."""
    x, g, idx = _pool_args(case, smooth=case["seed"] % 2 == 0)
    args = (case["k"], case["strides"], case["pads"], case["dilations"])
    before = frozen(g, x)
    got = K.max_pool2d_backward(g, x, *args, module=backend)
    check(got, R.max_pool2d_backward(g, x, *args), case["dtype"])
    check(got, scatter_switches(g, idx, x.shape), case["dtype"])
    for a, b in zip((g, x), before, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("strides", [(1, 2**31 - 1), (2**31 - 1, 2**31 - 1), (3, 1 << 30)])
def test_max_pool2d_backward_huge_column_stride(backend, strides):
    """A column stride far beyond the row: one window per row, no buffer sized by the stride
    (the C++ kernel once asked for stride x H scratch elements: 40 GB here)."""
    x = np.random.default_rng(0).normal(size=(2, 3, 7, 5)).astype(np.float32)
    args = ((2, 3), strides, (0, 1, 0, 0), (1, 1))
    ho = (7 - 2) // strides[0] + 1
    g = np.arange(1, 2 * 3 * ho + 1, dtype=np.float32).reshape(2, 3, ho, 1)
    got = host(K.max_pool2d_backward(g, x, *args, module=backend))
    check(got, R.max_pool2d_backward(g, x, *args), np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool2d_backward_never_picks_nan_or_minus_inf(backend, dtype):
    """ONNX Runtime's rule: a window's switch is its first value above the lowest finite one."""
    x = np.zeros((1, 2, 4, 5), dtype)
    x[0, 0, :2, :2] = [[np.nan, -np.inf], [3.0, 3.0]]  # window (0, 0): the first 3.0
    x[0, 1, :2, :2] = -np.inf  # window (0, 0) of plane 1: no switch, nothing routed
    g = np.arange(1, 9, dtype=dtype).reshape(1, 2, 2, 2)
    got = host(K.max_pool2d_backward(g, x, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1),
                                     module=backend))
    check(got, R.max_pool2d_backward(g, x, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1)), dtype)
    assert got[0, 0, 1, 0] == 1 and got[0, 0, 1, 1] == 0
    assert not got[0, 1, :2, :2].any() and got.sum() == g.sum() - 5


def test_max_pool2d_backward_matches_onnxruntime_switches(backend):
    """Ties (ReLU zeros), pads, ceil_mode: the switches are those of ORT's ``Indices``."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rng = np.random.default_rng(5)
    x = np.maximum(np.round(rng.standard_normal((3, 5, 14, 13))), 0).astype(np.float32)
    for ceil_mode in (0, 1):
        node = helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[3, 3],
                                strides=[2, 2], pads=[1, 0, 0, 1], ceil_mode=ceil_mode)
        graph = helper.make_graph(
            [node], "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
             helper.make_tensor_value_info("i", TensorProto.INT64, None)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        sess = ort.InferenceSession(model.SerializeToString(),
                                    providers=["CPUExecutionProvider"])
        y, idx = sess.run(None, {"x": x})
        g = rng.standard_normal(y.shape).astype(np.float32)
        got = host(K.max_pool2d_backward(g, x, (3, 3), (2, 2), (1, 0, 0, 1), (1, 1),
                                         module=backend))
        check(got, scatter_switches(g, idx, x.shape), np.float32)


# ---------------------------------------------------------------------------------------------
# rectifier_backward
# ---------------------------------------------------------------------------------------------
@st.composite
def rect_cases(draw):
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.integers(1, 6)) for _ in range(ndim))
    lo, hi = draw(st.sampled_from([(0.0, math.inf), (0.0, 6.0), (-0.5, 0.5), (-math.inf, 1.0)]))
    return dict(shape=shape, lo=lo, hi=hi, mode=draw(st.sampled_from([0, 1, 2, "gradient",
                                                                      "deconvnet", "guided"])),
                dtype=draw(dtypes), seed=draw(seeds))


@SETTINGS
@given(case=rect_cases())
@example(case=dict(shape=(2, 3, 5, 4), lo=0.0, hi=math.inf, mode="guided", dtype=np.float32,
                   seed=21))
@example(case=dict(shape=(3, 7), lo=-0.5, hi=0.5, mode=0, dtype=np.float64, seed=22))
def test_rectifier_backward(backend, case):
    rng = np.random.default_rng(case["seed"])
    dt = case["dtype"]
    g = rng.standard_normal(case["shape"]).astype(dt)
    # on a half-integer grid, so that out == lo and out == hi (mask 0: strict bounds) occur
    y = (np.round(rng.standard_normal(case["shape"]) * 2) / 2).astype(dt)
    if math.isfinite(case["hi"]):
        y = np.minimum(y, case["hi"])
    if math.isfinite(case["lo"]):
        y = np.maximum(y, case["lo"])
    before = frozen(g, y)
    mode = K.mode_code(case["mode"])
    got = K.rectifier_backward(g, y, case["mode"], case["lo"], case["hi"], module=backend)
    check(got, R.rectifier_backward(g, y, mode, case["lo"], case["hi"]), dt)
    for a, b in zip((g, y), before, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mode", ["gradient", "deconvnet", "guided"])
def test_rectifier_backward_large(backend, mode):
    """Above the size where the C++ kernel splits the work into chunks (2^21 elements), with a
    length that is no multiple of the chunk."""
    rng = np.random.default_rng(3)
    g = rng.standard_normal((3, 7, 317, 331), dtype=np.float32)
    y = np.maximum(rng.standard_normal(g.shape, dtype=np.float32), 0)
    expected = {"gradient": np.where(y > 0, g, 0), "deconvnet": np.maximum(g, 0),
                "guided": np.where(y > 0, np.maximum(g, 0), 0)}[mode]
    np.testing.assert_array_equal(host(K.rectifier_backward(g, y, mode, module=backend)),
                                  expected)


# ---------------------------------------------------------------------------------------------
# lrn_backward
# ---------------------------------------------------------------------------------------------
@st.composite
def lrn_cases(draw):
    return dict(n=draw(st.integers(1, 3)), c=draw(st.integers(1, 9)),
                hw=(draw(st.integers(1, 6)), draw(st.integers(1, 5))),
                size=draw(st.integers(1, 7)),
                alpha=draw(st.sampled_from([1e-4, 2e-5, 0.1, 1.0])),
                beta=draw(st.sampled_from([0.75, 0.5, 1.0, 0.3])),
                bias=draw(st.sampled_from([1.0, 2.0, 0.5])),
                dtype=draw(dtypes), seed=draw(seeds))


@SETTINGS
@given(case=lrn_cases())
@example(case=dict(n=2, c=7, hw=(5, 3), size=5, alpha=1e-4, beta=0.75, bias=1.0,
                   dtype=np.float32, seed=31))  # AlexNet's LRN
@example(case=dict(n=3, c=6, hw=(4, 5), size=4, alpha=0.5, beta=0.75, bias=2.0,
                   dtype=np.float64, seed=32))  # even size: asymmetric window
def test_lrn_backward(backend, case):
    rng = np.random.default_rng(case["seed"])
    dt = case["dtype"]
    shape = (case["n"], case["c"], *case["hw"])
    x = (rng.standard_normal(shape) * 2).astype(dt)
    g = rng.standard_normal(shape).astype(dt)
    before = frozen(g, x)
    args = (case["size"], case["alpha"], case["beta"], case["bias"])
    got = K.lrn_backward(g, x, *args, module=backend)
    check(got, R.lrn_backward(g, x, *args), dt)
    for a, b in zip((g, x), before, strict=True):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------------
# avg_pool2d_backward / global_avg_pool_backward
# ---------------------------------------------------------------------------------------------
AVG_EXAMPLES = [
    dict(n=2, c=3, hw=(9, 7), k=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), dilations=(1, 1),
         ceil_mode=True, dtype=np.float32, seed=41),
    dict(n=3, c=2, hw=(8, 11), k=(3, 2), strides=(2, 3), pads=(1, 0, 0, 1), dilations=(1, 1),
         ceil_mode=True, dtype=np.float64, seed=42),
    dict(n=1, c=4, hw=(7, 6), k=(2, 2), strides=(3, 3), pads=(0, 0, 0, 0), dilations=(1, 1),
         ceil_mode=False, dtype=np.float32, seed=43),
]


@SETTINGS
@given(case=pool_cases(dilation=False), count_include_pad=st.booleans())
@example(case=AVG_EXAMPLES[0], count_include_pad=True)
@example(case=AVG_EXAMPLES[0], count_include_pad=False)
@example(case=AVG_EXAMPLES[1], count_include_pad=True)
@example(case=AVG_EXAMPLES[1], count_include_pad=False)
@example(case=AVG_EXAMPLES[2], count_include_pad=False)
def test_avg_pool2d_backward(backend, case, count_include_pad):
    rng = np.random.default_rng(case["seed"])
    dt = case["dtype"]
    in_shape = (case["n"], case["c"], *case["hw"])
    (h, w), (kh, kw), (sh, sw) = case["hw"], case["k"], case["strides"]
    pt, pl, pb, pr = case["pads"]
    ho = R.pool_out_size(h, kh, sh, pt, pb, 1, case["ceil_mode"])
    wo = R.pool_out_size(w, kw, sw, pl, pr, 1, case["ceil_mode"])
    g = rng.standard_normal((case["n"], case["c"], ho, wo)).astype(dt)
    before = frozen(g)
    args = (in_shape, case["k"], case["strides"], case["pads"], count_include_pad)
    got = K.avg_pool2d_backward(g, *args, module=backend)
    check(got, R.avg_pool2d_backward(g, *args), dt)
    np.testing.assert_array_equal(g, before[0])


@SETTINGS
@given(n=st.integers(1, 3), c=st.integers(1, 5), h=st.integers(1, 9), w=st.integers(1, 8),
       dtype=dtypes, seed=seeds)
@example(n=2, c=3, h=7, w=5, dtype=np.float32, seed=51)
def test_global_avg_pool_backward(backend, n, c, h, w, dtype, seed):
    g = np.random.default_rng(seed).standard_normal((n, c, 1, 1)).astype(dtype)
    got = K.global_avg_pool_backward(g, (n, c, h, w), module=backend)
    check(got, R.global_avg_pool_backward(g, (n, c, h, w)), dtype)


# ---------------------------------------------------------------------------------------------
# larger shapes, one example each: the blocked code paths (many channels, long rows)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("group", [1, 4, 24])
def test_conv2d_backward_data_larger(backend, dtype, group):
    rng = np.random.default_rng(group)
    n, c, m, h, w = 2, 24, 24, 19, 23
    g = rng.standard_normal((n, m, h, w)).astype(dtype)  # 3x3, pads 1: same size
    wt = rng.standard_normal((m, c // group, 3, 3)).astype(dtype)
    args = ((h, w), (1, 1), (1, 1, 1, 1), (1, 1), group)
    check(K.conv2d_backward_data(g, wt, *args, module=backend),
          R.conv2d_backward_data(g, wt, *args), dtype)


def test_numba_conv2d_backward_data_images_end_to_end(monkeypatch):
    """The numba kernel lays the planes of several images end to end in one task when maps are
    small and tasks plentiful; force that path (it is rare on the small shapes above)."""
    if K.available()["numba"] is not None:
        pytest.skip(f"backend numba unavailable: {K.available()['numba']}")
    from pydevis.kernels import _numba_conv

    mod = K.get("numba")
    monkeypatch.setattr(_numba_conv, "_MIN_TASKS_PER_THREAD", 0)
    for case in CONV_EXAMPLES:
        case = dict(case, n=5)
        g, w = _conv_args(case)
        args = (case["hw"], case["strides"], case["pads"], case["dilations"], case["group"])
        check(K.conv2d_backward_data(g, w, *args, module=mod),
              R.conv2d_backward_data(g, w, *args), case["dtype"])
