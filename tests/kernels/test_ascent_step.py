"""``ascent_step``, the fused ascent step (docs/kernels.md, "ascent_step"), on every backend.

Its result must be, bit for bit, the composition ``clamp_channels(clip_small_contribution(
clip_small_norm(gaussian_blur(ascent_update(v, g, eta, decay), blur_sigma), norm_pct), g,
contrib_pct), lo, hi)`` of the same backend's kernels (what the ascent ran before it), and close to
the oracle's composition (``_reference.ascent_step``) within the tolerance of the other kernels;
its argument errors are theirs.
"""

from __future__ import annotations

import os
import re
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pydevis.kernels as K
from pydevis.kernels import _reference as R

_EXAMPLES = int(os.environ.get("PYDEVIS_KERNEL_EXAMPLES", "25"))
SETTINGS = settings(deadline=None, max_examples=_EXAMPLES, derandomize=_EXAMPLES <= 25,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
RTOL = {np.float32: 1e-4, np.float64: 1e-10}
DTYPES = [np.float32, np.float64]
# N = 1, C = 1, odd and degenerate planes (1 x 1, one row, one column), N != C != H != W
SHAPES = [(1, 1, 1, 1), (1, 3, 9, 13), (3, 2, 11, 7), (2, 1, 5, 1), (1, 1, 1, 6), (4, 3, 8, 8)]
# (blur_sigma, norm_pct, contrib_pct): every piece on and off, the presets' values
OPTIONS = [(s, n, c) for s in (0.0, 0.5, 1.3) for n in (0.0, 50.0) for c in (0.0, 90.0)]


def host(a) -> np.ndarray:
    return a.to_host() if hasattr(a, "to_host") else np.asarray(a)


def case(shape, dtype, seed=0):
    """v in pixel units, g, eta (N,), lo and hi (C,) bounds that clip some pixels."""
    rng = np.random.default_rng(seed)
    v = (rng.standard_normal(shape) * 40).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    eta = rng.uniform(0.5, 20.0, shape[0])
    lo, hi = -rng.uniform(10, 60, shape[1]), rng.uniform(10, 60, shape[1])
    return v, g, eta, lo, hi


def composed(mod, v, g, eta, decay, sigma, norm_pct, contrib_pct, lo, hi):
    """The five kernels of backend ``mod``, one after the other (each returns a copy when off)."""
    x = K.ascent_update(v, g, eta, decay, module=mod)
    x = K.gaussian_blur(x, sigma, module=mod)
    x = K.clip_small_norm(x, norm_pct, module=mod)
    x = K.clip_small_contribution(x, g, contrib_pct, module=mod)
    return K.clamp_channels(x, lo, hi, module=mod)


def same(actual, expected: np.ndarray) -> None:
    actual = host(actual)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    np.testing.assert_array_equal(actual, expected)


def close(actual, expected: np.ndarray, dtype) -> None:
    """As tests/kernels/parity.py: rtol, with atol = rtol * max|expected|."""
    actual = host(actual)
    assert actual.shape == expected.shape and actual.dtype == np.dtype(dtype)
    rtol = RTOL[dtype]
    scale = float(np.abs(expected.astype(np.float64)).max(initial=0.0))
    np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64),
                               rtol=rtol, atol=rtol * max(scale, 1e-30))


def test_host_backends_have_the_fused_kernel():
    for name, why in K.available().items():
        if why is None and name != "cuda":
            assert callable(K.get(name).ascent_step), name


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_equals_the_composition_and_the_reference(backend, shape, dtype):
    v, g, eta, lo, hi = case(shape, dtype)
    before = (v.copy(), g.copy())
    for decay in (0.0, 0.01):
        for sigma, norm_pct, contrib_pct in OPTIONS:
            args = (v, g, eta, decay, sigma, norm_pct, contrib_pct, lo, hi)
            got = K.ascent_step(*args, module=backend)
            same(got, host(composed(backend, *args)))
            close(got, R.ascent_step(*args), dtype)
    np.testing.assert_array_equal(v, before[0])  # inputs untouched
    np.testing.assert_array_equal(g, before[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(8, 3, 64, 64), (1, 3, 224, 224), (2, 3, 97, 131)])
def test_larger_images_equal_the_composition(backend, shape, dtype):
    """Sizes where the kernels split the work over the threads (and the presets' image size)."""
    v, g, eta, lo, hi = case(shape, dtype, seed=1)
    for sigma, norm_pct, contrib_pct in [(0.5, 50.0, 0.0), (0.5, 0.0, 90.0), (0.0, 0.0, 0.0),
                                         (1.0, 20.0, 90.0), (0.0, 50.0, 0.0)]:
        args = (v, g, eta, 1e-4, sigma, norm_pct, contrib_pct, lo, hi)
        same(K.ascent_step(*args, module=backend), host(composed(backend, *args)))


@SETTINGS
@given(n=st.integers(1, 3), c=st.integers(1, 4), h=st.integers(1, 12), w=st.integers(1, 12),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1),
       decay=st.sampled_from([0.0, 1e-4, 0.3]), sigma=st.sampled_from([0.0, -1.0, 0.3, 0.5, 2.2]),
       norm_pct=st.sampled_from([0.0, -5.0, 0.5, 20.0, 50.0, 99.9, 100.0]),
       contrib_pct=st.sampled_from([0.0, 10.0, 33.3, 90.0, 100.0]))
def test_any_shape_equals_the_composition(backend, n, c, h, w, dtype, seed, decay, sigma,
                                          norm_pct, contrib_pct):
    v, g, eta, lo, hi = case((n, c, h, w), dtype, seed)
    args = (v, g, eta, decay, sigma, norm_pct, contrib_pct, lo, hi)
    same(K.ascent_step(*args, module=backend), host(composed(backend, *args)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_ties_infinities_and_nan(backend, dtype):
    """Integer images (many equal scores), inf and NaN pixels, bounds that cross (lo > hi)."""
    rng = np.random.default_rng(8)
    v = np.round(rng.standard_normal((3, 2, 17, 13)) * 2).astype(dtype)
    g = np.round(rng.standard_normal(v.shape)).astype(dtype)
    w = v.copy()
    w[0, 1, 3, 4], w[1, 0, 5, 5], w[2, :, :, :3] = np.nan, np.inf, np.inf
    eta, lo, hi = np.array([1.0, 0.0, 2.0]), np.array([-3.0, 1.0]), np.array([3.0, -1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's own inf arithmetic
        for x in (v, w):
            for sigma, norm_pct, contrib_pct in OPTIONS:
                args = (x, g, eta, 0.0, sigma, norm_pct, contrib_pct, lo, hi)
                same(K.ascent_step(*args, module=backend), host(composed(backend, *args)))


def test_scalars_broadcast_like_the_siblings(backend):
    v, g, _, _, _ = case((2, 3, 5, 4), np.float32)
    got = K.ascent_step(v, g, 0.5, 0.0, 0.0, 0.0, 0.0, -1.0, 1.0, module=backend)
    same(got, host(composed(backend, v, g, 0.5, 0.0, 0.0, 0.0, 0.0, -1.0, 1.0)))
    # g of another float dtype is cast to v's, as ascent_update does
    got = K.ascent_step(v, g.astype(np.float64), 0.5, 0.0, 0.5, 50, 90, -1.0, 1.0, module=backend)
    same(got, host(composed(backend, v, g, 0.5, 0.0, 0.5, 50, 90, -1.0, 1.0)))


# ---- argument errors: the messages of the kernels that take the same argument -------------------
def message(call) -> str:
    with pytest.raises(ValueError) as info:
        call()
    return str(info.value)


V, G = case((2, 3, 5, 4), np.float32)[:2]
ETA, LO, HI = np.zeros(2), -np.ones(3), np.ones(3)
BASE = dict(v=V, g=G, eta=ETA, decay=0.0, blur_sigma=0.5, norm_pct=50.0, contrib_pct=90.0, lo=LO,
            hi=HI)

# name: (what replaces BASE's arguments, the sibling call (taking the backend) with the same bad
# argument, the sibling's name for the argument when the step names it otherwise)
FRONT_BAD = {
    "v rank": (dict(v=V[0], g=G[0]), lambda m: K.ascent_update(V[0], G[0], ETA, module=m), None),
    "v dtype": (dict(v=V.astype(np.int32)),
                lambda m: K.ascent_update(V.astype(np.int32), G, ETA, module=m), None),
    "g shape": (dict(g=G[:, :1]), lambda m: K.ascent_update(V, G[:, :1], ETA, module=m), None),
    "eta length": (dict(eta=np.zeros(3)), lambda m: K.ascent_update(V, G, np.zeros(3), module=m),
                   None),
    "lo length": (dict(lo=np.zeros(2)), lambda m: K.clamp_channels(V, np.zeros(2), HI, module=m),
                  None),
    "hi rank": (dict(hi=np.ones((3, 1))),
                lambda m: K.clamp_channels(V, LO, np.ones((3, 1)), module=m), None),
    "norm_pct": (dict(norm_pct=100.5), lambda m: K.clip_small_norm(V, 100.5, module=m), "pct"),
    "norm_pct nan": (dict(norm_pct=float("nan")),
                     lambda m: K.clip_small_norm(V, float("nan"), module=m), "pct"),
    "contrib_pct": (dict(contrib_pct=1e3),
                    lambda m: K.clip_small_contribution(V, G, 1e3, module=m), "pct"),
    "blur_sigma nan": (dict(blur_sigma=float("nan")),
                       lambda m: K.gaussian_blur(V, float("nan"), module=m), "sigma"),
    "blur_sigma inf": (dict(blur_sigma=float("-inf")),
                       lambda m: K.gaussian_blur(V, float("-inf"), module=m), "sigma"),
    "blur_sigma huge": (dict(blur_sigma=16384.2), lambda m: K.gaussian_blur(V, 16384.2, module=m),
                        "sigma"),
}


def assert_same_message(got: str, want: str, name: str, old: str | None) -> None:
    """got == want, or want with its argument name ``old`` replaced by the step's."""
    if old is not None:
        assert want.startswith(old + ": ")
        want = name.split()[0] + want[len(old):]
    assert got == want


@pytest.mark.parametrize("name", sorted(FRONT_BAD))
def test_front_errors_are_the_siblings(backend, name):
    kw, sibling, old = FRONT_BAD[name]
    got = message(lambda: K.ascent_step(**{**BASE, **kw}, module=backend))
    assert_same_message(got, message(lambda: sibling(backend)), name, old)


# ---- the C++ binding itself: the siblings' checks and messages ---------------------------------
def _cpp():
    why = K.available()["cpp"]
    if why is not None:
        pytest.skip(f"backend cpp unavailable: {why}")
    return K.get("cpp")._C


BINDING_BAD = {  # as FRONT_BAD, on the extension's functions
    "g shape": (dict(g=G[:, :1].copy()), lambda C: C.ascent_update(V, G[:, :1].copy(), ETA, 0.0),
                None),
    "g dtype": (dict(g=G.astype(np.float64)),
                lambda C: C.ascent_update(V, G.astype(np.float64), ETA, 0.0), None),
    "g misaligned": (dict(g=None), lambda C: C.clip_small_contribution(V, _misaligned(G), 50.0),
                     None),
    "v fortran": (dict(v=np.asfortranarray(V), g=np.asfortranarray(G)),
                  lambda C: C.ascent_update(np.asfortranarray(V), G, ETA, 0.0), None),
    "v rank": (dict(v=V[0], g=G[0]), lambda C: C.ascent_update(V[0], G[0], ETA, 0.0), None),
    "eta length": (dict(eta=np.zeros(3)), lambda C: C.ascent_update(V, G, np.zeros(3), 0.0), None),
    "eta dtype": (dict(eta=np.zeros(2, np.float32)),
                  lambda C: C.ascent_update(V, G, np.zeros(2, np.float32), 0.0), None),
    "eta strided": (dict(eta=np.zeros(4)[::2]),
                    lambda C: C.ascent_update(V, G, np.zeros(4)[::2], 0.0), None),
    "lo length": (dict(lo=np.zeros(2)), lambda C: C.clamp_channels(V, np.zeros(2), HI), None),
    "hi rank": (dict(hi=np.ones((3, 1))), lambda C: C.clamp_channels(V, LO, np.ones((3, 1))),
                None),
    "norm_pct": (dict(norm_pct=100.5), lambda C: C.clip_small_norm(V, 100.5), "pct"),
    "norm_pct nan": (dict(norm_pct=float("nan")), lambda C: C.clip_small_norm(V, float("nan")),
                     "pct"),
    "contrib_pct": (dict(contrib_pct=float("inf")),
                    lambda C: C.clip_small_contribution(V, G, float("inf")), "pct"),
    "blur_sigma nan": (dict(blur_sigma=float("nan")),
                       lambda C: C.gaussian_blur(V, float("nan")), "sigma"),
    "blur_sigma huge": (dict(blur_sigma=16384.2), lambda C: C.gaussian_blur(V, 16384.2), "sigma"),
}


def _misaligned(a: np.ndarray) -> np.ndarray:
    buf = np.zeros(a.nbytes + 1, np.uint8)
    b = np.frombuffer(buf.data, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    b[...] = a
    return b


@pytest.mark.parametrize("name", sorted(BINDING_BAD))
def test_binding_errors_are_the_siblings(name):
    C = _cpp()
    kw, sibling, old = BINDING_BAD[name]
    args = {**BASE, **kw}
    if args["g"] is None:
        args["g"] = _misaligned(G)
    got = message(lambda: C.ascent_step(**args))
    assert_same_message(got, message(lambda: sibling(C)), name, old)


def test_binding_returns_a_new_array_and_leaves_inputs_alone():
    C = _cpp()
    for dtype in DTYPES:
        v, g, eta, lo, hi = case((2, 3, 6, 5), dtype)
        before = [a.copy() for a in (v, g, eta, lo, hi)]
        out = C.ascent_step(v, g, eta, 0.1, 0.8, 50.0, 90.0, lo, hi)
        assert isinstance(out, np.ndarray) and out.dtype == dtype and out.flags.c_contiguous
        for a, b in zip((v, g, eta, lo, hi), before, strict=True):
            assert not np.shares_memory(out, a)
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape", [(0, 2, 3, 3), (2, 0, 3, 3), (2, 2, 0, 3), (2, 2, 3, 0)])
def test_binding_empty_arrays(shape):
    """Empty images (an empty plane too: the blur must not reflect into an empty row)."""
    C = _cpp()
    e = np.zeros(shape, np.float32)
    out = C.ascent_step(e, e, np.zeros(shape[0]), 0.1, 1.0, 50.0, 90.0, np.zeros(shape[1]),
                        np.ones(shape[1]))
    assert out.shape == shape and out.dtype == e.dtype
    assert C.gaussian_blur(e, 1.0).shape == shape


def test_binding_message_has_no_newline():
    C = _cpp()
    msg = message(lambda: C.ascent_step(**{**BASE, "blur_sigma": float("nan")}))
    assert re.fullmatch(r"blur_sigma: must be finite, got nan", msg)
