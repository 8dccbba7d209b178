"""pydevis._C rejects bad arguments with a ValueError naming the argument, before touching memory.

The kernels' values are checked against ``_reference.py`` in test_parity.py; here only the
argument checks of the C++ wrappers (dtype, rank, shape agreement, contiguity, alignment, index
ranges) and the "new array, inputs untouched" contract.
"""

from __future__ import annotations

import numpy as np
import pytest

from pydevis.kernels import _cpp

if _cpp.unavailable_reason() is not None:
    pytest.skip(f"C++ extension not built: {_cpp.unavailable_reason()}", allow_module_level=True)

_C = _cpp._C
RNG = np.random.default_rng(20141128)


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
])
def test_conv_rejects(kw, match):
    with pytest.raises(ValueError, match=match):
        conv(**kw)


def test_conv_rejects_non_arrays():
    with pytest.raises(TypeError):
        conv(grad_out=CONV["grad_out"].tolist())


# ---- max_unpool2d: X (2, 3, 4, 5) pooled 2x2 stride 2 -> (2, 3, 2, 2)
def switches(n=2, c=3, h=4, w=5, ho=2, wo=2):
    nn, cc, oh, ow = np.meshgrid(range(n), range(c), range(ho), range(wo), indexing="ij")
    return (((nn * c + cc) * h + 2 * oh + 1) * w + 2 * ow).astype(np.int64)


UNPOOL = dict(grad_out=rand(2, 3, 2, 2), indices=switches(), in_shape=(2, 3, 4, 5))


def unpool(**kw):
    return _C.max_unpool2d(**{**UNPOOL, **kw})


def test_unpool_valid_call():
    out = unpool()
    assert out.shape == (2, 3, 4, 5)
    assert np.isclose(out.sum(), UNPOOL["grad_out"].sum())


def bad_index(pos, value):
    idx = switches()
    idx[pos] = value
    return idx


@pytest.mark.parametrize("kw, match", [
    ({"grad_out": UNPOOL["grad_out"].astype(np.int64)}, "^grad_out: dtype int64"),
    ({"indices": switches().astype(np.int32)}, "^indices: dtype int32 is not int64"),
    ({"indices": switches().astype(np.float64)}, "^indices: dtype float64 is not int64"),
    ({"indices": switches(c=2)}, r"^indices: shape \(2, 2, 2, 2\) != grad_out shape"),
    ({"indices": switches()[0]}, "^indices: expected a 4-D array"),
    ({"indices": np.asfortranarray(switches())}, "^indices: array must be C-contiguous"),
    ({"grad_out": rand(2, 3, 2, 4)[..., ::2]}, "^grad_out: array must be C-contiguous"),
    ({"in_shape": (2, 4, 4, 5)}, "^in_shape: .* does not match N, C"),
    ({"in_shape": (2, 3, 4)}, "^in_shape: expected 4 integers"),
    ({"indices": bad_index((0, 0, 0, 0), -1)}, r"^indices: value -1 at \(0, 0, 0, 0\) is outside"),
    ({"indices": bad_index((1, 2, 1, 1), 120)}, r"^indices: value 120 at \(1, 2, 1, 1\) is outside"),
    # a valid offset of the whole tensor, but in the neighbouring plane
    ({"indices": bad_index((0, 1, 0, 0), 3)}, r"^indices: value 3 at \(0, 1, 0, 0\) is outside"),
])
def test_unpool_rejects(kw, match):
    with pytest.raises(ValueError, match=match):
        unpool(**kw)


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
])
def test_avg_rejects(kw, match):
    with pytest.raises(ValueError, match=match):
        avg(**kw)


# ---- global_avg_pool_backward
@pytest.mark.parametrize("grad_out, in_shape, match", [
    (rand(2, 3, 1, 1).astype(np.int32), (2, 3, 4, 5), "^grad_out: dtype int32"),
    (rand(2, 3, 1, 2), (2, 3, 4, 5), r"^grad_out: shape \(2, 3, 1, 2\) is not \(N, C, 1, 1\)"),
    (rand(2, 3, 1, 1), (2, 4, 4, 5), "^grad_out: shape .* is not"),
    (rand(2, 3), (2, 3, 4, 5), "^grad_out: expected a 4-D array"),
    (rand(2, 3, 1, 1), (2, 3, 0, 5), "^in_shape: every entry must be >= 1"),
    (rand(2, 3, 1, 1), (2, 3, 4), "^in_shape: expected 4 integers"),
])
def test_gap_rejects(grad_out, in_shape, match):
    with pytest.raises(ValueError, match=match):
        _C.global_avg_pool_backward(grad_out, in_shape)


# ---- every entry point returns a new array of grad_out's dtype and leaves its inputs alone
CALLS = {
    "conv2d_backward_data": (_C.conv2d_backward_data, CONV),
    "max_unpool2d": (_C.max_unpool2d, UNPOOL),
    "rectifier_backward": (_C.rectifier_backward, RECT),
    "lrn_backward": (_C.lrn_backward, LRN),
    "avg_pool2d_backward": (_C.avg_pool2d_backward, AVG),
    "global_avg_pool_backward": (_C.global_avg_pool_backward,
                                 dict(grad_out=rand(2, 3, 1, 1), in_shape=(2, 3, 4, 5))),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(CALLS))
def test_new_array_of_grad_out_dtype(name, dtype):
    fn, base = CALLS[name]
    kw = {k: v.astype(dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v
          for k, v in base.items()}
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
