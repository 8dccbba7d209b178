// OpenMP helpers: the kernels compile (serially) without OpenMP too.
#pragma once

#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace pydevis {

inline int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

inline int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// Below this much work (element operations) a loop runs on the calling thread: waking the
// OpenMP team costs more than it saves. 2^15 was too low on a busy machine (a 2^18-element Relu
// backward through the 2-thread team took 16 ms at load 3.5, 0.6 ms serially); 2^18 is the
// numba backend's threshold too (bench/README.md, "numba: serial path for small arrays").
constexpr int64_t kMinParallelWork = 1 << 18;

// f(i) for i in [0, n), statically split over the OpenMP team when n * cost is large enough.
template <typename F>
void parallel_for(int64_t n, int64_t cost_per_item, F&& f) {
#ifdef _OPENMP
  const bool par = n > 1 && n * cost_per_item >= kMinParallelWork && max_threads() > 1;
#pragma omp parallel for schedule(static) if (par)
#endif
  for (int64_t i = 0; i < n; ++i) f(i);
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace pydevis
