"""pydevis._C rejects bad arguments with a ValueError naming the argument, before touching memory.

The backward kernels' values are checked against ``_reference.py`` in test_parity*.py; here the
argument checks of the C++ wrappers (dtype, rank, shape agreement, contiguity, alignment, index
ranges, size limits: no dimension, element count or integer parameter above 2^31 - 1, so a huge
but well-formed request is a ValueError, not an allocation), the "new array, inputs untouched"
contract, and the ascent kernels against the reference (bit for bit where docs/kernels.md
promises numpy's rounding).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from pydevis.kernels import _cpp
from pydevis.kernels import _reference as R

if _cpp.unavailable_reason() is not None:
    pytest.skip(f"C++ extension not built: {_cpp.unavailable_reason()}", allow_module_level=True)

_C = _cpp._C
RNG = np.random.default_rng(20141128)
BIG = 2**31 - 1  # the largest dimension, element count and integer parameter accepted


def rand(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def misaligned(a: np.ndarray) -> np.ndarray:
    """A C-contiguous, unaligned copy of a."""
    buf = np.zeros(a.nbytes + 1, np.uint8)
    out = np.frombuffer(buf.data, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    out[...] = a
    assert out.flags.c_contiguous and not out.flags.aligned
    return out


# ---- conv2d_backward_data: grad_out (2, 6, 5, 4) from X (2, 4, 7, 5), W (6, 2, 3, 2), group 2
CONV = dict(grad_out=rand(2, 6, 5, 4), weight=rand(6, 2, 3, 2), in_hw=(7, 5), strides=(1, 1),
            pads=(0, 0, 0, 0), dilations=(1, 1), group=2)


def conv(**kw):
    return _C.conv2d_backward_data(**{**CONV, **kw})


def test_conv_valid_call():
    out = conv()
    assert out.shape == (2, 4, 7, 5) and out.dtype == np.float32


@pytest.mark.parametrize("kw, match", [
    ({"grad_out": CONV["grad_out"].astype(np.int32)}, "^grad_out: dtype int32"),
    ({"grad_out": CONV["grad_out"].astype(np.float16)}, "^grad_out: dtype float16"),
    ({"grad_out": CONV["grad_out"].astype(">f4")}, "^grad_out: dtype"),
    ({"weight": CONV["weight"].astype(np.float64)}, "^weight: dtype float64 differs"),
    ({"grad_out": CONV["grad_out"][0]}, "^grad_out: expected a 4-D array"),
    ({"weight": CONV["weight"][..., 0]}, "^weight: expected a 4-D array"),
    ({"grad_out": np.asfortranarray(CONV["grad_out"])}, "^grad_out: array must be C-contiguous"),
    ({"weight": rand(6, 2, 3, 4)[..., ::2]}, "^weight: array must be C-contiguous"),
    ({"grad_out": misaligned(CONV["grad_out"])}, "^grad_out: array must be aligned"),
    ({"weight": rand(5, 2, 3, 2)}, "^weight: .* output channels"),
    ({"group": 4}, "^group: 4 does not divide"),
    ({"group": 0}, "^group: must be >= 1"),
    ({"in_hw": (8, 5)}, "^grad_out: shape .* does not match the Conv output"),
    ({"in_hw": (7, 5, 1)}, "^in_hw: expected 2 integers"),
    ({"in_hw": (0, 5)}, "^in_hw: every entry must be >= 1"),
    ({"strides": (0, 1)}, "^strides: every entry must be >= 1"),
    ({"pads": (0, 0)}, "^pads: expected 4 integers"),
    ({"pads": (0, -1, 0, 1)}, "^pads: every entry must be >= 0"),
    ({"dilations": (1, 0)}, "^dilations: every entry must be >= 1"),
    ({"dilations": (4, 1)}, "^weight: dilated kernel .* larger than the padded input"),
    ({"group": 2**40}, f"^group: must be <= {BIG}"),
    ({"in_hw": (2**31, 5)}, f"^in_hw: every entry must be <= {BIG}"),
    ({"strides": (2**40, 1)}, f"^strides: every entry must be <= {BIG}"),
    ({"pads": (0, 2**62, 0, 0)}, f"^pads: every entry must be <= {BIG}"),
    ({"dilations": (1, 2**33)}, f"^dilations: every entry must be <= {BIG}"),
    ({"in_hw": (10**5, 10**5)},
     rf"^in_hw: output shape \(2, 4, 100000, 100000\) has more than {BIG} \(2\^31 - 1\) elements"),
    # no output channel: any group divides 0, and C = 2 * group would be 2^32 - 2
    ({"grad_out": rand(2, 0, 5, 4), "weight": rand(0, 2, 3, 2), "group": BIG},
     rf"^in_hw: output shape \(2, {2 * BIG}, 7, 5\) has a dimension above {BIG}"),
])
def test_conv_rejects(kw, match):
    with pytest.raises(ValueError, match=match):
        conv(**kw)


def test_conv_rejects_non_arrays():
    with pytest.raises(TypeError):
        conv(grad_out=CONV["grad_out"].tolist())


# ---- rectifier_backward
RECT = dict(grad_out=rand(3, 4, 5), out=rand(3, 4, 5), mode=2, lo=0.0, hi=float("inf"))


def rect(**kw):
    return _C.rectifier_backward(**{**RECT, **kw})


@pytest.mark.parametrize("kw, match", [
    ({"grad_out": RECT["grad_out"].astype(np.int16)}, "^grad_out: dtype int16"),
    ({"out": RECT["out"].astype(np.float64)}, "^out: dtype float64 differs"),
    ({"out": rand(3, 4, 6)}, r"^out: shape \(3, 4, 6\) != grad_out shape \(3, 4, 5\)"),
    ({"out": rand(60)}, "^out: shape"),
    ({"grad_out": rand(3, 4, 10)[..., ::2]}, "^grad_out: array must be C-contiguous"),
    ({"out": misaligned(RECT["out"])}, "^out: array must be aligned"),
    ({"mode": 3}, "^mode: expected 0"),
    ({"mode": -1}, "^mode: expected 0"),
])
def test_rectifier_rejects(kw, match):
    with pytest.raises(ValueError, match=match):
        rect(**kw)


# ---- lrn_backward
LRN = dict(grad_out=rand(2, 5, 3, 4), x=rand(2, 5, 3, 4), size=3, alpha=1e-4, beta=0.75, bias=1.0)


def lrn(**kw):
    return _C.lrn_backward(**{**LRN, **kw})


@pytest.mark.parametrize("kw, match", [
    ({"grad_out": LRN["grad_out"].astype(np.complex64)}, "^grad_out: dtype complex64"),
    ({"x": LRN["x"].astype(np.float64)}, "^x: dtype float64 differs"),
    ({"x": rand(2, 4, 3, 4)}, r"^x: shape \(2, 4, 3, 4\) != grad_out shape"),
    ({"grad_out": LRN["grad_out"][0]}, "^grad_out: expected a 4-D array"),
    ({"x": np.asfortranarray(LRN["x"])}, "^x: array must be C-contiguous"),
    ({"size": 0}, "^size: must be >= 1"),
    ({"size": 2**40}, f"^size: must be <= {BIG}"),
    ({"bias": -1.0}, "^bias: must be finite and > 0"),
    ({"bias": 0.0}, "^bias: must be finite and > 0"),
    ({"bias": float("inf")}, "^bias: must be finite and > 0"),
    ({"alpha": -1e-4}, "^alpha: must be finite and >= 0"),
    ({"alpha": float("nan")}, "^alpha: must be finite and >= 0"),
    ({"beta": float("inf")}, "^beta: must be finite"),
])
def test_lrn_rejects(kw, match):
    with pytest.raises(ValueError, match=match):
        lrn(**kw)


# ---- avg_pool2d_backward: X (2, 3, 7, 6), kernel 3x2, stride 2 -> (2, 3, 3, 3)
AVG = dict(grad_out=rand(2, 3, 3, 3), in_shape=(2, 3, 7, 6), kernel_shape=(3, 2),
           strides=(2, 2), pads=(0, 0, 0, 0), count_include_pad=False)


def avg(**kw):
    return _C.avg_pool2d_backward(**{**AVG, **kw})


def test_avg_accepts_ceil_mode_shape():
    assert avg(grad_out=rand(2, 3, 3, 3), in_shape=(2, 3, 8, 6)).shape == (2, 3, 8, 6)


@pytest.mark.parametrize("kw, match", [
    ({"grad_out": AVG["grad_out"].astype(np.uint8)}, "^grad_out: dtype uint8"),
    ({"grad_out": AVG["grad_out"][0]}, "^grad_out: expected a 4-D array"),
    ({"grad_out": rand(2, 3, 3, 6)[..., ::2]}, "^grad_out: array must be C-contiguous"),
    ({"in_shape": (3, 3, 7, 6)}, "^in_shape: .* does not match N, C"),
    ({"in_shape": (2, 3, 7)}, "^in_shape: expected 4 integers"),
    ({"kernel_shape": (0, 2)}, "^kernel_shape: every entry must be >= 1"),
    ({"kernel_shape": (9, 2)}, "^kernel_shape: 9x2 is larger than the padded input"),
    ({"strides": (2, 0)}, "^strides: every entry must be >= 1"),
    ({"pads": (0, 0, -1, 0)}, "^pads: every entry must be >= 0"),
    ({"grad_out": rand(2, 3, 5, 3)}, "^grad_out: shape .* is larger than the AveragePool output"),
    ({"in_shape": (2, 3, 10**5, 10**5)},
     rf"^in_shape: output shape \(2, 3, 100000, 100000\) has more than {BIG}"),
    ({"kernel_shape": (2**31, 2)}, f"^kernel_shape: every entry must be <= {BIG}"),
    ({"strides": (1, 2**62)}, f"^strides: every entry must be <= {BIG}"),
    ({"pads": (2**40, 0, 0, 0)}, f"^pads: every entry must be <= {BIG}"),
])
def test_avg_rejects(kw, match):
    with pytest.raises(ValueError, match=match):
        avg(**kw)


# ---- max_pool2d_backward: X (2, 3, 7, 6), kernel 3x2, stride 2 -> (2, 3, 3, 3)
MAXP = dict(grad_out=rand(2, 3, 3, 3), x=rand(2, 3, 7, 6), kernel_shape=(3, 2), strides=(2, 2),
            pads=(0, 0, 0, 0), dilations=(1, 1))


def maxp(**kw):
    return _C.max_pool2d_backward(**{**MAXP, **kw})


def test_maxpool_matches_reference_and_accepts_ceil_mode():
    np.testing.assert_allclose(maxp(), R.max_pool2d_backward(**MAXP), rtol=1e-6)
    assert maxp(x=rand(2, 3, 8, 6)).shape == (2, 3, 8, 6)


@pytest.mark.parametrize("kw, match", [
    ({"grad_out": MAXP["grad_out"].astype(np.int64)}, "^grad_out: dtype int64"),
    ({"x": MAXP["x"].astype(np.float64)}, "^x: dtype float64 differs from grad_out dtype float32"),
    ({"x": MAXP["x"][0]}, "^x: expected a 4-D array"),
    ({"x": rand(2, 3, 7, 12)[..., ::2]}, "^x: array must be C-contiguous"),
    ({"x": rand(2, 4, 7, 6)}, "^x: shape .* does not match N, C"),
    ({"kernel_shape": (3,)}, "^kernel_shape: expected 2 integers"),
    ({"kernel_shape": (0, 2)}, "^kernel_shape: every entry must be >= 1"),
    ({"kernel_shape": (9, 2)}, "^kernel_shape: dilated kernel 9x2 is larger than the padded"),
    ({"dilations": (4, 1)}, "^kernel_shape: dilated kernel 9x2 is larger than the padded"),
    ({"dilations": (0, 1)}, "^dilations: every entry must be >= 1"),
    ({"strides": (2, 0)}, "^strides: every entry must be >= 1"),
    ({"pads": (0, 0, -1, 0)}, "^pads: every entry must be >= 0"),
    ({"grad_out": rand(2, 3, 5, 3)}, "^grad_out: shape .* is larger than the MaxPool output"),
    ({"kernel_shape": (2**31, 2)}, f"^kernel_shape: every entry must be <= {BIG}"),
    ({"pads": (2**40, 0, 0, 0)}, f"^pads: every entry must be <= {BIG}"),
])
def test_maxpool_rejects(kw, match):
    with pytest.raises(ValueError, match=match):
        maxp(**kw)


# ---- global_avg_pool_backward
@pytest.mark.parametrize("grad_out, in_shape, match", [
    (rand(2, 3, 1, 1).astype(np.int32), (2, 3, 4, 5), "^grad_out: dtype int32"),
    (rand(2, 3, 1, 2), (2, 3, 4, 5), r"^grad_out: shape \(2, 3, 1, 2\) is not \(N, C, 1, 1\)"),
    (rand(2, 3, 1, 1), (2, 4, 4, 5), "^grad_out: shape .* is not"),
    (rand(2, 3), (2, 3, 4, 5), "^grad_out: expected a 4-D array"),
    (rand(2, 3, 1, 1), (2, 3, 0, 5), "^in_shape: every entry must be >= 1"),
    (rand(2, 3, 1, 1), (2, 3, 4), "^in_shape: expected 4 integers"),
    (rand(2, 3, 1, 1), (2, 3, 10**5, 10**5),
     rf"^in_shape: output shape \(2, 3, 100000, 100000\) has more than {BIG}"),
    (rand(2, 3, 1, 1), (2, 3, 2**31, 1), f"^in_shape: every entry must be <= {BIG}"),
])
def test_gap_rejects(grad_out, in_shape, match):
    with pytest.raises(ValueError, match=match):
        _C.global_avg_pool_backward(grad_out, in_shape)


# ---- ascent kernels
V = rand(2, 3, 5, 4)
ASCENT_BAD = [
    (lambda: _C.ascent_update(V, V[:, :1].copy(), np.zeros(2), 0.0),
     r"^g: shape \(2, 1, 5, 4\) != v shape \(2, 3, 5, 4\)"),
    (lambda: _C.ascent_update(V, V.astype(np.float64), np.zeros(2), 0.0),
     "^g: dtype float64 differs from v"),
    (lambda: _C.ascent_update(V, V, np.zeros(3), 0.0), r"^eta: shape \(3,\) is not \(2,\)"),
    (lambda: _C.ascent_update(V, V, np.zeros(2, np.float32), 0.0),
     "^eta: dtype float32 is not float64"),
    (lambda: _C.ascent_update(V, V, np.zeros(4)[::2], 0.0), "^eta: array must be C-contiguous"),
    (lambda: _C.ascent_update(V[0], V[0], np.zeros(3), 0.0), "^v: expected a 4-D array"),
    (lambda: _C.gaussian_blur(V.astype(np.int32), 1.0), "^v: dtype int32"),
    (lambda: _C.gaussian_blur(np.asfortranarray(V), 1.0), "^v: array must be C-contiguous"),
    (lambda: _C.gaussian_blur(V, float("nan")), "^sigma: must be finite"),
    (lambda: _C.gaussian_blur(V, 1e12), "^sigma: 1e\\+12 is too large"),
    (lambda: _C.gaussian_blur(V, 16384.2),  # radius 65537
     r"^sigma: 16384.2 is too large \(blur radius int\(4 \* sigma \+ 0.5\) above 65536\)"),
    (lambda: _C.gaussian_blur(V, float("-inf")), "^sigma: must be finite"),
    (lambda: _C.clip_small_norm(V, 100.5), "^pct: must be <= 100"),
    (lambda: _C.clip_small_norm(V, float("nan")), "^pct: must be <= 100"),
    (lambda: _C.clip_small_contribution(V, V[:, :, :2].copy(), 50), "^g: shape"),
    (lambda: _C.clip_small_contribution(V, misaligned(V), 50), "^g: array must be aligned"),
    (lambda: _C.clamp_channels(V, np.zeros(2), np.ones(3)), r"^lo: shape \(2,\) is not \(3,\)"),
    (lambda: _C.clamp_channels(V, np.zeros(3), np.ones((3, 1))), "^hi: expected a 1-D array"),
]


@pytest.mark.parametrize("call, match", ASCENT_BAD)
def test_ascent_rejects(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_blur_largest_radius():
    """sigma 16384 gives radius 65536, the largest accepted: a finite blur (the reflected rows
    wrap around the 5 x 4 planes many times over)."""
    v = rand(1, 2, 5, 4)
    out = _C.gaussian_blur(v, 16384.0)
    assert out.shape == v.shape and np.isfinite(out).all()


def huge_view(shape, dtype=np.float32) -> np.ndarray:
    """A read-only array that numpy calls C-contiguous and aligned, of any shape, over a single
    element of memory: a binding that read it before checking its size would crash."""
    itemsize = np.dtype(dtype).itemsize
    strides = tuple(int(np.prod(shape[i + 1:], dtype=np.int64)) * itemsize
                    for i in range(len(shape)))
    a = np.lib.stride_tricks.as_strided(np.zeros(1, dtype), shape, strides, writeable=False)
    assert a.flags.c_contiguous and a.flags.aligned
    return a


HUGE = huge_view((1, 2, 2**16, 2**15))  # 2^32 elements
EMPTY_WIDE = np.empty((0, 2**31, 1, 1), np.float32)  # no element, one dimension too large
TOO_MANY = rf"shape \(1, 2, 65536, 32768\) has more than {BIG} \(2\^31 - 1\) elements"


@pytest.mark.parametrize("call, match", [
    (lambda: _C.rectifier_backward(HUGE, HUGE, 0, 0.0, 1.0), "^grad_out: " + TOO_MANY),
    (lambda: _C.rectifier_backward(rand(2), HUGE, 0, 0.0, 1.0), "^out: " + TOO_MANY),
    (lambda: _C.lrn_backward(HUGE, HUGE, 3, 1e-4, 0.75, 1.0), "^grad_out: " + TOO_MANY),
    (lambda: _C.conv2d_backward_data(CONV["grad_out"], huge_view((6, 2, 2**15, 2**15)), (7, 5),
                                     (1, 1), (0, 0, 0, 0), (1, 1), 2), "^weight: shape"),
    (lambda: _C.avg_pool2d_backward(HUGE, (1, 2, 4, 4), (2, 2), (2, 2), (0, 0, 0, 0), False),
     "^grad_out: " + TOO_MANY),
    (lambda: _C.gaussian_blur(HUGE, 1.0), "^v: " + TOO_MANY),
    (lambda: _C.clip_small_contribution(V, HUGE, 50.0), "^g: " + TOO_MANY),
    (lambda: _C.global_avg_pool_backward(EMPTY_WIDE, (1, 2, 4, 4)),
     rf"^grad_out: shape \(0, 2147483648, 1, 1\) has a dimension above {BIG}"),
    (lambda: _C.clamp_channels(EMPTY_WIDE, np.zeros(1), np.zeros(1)), "^v: shape"),
])
def test_array_size_limit(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 2, 11, 7), (2, 3, 1, 1), (1, 1, 5, 1), (1, 3, 9, 13)])
def test_ascent_kernels_match_reference(shape, dtype):
    rng = np.random.default_rng(1)
    v = (rng.standard_normal(shape) * 30).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    eta, lo = rng.standard_normal(shape[0]), rng.standard_normal(shape[1]) * 10
    hi = lo + 5
    for decay in (0.0, 0.01, 1.0):
        np.testing.assert_array_equal(_C.ascent_update(v, g, eta, decay),
                                      R.ascent_update(v, g, eta, decay))
    for pct in (0.5, 20, 33.3, 50, 99.9, 100):
        np.testing.assert_array_equal(_C.clip_small_norm(v, pct), R.clip_small_norm(v, pct))
        np.testing.assert_array_equal(_C.clip_small_contribution(v, g, pct),
                                      R.clip_small_contribution(v, g, pct))
    for a, b in ((lo, hi), (hi, lo)):  # lo > hi: hi wins
        np.testing.assert_array_equal(_C.clamp_channels(v, a, b), R.clamp_channels(v, a, b))
    for sigma in (0.3, 1.0, 2.3, 7.0):  # numpy's exp and libm's differ by an ulp here and there
        got, want = _C.gaussian_blur(v, sigma), R.gaussian_blur(v, sigma)
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-12,
                                   atol=1e-12 * np.abs(want).max())
    for copy in (_C.gaussian_blur(v, 0.0), _C.clip_small_norm(v, -1.0),
                 _C.clip_small_contribution(v, g, 0.0)):
        np.testing.assert_array_equal(copy, v)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_small_ties_nan_and_inf(dtype):
    """numpy's percentile rules: ties, a NaN score (threshold NaN), inf - inf (NaN)."""
    rng = np.random.default_rng(8)
    v = np.round(rng.standard_normal((3, 2, 37, 29)) * 2).astype(dtype)
    g = np.round(rng.standard_normal(v.shape)).astype(dtype)
    w = v.copy()
    w[0, 1, 3, 4], w[1, 0, 5, 5], w[2, :, :, :3] = np.nan, np.inf, np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for pct in (0.1, 12.5, 50, 99, 100):
            for x in (v, w):
                np.testing.assert_array_equal(_C.clip_small_norm(x, pct),
                                              R.clip_small_norm(x, pct))
                np.testing.assert_array_equal(_C.clip_small_contribution(x, g, pct),
                                              R.clip_small_contribution(x, g, pct))
        lo, hi = np.array([-1.0, np.nan]), np.array([np.inf, 2.0])
        np.testing.assert_array_equal(_C.clamp_channels(w, lo, hi), R.clamp_channels(w, lo, hi))


# ---- every entry point returns a new array of grad_out's dtype and leaves its inputs alone
CALLS = {
    "conv2d_backward_data": (_C.conv2d_backward_data, CONV),
    "rectifier_backward": (_C.rectifier_backward, RECT),
    "lrn_backward": (_C.lrn_backward, LRN),
    "avg_pool2d_backward": (_C.avg_pool2d_backward, AVG),
    "max_pool2d_backward": (_C.max_pool2d_backward, MAXP),
    "global_avg_pool_backward": (_C.global_avg_pool_backward,
                                 dict(grad_out=rand(2, 3, 1, 1), in_shape=(2, 3, 4, 5))),
    "ascent_update": (_C.ascent_update, dict(v=V, g=V * 2, eta=np.ones(2), decay=0.1)),
    "gaussian_blur": (_C.gaussian_blur, dict(v=V, sigma=1.0)),
    "clip_small_norm": (_C.clip_small_norm, dict(v=V, pct=50.0)),
    "clip_small_contribution": (_C.clip_small_contribution, dict(v=V, g=V * 2, pct=50.0)),
    "clamp_channels": (_C.clamp_channels, dict(v=V, lo=-np.ones(3), hi=np.ones(3))),
    "ascent_step": (_C.ascent_step, dict(v=V, g=V * 2, eta=np.ones(2), decay=0.1, blur_sigma=1.0,
                                         norm_pct=50.0, contrib_pct=90.0, lo=-np.ones(3),
                                         hi=np.ones(3))),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(CALLS))
def test_new_array_of_grad_out_dtype(name, dtype):
    fn, base = CALLS[name]
    # float arrays of rank > 1 take the dtype under test (eta, lo, hi stay float64)
    kw = {k: v.astype(dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f" and v.ndim > 1
          else v for k, v in base.items()}
    arrays = {k: v for k, v in kw.items() if isinstance(v, np.ndarray)}
    before = {k: v.copy() for k, v in arrays.items()}
    out = fn(**kw)
    assert isinstance(out, np.ndarray) and out.dtype == dtype and out.flags.c_contiguous
    for k, v in arrays.items():
        assert not np.shares_memory(out, v)
        np.testing.assert_array_equal(v, before[k], err_msg=f"{name} modified {k}")


def test_wrapper_exports_the_kernel_api():
    assert _cpp.NAME == "cpp"
    for name in CALLS:
        assert callable(getattr(_cpp, name))
