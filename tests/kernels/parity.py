"""What the parity tests share (test_parity*.py): hypothesis settings, tolerances, the check of a
backend's result against the oracle, and the pooling shapes (max and average pools)."""

from __future__ import annotations

import os

import numpy as np
from hypothesis import HealthCheck, example, settings
from hypothesis import strategies as st

# PYDEVIS_KERNEL_EXAMPLES=500 for a deeper (and randomised) search than the CI default
_EXAMPLES = int(os.environ.get("PYDEVIS_KERNEL_EXAMPLES", "25"))
SETTINGS = settings(deadline=None, max_examples=_EXAMPLES, derandomize=_EXAMPLES <= 25,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
RTOL = {np.float32: 1e-4, np.float64: 1e-10}
dtypes = st.sampled_from([np.float32, np.float64])
seeds = st.integers(0, 2**32 - 1)


def host(a) -> np.ndarray:
    """A backend's result as a numpy array (device arrays are copied back)."""
    if hasattr(a, "to_host"):  # pydevis._cuda.DeviceArray
        return a.to_host()
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


def with_examples(examples):
    """Each of ``examples`` as an explicit hypothesis ``example(case=...)``."""
    def deco(fn):
        for ex in reversed(examples):
            fn = example(case=ex)(fn)
        return fn
    return deco


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
