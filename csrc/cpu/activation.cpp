// rectifier_backward: Relu (lo = 0, hi = inf) and Clip (lo = min, hi = max) in the three modes.
//
// The mask is taken on the forward *output* y: lo < y < hi  <=>  lo < x < hi, so the forward can
// keep ONNX Runtime's Conv+Relu fusions. lo and hi are compared in T (as ONNX Runtime's Clip
// stores them), so a float32 bound that is not a double is still matched exactly.
//   mode 0 gradient:  g · [lo < y < hi]
//   mode 1 deconvnet: max(g, 0)
//   mode 2 guided:    max(g, 0) · [lo < y < hi]
#include <algorithm>

#include "../common/parallel.h"
#include "kernels.h"

namespace pydevis::cpu {

namespace {
constexpr int64_t kChunk = 1 << 14;  // elements per OpenMP task

template <typename T, int Mode>
void run(const T* g, const T* y, T* gi, int64_t n, T lo, T hi) {
  parallel_for(ceil_div(n, kChunk), kChunk, [&](int64_t chunk) {
    const int64_t i0 = chunk * kChunk, i1 = std::min(n, i0 + kChunk);
    for (int64_t i = i0; i < i1; ++i) {
      if constexpr (Mode == 1) {
        gi[i] = g[i] < T(0) ? T(0) : g[i];  // NaN passes, like np.maximum
      } else {
        const bool pass = lo < y[i] && y[i] < hi;
        const T v = Mode == 0 ? g[i] : (g[i] < T(0) ? T(0) : g[i]);
        gi[i] = pass ? v : T(0);
      }
    }
  });
}
}  // namespace

template <typename T>
void rectifier_backward(const T* grad_out, const T* out, T* grad_in, int64_t n, int mode, T lo,
                        T hi) {
  if (mode == 0) run<T, 0>(grad_out, out, grad_in, n, lo, hi);
  else if (mode == 1) run<T, 1>(grad_out, out, grad_in, n, lo, hi);
  else run<T, 2>(grad_out, out, grad_in, n, lo, hi);
}

template void rectifier_backward<float>(const float*, const float*, float*, int64_t, int, float,
                                        float);
template void rectifier_backward<double>(const double*, const double*, double*, int64_t, int,
                                         double, double);

}  // namespace pydevis::cpu
