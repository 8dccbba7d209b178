"""max_pool2d_backward of every available backend against the naive numpy oracle
(``_reference.py``) and ONNX Runtime's switches; see test_parity.py for the cases and tolerances."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

import pydevis.kernels as K
from parity import SETTINGS, check, frozen, host, pool_cases, with_examples
from pydevis.kernels import _reference as R

# ---------------------------------------------------------------------------------------------
# max_pool2d_backward: the switches found from the forward input
# ---------------------------------------------------------------------------------------------
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
@with_examples(POOL_EXAMPLES)
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
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                  ir_version=8)
        sess = ort.InferenceSession(model.SerializeToString(),
                                    providers=["CPUExecutionProvider"])
        y, idx = sess.run(None, {"x": x})
        g = rng.standard_normal(y.shape).astype(np.float32)
        got = host(K.max_pool2d_backward(g, x, (3, 3), (2, 2), (1, 0, 0, 1), (1, 1),
                                         module=backend))
        check(got, scatter_switches(g, idx, x.shape), np.float32)


# ---------------------------------------------------------------------------------------------
# the 2x2 stride-2 fast path of the C++ kernel (VGG's MaxPool), fused Relu backward included
# ---------------------------------------------------------------------------------------------
def _vgg_pool_input(shape, dtype, seed) -> np.ndarray:
    """Values on a coarse grid (ties in most windows), sprinkled with NaN, -inf and +inf, and
    where the plane is wide enough an all-NaN, an all -inf and a mixed window."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, shape).astype(np.float64) / 2
    u = rng.random(shape)
    x[u < 0.08] = np.nan
    x[(u >= 0.08) & (u < 0.16)] = -np.inf
    x[(u >= 0.16) & (u < 0.2)] = np.inf
    if shape[2] >= 2 and shape[3] >= 6:
        x[:, 0, :2, :2] = np.nan
        x[:, 0, :2, 2:4] = -np.inf
        x[:, 0, :2, 4:6] = [[np.nan, -np.inf], [1.5, 1.5]]  # the first 1.5 wins
    return x.astype(dtype)


@pytest.mark.parametrize("rectify", [None, "gradient", "deconvnet", "guided"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hw, pads", [
    ((8, 10), (0, 0, 0, 0)), ((9, 7), (0, 0, 0, 0)), ((6, 75), (0, 0, 0, 0)),
    ((33, 64), (0, 0, 0, 0)), ((3, 3), (0, 0, 0, 0)), ((2, 2), (0, 0, 0, 0)),
    ((8, 10), (0, 0, 1, 1)),  # end pads that change nothing: still the fast geometry
    ((9, 7), (0, 0, 1, 1)),  # end pads giving a last, cut window: the general path
])
def test_max_pool2d_backward_2x2_stride_2(backend, hw, pads, dtype, rectify):
    """VGG's 2x2/2 MaxPool (the C++ kernel's fast path) against the numpy oracle, bit for bit:
    ties (the first tap wins), NaN and -inf (never win; a window of them routes nothing), odd
    sizes (the last row/column no window sees gets 0), every fused Relu backward mode."""
    x = _vgg_pool_input((3, 2, *hw), dtype, seed=hw[0] * 100 + hw[1])
    ho = R.pool_out_size(hw[0], 2, 2, pads[0], pads[2])
    wo = R.pool_out_size(hw[1], 2, 2, pads[1], pads[3])
    g = np.random.default_rng(7).standard_normal((3, 2, ho, wo)).astype(dtype)
    args = ((2, 2), (2, 2), pads, (1, 1))
    before = frozen(g, x)
    got = host(K.max_pool2d_backward(g, x, *args, rectify=rectify, module=backend))
    want = R.max_pool2d_backward(g, x, *args)
    if rectify is not None:
        want = R.rectifier_backward(want, x, K.mode_code(rectify))
    assert got.dtype == np.dtype(dtype) and np.any(want != 0)
    np.testing.assert_array_equal(got, want)
    for a, b in zip((g, x), before, strict=True):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------------
# the 3x3 stride-2 fast path of the C++ kernel (AlexNet, SqueezeNet, ResNet's stem): overlapping
# windows, so up to four terms reach a pixel, added in the order of their windows
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rectify", [None, "gradient", "deconvnet", "guided"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pads, ceil_mode", [
    ((0, 0, 0, 0), False), ((0, 0, 0, 0), True),  # AlexNet, SqueezeNet (ceil: a cut window)
    ((1, 1, 1, 1), False),  # ResNet's stem
    ((1, 0, 0, 1), True), ((0, 1, 1, 0), False),  # one begin pad only
])
@pytest.mark.parametrize("hw", [(3, 3), (4, 5), (8, 10), (9, 7), (10, 66), (7, 75)])
def test_max_pool2d_backward_3x3_stride_2(backend, hw, pads, ceil_mode, dtype, rectify):
    """3x3/2 MaxPool against the numpy oracle, bit for bit: ties in most windows (the first tap
    in (kh, kw) order wins), NaN and +-inf, windows cut by the padding or past the plane, rows
    of 1 to 3 blocks of 16 windows, every fused Relu backward mode. grad_out is on a grid of
    quarters, so that float32 sums of up to four terms are exact in any order; float64 adds
    normal values, in the oracle's order (output row, then column)."""
    x = _vgg_pool_input((2, 2, *hw), dtype, seed=hw[0] * 100 + hw[1] + sum(pads))
    ho = R.pool_out_size(hw[0], 3, 2, pads[0], pads[2], 1, ceil_mode)
    wo = R.pool_out_size(hw[1], 3, 2, pads[1], pads[3], 1, ceil_mode)
    rng = np.random.default_rng(8)
    g = (rng.integers(-8, 9, (2, 2, ho, wo)) / 4 if dtype == np.float32
         else rng.standard_normal((2, 2, ho, wo))).astype(dtype)
    args = ((3, 3), (2, 2), pads, (1, 1))
    before = frozen(g, x)
    got = host(K.max_pool2d_backward(g, x, *args, rectify=rectify, module=backend))
    routed = R.max_pool2d_backward(g, x, *args)
    want = routed if rectify is None else R.rectifier_backward(routed, x, K.mode_code(rectify))
    assert got.dtype == np.dtype(dtype) and np.any(routed != 0)
    np.testing.assert_array_equal(got, want)
    for a, b in zip((g, x), before, strict=True):
        np.testing.assert_array_equal(a, b)
