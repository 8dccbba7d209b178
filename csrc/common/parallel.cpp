// pydevis's thread pool (parallel.h says why it is not OpenMP's).
//
// Member 0 of every loop is the calling thread; members 1.. are workers, started on first need
// and kept (detached) for the life of the process. Each worker has its own mailbox: the caller
// writes the loop (job_), then each member's ticket; a worker waits for its ticket to change,
// spinning for spin_microseconds() and then sleeping on its own condition variable.
//
// Work: the loop's items are cut into chunks (up to kChunksPerMember per member), and each
// member owns a contiguous run of them (the static split: in a quiet machine every member runs
// its own run, in order, and touches the data it touched in the last loop). A member takes its
// own chunks first, then takes the chunks left in the other members' runs (each run has an
// atomic cursor), so a member that is late — a worker not yet awake, or one whose core another
// process holds — delays the loop by at most the chunk it is in, not by its whole share.
// A worker starts only by claiming its mailbox's invitation (a compare-exchange of `invite`
// from the loop's generation to 0); once every chunk is taken the caller withdraws the
// invitations not yet claimed the same way, so a worker that wakes late finds nothing to do
// and never reads job_, and the caller waits (spins, then sleeps) only for the workers that did
// start (pending_). Workers that are not in a loop's team are not woken and never read job_.
// One loop at a time holds the pool (busy); a loop that finds it held runs serially. Sleep and
// wake use the store-then-load pattern on sequentially consistent atomics (the sleeper stores
// its flag, then checks the ticket; the waker stores the ticket, then checks the flag), so one
// of the two always sees the other, and the waker then takes the sleeper's mutex, which the
// sleeper holds until it is inside wait(), before it notifies.
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
thread_local double t_census_inner_ms = 0.0;  // census_enter / census_leave
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

constexpr int64_t kChunksPerMember = 4;

struct Job {
  int64_t n = 0;       // items
  int64_t chunks = 1;  // chunk c covers items [c·n/chunks, (c+1)·n/chunks)
  int team = 1;
  void (*chunk)(void*, int64_t, int64_t) = nullptr;
  void* ctx = nullptr;
};

// Member t's run of chunks: [next, end) not yet taken; next only grows (fetch_add), and a value
// at or past end means the run is spent.
struct alignas(64) Run {
  std::atomic<int64_t> next{0};
  int64_t end = 0;
};

struct alignas(64) Mailbox {
  std::atomic<uint64_t> ticket{0};
  std::atomic<uint64_t> invite{0};  // the generation this worker may still start, else 0
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
    if (static_cast<int>(runs_.size()) < team) runs_ = std::vector<Run>(size_t(team));
    const int64_t chunks = std::min<int64_t>(n, int64_t(team) * kChunksPerMember);
    job_ = Job{n, chunks, team, chunk, ctx};
    for (int t = 0; t < team; ++t) {
      runs_[size_t(t)].next.store(chunks * t / team, std::memory_order_relaxed);
      runs_[size_t(t)].end = chunks * (t + 1) / team;
    }
    error_ = nullptr;
    pending_.store(team - 1, std::memory_order_relaxed);
    ++generation_;
    for (int w = 1; w < team; ++w) {
      Mailbox& box = *boxes_[w - 1];
      box.invite.store(generation_, std::memory_order_seq_cst);
      box.ticket.store(generation_, std::memory_order_seq_cst);
      if (box.sleeping.load(std::memory_order_seq_cst)) {
        std::lock_guard<std::mutex> lk(box.m);
        box.cv.notify_one();
      }
    }
    member(0, job_);
    // Every chunk is taken: the workers that have not started will not be needed.
    int withdrawn = 0;
    for (int w = 1; w < team; ++w) {
      uint64_t expected = generation_;
      if (boxes_[w - 1]->invite.compare_exchange_strong(expected, 0, std::memory_order_seq_cst))
        ++withdrawn;
    }
    if (withdrawn > 0) pending_.fetch_sub(withdrawn, std::memory_order_seq_cst);
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

  // Member t's own run of chunks, then what is left of the others' (from t + 1 on, round).
  void member(int t, const Job& job) {
    t_in_task = true;
    for (int k = 0; k < job.team; ++k) {
      Run& run = runs_[size_t((t + k) % job.team)];
      for (;;) {
        if (run.next.load(std::memory_order_relaxed) >= run.end) break;
        const int64_t c = run.next.fetch_add(1, std::memory_order_relaxed);
        if (c >= run.end) break;
        try {
          job.chunk(job.ctx, c * job.n / job.chunks, (c + 1) * job.n / job.chunks);
        } catch (...) {
          std::lock_guard<std::mutex> lk(error_m_);
          if (!error_) error_ = std::current_exception();
        }
      }
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
      uint64_t expected = seen;  // withdrawn (the loop is done, or a later one is on): skip
      if (!box.invite.compare_exchange_strong(expected, 0, std::memory_order_seq_cst)) continue;
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
  std::vector<Run> runs_;                         // member t's chunks; grows under busy
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

std::atomic<bool> g_census_on{false};
namespace {
std::mutex g_census_mutex;
std::vector<CensusLoop> g_census;
}  // namespace

void census_start() {
  std::lock_guard<std::mutex> lk(g_census_mutex);
  g_census.clear();
  g_census_on.store(true);
}

std::vector<CensusLoop> census_stop() {
  std::lock_guard<std::mutex> lk(g_census_mutex);
  g_census_on.store(false);
  return std::move(g_census);
}

double census_enter() {
  const double saved = t_census_inner_ms;
  t_census_inner_ms = 0.0;
  return saved;
}

void census_leave(int64_t items, bool pooled, double ms, double saved) {
  const double inner = t_census_inner_ms;
  t_census_inner_ms = saved;
  if (t_in_task) return;  // a loop inside another's task: serial, and inside that task's time
  t_census_inner_ms += ms;
  std::lock_guard<std::mutex> lk(g_census_mutex);
  if (g_census_on.load(std::memory_order_relaxed))
    g_census.push_back({items, pooled, std::max(0.0, ms - inner)});
}

int spin_microseconds() {
  static const int us = env_int("PYDEVIS_SPIN_US", 200, 0, 1000000);
  return us;
}

bool parallel_run(int64_t n, int threads, void (*chunk)(void*, int64_t, int64_t), void* ctx) {
  const int team = static_cast<int>(std::min<int64_t>(n, threads));
  if (team <= 1 || t_in_task) {
    if (n > 0) chunk(ctx, 0, n);
    return false;
  }
  Pool& p = pool();
  std::unique_lock<std::mutex> lk(p.busy, std::try_to_lock);
  if (!lk.owns_lock()) {  // another thread's loop holds the pool
    chunk(ctx, 0, n);
    return false;
  }
  p.run(n, team, chunk, ctx);
  return true;
}

}  // namespace pydevis
