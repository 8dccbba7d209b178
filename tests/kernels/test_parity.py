"""Every kernel of every available backend against the naive numpy oracle (``_reference.py``):
here the rectifiers, LRN and the average pools; conv in test_parity_conv.py, MaxPool in
test_parity_maxpool.py, the shared settings and check in parity.py.

Shapes are drawn by hypothesis and kept small (the oracle is a Python loop): distinct, odd
dimensions, groups (dense, grouped, depthwise, depthwise with a channel multiplier), strides,
dilations, asymmetric pads, ceil_mode pooling shapes, both ``count_include_pad``, overlapping
max-pool windows whose switches repeat. float32 is checked to rtol 1e-4, float64 to 1e-10, both
relative to the largest magnitude of the expected result (sums can cancel to ~0 elementwise).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import pydevis.kernels as K
from parity import SETTINGS, check, dtypes, frozen, host, pool_cases, seeds
from pydevis.kernels import _reference as R


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
