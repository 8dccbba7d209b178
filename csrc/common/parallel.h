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
// OpenMP team costs more than it saves.
constexpr int64_t kMinParallelWork = 1 << 15;

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
