"""Fuzz of the C++ bindings (issue 7, item 5): random shapes, dtypes, strides, alignment and
garbage arguments into every ``pydevis._C`` function (the raw extension of
``pydevis.kernels.get("cpp")``) raise ValueError or TypeError, or return an array; never a crash.

Each call starts from a valid one (the argument sets of tests/kernels/test_cpp_checks.py, kept
small) with some arguments replaced by drawn ones, so the draws reach every check, not only the
first. Shape entries stay small: a huge valid ``in_shape`` is a legitimate allocation
(MemoryError or, under overcommit, an OOM kill), not a validation failure.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import pydevis.kernels as kernels

if kernels.available()["cpp"] is not None:
    pytest.skip(f"C++ backend unavailable: {kernels.available()['cpp']}", allow_module_level=True)

_C = kernels.get("cpp")._C
R = np.random.default_rng(0)


def _switches(n=1, c=2, h=4, w=4):
    nn, cc, oh, ow = np.meshgrid(range(n), range(c), range(h // 2), range(w // 2), indexing="ij")
    return (((nn * c + cc) * h + 2 * oh) * w + 2 * ow).astype(np.int64)


def f32(*shape):
    return R.standard_normal(shape).astype(np.float32)


VALID = {
    "conv2d_backward_data": dict(grad_out=f32(1, 4, 3, 3), weight=f32(4, 1, 3, 3), in_hw=(5, 5),
                                 strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=2),
    "max_unpool2d": dict(grad_out=f32(1, 2, 2, 2), indices=_switches(), in_shape=(1, 2, 4, 4)),
    "rectifier_backward": dict(grad_out=f32(2, 3), out=f32(2, 3), mode=2, lo=0.0, hi=6.0),
    "lrn_backward": dict(grad_out=f32(1, 5, 2, 2), x=f32(1, 5, 2, 2), size=3, alpha=1e-4,
                         beta=0.75, bias=1.0),
    "avg_pool2d_backward": dict(grad_out=f32(1, 2, 2, 2), in_shape=(1, 2, 5, 5),
                                kernel_shape=(2, 2), strides=(2, 2), pads=(0, 0, 0, 0),
                                count_include_pad=False),
    "global_avg_pool_backward": dict(grad_out=f32(1, 3, 1, 1), in_shape=(1, 3, 4, 4)),
}
ARRAYS = {"grad_out", "weight", "indices", "out", "x"}
INT_TUPLES = {"in_hw", "strides", "pads", "dilations", "in_shape", "kernel_shape"}
INTS = {"group", "mode", "size"}
FLOATS = {"lo", "hi", "alpha", "beta", "bias"}

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
        if key in ARRAYS:
            kw[key] = draw(like(base[key]))
        elif key in INT_TUPLES:
            kw[key] = draw(int_tuples())
        elif key in INTS:
            kw[key] = draw(ints())
        elif key in FLOATS:
            kw[key] = draw(floats())
        else:
            kw[key] = draw(st.one_of(st.booleans(), GARBAGE, st.integers(-2, 2)))
    if draw(st.integers(0, 7)) == 0:  # positional garbage, wrong arity
        return tuple(kw.values())[:draw(st.integers(0, len(kw) + 1))], {}
    return (), kw


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_base_calls(name):
    out = getattr(_C, name)(**VALID[name])
    assert isinstance(out, np.ndarray) and out.dtype == np.float32


@pytest.mark.parametrize("name", sorted(VALID))
def test_bindings_never_crash(name):
    fn = getattr(_C, name)

    @settings(max_examples=250, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(call=calls(name))
    def fuzz(call):
        args, kw = call
        before = {k: v.copy() for k, v in kw.items() if isinstance(v, np.ndarray)}
        try:
            out = fn(*args, **kw)
        except (ValueError, TypeError):
            pass
        else:
            assert isinstance(out, np.ndarray)
        for k, v in before.items():  # inputs are never written, whatever the outcome
            np.testing.assert_array_equal(kw[k], v, err_msg=f"{name} modified {k}")

    fuzz()
