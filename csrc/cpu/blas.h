// CBLAS from scipy-openblas32 (symbols prefixed scipy_), typed for float and double.
#pragma once

#include <cblas.h>

#include <mutex>

namespace pydevis::cpu {

// Row-major C = A^T · B with A stored (k × m, lda) and B (k × n, ldb); C is (m × n, ldc).
inline void gemm_tn(int m, int n, int k, const float* a, int lda, const float* b, int ldb,
                    float* c, int ldc) {
  scipy_cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, n, k, 1.0f, a, lda, b, ldb, 0.0f,
                    c, ldc);
}
inline void gemm_tn(int m, int n, int k, const double* a, int lda, const double* b, int ldb,
                    double* c, int ldc) {
  scipy_cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, n, k, 1.0, a, lda, b, ldb, 0.0, c,
                    ldc);
}

// Row-major y = A^T · x with A stored (k × m, lda), x strided by incx; y is (m) strided by incy.
inline void gemv_t(int m, int k, const float* a, int lda, const float* x, int incx, float* y,
                   int incy) {
  scipy_cblas_sgemv(CblasRowMajor, CblasTrans, k, m, 1.0f, a, lda, x, incx, 0.0f, y, incy);
}
inline void gemv_t(int m, int k, const double* a, int lda, const double* x, int incx, double* y,
                   int incy) {
  scipy_cblas_dgemv(CblasRowMajor, CblasTrans, k, m, 1.0, a, lda, x, incx, 0.0, y, incy);
}

// While alive, OpenBLAS runs single-threaded, so each pool thread's GEMM stays on its own core.
// OpenBLAS is a pthreads build: a multi-threaded GEMM called from several pool threads would
// serialise on its level-3 lock and its workers would spin on cores the pool owns. The
// setting is process-wide, so concurrent callers share one reference count; the last one out
// restores the previous thread count (OpenBLAS's own pool is not used by pydevis otherwise).
class BlasSingleThread {
 public:
  BlasSingleThread() {
    std::lock_guard<std::mutex> lock(mutex());
    if (users()++ == 0) {
      saved() = scipy_openblas_get_num_threads();
      if (saved() != 1) scipy_openblas_set_num_threads(1);
    }
  }
  ~BlasSingleThread() {
    std::lock_guard<std::mutex> lock(mutex());
    if (--users() == 0 && saved() != 1) scipy_openblas_set_num_threads(saved());
  }
  BlasSingleThread(const BlasSingleThread&) = delete;
  BlasSingleThread& operator=(const BlasSingleThread&) = delete;

 private:
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }
  static int& users() {
    static int n = 0;
    return n;
  }
  static int& saved() {
    static int n = 1;
    return n;
  }
};

}  // namespace pydevis::cpu
