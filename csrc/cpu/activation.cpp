// rectifier_backward: Relu (lo = 0, hi = inf) and Clip (lo = min, hi = max) in the three modes.
//
// The mask is taken on the forward *output* y: lo < y < hi  <=>  lo < x < hi, so the forward can
// keep ONNX Runtime's Conv+Relu fusions. lo and hi are compared in T (as ONNX Runtime's Clip
// stores them), so a float32 bound that is not a double is still matched exactly.
//   mode 0 gradient:  g · [lo < y < hi]
//   mode 1 deconvnet: max(g, 0)
//   mode 2 guided:    max(g, 0) · [lo < y < hi]
// The loops are branch-free (both comparisons evaluated, '&' not '&&', restrict pointers) so
// that the compiler vectorises them: a short-circuit mask kept the loop scalar, ~9x slower than
// torch's threshold_backward on 6.4 M elements. The op is memory-bound, so the thread pool is
// woken only past kMinParallelElems: below that one core streams it as fast as a team can be
// woken. Measured (2 threads, Xeon AVX-512, median ms, serial -> team): 300 K elements 0.124 ->
// 0.056 with OMP_WAIT_POLICY unset, 0.120 -> 0.123 PASSIVE; 1.55 M 0.69 -> 0.37 and 0.65 -> 0.48
// (SqueezeNet's expand rectifiers at batch 8 are 0.3-1.5 M: the old 2 M threshold ran them all
// on one core).
#include <algorithm>

#include "../common/parallel.h"
#include "kernels.h"
#include "rectify.h"

namespace pydevis::cpu {

namespace {
constexpr int64_t kChunk = 1 << 16;              // elements per parallel task
constexpr int64_t kMinParallelElems = 1 << 18;   // 1 MiB of float32 per operand

template <typename T, int Mode>
void run_chunk(const T* __restrict__ g, const T* __restrict__ y, T* __restrict__ gi, int64_t n,
               T lo, T hi) {
  for (int64_t i = 0; i < n; ++i) gi[i] = rectified<T, Mode>(g[i], y[i], lo, hi);
}

template <typename T, int Mode>
void run(const T* g, const T* y, T* gi, int64_t n, T lo, T hi) {
  if (n < kMinParallelElems || max_threads() == 1) return run_chunk<T, Mode>(g, y, gi, n, lo, hi);
  parallel_for(ceil_div(n, kChunk), kMinParallelWork, [&](int64_t chunk) {
    const int64_t i0 = chunk * kChunk, i1 = std::min(n, i0 + kChunk);
    run_chunk<T, Mode>(g + i0, y + i0, gi + i0, i1 - i0, lo, hi);
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

// add: out = a + b, the sum of a tensor's gradients where it fans out (pydevis/backward/engine.py:
// ResNet's and MobileNetV2's skip connections). numpy adds on one core; at batch 8 ResNet-18's
// eight sums take 3-5 ms of a one-core backward, time a team of 16 would otherwise wait through.
// Same chunks and threshold as the rectifier; an add rounds the same in any split.
template <typename T>
void add(const T* a, const T* b, T* out, int64_t n) {
  auto chunk = [](const T* __restrict__ x, const T* __restrict__ y, T* __restrict__ z,
                  int64_t m) {
    for (int64_t i = 0; i < m; ++i) z[i] = x[i] + y[i];
  };
  if (n < kMinParallelElems || max_threads() == 1) return chunk(a, b, out, n);
  parallel_for(ceil_div(n, kChunk), kMinParallelWork, [&](int64_t c) {
    const int64_t i0 = c * kChunk, i1 = std::min(n, i0 + kChunk);
    chunk(a + i0, b + i0, out + i0, i1 - i0);
  });
}

template <typename T>
void copy_strided(const T* src, const int64_t* shape, const int64_t* strides, int ndim, T* dst) {
  int64_t n = 1;
  for (int d = 0; d < ndim; ++d) n *= shape[d];
  if (n == 0) return;
  // The trailing dims that are laid out contiguously form one block of B elements (copied as a
  // run); the others are walked per block. B = 1 with a strided last dim: a strided loop.
  int inner = ndim;
  int64_t block = 1;
  while (inner > 0 && (shape[inner - 1] == 1 || strides[inner - 1] == block)) {
    block *= shape[inner - 1];
    --inner;
  }
  const int64_t step = block == 1 && inner > 0 ? strides[inner - 1] : 1;
  const int64_t run = block == 1 && inner > 0 ? shape[inner - 1] : block;
  const int outer_dims = block == 1 && inner > 0 ? inner - 1 : inner;
  const int64_t runs = n / run;
  // elements [i0, i1) of run r
  auto copy_part = [&](int64_t r, int64_t i0, int64_t i1) {
    int64_t off = 0;
    for (int64_t d = outer_dims - 1, rest = r; d >= 0; --d) {
      off += (rest % shape[d]) * strides[d];
      rest /= shape[d];
    }
    const T* __restrict__ s = src + off;
    T* __restrict__ o = dst + r * run;
    if (step == 1) std::copy(s + i0, s + i1, o + i0);
    else for (int64_t i = i0; i < i1; ++i) o[i] = s[i * step];
  };
  if (n < kMinParallelElems || max_threads() == 1) {
    for (int64_t r = 0; r < runs; ++r) copy_part(r, 0, run);
    return;
  }
  if (run >= kChunk) {  // long runs (a sample's channel slice): pieces of kChunk elements
    const int64_t pieces = ceil_div(run, kChunk);
    parallel_for(runs * pieces, kMinParallelWork, [&](int64_t t) {
      const int64_t r = t / pieces, i0 = (t % pieces) * kChunk;
      copy_part(r, i0, std::min(run, i0 + kChunk));
    });
    return;
  }
  const int64_t per = kChunk / run;  // short runs: several per task
  parallel_for(ceil_div(runs, per), kMinParallelWork, [&](int64_t c) {
    for (int64_t r = c * per, r1 = std::min(runs, (c + 1) * per); r < r1; ++r)
      copy_part(r, 0, run);
  });
}

template void copy_strided<float>(const float*, const int64_t*, const int64_t*, int, float*);
template void copy_strided<double>(const double*, const int64_t*, const int64_t*, int, double*);

template void add<float>(const float*, const float*, float*, int64_t);
template void add<double>(const double*, const double*, double*, int64_t);

template void rectifier_backward<float>(const float*, const float*, float*, int64_t, int, float,
                                        float);
template void rectifier_backward<double>(const double*, const double*, double*, int64_t, int,
                                         double, double);

}  // namespace pydevis::cpu
