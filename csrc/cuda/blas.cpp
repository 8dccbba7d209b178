// cuBLAS handles and the strided-batched GEMM of blas.h.
#include "blas.h"

#include <map>
#include <stdexcept>
#include <string>

#include "cuda_check.h"

#ifdef PYDEVIS_HAVE_CUBLAS
#include <cublas_v2.h>
#endif

namespace pydevis::cuda {

#ifdef PYDEVIS_HAVE_CUBLAS
namespace {

void check(cublasStatus_t st, const char* what) {
    if (st != CUBLAS_STATUS_SUCCESS) {
        throw std::runtime_error(std::string("cuBLAS error ") + cublasGetStatusName(st) + " (" +
                                 cublasGetStatusString(st) + ") in " + what);
    }
}

// One handle per (thread, device): a handle's stream is per handle, and the GIL is released
// around the kernels, so two Python threads must not share one. Never destroyed (a handle
// destroyed at exit may outlive the CUDA context).
cublasHandle_t handle(cudaStream_t stream) {
    thread_local std::map<int, cublasHandle_t> handles;
    int device = 0;
    PYDEVIS_CUDA_CHECK(cudaGetDevice(&device));
    auto it = handles.find(device);
    if (it == handles.end()) {
        cublasHandle_t h = nullptr;
        check(cublasCreate(&h), "cublasCreate");
        check(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");  // no TF32
        it = handles.emplace(device, h).first;
    }
    check(cublasSetStream(it->second, stream), "cublasSetStream");
    return it->second;
}

}  // namespace

bool have_cublas() { return true; }

template <>
void gemm_nt_strided<float>(int m, int n, int k, const float* A, int lda, int64_t strideA,
                            const float* B, int ldb, int64_t strideB, float* C, int ldc,
                            int64_t strideC, int batch, cudaStream_t stream) {
    const float one = 1.0f, zero = 0.0f;
    check(cublasSgemmStridedBatched(handle(stream), CUBLAS_OP_N, CUBLAS_OP_T, m, n, k, &one, A,
                                    lda, strideA, B, ldb, strideB, &zero, C, ldc, strideC, batch),
          "cublasSgemmStridedBatched");
}

template <>
void gemm_nt_strided<double>(int m, int n, int k, const double* A, int lda, int64_t strideA,
                             const double* B, int ldb, int64_t strideB, double* C, int ldc,
                             int64_t strideC, int batch, cudaStream_t stream) {
    const double one = 1.0, zero = 0.0;
    check(cublasDgemmStridedBatched(handle(stream), CUBLAS_OP_N, CUBLAS_OP_T, m, n, k, &one, A,
                                    lda, strideA, B, ldb, strideB, &zero, C, ldc, strideC, batch),
          "cublasDgemmStridedBatched");
}

#else

bool have_cublas() { return false; }

template <typename T>
void gemm_nt_strided(int, int, int, const T*, int, int64_t, const T*, int, int64_t, T*, int,
                     int64_t, int, cudaStream_t) {
    throw std::runtime_error("pydevis._cuda was built without cuBLAS");
}
template void gemm_nt_strided<float>(int, int, int, const float*, int, int64_t, const float*, int,
                                     int64_t, float*, int, int64_t, int, cudaStream_t);
template void gemm_nt_strided<double>(int, int, int, const double*, int, int64_t, const double*,
                                      int, int64_t, double*, int, int64_t, int, cudaStream_t);

#endif

}  // namespace pydevis::cuda
