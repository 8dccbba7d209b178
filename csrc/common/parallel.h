// Parallel loops of the CPU kernels: pydevis's own thread pool (parallel.cpp).
//
// Why not `#pragma omp parallel for`: an ascent step runs ONNX Runtime's forward on its pool and
// then these kernels on theirs, on the same cores, over and over. libgomp's idle workers spin
// 300 000 rounds before they sleep (OMP_WAIT_POLICY unset), holding the cores the next forward
// needs; its settings are read once per process, and when torch is imported first the process
// has torch's libgomp (same soname), whose settings are torch's. This pool's idle workers spin
// for spin_microseconds() (PYDEVIS_SPIN_US, default 200 µs), then sleep on a condition variable,
// and park_workers() (called before each ONNX Runtime run) sends them to sleep at once.
// Measured: docs/kernels.md, "Threads".
//
// The team size is OpenMP's (omp_get_max_threads(): OMP_NUM_THREADS, omp_set_num_threads) when
// built with OpenMP, else OMP_NUM_THREADS or the hardware's thread count. A loop runs serially
// on the calling thread when it is small (kMinParallelWork), when it is called from inside
// another loop's task, or when another thread holds the pool. Tasks must not throw (the kernels
// check their arguments before their loops); should one throw, the loop's remaining tasks still
// run and the first exception is rethrown to the caller.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace pydevis {

// Threads in a parallel loop (the caller included).
int max_threads();

// How long (µs) an idle worker spins before it sleeps, and the caller waits for the others.
int spin_microseconds();

// Workers spinning for their next task stop and sleep now (before another pool, such as ONNX
// Runtime's, takes the cores); the next loop wakes them.
void park_workers();

// Run chunk(ctx, begin, end) over [0, n) on min(n, threads) members of the pool, the caller
// being member 0: [0, n) is cut into up to 4 chunks per member, member t owns a contiguous run
// of them and takes its own first, then the others' that are left (parallel.cpp), so chunks
// may run on any member and in any order; each item is in exactly one call. Serial (one call,
// [0, n)) in the cases the header comment lists. Returns whether the pool ran it.
bool parallel_run(int64_t n, int threads, void (*chunk)(void*, int64_t, int64_t), void* ctx);

// Below this much work (element operations) a loop runs on the calling thread: waking the
// team costs more than it saves. 2^15 was too low on a busy machine (a 2^18-element Relu
// backward through the 2-thread team took 16 ms at load 3.5, 0.6 ms serially); 2^18 is the
// numba backend's threshold too (bench/README.md, "numba: serial path for small arrays").
constexpr int64_t kMinParallelWork = 1 << 18;

// The loop census (bench/scaling_census.py): while it is on, every parallel_for records its item
// count, whether it went to the pool and its wall time, so that a run on one core with a team of
// T says how finely each kernel cuts its work for T threads (a loop of 3 items on a team of 16
// keeps 13 cores idle). Off by default: one relaxed load per loop. census_start clears the
// records and turns it on, census_stop turns it off and returns them.
// A loop inside a pooled loop's task runs serially within that task's time and is not recorded.
// A loop inside a serial loop (a per-sample loop at batch 1, say) may go to the pool and is
// recorded, so the serial loop records only its time outside the loops recorded inside it
// (`ms` is exclusive): the records' times add up to the time spent in loops, each once.
struct CensusLoop {
  int64_t items;
  bool pooled;
  double ms;  // wall time, less that of the loops recorded while it ran
};
extern std::atomic<bool> g_census_on;
void census_start();
std::vector<CensusLoop> census_stop();
// Around one loop: census_enter returns the calling thread's sum of the times of the loops
// recorded so far inside its enclosing loop and clears it; census_leave records the loop and
// gives the enclosing loop's sum back with this loop's time added.
double census_enter();
void census_leave(int64_t items, bool pooled, double ms, double saved);

// Whether f ran on the pool.
template <typename F>
bool parallel_for_impl(int64_t n, int64_t cost_per_item, F&& f) {
  const int threads = max_threads();
  if (n <= 1 || n * cost_per_item < kMinParallelWork || threads <= 1) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return false;
  }
  using Fn = typename std::remove_reference<F>::type;
  return parallel_run(
      n, threads,
      [](void* ctx, int64_t begin, int64_t end) {
        Fn& fn = *static_cast<Fn*>(ctx);
        for (int64_t i = begin; i < end; ++i) fn(i);
      },
      const_cast<void*>(static_cast<const void*>(&f)));
}

// f(i) for i in [0, n), on the pool (parallel_run) when n * cost_per_item is large enough.
template <typename F>
void parallel_for(int64_t n, int64_t cost_per_item, F&& f) {
  if (!g_census_on.load(std::memory_order_relaxed)) {
    parallel_for_impl(n, cost_per_item, f);
    return;
  }
  const double saved = census_enter();
  const auto t0 = std::chrono::steady_clock::now();
  const bool pooled = parallel_for_impl(n, cost_per_item, f);
  const std::chrono::duration<double, std::milli> dt = std::chrono::steady_clock::now() - t0;
  census_leave(n, pooled, dt.count(), saved);
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace pydevis
