"""Type stub of ``pydevis._C``, the C++ CPU kernels (semantics: ``docs/kernels.md``).

Arrays must be C-contiguous numpy arrays of dtype float32 or float64 (the output has grad_out's
dtype; indices are int64); anything else raises ``ValueError`` naming the argument.
"""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

_Float = np.float32 | np.float64
_Array = npt.NDArray[_Float]

has_openmp: bool
linear_isa_level: int  # 2 AVX-512, 1 AVX2 + FMA, 0 neither: the code linear_backward_data runs

def conv2d_backward_data(
    grad_out: _Array,
    weight: _Array,
    in_hw: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    group: int,
    winograd_u: npt.NDArray[np.float32] | None = None,
    y: _Array | None = None,
    rectify: int = ...,
    lo: float = ...,
    hi: float = ...,
) -> _Array: ...
def winograd_variant(
    grad_out: _Array,
    weight: _Array,
    in_hw: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    group: int,
) -> int: ...
def winograd_weights(
    weight: npt.NDArray[np.float32], group: int, variant: int
) -> npt.NDArray[np.float32]: ...
def linear_backward_data(grad_out: _Array, weight: _Array, isa: int = 2) -> _Array: ...
def max_unpool2d(
    grad_out: _Array, indices: npt.NDArray[np.int64], in_shape: Sequence[int]
) -> _Array: ...
def max_pool2d_backward(
    grad_out: _Array,
    x: _Array,
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    rectify: int = ...,
) -> _Array: ...
def add(a: _Array, b: _Array) -> _Array: ...
def contiguous(a: _Array) -> _Array: ...
def rectifier_backward(
    grad_out: _Array, out: _Array, mode: int, lo: float, hi: float
) -> _Array: ...
def lrn_backward(
    grad_out: _Array, x: _Array, size: int, alpha: float, beta: float, bias: float
) -> _Array: ...
def avg_pool2d_backward(
    grad_out: _Array,
    in_shape: Sequence[int],
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    count_include_pad: bool,
) -> _Array: ...
def global_avg_pool_backward(grad_out: _Array, in_shape: Sequence[int]) -> _Array: ...

# ascent kernels (docs/kernels.md, "Ascent kernels")
def ascent_update(
    v: _Array, g: _Array, eta: npt.NDArray[np.float64], decay: float
) -> _Array: ...
def gaussian_blur(v: _Array, sigma: float) -> _Array: ...
def clip_small_norm(v: _Array, pct: float) -> _Array: ...
def clip_small_contribution(v: _Array, g: _Array, pct: float) -> _Array: ...
def clamp_channels(
    v: _Array, lo: npt.NDArray[np.float64], hi: npt.NDArray[np.float64]
) -> _Array: ...
def ascent_step(
    v: _Array,
    g: _Array,
    eta: npt.NDArray[np.float64],
    decay: float,
    blur_sigma: float,
    norm_pct: float,
    contrib_pct: float,
    lo: npt.NDArray[np.float64],
    hi: npt.NDArray[np.float64],
) -> _Array: ...

# the kernels' thread pool (csrc/common/parallel.h)
def park_workers() -> None: ...
def spin_microseconds() -> int: ...
def pool_trace(n: int, threads: int, stall_ms: int = 0, item_us: int = 0) -> list[int]: ...
def census_start() -> None: ...
def census_stop() -> list[tuple[int, bool, float]]: ...
