// pydevis._C: the kernels' thread pool (csrc/common/parallel.h): its controls, and the test hooks
// of its scheduling and of its loop census.
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <tuple>
#include <vector>

#include "bind.h"
#include "common/parallel.h"

namespace {

// ---- pool_trace (a test hook of csrc/common/parallel.cpp) -------------------------------------
std::vector<int> pool_trace(int64_t n, int threads, int stall_ms, int item_us) {
  if (n < 1 || n > (1 << 20)) throw py::value_error("pool_trace: n must be in [1, 2^20]");
  if (threads < 1 || threads > 64) throw py::value_error("pool_trace: threads must be in [1, 64]");
  if (stall_ms < 0 || stall_ms > 10000)
    throw py::value_error("pool_trace: stall_ms must be in [0, 10000]");
  if (item_us < 0 || item_us > 100000)
    throw py::value_error("pool_trace: item_us must be in [0, 100000]");
  struct Ctx {
    std::vector<std::thread::id> who;
    std::thread::id caller;
    int stall_ms, item_us;
    std::atomic<bool> stalled{false};
  } ctx{std::vector<std::thread::id>(size_t(n)), std::this_thread::get_id(), stall_ms, item_us};
  {
    py::gil_scoped_release nogil;
    pydevis::parallel_run(
        n, threads,
        [](void* p, int64_t begin, int64_t end) {
          auto& c = *static_cast<Ctx*>(p);
          const auto me = std::this_thread::get_id();
          if (me != c.caller && c.stall_ms > 0 && !c.stalled.exchange(true))
            std::this_thread::sleep_for(std::chrono::milliseconds(c.stall_ms));
          for (int64_t i = begin; i < end; ++i) {
            const auto until =
                std::chrono::steady_clock::now() + std::chrono::microseconds(c.item_us);
            while (c.item_us > 0 && std::chrono::steady_clock::now() < until) {
            }
            c.who[size_t(i)] = me;
          }
        },
        &ctx);
  }
  std::vector<std::thread::id> seen{ctx.caller};
  std::vector<int> out(size_t(n), -1);
  for (size_t i = 0; i < size_t(n); ++i) {
    if (ctx.who[i] == std::thread::id()) continue;  // not run: -1
    auto it = std::find(seen.begin(), seen.end(), ctx.who[i]);
    if (it == seen.end()) it = seen.insert(seen.end(), ctx.who[i]);
    out[i] = int(it - seen.begin());
  }
  return out;
}

// ---- loop census (csrc/common/parallel.h; bench/scaling_census.py) --------------------------
// census_nest: a test hook. An outer parallel_for of `outer` items, each running an inner
// parallel_for of `inner` items busy item_us µs each; the outer loop is pooled when outer_pooled
// (it then runs the inner loops inside its tasks), else serial (each inner loop may pool).
void census_nest(int64_t outer, int64_t inner, int item_us, bool outer_pooled) {
  if (outer < 1 || outer > 64 || inner < 1 || inner > 4096)
    throw py::value_error("census_nest: outer must be in [1, 64], inner in [1, 4096]");
  if (item_us < 0 || item_us > 10000)
    throw py::value_error("census_nest: item_us must be in [0, 10000]");
  py::gil_scoped_release nogil;
  auto busy = [item_us] {
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(item_us);
    while (std::chrono::steady_clock::now() < until) {
    }
  };
  pydevis::parallel_for(outer, outer_pooled ? pydevis::kMinParallelWork : 1, [&](int64_t) {
    pydevis::parallel_for(inner, pydevis::kMinParallelWork, [&](int64_t) { busy(); });
  });
}

void census_start() { pydevis::census_start(); }

std::vector<std::tuple<int64_t, bool, double>> census_stop() {
  std::vector<std::tuple<int64_t, bool, double>> out;
  for (const auto& l : pydevis::census_stop()) out.emplace_back(l.items, l.pooled, l.ms);
  return out;
}

}  // namespace

void bind_pool(py::module_& m) {
  m.def("park_workers", &pydevis::park_workers,
        "Make the kernels' idle pool workers stop spinning and sleep now (call before another "
        "thread pool, such as ONNX Runtime's, runs on the same cores); the next kernel wakes "
        "them.");
  m.def("spin_microseconds", &pydevis::spin_microseconds,
        "How long (µs) the pool's idle workers spin before they sleep (PYDEVIS_SPIN_US).");
  m.def("pool_trace", &pool_trace, py::arg("n"), py::arg("threads"), py::arg("stall_ms") = 0,
        py::arg("item_us") = 0,
        "Test hook of the thread pool: run a loop of n items (each busy item_us µs) on up to "
        "`threads` members and return, per item, which thread ran it (0: the caller, then 1, "
        "2... in order of first appearance, -1: none); with stall_ms > 0 the first chunk a "
        "worker takes sleeps that long first.");
  m.def("census_nest", &census_nest, py::arg("outer"), py::arg("inner"), py::arg("item_us"),
        py::arg("outer_pooled"),
        "Test hook of the loop census: a parallel loop of `outer` items, each running a loop "
        "of `inner` items busy item_us µs each; the outer loop pooled or serial.");
  m.def("census_start", &census_start,
        "Start the loop census (clearing it): from now on every parallel loop of the kernels "
        "records its item count, whether it ran on the pool and its wall time.");
  m.def("census_stop", &census_stop,
        "Stop the loop census and return its records, in order: (items, pooled, ms) per loop "
        "not inside a pooled loop's task; ms is the loop's wall time less that of the loops "
        "recorded inside it (a serial loop's inner loops), so each moment counts once.");
}
