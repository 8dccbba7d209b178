// pydevis's thread pool (parallel.h says why it is not OpenMP's).
//
// Member 0 of every loop is the calling thread; members 1.. are workers, started on first need
// and kept (detached) for the life of the process. Each worker has its own mailbox: the caller
// writes the loop (job_), then each member's ticket; a worker waits for its ticket to change,
// spinning for spin_microseconds() and then sleeping on its own condition variable, runs its
// range and counts down pending_; the caller runs range 0, then waits (spins, then sleeps) until
// pending_ is 0. Workers that are not in a loop's team are not woken and never read job_. One
// loop at a time holds the pool (busy); a loop that finds it held runs serially. Sleep and wake
// use the store-then-load pattern on sequentially consistent atomics (the sleeper stores its
// flag, then checks the ticket; the waker stores the ticket, then checks the flag), so one of
// the two always sees the other, and the waker then takes the sleeper's mutex, which the sleeper
// holds until it is inside wait(), before it notifies.
#include "parallel.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace pydevis {
namespace {

thread_local bool t_in_task = false;
std::atomic<uint64_t> g_naps{0};  // park_workers() counts up: spinning workers go to sleep

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

int env_int(const char* name, int fallback, int lo, int hi) {
  const char* s = std::getenv(name);
  if (s == nullptr || *s == '\0') return fallback;
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  if (*end != '\0' || v < lo || v > hi) return fallback;
  return static_cast<int>(v);
}

// Spin until done() or `us` microseconds have passed; returns done()'s last value.
template <typename P>
bool spin_until(P done, int us) {
  if (done()) return true;
  if (us <= 0) return false;
  const auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(us);
  for (unsigned i = 1;; ++i) {
    cpu_relax();
    if (done()) return true;
    if ((i & 63u) == 0 && std::chrono::steady_clock::now() >= end) return false;
  }
}

struct Job {
  int64_t n = 0;
  int team = 1;
  void (*chunk)(void*, int64_t, int64_t) = nullptr;
  void* ctx = nullptr;
};

struct alignas(64) Mailbox {
  std::atomic<uint64_t> ticket{0};
  std::atomic<bool> sleeping{false};
  std::mutex m;
  std::condition_variable cv;
};

class Pool {
 public:
  explicit Pool(int spin_us) : spin_us_(spin_us) {}
  std::mutex busy;

  // With busy held.
  void run(int64_t n, int team, void (*chunk)(void*, int64_t, int64_t), void* ctx) {
    while (static_cast<int>(boxes_.size()) < team - 1) start_worker();
    job_ = Job{n, team, chunk, ctx};
    error_ = nullptr;
    pending_.store(team - 1, std::memory_order_relaxed);
    ++generation_;
    for (int w = 1; w < team; ++w) {
      Mailbox& box = *boxes_[w - 1];
      box.ticket.store(generation_, std::memory_order_seq_cst);
      if (box.sleeping.load(std::memory_order_seq_cst)) {
        std::lock_guard<std::mutex> lk(box.m);
        box.cv.notify_one();
      }
    }
    member(0, job_);
    auto finished = [this] { return pending_.load(std::memory_order_seq_cst) == 0; };
    if (!spin_until(finished, spin_us_)) {
      std::unique_lock<std::mutex> lk(done_m_);
      caller_sleeping_.store(true, std::memory_order_seq_cst);
      done_cv_.wait(lk, finished);
      caller_sleeping_.store(false, std::memory_order_relaxed);
    }
    if (error_) std::rethrow_exception(error_);
  }

 private:
  // The mailbox joins boxes_ only once its thread runs: should the thread not start
  // (std::system_error, out to the kernel's caller), no later loop waits on a member that does
  // not exist.
  void start_worker() {
    boxes_.reserve(boxes_.size() + 1);  // push_back below cannot throw once the thread runs
    auto box = std::make_unique<Mailbox>();
    const int index = static_cast<int>(boxes_.size()) + 1;
    std::thread([this, index, b = box.get()] { loop(index, *b); }).detach();
    boxes_.push_back(std::move(box));
  }

  void member(int t, const Job& job) {
    const int64_t q = job.n / job.team, r = job.n % job.team;
    const int64_t begin = t * q + std::min<int64_t>(t, r);
    const int64_t end = begin + q + (t < r ? 1 : 0);
    t_in_task = true;
    try {
      if (begin < end) job.chunk(job.ctx, begin, end);
    } catch (...) {
      std::lock_guard<std::mutex> lk(error_m_);
      if (!error_) error_ = std::current_exception();
    }
    t_in_task = false;
  }

  void loop(int index, Mailbox& box) {
    uint64_t seen = 0;
    for (;;) {
      auto fresh = [&] { return box.ticket.load(std::memory_order_seq_cst) != seen; };
      const uint64_t naps = g_naps.load(std::memory_order_relaxed);
      auto fresh_or_nap = [&] {
        return fresh() || g_naps.load(std::memory_order_relaxed) != naps;
      };
      if (!spin_until(fresh_or_nap, spin_us_) || !fresh()) {
        std::unique_lock<std::mutex> lk(box.m);
        box.sleeping.store(true, std::memory_order_seq_cst);
        box.cv.wait(lk, fresh);
        box.sleeping.store(false, std::memory_order_relaxed);
      }
      seen = box.ticket.load(std::memory_order_acquire);
      member(index, job_);
      if (pending_.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
          caller_sleeping_.load(std::memory_order_seq_cst)) {
        std::lock_guard<std::mutex> lk(done_m_);
        done_cv_.notify_one();
      }
    }
  }

  const int spin_us_;
  std::vector<std::unique_ptr<Mailbox>> boxes_;  // worker w's is boxes_[w - 1]; grows under busy
  uint64_t generation_ = 0;
  Job job_;
  std::exception_ptr error_;
  std::mutex error_m_;
  std::atomic<int> pending_{0};
  std::atomic<bool> caller_sleeping_{false};
  std::mutex done_m_;
  std::condition_variable done_cv_;
};

// The process's pool, made on first use and never destroyed (its detached workers outlive any
// static destructor). A forked child has none of the parent's threads: it makes a new pool.
std::atomic<Pool*> g_pool{nullptr};
alignas(std::mutex) unsigned char g_make_storage[sizeof(std::mutex)];
std::mutex* g_make = new (g_make_storage) std::mutex();

void after_fork_in_child() {
  g_pool.store(nullptr);                   // the parent's pool (leaked): its workers are gone
  g_make = new (g_make_storage) std::mutex();  // it may have been held at the fork
}

Pool& pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (p != nullptr) return *p;
  std::lock_guard<std::mutex> lk(*g_make);
  p = g_pool.load(std::memory_order_acquire);
  if (p == nullptr) {
    static const bool registered = [] {
      pthread_atfork(nullptr, nullptr, after_fork_in_child);
      return true;
    }();
    (void)registered;
    p = new Pool(spin_microseconds());
    g_pool.store(p, std::memory_order_release);
  }
  return *p;
}

}  // namespace

int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  static const int n = env_int("OMP_NUM_THREADS",
                               std::max(1, static_cast<int>(std::thread::hardware_concurrency())),
                               1, 4096);
  return n;
#endif
}

void park_workers() { g_naps.fetch_add(1, std::memory_order_relaxed); }

int spin_microseconds() {
  static const int us = env_int("PYDEVIS_SPIN_US", 200, 0, 1000000);
  return us;
}

void parallel_run(int64_t n, int threads, void (*chunk)(void*, int64_t, int64_t), void* ctx) {
  const int team = static_cast<int>(std::min<int64_t>(n, threads));
  if (team <= 1 || t_in_task) {
    if (n > 0) chunk(ctx, 0, n);
    return;
  }
  Pool& p = pool();
  std::unique_lock<std::mutex> lk(p.busy, std::try_to_lock);
  if (!lk.owns_lock()) {  // another thread's loop holds the pool
    chunk(ctx, 0, n);
    return;
  }
  p.run(n, team, chunk, ctx);
}

}  // namespace pydevis
