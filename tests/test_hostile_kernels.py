"""Fuzz of the native bindings (issue 7, item 5): random shapes, dtypes, strides, alignment,
extreme integers and floats and garbage arguments into every function of ``pydevis._C`` (the raw
extension of ``pydevis.kernels.get("cpp")``) and of ``pydevis._cuda`` where it is built raise
ValueError or TypeError, or return an array; never a crash, never a write to an input.

Each call starts from a valid one (the argument sets of tests/kernels/test_cpp_checks.py, kept
small) with some arguments replaced by drawn ones, so the draws reach every check, not only the
first. Without a GPU the CUDA module still checks every argument before its first CUDA call, so
its fuzz runs too: a call that passes the checks then fails with RuntimeError (no device).

Sizes: no dimension, element count or integer parameter above 2^31 - 1 is accepted, so a huge
but well-formed output shape is a ValueError naming the argument, never an allocation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import pydevis.kernels as kernels
from pydevis.kernels import _cuda as cuda_backend
from pydevis.kernels import _reference as REF

if kernels.available()["cpp"] is not None:
    pytest.skip(f"C++ backend unavailable: {kernels.available()['cpp']}", allow_module_level=True)

_C = kernels.get("cpp")._C
R = np.random.default_rng(0)
BIG = 2**31 - 1  # the largest dimension, element count and integer parameter accepted
MODULES = {"cpp": _C, "cuda": cuda_backend._cuda}  # _cuda: None where it is not built
HAS_GPU = kernels.available()["cuda"] is None


def module(name: str, function: str | None = None):
    """The extension module ``name`` (or its ``function``); skips where it is not built (or has
    no such function)."""
    if MODULES[name] is None:
        pytest.skip("pydevis._cuda is not built")
    if function is None:
        return MODULES[name]
    if not hasattr(MODULES[name], function):
        pytest.skip(f"{MODULES[name].__name__} has no {function}")
    return getattr(MODULES[name], function)


def call_or_no_device(name: str, fn, *args, **kw):
    """fn(*args, **kw); for the CUDA module without a usable GPU, None when the call got past the
    argument checks (the RuntimeError of its first CUDA call)."""
    try:
        return fn(*args, **kw)
    except RuntimeError as exc:
        if name != "cuda" or HAS_GPU or not str(exc).startswith("CUDA error"):
            raise
        return None


def to_host(a):
    return a.to_host() if hasattr(a, "to_host") else a


def f32(*shape):
    return R.standard_normal(shape).astype(np.float32)


VALID = {
    "add": dict(a=f32(2, 3), b=f32(2, 3)),
    "contiguous": dict(a=f32(4, 3, 2)[:, ::-2].transpose(2, 0, 1)),
    "conv2d_backward_data": dict(grad_out=f32(1, 4, 3, 3), weight=f32(4, 1, 3, 3), in_hw=(5, 5),
                                 strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=2),
    "max_pool2d_backward": dict(grad_out=f32(1, 2, 2, 2), x=f32(1, 2, 4, 5), kernel_shape=(2, 2),
                                strides=(2, 2), pads=(0, 0, 0, 0), dilations=(1, 1)),
    "rectifier_backward": dict(grad_out=f32(2, 3), out=f32(2, 3), mode=2, lo=0.0, hi=6.0),
    "lrn_backward": dict(grad_out=f32(1, 5, 2, 2), x=f32(1, 5, 2, 2), size=3, alpha=1e-4,
                         beta=0.75, bias=1.0),
    "avg_pool2d_backward": dict(grad_out=f32(1, 2, 2, 2), in_shape=(1, 2, 5, 5),
                                kernel_shape=(2, 2), strides=(2, 2), pads=(0, 0, 0, 0),
                                count_include_pad=False),
    "global_avg_pool_backward": dict(grad_out=f32(1, 3, 1, 1), in_shape=(1, 3, 4, 4)),
    "ascent_update": dict(v=f32(2, 3, 4, 5), g=f32(2, 3, 4, 5), eta=np.ones(2), decay=0.1),
    "gaussian_blur": dict(v=f32(1, 2, 5, 4), sigma=1.0),
    "clip_small_norm": dict(v=f32(2, 3, 4, 5), pct=50.0),
    "clip_small_contribution": dict(v=f32(2, 3, 4, 5), g=f32(2, 3, 4, 5), pct=50.0),
    "clamp_channels": dict(v=f32(2, 3, 4, 5), lo=-np.ones(3), hi=np.ones(3)),
    "ascent_step": dict(v=f32(2, 3, 4, 5), g=f32(2, 3, 4, 5), eta=np.ones(2), decay=0.1,
                        blur_sigma=1.0, norm_pct=50.0, contrib_pct=90.0, lo=-np.ones(3),
                        hi=np.ones(3)),
}

DTYPES = [np.float32, np.float64, np.float16, np.int64, np.int32, np.uint8, np.bool_,
          np.complex64, np.dtype(">f4"), np.dtype(">f8"), np.dtype(">i8")]
EXTREME = [-(2**63), -(2**31) - 1, -(2**31), 2**31 - 1, 2**31, 2**32, 2**62, 2**63 - 1, 2**63,
           2**64]
GARBAGE = st.sampled_from([None, "x", b"ab", 1.5, float("nan"), [], {}, object(), (1, "a"),
                           [[1, 2]], np.float32(1.0), complex(1, 1)])


@st.composite
def arrays(draw):
    """Any numpy array: odd dtypes and ranks, empty, transposed, strided, misaligned, read-only,
    byte-swapped, 0-d; or not an array at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.one_of(GARBAGE, st.lists(st.floats(), max_size=4)))
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=5))
    if np.dtype(dtype).kind == "i":
        elements = st.integers(-3, 80)
    elif np.dtype(dtype).kind in "fc":
        elements = st.floats(-1e3, 1e3, width=16) | st.sampled_from([np.nan, np.inf, -np.inf])
    else:
        elements = None
    a = draw(hnp.arrays(dtype, shape, elements=elements))
    how = draw(st.sampled_from(["plain", "T", "step", "misaligned", "readonly", "fortran"]))
    if how == "T" and a.ndim > 1:
        a = a.T
    elif how == "step" and a.ndim > 0:
        a = np.repeat(a, 2, axis=-1)[..., ::2]
    elif how == "misaligned" and a.ndim > 0 and a.dtype.itemsize > 1:
        buf = np.zeros(a.nbytes + 1, np.uint8)
        b = np.frombuffer(buf.data, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
        b[...] = a
        a = b
    elif how == "readonly":
        a.flags.writeable = False
    elif how == "fortran":
        a = np.asfortranarray(a)
    return a


@st.composite
def like(draw, valid: np.ndarray):
    """An array near ``valid``: same shape with another dtype/layout, one dimension off, or
    (for int64 indices) out-of-range values."""
    kind = draw(st.sampled_from(["dtype", "dim", "values", "layout", "any"]))
    a = valid.copy()
    if kind == "dtype":
        return a.astype(draw(st.sampled_from(DTYPES)))
    if kind == "dim":
        shape = list(a.shape)
        i = draw(st.integers(0, len(shape) - 1))
        shape[i] = max(0, shape[i] + draw(st.sampled_from([-1, 1, 2])))
        return np.resize(a, shape)
    if kind == "values":
        flat = a.reshape(-1)
        if flat.size:
            flat[draw(st.integers(0, flat.size - 1))] = draw(
                st.sampled_from([-1, 2**31, 2**62, -(2**63)]) if a.dtype.kind == "i"
                else st.sampled_from([np.nan, np.inf, -np.inf, 1e38]))
        return a
    if kind == "layout":
        return np.asfortranarray(a) if a.ndim > 1 else np.repeat(a, 2)[::2]
    return draw(arrays())


def int_tuples():
    small = st.integers(-3, 9)
    return st.one_of(st.tuples(*[small] * 4), st.tuples(small, small), st.lists(small, max_size=6),
                     st.lists(st.sampled_from(EXTREME), min_size=1, max_size=4),
                     st.lists(st.floats(allow_nan=True), max_size=4), GARBAGE,
                     hnp.arrays(np.int64, st.integers(0, 5), elements=small))


def ints():
    return st.one_of(st.integers(-3, 9), st.sampled_from(EXTREME), st.booleans(), GARBAGE)


def floats():
    return st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5),
                     st.sampled_from([2**70]), GARBAGE)


@st.composite
def calls(draw, name: str):
    base = VALID[name]
    kw = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in base.items()}
    for key in draw(st.lists(st.sampled_from(sorted(base)), min_size=1, max_size=3,
                             unique=True)):
        value = base[key]  # the kind of the valid argument says what to draw
        if isinstance(value, np.ndarray):
            kw[key] = draw(like(value))
        elif isinstance(value, tuple):
            kw[key] = draw(int_tuples())
        elif isinstance(value, bool):
            kw[key] = draw(st.one_of(st.booleans(), GARBAGE, st.integers(-2, 2)))
        elif isinstance(value, int):
            kw[key] = draw(ints())
        else:
            kw[key] = draw(floats())
    if draw(st.integers(0, 7)) == 0:  # positional garbage, wrong arity
        return tuple(kw.values())[:draw(st.integers(0, len(kw) + 1))], {}
    return (), kw


FUZZ = settings(deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_base_calls(name):
    out = module("cpp", name)(**VALID[name])
    assert isinstance(out, np.ndarray) and out.dtype == np.float32


@pytest.mark.parametrize("impl, examples", [("cpp", 250), ("cuda", 60)])
@pytest.mark.parametrize("name", sorted(VALID))
def test_bindings_never_crash(name, impl, examples):
    fn = module(impl, name)

    @settings(FUZZ, max_examples=examples)
    @given(call=calls(name))
    def fuzz(call):
        args, kw = call
        before = {k: v.copy() for k, v in kw.items() if isinstance(v, np.ndarray)}
        try:
            out = call_or_no_device(impl, fn, *args, **kw)
        except (ValueError, TypeError):
            pass
        else:
            assert out is None or isinstance(to_host(out), np.ndarray)
        for k, v in before.items():  # inputs are never written, whatever the outcome
            np.testing.assert_array_equal(kw[k], v, err_msg=f"{name} modified {k}")

    fuzz()


# ---- output sizes: a huge but well-formed shape argument is a ValueError naming it ------------
SHAPE_ARG = {"conv2d_backward_data": "in_hw",
             "avg_pool2d_backward": "in_shape", "global_avg_pool_backward": "in_shape"}


@pytest.mark.parametrize("impl", ["cpp", "cuda"])
@pytest.mark.parametrize("name", sorted(SHAPE_ARG))
@settings(FUZZ, max_examples=40)
@given(h=st.integers(1, 2**62), w=st.integers(1, 2**62))
def test_huge_output_shape_is_a_value_error(name, impl, h, w):
    kw = dict(VALID[name])
    arg = SHAPE_ARG[name]
    n, c = kw["grad_out"].shape[:2]
    if name == "conv2d_backward_data":
        c = kw["weight"].shape[1] * kw["group"]
        kw[arg] = (h, w)
    else:
        kw[arg] = (n, c, h, w)
    if n * c * h * w <= BIG:  # an honest (if large) request: not this test's business
        return
    shown = rf"\({n}, {c}, {h}, {w}\)"
    with pytest.raises(ValueError, match=rf"^{arg}: (every entry must be <= {BIG}|output shape "
                                         rf"{shown} has (more than {BIG}|a dimension above))"):
        getattr(module(impl), name)(**kw)


# ---- scalar parameters: a ValueError exactly when out of range, else the reference's result -----
def _lrn_invalid(size, alpha, beta, bias) -> str | None:
    """The parameter lrn_backward must reject first, or None."""
    if not 1 <= size <= BIG:
        return "size"
    if not (math.isfinite(alpha) and alpha >= 0):
        return "alpha"
    if not math.isfinite(beta):
        return "beta"
    if not (math.isfinite(bias) and bias > 0):
        return "bias"
    return None


def _close_to(got, want):
    """got equals the float64 reference where the reference is finite."""
    if got is None:  # CUDA without a GPU: the arguments were accepted
        return
    got = to_host(got)
    assert got.shape == want.shape and got.dtype == want.dtype
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-9,
                               atol=1e-9 * float(np.abs(want[finite]).max(initial=1.0)))


LRN_G, LRN_X = f32(1, 5, 2, 3).astype(np.float64), f32(1, 5, 2, 3).astype(np.float64)
V64 = f32(2, 3, 4, 5).astype(np.float64)
EDGE_FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                        st.sampled_from([0.0, -0.0, 5e-324, 1e-4, 0.75, 1.0, 1e308]))


@pytest.mark.parametrize("impl", ["cpp", "cuda"])
@settings(FUZZ, max_examples=150)
@given(size=st.one_of(st.integers(-3, 9), st.sampled_from([BIG, BIG + 1, 2**40, -(2**63)])),
       alpha=EDGE_FLOATS, beta=EDGE_FLOATS, bias=EDGE_FLOATS)
def test_lrn_parameters(impl, size, alpha, beta, bias):
    g, x = LRN_G, LRN_X
    fn = module(impl).lrn_backward
    bad = _lrn_invalid(size, alpha, beta, bias)
    if bad is not None:
        with pytest.raises(ValueError, match=f"^{bad}: must be"):
            fn(g, x, size, alpha, beta, bias)
        return
    got = call_or_no_device(impl, fn, g, x, size, alpha, beta, bias)
    if got is not None:
        assert to_host(got).shape == g.shape
    # values where rounding cannot blow up (powers near the subnormal range lose their precision)
    if alpha <= 100 and abs(beta) <= 10 and 1e-6 <= bias <= 1e6:
        _close_to(got, REF.lrn_backward(g, x, size, alpha, beta, bias))


@pytest.mark.parametrize("impl", ["cpp", "cuda"])
@settings(FUZZ, max_examples=100)
@given(sigma=st.one_of(EDGE_FLOATS, st.floats(-1, 4), st.sampled_from([16384.0, 16384.2])))
def test_blur_sigma(impl, sigma):
    v = V64
    fn = module(impl).gaussian_blur
    if not math.isfinite(sigma):
        with pytest.raises(ValueError, match="^sigma: must be finite"):
            fn(v, sigma)
    elif 4 * sigma + 0.5 >= 65537:  # radius int(4 * sigma + 0.5) above 65536
        with pytest.raises(ValueError, match="^sigma: .* is too large"):
            fn(v, sigma)
    elif sigma <= 50:  # the reference is a Python loop over the 2r + 1 taps
        got = call_or_no_device(impl, fn, v, sigma)
        with np.errstate(all="ignore"):  # a subnormal sigma: 2 sigma² = 0, NaN weights in both
            _close_to(got, REF.gaussian_blur(v, sigma))


@pytest.mark.parametrize("impl", ["cpp", "cuda"])
@settings(FUZZ, max_examples=100)
@given(pct=st.one_of(EDGE_FLOATS, st.floats(-5, 105)))
def test_clip_percentile(impl, pct):
    v = V64
    fn = module(impl).clip_small_norm
    if not pct <= 100:  # NaN included
        with pytest.raises(ValueError, match="^pct: must be <= 100"):
            fn(v, pct)
        return
    _close_to(call_or_no_device(impl, fn, v, pct), REF.clip_small_norm(v, pct))


# ---- hand-made __cuda_array_interface__: every malformed field is a ValueError naming it -------
class _Interface:
    def __init__(self, iface):
        self.__cuda_array_interface__ = iface


_NULL = dict(shape=(1, 2, 0, 4), typestr="<f4", data=(0, False), version=3)  # empty: no pointer


@pytest.mark.parametrize("iface, match", [
    ([1, 2], "__cuda_array_interface__ is not a dict"),
    ({"typestr": "<f4", "data": (0, False)}, "__cuda_array_interface__ has no 'shape'"),
    ({**_NULL, "typestr": "<f2"}, "dtype float16 is not float32/float64"),
    ({**_NULL, "shape": "abcd"}, "__cuda_array_interface__ shape is not a tuple of ints"),
    ({**_NULL, "shape": (1.5, 2, 0, 4)}, "__cuda_array_interface__ shape is not a tuple of ints"),
    ({**_NULL, "shape": (1, -2, 0, 4)}, r"shape \(1, -2, 0, 4\) has a negative dimension"),
    ({**_NULL, "shape": (2**40, 2, 0, 4)}, f"shape .* has a dimension above {BIG}"),
    ({**_NULL, "shape": (2**20, 2**20, 1, 1), "data": (8, False)}, f"shape .* has more than {BIG}"),
    ({**_NULL, "strides": [None]}, "__cuda_array_interface__ strides is not a tuple of ints"),
    ({**_NULL, "data": "x"}, r"__cuda_array_interface__ data is not \(ptr, readonly\)"),
    ({**_NULL, "data": (-1, False)}, r"__cuda_array_interface__ data is not \(ptr, readonly\)"),
    ({**_NULL, "data": ()}, r"__cuda_array_interface__ data is not \(ptr, readonly\)"),
    ({**_NULL, "stream": "s"}, "__cuda_array_interface__ stream is not an int"),
    ({**_NULL, "shape": (1, 2, 4, 4)}, "__cuda_array_interface__ has a null pointer"),
])
def test_cuda_rejects_malformed_array_interfaces(iface, match):
    """Checked before any CUDA call, so this runs without a GPU too."""
    x = np.zeros((1, 2, 4, 4), np.float32)
    with pytest.raises(ValueError, match="^grad_out: " + match):
        module("cuda").lrn_backward(_Interface(iface), x, 3, 1e-4, 0.75, 1.0)


# ---- the public front: the same refusals on every backend (numba would return NaNs) -----------
@pytest.mark.parametrize("impl", ["numba", "cpp"])
@settings(FUZZ, max_examples=60)
@given(size=st.one_of(st.integers(-3, 9), st.sampled_from([BIG, BIG + 1, 2**40])),
       alpha=EDGE_FLOATS, beta=EDGE_FLOATS, bias=EDGE_FLOATS)
def test_front_lrn_parameters(impl, size, alpha, beta, bias):
    bad = _lrn_invalid(size, alpha, beta, bias)
    if bad is None:
        return  # valid values: covered against the reference above and in tests/kernels
    with pytest.raises(ValueError, match=f"^{bad}: must be"):
        kernels.lrn_backward(LRN_G, LRN_X, size, alpha, beta, bias, module=kernels.get(impl))


@pytest.mark.parametrize("impl", ["numba", "cpp"])
@pytest.mark.parametrize(("sigma", "match"), [(float("nan"), "^sigma: must be finite"),
                                              (float("inf"), "^sigma: must be finite"),
                                              (16384.2, "^sigma: .* is too large")])
def test_front_blur_sigma(impl, sigma, match):
    with pytest.raises(ValueError, match=match):
        kernels.gaussian_blur(V64, sigma, module=kernels.get(impl))
