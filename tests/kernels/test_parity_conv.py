"""conv2d_backward_data and linear_backward_data of every available backend against the naive
numpy oracle (``_reference.py``); see test_parity.py for the cases and tolerances."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pydevis.kernels as K
from parity import SETTINGS, check, dtypes, frozen, host, seeds, with_examples
from pydevis.kernels import _reference as R


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




@SETTINGS
@given(case=conv_cases())
@with_examples(CONV_EXAMPLES)
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
@with_examples(CONV_EXAMPLES)
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


# label: n, c, m, group, (h, w), (kh, kw), strides, pads, dilations. Output planes of >= 400
# pixels (the per-sample path) cut into several GEMM tiles: the phase-split col2im of strided
# convs (col2im.h) and its unsplit, on rows that are and are not a multiple of the stride.
PLANE_CASES = {
    "11x11/4 (AlexNet conv1)": (2, 3, 8, 1, (87, 91), (11, 11), (4, 4), (2, 2, 2, 2), (1, 1)),
    "3x3/2 pad 1": (1, 40, 6, 1, (45, 41), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
    "3x2/(2,3) dilated, grouped": (2, 8, 6, 2, (50, 71), (3, 2), (2, 3), (2, 0, 1, 3), (2, 2)),
    "3x3/1 pad 1 (VGG)": (2, 24, 5, 1, (30, 27), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    "5x5/3 no pad, unreached edge": (3, 4, 7, 1, (67, 68), (5, 5), (3, 3), (0, 0, 0, 0), (1, 1)),
    # depthwise (the C++ backend's gather kernel): MobileNet's strided layer, and a dilated 5x4
    # with uneven pads (more than three taps per row, phases of unequal length)
    # 1×1 to few channels at batch 1: the C++ backend splits the pixels across its threads
    "1x1 to 16 channels, batch 1": (1, 16, 24, 1, (30, 28), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),
    "depthwise 3x3/2 pad 1": (2, 5, 5, 5, (45, 42), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
    "depthwise 5x4/(1,3) dilated": (1, 3, 3, 3, (33, 64), (5, 4), (1, 3), (3, 0, 1, 2), (2, 2)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("label", list(PLANE_CASES))
def test_conv2d_backward_data_large_planes(backend, dtype, label):
    n, c, m, group, hw, k, strides, pads, dil = PLANE_CASES[label]
    case = dict(n=n, c=c, m=m, group=group, hw=hw, k=k, strides=strides, pads=pads,
                dilations=dil, dtype=dtype, seed=len(label))
    g, w = _conv_args(case)
    assert g.shape[2] * g.shape[3] >= 400  # the per-sample (not batched) path
    args = (hw, strides, pads, dil, group)
    check(K.conv2d_backward_data(g, w, *args, module=backend),
          R.conv2d_backward_data(g, w, *args), dtype)


# Output planes under 400 pixels at batch > 1 (the batched path: GEMMs over several samples)
# with too few channel blocks for the team: the C++ backend splits the samples as well, in
# ragged parts (7 samples in 4), grouped, strided; a 1x1 conv from 24 channels (one block).
# label: n, c, m, group, (h, w), (kh, kw), strides, pads
BATCHED_CASES = {
    "1x1 24->40, batch 8, 14x14": (8, 24, 40, 1, (14, 14), (1, 1), (1, 1), (0, 0, 0, 0)),
    "3x3 pad 1, batch 7, 15x15": (7, 12, 20, 1, (15, 15), (3, 3), (1, 1), (1, 1, 1, 1)),
    "3x3/2 grouped, batch 6": (6, 8, 10, 2, (19, 20), (3, 3), (2, 2), (1, 0, 1, 1)),
    "1x1, batch 6, 7x7": (6, 32, 64, 1, (7, 7), (1, 1), (1, 1), (0, 0, 0, 0)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("label", list(BATCHED_CASES))
def test_conv2d_backward_data_batched_sample_parts(backend, dtype, label):
    n, c, m, group, hw, k, strides, pads = BATCHED_CASES[label]
    case = dict(n=n, c=c, m=m, group=group, hw=hw, k=k, strides=strides, pads=pads,
                dilations=(1, 1), dtype=dtype, seed=len(label))
    g, w = _conv_args(case)
    assert g.shape[2] * g.shape[3] < 400 and n > 1  # the batched path
    args = (hw, strides, pads, (1, 1), group)
    check(K.conv2d_backward_data(g, w, *args, module=backend),
          R.conv2d_backward_data(g, w, *args), dtype)


# 3×3, stride 1, undilated, ungrouped, C and M >= 16, float32: the C++ backend's Winograd
# F(2×2, 3×3) and F(4×4, 3×3) paths (winograd.cpp), held to 1e-5 (F(4×4): 3e-5) of the largest
# value of the float64 result
# (tighter than the generic float32 tolerance); float64 (the direct path) to 1e-12. Odd and even
# sizes, pads that keep, shrink and grow the plane, asymmetric pads, blocks of tile rows that
# span samples (13×13, n = 3), 1 and several samples, groups; all but the first and the last
# have the >= 128 tiles (n·⌈h/2⌉·⌈w/2⌉) and >= 16 channels per group that the Winograd path
# needs, those two stay on the direct one.
# n, c, m, (h, w), pads (top, left, bottom, right)[, group]
WINOGRAD_CASES = [
    (1, 16, 16, (5, 7), (1, 1, 1, 1)),
    (3, 17, 24, (13, 13), (1, 1, 1, 1)),
    (2, 32, 16, (30, 27), (0, 0, 0, 0)),
    (2, 16, 20, (21, 24), (2, 0, 1, 2)),
    (1, 20, 18, (26, 21), (3, 1, 2, 3)),
    (131, 16, 16, (1, 2), (1, 1, 1, 1)),
    (4, 64, 48, (56, 57), (1, 1, 1, 1)),
    # one sample, 20 tile rows in 3 blocks of 7 rows: on 2+ threads made 4 blocks of 5, so
    # that no thread idles (winograd.cpp's whole rounds)
    (1, 64, 64, (40, 40), (1, 1, 1, 1)),
    # F(4×4, 3×3) (planes >= 28×28, >= 2048 pixels over the batch): square, odd, unequal
    # sides (tiles that run past the plane), asymmetric pads, several samples, groups
    (2, 32, 48, (32, 32), (1, 1, 1, 1)),
    (1, 24, 16, (49, 45), (2, 0, 1, 2)),
    (3, 16, 20, (28, 41), (0, 0, 0, 0)),
    (1, 20, 18, (46, 51), (3, 1, 2, 3)),
    # grouped (CaffeNet's conv4/conv5 have 2 groups): the Winograd path per group
    (3, 64, 32, (13, 13), (1, 1, 1, 1), 2),
    (2, 48, 96, (22, 19), (0, 1, 2, 1), 3),
    (3, 32, 32, (13, 13), (1, 1, 1, 1), 4),  # 8 channels per group: the direct path
    (2, 64, 32, (30, 30), (1, 1, 1, 1), 2),  # F(4×4, 3×3) per group
]


def _winograd_f4(n, c, m, hw, group):
    """Whether winograd.cpp takes F(4×4, 3×3) for this case (its kMinF4Side, kMinF4Pixels)."""
    return (min(c, m) // group >= 16 and min(hw) >= 28 and n * hw[0] * hw[1] >= 2048)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", WINOGRAD_CASES, ids=str)
def test_conv2d_backward_data_3x3_stride1_tight(backend, dtype, case):
    n, c, m, hw, pads, group = case if len(case) == 6 else (*case, 1)
    spec = dict(n=n, c=c, m=m, group=group, hw=hw, k=(3, 3), strides=(1, 1), pads=pads,
                dilations=(1, 1), dtype=dtype, seed=c + m)
    g, w = _conv_args(spec)
    args = (hw, (1, 1), pads, (1, 1), group)
    got = host(K.conv2d_backward_data(g, w, *args, module=backend))
    ref = R.conv2d_backward_data(g.astype(np.float64), w.astype(np.float64), *args)
    assert got.dtype == dtype and got.shape == ref.shape
    err = float(np.abs(got.astype(np.float64) - ref).max()) / float(np.abs(ref).max())
    # F(4×4, 3×3)'s transforms scale by up to 8 and divide by 6 and 24: ~1e-5 where F(2×2, 3×3)
    # stays near 5e-7 (an error in a transform would be of order 1)
    f32 = 3e-5 if _winograd_f4(n, c, m, hw, group) else 1e-5
    assert err <= (f32 if dtype == np.float32 else 1e-12), err


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


# grad_out whose channels are zero but for a few (a class target's last conv: SqueezeNet's
# conv10, 1000 channels, one nonzero per image): the C++ backend then runs the conv on the
# compacted channels. label: n, c, m, (h, w), k, stride, pad, nonzero channels (None: none)
SPARSE_CASES = {
    "1x1, one class, batch 1": (1, 24, 100, (13, 13), 1, 1, 0, [37]),
    "1x1, a class per image": (3, 16, 96, (9, 11), 1, 1, 0, [0, 50, 95]),
    "3x3 Winograd-sized": (1, 32, 64, (28, 28), 3, 1, 1, [5, 6, 63]),
    "3x3 stride 2": (2, 8, 70, (15, 14), 3, 2, 1, [69]),
    "half the channels": (1, 8, 64, (7, 7), 1, 1, 0, list(range(0, 64, 2))),
    "all zero": (2, 8, 64, (7, 7), 3, 1, 1, []),
    # SqueezeNet's conv10 at batch 8: 1.35 M values, the scan for the nonzero channels pooled
    "1x1, a class per image, batch 8": (8, 16, 1000, (13, 13), 1, 1, 0,
                                        [3, 999, 500, 3, 0, 998, 1, 2]),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("label", list(SPARSE_CASES))
def test_conv2d_backward_data_zero_channels(backend, dtype, label):
    n, c, m, (h, w), k, s, p, nonzero = SPARSE_CASES[label]
    rng = np.random.default_rng(len(label))
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    g = np.zeros((n, m, ho, wo), dtype)
    for i, ch in enumerate(nonzero):  # image i % n gets channel ch
        g[i % n, ch] = rng.standard_normal((ho, wo))
    wt = rng.standard_normal((m, c, k, k)).astype(dtype)
    args = ((h, w), (s, s), (p, p, p, p), (1, 1), 1)
    got = K.conv2d_backward_data(g, wt, *args, module=backend)
    assert got.shape == (n, c, h, w) and (np.any(got != 0) or not nonzero)
    check(got, R.conv2d_backward_data(g, wt, *args), dtype)


def test_conv2d_backward_data_zero_channels_keep_nan(backend):
    """A NaN in an otherwise zero grad_out still reaches grad_in (the channel counts as
    nonzero)."""
    g = np.zeros((1, 80, 6, 6), np.float32)
    g[0, 7, 2, 3] = np.nan
    wt = np.ones((80, 4, 1, 1), np.float32)
    got = K.conv2d_backward_data(g, wt, (6, 6), module=backend)
    assert np.isnan(got[0, :, 2, 3]).all() and not np.isnan(got[0, :, 0, 0]).any()
