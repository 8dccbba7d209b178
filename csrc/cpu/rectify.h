// One element of the rectifier backward (Relu lo = 0, hi = inf; Clip lo, hi), the definition
// shared by rectifier_backward (activation.cpp) and the Relu fused into max_pool2d_backward
// (pool.cpp): mode 0 gradient g·[lo < y < hi], 1 deconvnet max(g, 0), 2 guided both.
// Branch-free ('&', not '&&') so that the loops calling it vectorise; NaN passes max(g, 0), like
// np.maximum. With Mode 1 the y argument is unused (the compiler drops its load).
#pragma once

#include <cstdint>
#include <limits>

namespace pydevis::cpu {

template <typename T, int Mode>
inline T rectified(T gv, T yv, T lo, T hi) {
  const T v = Mode == 0 ? gv : (gv < T(0) ? T(0) : gv);
  if constexpr (Mode == 1) {
    return v;
  } else {
    const bool pass = (lo < yv) & (yv < hi);
    return pass ? v : T(0);
  }
}

// In place, over n elements: the backward of a Relu whose output is y, applied to its output
// gradient d while d is still in cache (a Relu fused into the kernel that produced d: MaxPool's
// or Conv's backward), the same numbers as rectifier_backward. The mode is fixed per loop, so
// that it vectorises (with the mode tested inside, it did not).
template <typename T, int Mode>
inline void rectify_span_mode(T* __restrict__ d, const T* __restrict__ y, int64_t n, T lo, T hi) {
  for (int64_t i = 0; i < n; ++i) d[i] = rectified<T, Mode>(d[i], y[i], lo, hi);
}

// lo, hi: a Relu's (0, inf) or a Clip's bounds.
template <typename T>
inline void rectify_span(T* d, const T* y, int64_t n, int mode, T lo = T(0),
                         T hi = std::numeric_limits<T>::infinity()) {
  if (mode == 0) rectify_span_mode<T, 0>(d, y, n, lo, hi);
  else if (mode == 1) rectify_span_mode<T, 1>(d, y, n, lo, hi);
  else rectify_span_mode<T, 2>(d, y, n, lo, hi);
}

// A Relu, or a Clip with bounds (lo, hi), fused after a conv's backward (its output y is the
// conv's input X, N × C × H × W): apply() rectifies n gradient values at `offset` of grad_in,
// right after a task wrote them.
template <typename T>
struct FusedRelu {
  const T* y = nullptr;  // or nullptr: nothing fused
  int mode = 0;
  T lo = T(0), hi = std::numeric_limits<T>::infinity();
  void apply(T* dst, int64_t offset, int64_t n) const {
    if (y != nullptr) rectify_span(dst, y + offset, n, mode, lo, hi);
  }
};

}  // namespace pydevis::cpu
