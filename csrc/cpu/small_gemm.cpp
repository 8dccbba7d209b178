// small_gemm_tn: C = Aᵀ·B for n <= 64 columns, A (k × m) read in place, no packing.
//
// Why. At batch 1 a conv's backward-data GEMM on a 7×7 plane (ResNet-18's 512-channel 3×3
// layers: 4608 × 49 × 512 in 8 tasks of 576 rows) has 49 columns: each element of the weights
// is used 49 times, and OpenBLAS's sgemm spends a copy of its A block (the packing) on every
// call, ~20 % of the call at that width. Measured, one thread, AMD EPYC AVX-512, 576 × 49 ×
// 512 with lda 4608, best of 50: OpenBLAS 0.328 ms (88 GFLOP/s), this kernel 0.269 ms (108,
// the core's sgemm peak); at 169-196 columns both run at ~101-104 GFLOP/s (so it is used only
// on narrow planes).
//
// Scheme. Blocks of 32 rows of C (two 16-float vectors) × up to 8 columns: 16 accumulators held
// in registers while p runs over k; per p, two vector loads of A's row p (contiguous), one
// broadcast and two FMAs per column. The columns are cut into ceil(n / 8) near-equal chunks
// (49: 7 of 7). A tail of fewer than 32 rows is copied, zero-padded, to a 32-wide buffer and run
// by the same block, so every C element gets the same arithmetic wherever it sits: results do
// not depend on how a caller splits the rows or columns (the conv's tasks differ by team size).
// AVX-512 only (GCC/Clang vector extensions, compiled for it and chosen at run time); other CPUs
// keep OpenBLAS (small_gemm_available() is false).
#include "small_gemm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "scratch.h"

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define PYDEVIS_SMALL_GEMM 1
#endif

namespace pydevis::cpu {

#ifdef PYDEVIS_SMALL_GEMM
namespace {

typedef float v16 __attribute__((vector_size(64)));

// C[0:rows, 0:NJ] of a 32-row block whose A columns start at a (stride lda). Prefetch: the
// next block's A (its k rows of 128 bytes, lda apart, which the hardware prefetchers do not
// follow), during the block's first column chunk.
template <int NJ, bool Prefetch>
inline __attribute__((always_inline)) void block(int64_t k, const float* a, int64_t lda,
                                                 const float* b, int64_t ldb, float* c,
                                                 int64_t ldc, int64_t rows) {
  v16 lo[NJ], hi[NJ];
  for (int j = 0; j < NJ; ++j) lo[j] = hi[j] = v16{};
  for (int64_t p = 0; p < k; ++p) {
    if constexpr (Prefetch) {
      __builtin_prefetch(a + p * lda + 32);
      __builtin_prefetch(a + p * lda + 48);
    }
    v16 w0, w1;
    std::memcpy(&w0, a + p * lda, sizeof(v16));
    std::memcpy(&w1, a + p * lda + 16, sizeof(v16));
    const float* bp = b + p * ldb;
    for (int j = 0; j < NJ; ++j) {
      const float g = bp[j];
      lo[j] += w0 * g;
      hi[j] += w1 * g;
    }
  }
  for (int j = 0; j < NJ; ++j)
    for (int64_t i = 0; i < rows; ++i) c[i * ldc + j] = i < 16 ? lo[j][i] : hi[j][i - 16];
}

template <bool Prefetch>
inline __attribute__((always_inline)) void chunk(int64_t width, int64_t k, const float* a,
                                                 int64_t lda, const float* b, int64_t ldb,
                                                 float* c, int64_t ldc, int64_t rows) {
  switch (width) {
    case 1: return block<1, Prefetch>(k, a, lda, b, ldb, c, ldc, rows);
    case 2: return block<2, Prefetch>(k, a, lda, b, ldb, c, ldc, rows);
    case 3: return block<3, Prefetch>(k, a, lda, b, ldb, c, ldc, rows);
    case 4: return block<4, Prefetch>(k, a, lda, b, ldb, c, ldc, rows);
    case 5: return block<5, Prefetch>(k, a, lda, b, ldb, c, ldc, rows);
    case 6: return block<6, Prefetch>(k, a, lda, b, ldb, c, ldc, rows);
    case 7: return block<7, Prefetch>(k, a, lda, b, ldb, c, ldc, rows);
    default: return block<8, Prefetch>(k, a, lda, b, ldb, c, ldc, rows);
  }
}

// One 32-row block over all n columns; prefetch: whether a next block follows.
inline __attribute__((always_inline)) void columns(int64_t n, int64_t k, const float* a,
                                                   int64_t lda, const float* b, int64_t ldb,
                                                   float* c, int64_t ldc, int64_t rows,
                                                   bool prefetch) {
  const int64_t chunks = (n + 7) / 8;
  for (int64_t q = 0; q < chunks; ++q) {
    const int64_t j0 = n * q / chunks, j1 = n * (q + 1) / chunks;
    if (q == 0 && prefetch) chunk<true>(j1 - j0, k, a, lda, b + j0, ldb, c + j0, ldc, rows);
    else chunk<false>(j1 - j0, k, a, lda, b + j0, ldb, c + j0, ldc, rows);
  }
}

__attribute__((target("avx512f,fma,prefer-vector-width=512"))) void run_avx512(
    int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
    float* c, int64_t ldc) {
  int64_t i0 = 0;
  for (; i0 + 32 <= m; i0 += 32)
    columns(n, k, a + i0, lda, b, ldb, c + i0 * ldc, ldc, 32, i0 + 64 <= m);
  if (i0 < m) {  // the tail rows, zero-padded to 32
    const int64_t rows = m - i0;
    float* t = thread_scratch<float, 2>(size_t(k * 32)).data();
    for (int64_t p = 0; p < k; ++p) {
      std::copy_n(a + p * lda + i0, rows, t + p * 32);
      std::fill(t + p * 32 + rows, t + p * 32 + 32, 0.0f);
    }
    columns(n, k, t, 32, b, ldb, c + i0 * ldc, ldc, rows, false);
  }
}

}  // namespace

bool small_gemm_available() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") != 0;
  }();
  return ok;
}

void small_gemm_tn(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                   int64_t ldb, float* c, int64_t ldc) {
  run_avx512(m, n, k, a, lda, b, ldb, c, ldc);
}

#else

bool small_gemm_available() { return false; }

// Not used where unavailable (the callers keep OpenBLAS), but correct: the same sums, in order.
void small_gemm_tn(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                   int64_t ldb, float* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      float acc = 0.0f;
      for (int64_t p = 0; p < k; ++p) acc = std::fma(a[p * lda + i], b[p * ldb + j], acc);
      c[i * ldc + j] = acc;
    }
}

#endif

}  // namespace pydevis::cpu
