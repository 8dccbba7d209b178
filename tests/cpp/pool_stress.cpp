// The thread pool (csrc/common/parallel.cpp) under ThreadSanitizer: tests/run_sanitizers.sh
// builds this driver with -fsanitize=thread and runs it with PYDEVIS_SPIN_US 200 and 0 (Python
// cannot run under TSAN here, so the pool is driven from C++).
//
// 3000 loops of 1-300 items on teams of 1-6 members (more than the cores: workers are late,
// preempted, asleep), with park_workers() now and then, a member stalled 300 µs in its first
// chunk every 13th loop and one chunk throwing every 50th. Each item must be run exactly once
// (a chunk taken twice or never shows as a count other than 1), every throw must reach the
// caller, and TSAN must see no race in the chunk claiming, invitations and wake-ups.
// Prints "items ok: N, thrown: M"; exit status 1 on a wrong count.
#include <chrono>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "parallel.h"

namespace {
struct Loop {
  std::vector<int>* hits;
  int iter;
  bool throws;
};
}  // namespace

int main() {
  std::vector<int> hits;
  std::mt19937 rng(1);
  long items = 0, wrong = 0, thrown = 0, throws = 0;
  for (int it = 0; it < 3000; ++it) {
    const int64_t n = 1 + int64_t(rng() % 300);
    const int threads = 1 + int(rng() % 6);
    hits.assign(size_t(n), 0);
    if (it % 7 == 0) pydevis::park_workers();
    Loop loop{&hits, it, it % 50 == 0};
    throws += loop.throws;
    try {
      pydevis::parallel_run(
          n, threads,
          [](void* p, int64_t begin, int64_t end) {
            auto& l = *static_cast<Loop*>(p);
            if (l.iter % 13 == 0 && begin == 0)
              std::this_thread::sleep_for(std::chrono::microseconds(300));
            for (int64_t i = begin; i < end; ++i) (*l.hits)[size_t(i)] += 1;
            if (l.throws && begin == 0) throw std::runtime_error("planted");
          },
          &loop);
    } catch (const std::runtime_error&) {
      ++thrown;
    }
    for (int v : hits) wrong += v != 1;
    items += n;
    if (it % 100 == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 500));
  }
  std::printf("items ok: %ld of %ld, thrown: %ld of %ld\n", items - wrong, items, thrown, throws);
  return wrong != 0 || thrown != throws;
}
