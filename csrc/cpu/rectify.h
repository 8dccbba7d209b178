// One element of the rectifier backward (Relu lo = 0, hi = inf; Clip lo, hi), the definition
// shared by rectifier_backward (activation.cpp) and the Relu fused into max_pool2d_backward
// (pool.cpp): mode 0 gradient g·[lo < y < hi], 1 deconvnet max(g, 0), 2 guided both.
// Branch-free ('&', not '&&') so that the loops calling it vectorise; NaN passes max(g, 0), like
// np.maximum. With Mode 1 the y argument is unused (the compiler drops its load).
#pragma once

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

}  // namespace pydevis::cpu
