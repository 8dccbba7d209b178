// cuBLAS for pydevis._cuda (conv backward-data as GEMM + col2im). Built only when cuBLAS was
// found (PYDEVIS_HAVE_CUBLAS); without it the conv runs its direct gather kernel. Host code.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace pydevis::cuda {

// Whether this build has cuBLAS.
bool have_cublas();

// Column-major C[i] = A[i] (m x k, op N) * op_T(B) (k x n, given as n x k) for i < batch, with
// element strides between the batch members; beta = 0. A thread-local handle per device, set
// to `stream`. Throws std::runtime_error on a cuBLAS error or when the build has no cuBLAS.
template <typename T>
void gemm_nt_strided(int m, int n, int k, const T* A, int lda, int64_t strideA, const T* B,
                     int ldb, int64_t strideB, T* C, int ldc, int64_t strideC, int batch,
                     cudaStream_t stream);

}  // namespace pydevis::cuda
