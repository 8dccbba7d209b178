// C = Aᵀ·B for a narrow B (n <= kSmallGemmMaxCols columns) without packing A: a conv's
// backward-data GEMM on a small plane at batch 1 (small_gemm.cpp).
#pragma once

#include <cstdint>

namespace pydevis::cpu {

constexpr int64_t kSmallGemmMaxCols = 64;

// Whether small_gemm_tn runs here (an x86-64 CPU with AVX-512F; elsewhere use gemm_tn).
bool small_gemm_available();

// Row-major C = Aᵀ · B with A stored (k × m, lda), B (k × n, ldb), C (m × n, ldc); n <= 64.
// Each C[i][j] is the fused multiply-adds of A[p][i]·B[p][j] for p = 0, 1, ..., k-1 in order,
// from zero: the same bits whatever m, n, the position of the row or the column in the call.
void small_gemm_tn(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                   int64_t ldb, float* c, int64_t ldc);

}  // namespace pydevis::cpu
