// linear_backward_data: dL/dX of Y = X·Wᵀ (ONNX Gemm, transB = 1), grad_in = G·W with G (N × M)
// and W (M × K), for a small batch N.
//
// At small N the op is memory-bound: each element of W is used N times and read once. A BLAS
// GEMM packs W first (a second pass over it) and a GEMV reads it below the memory bandwidth;
// here each element of W goes from memory straight into N FMAs.
//
// Scheme. W's rows are cut into parts (a function of M alone), spread over the thread pool; each
// part sums into its own (N, K) buffer (the first into grad_in), added up in part order at the
// end, so results do not depend on the thread count. A part is walked in blocks of kRows rows,
// each read as kRows sequential streams (prefetched ahead, into the next block), adding
// G[:, block]·W[block, :] into the part's buffer (in L2): for each chunk of V vectors of k, the
// NB × V accumulators of NB samples are held in registers across the block's rows, each row's V
// vectors loaded once and multiplied by NB broadcasts of G (from Gᵀ, packed once). The plain loop
// that the compiler vectorises on its own (grad_in loaded and stored per row block, W reloaded
// per sample) was load-bound at ~65 GFLOP/s per core in cache vs ~200 for sgemm; the register
// block, written with GCC/Clang vector extensions (no intrinsics), is compiled for AVX-512 and
// AVX2+FMA besides the baseline ISA of the build, and the widest the CPU has is picked at run
// time (baseline SSE2 has no FMA and half the width, too slow to keep up with memory at N = 8).
// Sums round as a GEMM's (FMA, rows in order, then parts in order), not as numpy's.
//
// Zero columns of G. In an ascent step the gradient reaching a Gemm has passed a ReLU (about
// half of it exactly zero at batch 1) or is the one-hot class seed at the logits, and row m of
// W contributes G[:, m]·W[m, :]: the rows whose G column is zero for every sample are not read
// (nor their Gᵀ rows packed). The A active rows (any nonzero or NaN in G[:, m]) are read through
// an array of row pointers, cut into parts by A as above (so the sums are those of the kernel
// given only the active rows of W, the same bits for any thread count); when every row is
// active they are addressed as w + m·K as before (no pointer load per row). Measured, 2 threads,
// Xeon AVX-512, best ms old -> new: N = 1, half of G zero, fc6 4096 × 9216 2.53 -> 1.25, fc7
// 4096 × 4096 1.06 -> 0.62; fc8 one-hot 0.26 -> 0.01; all rows active unchanged. Exact for finite
// W (x + 0·w = x, up to the sign of a zero sum); a non-finite weight in a skipped row, which a
// plain GEMM would turn into NaN (0·inf), is never read here: pydevis does not check weights at
// load (it rejects non-finite scores and input gradients, model.py).
#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "../common/parallel.h"
#include "kernels.h"

#if defined(__GNUC__) || defined(__clang__)
#define PYDEVIS_VECTOR_EXT 1
#define PYDEVIS_INLINE inline __attribute__((always_inline))
#if defined(__x86_64__)
#define PYDEVIS_X86_DISPATCH 1
#endif
#else
#define PYDEVIS_INLINE inline
#endif

namespace pydevis::cpu {
namespace {

// W rows per block: grad_in is loaded and stored once per block, and each row is a stream; 64
// streams defeat the prefetchers (measured, N = 8: 3.4x slower than 16), 8 rows reload grad_in
// twice as often (1.1x slower).
constexpr int64_t kRows = 16;
constexpr int64_t kLineBytes = 64;
// The threads split W by rows, in parts of >= kPartRows rows (at most kMaxParts), each reading
// whole rows; splitting K instead (each thread a slab of every row) was slower: one thread
// reading W 4096 × 9216 as 2 slabs of 4608 columns took 10.5 ms at N = 8, as 1 slab 7.8 ms
// (8 slabs: 12.0).
constexpr int64_t kPartRows = 256;
constexpr int64_t kMaxParts = 8;
// Each row of a block is prefetched this far ahead of its loads: the hardware prefetchers alone
// follow kRows interleaved streams less well (measured, 1 thread, N = 8, W 4096 × 9216: 9.2 ms
// without, 7.8 ms at 512 bytes, 8.0 at 256; N = 1 is at the bandwidth either way).
constexpr int64_t kPrefetchBytes = 512;

// W's rows as the kernel reads them: all of them (row m at w + m·K), or the active ones (those
// with a nonzero in G[:, m]) through an array of row pointers. `at(m0)` is the rows from m0 on.
template <typename T>
struct DenseRows {
  const T* w;
  int64_t K;
  PYDEVIS_INLINE const T* operator()(int64_t m) const { return w + m * K; }
  PYDEVIS_INLINE DenseRows at(int64_t m0) const { return {w + m0 * K, K}; }
};
template <typename T>
struct IndexedRows {
  const T* const* p;
  PYDEVIS_INLINE const T* operator()(int64_t m) const { return p[m]; }
  PYDEVIS_INLINE IndexedRows at(int64_t m0) const { return {p + m0}; }
};

// grad_in[n, kb:ke] += sum_{m < rows} gt[m, n] * w[m, kb:ke], n < nb, scalar (chunk tails).
template <typename T, typename R>
PYDEVIS_INLINE void add_scalar(const T* gt, int64_t N, R w, int64_t K, int64_t rows, T* y,
                               int64_t nb, int64_t kb, int64_t ke) {
  for (int64_t n = 0; n < nb; ++n)
    for (int64_t m = 0; m < rows; ++m) {
      const T c = gt[m * N + n];
      const T* wm = w(m);
      for (int64_t k = kb; k < ke; ++k) y[n * K + k] += c * wm[k];
    }
}

#ifdef PYDEVIS_VECTOR_EXT
// VB-byte vectors of T; NB samples × V vectors of accumulators.
template <typename T, int VB, int NB, int V>
struct Micro {
  typedef T vec __attribute__((vector_size(VB)));
  static constexpr int64_t L = VB / int64_t(sizeof(T));  // lanes
  static constexpr int64_t kChunk = V * L;                // k per register block
  static constexpr int64_t kChunkBytes = V * VB;

  // y[n, k:k+kChunk] += sum_{m < rows} gt[m, n] * w[m, k:k+kChunk] for n < NB; prefetches
  // pf(m)[pfk : + kChunk] (when `prefetch`).
  template <typename R>
  static PYDEVIS_INLINE void chunk(const T* gt, int64_t N, R w, int64_t K, int64_t rows, T* y,
                                   int64_t k, bool prefetch, R pf, int64_t pfk) {
    vec acc[NB][V];
#pragma GCC unroll 16
    for (int n = 0; n < NB; ++n)
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) std::memcpy(&acc[n][v], y + n * K + k + v * L, VB);
    for (int64_t m = 0; m < rows; ++m) {
      vec wv[V];
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) std::memcpy(&wv[v], w(m) + k + v * L, VB);
      if (prefetch) {
#pragma GCC unroll 4
        for (int64_t b = 0; b < kChunkBytes; b += kLineBytes)
          __builtin_prefetch(reinterpret_cast<const char*>(pf(m) + pfk) + b);
      }
      const T* c = gt + m * N;
#pragma GCC unroll 16
      for (int n = 0; n < NB; ++n)
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) acc[n][v] += c[n] * wv[v];
    }
#pragma GCC unroll 16
    for (int n = 0; n < NB; ++n)
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) std::memcpy(y + n * K + k + v * L, &acc[n][v], VB);
  }

  // One row block and NB samples over the slab [k0, k1). Its rows are prefetched kPrefetch
  // ahead, past k1 into the rows of the next block wnext (when `full_next`: a full block).
  template <typename R>
  static PYDEVIS_INLINE void run(const T* gt, int64_t N, R w, bool full_next, R wnext, int64_t K,
                                 int64_t rows, T* y, int64_t k0, int64_t k1) {
    constexpr int64_t ahead = kPrefetchBytes / int64_t(sizeof(T));
    int64_t k = k0;
    for (; k + kChunk <= k1; k += kChunk) {
      const int64_t next = k + ahead - k1;  // column of the next block's rows, when >= 0
      if (next < 0)
        chunk(gt, N, w, K, rows, y, k, true, w, k + ahead);
      else
        chunk(gt, N, w, K, rows, y, k, full_next && next < k1 - k0, wnext, k0 + next);
    }
    add_scalar(gt, N, w, K, rows, y, NB, k, k1);
  }
};

// One row block over the slab for `count` samples, NB at a time, then the rest in halves; gt's
// rows hold N samples.
template <typename T, int VB, int NB, int V, typename R>
PYDEVIS_INLINE void row_block(const T* gt, int64_t N, int64_t count, R w, bool full_next,
                              R wnext, int64_t K, int64_t rows, T* y, int64_t k0, int64_t k1) {
  int64_t n = 0;
  for (; n + NB <= count; n += NB)
    Micro<T, VB, NB, V>::run(gt + n, N, w, full_next, wnext, K, rows, y + n * K, k0, k1);
  if constexpr (NB > 1) {
    if (count > n)
      row_block<T, VB, NB / 2, V>(gt + n, N, count - n, w, full_next, wnext, K, rows, y + n * K,
                                  k0, k1);
  }
}
#endif

// grad_in[:, k0:k1] = G · W[:, k0:k1], one thread's share; gt is Gᵀ (M × N), M rows of w.
template <typename T, int VB, int NB, int V, typename R>
PYDEVIS_INLINE void slab(const T* gt, R w, T* y, int64_t N, int64_t M, int64_t K, int64_t k0,
                         int64_t k1) {
  for (int64_t n = 0; n < N; ++n) std::memset(y + n * K + k0, 0, size_t(k1 - k0) * sizeof(T));
  for (int64_t m0 = 0; m0 < M; m0 += kRows) {
    const int64_t rows = std::min(kRows, M - m0);
#ifdef PYDEVIS_VECTOR_EXT
    const bool full_next = m0 + 2 * kRows <= M;
    row_block<T, VB, NB, V>(gt + m0 * N, N, N, w.at(m0), full_next,
                            full_next ? w.at(m0 + kRows) : w, K, rows, y, k0, k1);
#else
    add_scalar(gt + m0 * N, N, w.at(m0), K, rows, y, N, k0, k1);
#endif
  }
}

// A slab over all of W's rows from w, or over the rows whose pointers are in rp.
template <typename T>
struct SlabFns {
  void (*dense)(const T* gt, const T* w, T* y, int64_t N, int64_t M, int64_t K, int64_t k0,
                int64_t k1);
  void (*indexed)(const T* gt, const T* const* rp, T* y, int64_t N, int64_t M, int64_t K,
                  int64_t k0, int64_t k1);
};

#define PYDEVIS_SLAB(NAME, T, VB, NB, V, ATTR)                                                  \
  ATTR void NAME##_dense(const T* gt, const T* w, T* y, int64_t N, int64_t M, int64_t K,      \
                         int64_t k0, int64_t k1) {                                            \
    slab<T, VB, NB, V>(gt, DenseRows<T>{w, K}, y, N, M, K, k0, k1);                           \
  }                                                                                           \
  ATTR void NAME##_indexed(const T* gt, const T* const* rp, T* y, int64_t N, int64_t M,       \
                           int64_t K, int64_t k0, int64_t k1) {                               \
    slab<T, VB, NB, V>(gt, IndexedRows<T>{rp}, y, N, M, K, k0, k1);                           \
  }                                                                                           \
  constexpr SlabFns<T> NAME = {NAME##_dense, NAME##_indexed};
// Baseline (SSE2 on x86-64): 16 registers of 16 bytes.
PYDEVIS_SLAB(slab_base_f, float, 16, 4, 2, )
PYDEVIS_SLAB(slab_base_d, double, 16, 4, 2, )

#ifdef PYDEVIS_X86_DISPATCH
#define PYDEVIS_AVX2 __attribute__((target("avx2,fma")))
#define PYDEVIS_AVX512 \
  __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,prefer-vector-width=512")))
// AVX2: 16 registers of 32 bytes (8 accumulators); AVX-512: 32 of 64 bytes (16 accumulators).
PYDEVIS_SLAB(slab_avx2_f, float, 32, 4, 2, PYDEVIS_AVX2)
PYDEVIS_SLAB(slab_avx2_d, double, 32, 4, 2, PYDEVIS_AVX2)
PYDEVIS_SLAB(slab_avx512_f, float, 64, 8, 2, PYDEVIS_AVX512)
PYDEVIS_SLAB(slab_avx512_d, double, 64, 8, 2, PYDEVIS_AVX512)

// 2 AVX-512, 1 AVX2 + FMA, 0 neither.
int isa_level() {
  static const int level = [] {
    __builtin_cpu_init();
    int l = 0;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) l = 1;
    if (l == 1 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw"))
      l = 2;
    return l;
  }();
  return level;
}
#endif

SlabFns<float> pick(float, int level) {
#ifdef PYDEVIS_X86_DISPATCH
  if (level >= 2) return slab_avx512_f;
  if (level == 1) return slab_avx2_f;
#endif
  (void)level;
  return slab_base_f;
}
SlabFns<double> pick(double, int level) {
#ifdef PYDEVIS_X86_DISPATCH
  if (level >= 2) return slab_avx512_d;
  if (level == 1) return slab_avx2_d;
#endif
  (void)level;
  return slab_base_d;
}

}  // namespace

int linear_isa_level() {
#ifdef PYDEVIS_X86_DISPATCH
  return isa_level();
#else
  return 0;
#endif
}

// grad_in = Gᵀ' · W' over M rows of W given by `slab(gt + m0·N, m0, m1, y, k0, k1)`, gt packed
// (M × N): the rows cut into parts, the parts into K slabs when the threads outnumber them.
template <typename T, typename Slab>
void sum_parts(const T* gt, T* grad_in, int64_t N, int64_t M, int64_t K, const Slab& slab) {
  // Parts of W's rows, a function of M alone: each sum runs over the rows of a part in order,
  // then over the parts in order, whatever the thread count. K is split into slabs (whole
  // register chunks: 128 bytes) only when the threads outnumber the parts.
  int64_t parts = 1;  // a power of two: the parts share out evenly over 2, 4, 8... threads
  while (parts * 2 <= std::min(M / kPartRows, kMaxParts)) parts *= 2;
  const int64_t rows = ceil_div(ceil_div(std::max<int64_t>(M, 1), kRows), parts) * kRows;
  const int64_t unit = 2 * kLineBytes / int64_t(sizeof(T));
  const int64_t slabs = std::clamp<int64_t>(ceil_div(max_threads(), parts), 1, ceil_div(K, unit));
  const int64_t per = ceil_div(ceil_div(K, unit), slabs) * unit;
  // Part 0 sums into grad_in, the others into their own (N, K) buffers.
  std::unique_ptr<T[]> partial(parts > 1 ? new T[size_t((parts - 1) * N * K)] : nullptr);
  parallel_for(parts * slabs, N * rows * per, [&](int64_t i) {
    const int64_t p = i / slabs, s = i % slabs;
    const int64_t m0 = std::min(M, p * rows), m1 = std::min(M, m0 + rows);
    const int64_t k0 = std::min(K, s * per), k1 = std::min(K, k0 + per);
    T* y = p == 0 ? grad_in : partial.get() + (p - 1) * N * K;
    if (k0 < k1) slab(gt + m0 * N, m0, m1, y, k0, k1);
  });
  if (parts == 1) return;
  const int64_t total = N * K, block = 4096;
  parallel_for(ceil_div(total, block), block * parts, [&](int64_t b) {
    const T* __restrict__ src = partial.get();
    T* __restrict__ dst = grad_in;
    for (int64_t i = b * block, end = std::min(total, i + block); i < end; ++i) {
      T acc = dst[i];
      for (int64_t p = 0; p + 1 < parts; ++p) acc += src[p * total + i];
      dst[i] = acc;
    }
  });
}

template <typename T>
void linear_backward_data(const T* g, const T* w, T* grad_in, int64_t N, int64_t M, int64_t K,
                          int isa) {
  if (N == 0 || K == 0) return;
  const SlabFns<T> fns = pick(T(), std::min(isa, linear_isa_level()));
  // The active rows of W: those with a nonzero (or NaN) in G[:, m]. The others add 0 · w.
  std::vector<char> active(size_t(M), 0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t m = 0; m < M; ++m) active[size_t(m)] |= g[n * M + m] != T(0);
  std::vector<int64_t> idx;
  for (int64_t m = 0; m < M; ++m)
    if (active[size_t(m)]) idx.push_back(m);
  const int64_t A = int64_t(idx.size());
  if (A == 0) {
    std::memset(grad_in, 0, size_t(N * K) * sizeof(T));
    return;
  }
  std::vector<T> gt(size_t(A * N));  // Gᵀ of the active rows: a row block's broadcasts adjacent
  for (int64_t n = 0; n < N; ++n)
    for (int64_t a = 0; a < A; ++a) gt[size_t(a * N + n)] = g[n * M + idx[size_t(a)]];
  if (A == M) {
    sum_parts(gt.data(), grad_in, N, M, K,
              [&](const T* gtp, int64_t m0, int64_t m1, T* y, int64_t k0, int64_t k1) {
                fns.dense(gtp, w + m0 * K, y, N, m1 - m0, K, k0, k1);
              });
    return;
  }
  std::vector<const T*> rp(static_cast<size_t>(A));
  for (int64_t a = 0; a < A; ++a) rp[size_t(a)] = w + idx[size_t(a)] * K;
  sum_parts(gt.data(), grad_in, N, A, K,
            [&](const T* gtp, int64_t a0, int64_t a1, T* y, int64_t k0, int64_t k1) {
              fns.indexed(gtp, rp.data() + a0, y, N, a1 - a0, K, k0, k1);
            });
}

template void linear_backward_data<float>(const float*, const float*, float*, int64_t, int64_t,
                                          int64_t, int);
template void linear_backward_data<double>(const double*, const double*, double*, int64_t,
                                           int64_t, int64_t, int);

}  // namespace pydevis::cpu
