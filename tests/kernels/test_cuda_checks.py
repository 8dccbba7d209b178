"""The CUDA backend's argument checks: a ``ValueError`` naming the argument, before any memory
is touched, for host and device arrays.

Shared cases, the check and the skip: cuda_common.py."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from cuda_common import (
    C,
)

pytestmark = pytest.mark.cuda


# ---------------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------------
F4 = np.zeros((1, 2, 3, 3), np.float32)
W4 = np.zeros((2, 1, 1, 1), np.float32)
CONV = ((3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1)
X6 = np.zeros((1, 2, 6, 6), np.float32)  # pooled 2x2 stride 2 into F4
MAXP = ((2, 2), (2, 2), (0, 0, 0, 0), (1, 1))

BAD_CALLS = {
    "grad_out int dtype": (lambda: C.conv2d_backward_data(F4.astype(np.int32), W4, *CONV),
                           "grad_out: dtype int32 is not float32/float64"),
    "weight dtype differs": (lambda: C.conv2d_backward_data(F4, W4.astype(np.float64), *CONV),
                             "weight: dtype float64 differs from grad_out"),
    "grad_out rank": (lambda: C.conv2d_backward_data(F4[0], W4, *CONV),
                      "grad_out: expected a 4-D array"),
    "grad_out non-contiguous": (lambda: C.conv2d_backward_data(F4[:, :, ::2], W4, *CONV),
                                "grad_out: array must be C-contiguous"),
    "not an array": (lambda: C.conv2d_backward_data(F4.tolist(), W4, *CONV),
                     "grad_out: expected a numpy array or an object with"),
    "weight channels": (lambda: C.conv2d_backward_data(F4, np.zeros((3, 1, 1, 1), np.float32),
                                                       *CONV), "weight: shape"),
    "group divides": (lambda: C.conv2d_backward_data(F4, W4, (3, 3), (1, 1), (0, 0, 0, 0),
                                                     (1, 1), 3), "group: 3 does not divide"),
    "conv output": (lambda: C.conv2d_backward_data(F4, W4, (4, 3), (1, 1), (0, 0, 0, 0),
                                                   (1, 1), 1), "grad_out: shape"),
    "strides length": (lambda: C.conv2d_backward_data(F4, W4, (3, 3), (1,), (0, 0, 0, 0),
                                                      (1, 1), 1), "strides: expected 2"),
    "negative pad": (lambda: C.conv2d_backward_data(F4, W4, (3, 3), (1, 1), (0, -1, 0, 0),
                                                    (1, 1), 1), "pads: every entry"),
    "rectifier shapes": (lambda: C.rectifier_backward(F4, F4[0], 0, 0.0, 1.0), "out: shape"),
    "rectifier mode": (lambda: C.rectifier_backward(F4, F4, 5, 0.0, 1.0), "mode: expected"),
    "lrn size": (lambda: C.lrn_backward(F4, F4, 0, 1e-4, 0.75, 1.0), "size: must be >= 1"),
    "lrn x shape": (lambda: C.lrn_backward(F4, np.zeros((1, 2, 3, 4), np.float32), 3, 1e-4,
                                           0.75, 1.0), "x: shape"),
    "avg output": (lambda: C.avg_pool2d_backward(F4, (1, 2, 4, 4), (2, 2), (2, 2),
                                                 (0, 0, 0, 0), False), "grad_out: shape"),
    "avg kernel": (lambda: C.avg_pool2d_backward(F4, (1, 2, 2, 2), (3, 3), (1, 1),
                                                 (0, 0, 0, 0), False), "kernel_shape:"),
    "maxpool x dtype": (lambda: C.max_pool2d_backward(F4, X6.astype(np.float64), *MAXP),
                        "x: dtype float64 differs from grad_out dtype float32"),
    "maxpool x rank": (lambda: C.max_pool2d_backward(F4, X6[0], *MAXP), "x: expected a 4-D"),
    "maxpool x channels": (lambda: C.max_pool2d_backward(F4, np.zeros((1, 3, 6, 6), np.float32),
                                                         *MAXP), "x: shape (1, 3, 6, 6) does"),
    "maxpool output": (lambda: C.max_pool2d_backward(F4, X6[:, :, :4, :4].copy(), *MAXP),
                       "grad_out: shape (1, 2, 3, 3) is larger than the MaxPool output"),
    "maxpool kernel": (lambda: C.max_pool2d_backward(F4, X6, (7, 2), (2, 2), (0, 0, 0, 0),
                                                     (1, 1)), "kernel_shape: dilated kernel 7x2"),
    "maxpool dilation": (lambda: C.max_pool2d_backward(F4, X6, (2, 2), (2, 2), (0, 0, 0, 0),
                                                       (0, 1)), "dilations: every entry"),
    "maxpool taps": (lambda: C.max_pool2d_backward(F4, X6, (2**16, 2**16), (1, 1),
                                                   (0, 0, 0, 0), (1, 1)),
                     "kernel_shape: (65536, 65536) has more than 2^31 - 1 taps"),
    "gap shape": (lambda: C.global_avg_pool_backward(F4, (1, 2, 6, 6)), "grad_out: shape"),
    "gap in_shape": (lambda: C.global_avg_pool_backward(F4[:, :, :1, :1].copy(), (1, 3, 6, 6)),
                     "grad_out: shape"),
    # ascent kernels
    "update g shape": (lambda: C.ascent_update(F4, F4[:, :1], np.zeros(1), 0.0),
                       "g: shape (1, 1, 3, 3) != v shape (1, 2, 3, 3)"),
    "update g dtype": (lambda: C.ascent_update(F4, F4.astype(np.float64), np.zeros(1), 0.0),
                       "g: dtype float64 differs from v"),
    "update eta length": (lambda: C.ascent_update(F4, F4, np.zeros(2), 0.0),
                          "eta: shape (2,) is not (1,)"),
    "update eta dtype": (lambda: C.ascent_update(F4, F4, np.zeros(1, np.float32), 0.0),
                         "eta: dtype float32 is not float64"),
    "blur rank": (lambda: C.gaussian_blur(F4[0], 1.0), "v: expected a 4-D array"),
    "blur sigma nan": (lambda: C.gaussian_blur(F4, math.nan), "sigma: must be finite"),
    "blur sigma huge": (lambda: C.gaussian_blur(F4, 1e12), "sigma: 1e+12 is too large"),
    "norm pct": (lambda: C.clip_small_norm(F4, 100.5), "pct: must be <= 100"),
    "norm pct nan": (lambda: C.clip_small_norm(F4, math.nan), "pct: must be <= 100"),
    "norm int dtype": (lambda: C.clip_small_norm(F4.astype(np.int64), 50),
                       "v: dtype int64 is not float32/float64"),
    "contribution g shape": (lambda: C.clip_small_contribution(F4, F4[:, :, :2].copy(), 50),
                             "g: shape"),
    "clamp lo length": (lambda: C.clamp_channels(F4, np.zeros(3), np.ones(2)),
                        "lo: shape (3,) is not (2,)"),
    "clamp hi rank": (lambda: C.clamp_channels(F4, np.zeros(2), np.ones((2, 1))),
                      "hi: expected a 1-D array"),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_rejects_bad_arguments(name):
    call, message = BAD_CALLS[name]
    with pytest.raises(ValueError, match=r"^" + re.escape(message)) as info:
        call()
    assert "\n" not in str(info.value)


class _Interface:
    """An object exposing a hand-made __cuda_array_interface__."""

    def __init__(self, **iface):
        self.__cuda_array_interface__ = iface


def test_rejects_bad_device_arrays(dev):
    base = dev.to(np.zeros((1, 2, 4, 4), np.float32))
    real = dict(base.__cuda_array_interface__)
    ok = dict(shape=(1, 2, 4, 4), typestr="<f4", data=real["data"], version=3)
    assert C.global_avg_pool_backward(
        _Interface(**{**ok, "shape": (1, 2, 1, 1)}), (1, 2, 3, 3)).shape == (1, 2, 3, 3)
    cases = [
        ({**ok, "typestr": "<i4"}, "grad_out: dtype int32 is not float32/float64"),
        ({**ok, "strides": (128, 64, 4, 16)}, "grad_out: array must be C-contiguous"),
        ({**ok, "mask": ok["data"]}, "grad_out: masked device arrays are not supported"),
        ({**ok, "data": (0, False)}, "grad_out: __cuda_array_interface__ has a null pointer"),
        ({**ok, "data": (ok["data"][0] + 2, False)}, "grad_out: array must be aligned"),
    ]
    host = np.zeros((1, 2, 4, 4), np.float32)
    cases.append(({**ok, "data": (host.ctypes.data, False)}, "grad_out: __cuda_array_interface__"
                  " pointer is not device memory"))
    for iface, message in cases:
        with pytest.raises(ValueError, match="^" + re.escape(message)):
            C.lrn_backward(_Interface(**iface), base, 3, 1e-4, 0.75, 1.0)
    # C strides given explicitly are accepted
    explicit = _Interface(**{**ok, "strides": (128, 64, 16, 4)})
    assert C.lrn_backward(explicit, explicit, 3, 1e-4, 0.75, 1.0).shape == (1, 2, 4, 4)
