// Backward of Relu / Clip (gradient, deconvnet and guided rules) and of ONNX LRN, CUDA.
#include "kernels.h"
#include "launch.cuh"

namespace pydevis::cuda {
namespace {

// ---------------------------------------------------------------------------------------------
// Rectifier: elementwise. max(g, 0) is written `g < 0 ? 0 : g` so that NaN propagates as in
// numpy.maximum. The bounds are compared in T (numpy compares a float32 array with a Python
// float in float32).
template <int Mode, typename T, typename I>
__global__ void rectifier_backward_kernel(const T* __restrict__ grad_out,
                                          const T* __restrict__ out, T* __restrict__ grad_in,
                                          T lo, T hi, I n) {
    for (I i = detail::global_thread<I>(); i < n; i += detail::grid_stride<I>()) {
        T g = grad_out[i];
        if (Mode != 0) g = g < T(0) ? T(0) : g;
        if (Mode != 1) {
            const T y = out[i];
            g = (lo < y && y < hi) ? g : T(0);
        }
        grad_in[i] = g;
    }
}

template <typename T, typename I>
void launch_rectifier(const T* grad_out, const T* out, T* grad_in, I n, int mode, T lo, T hi,
                      cudaStream_t stream) {
    const unsigned int blocks = detail::blocks_for(n);
    switch (mode) {
        case 0:
            rectifier_backward_kernel<0, T, I>
                <<<blocks, detail::kThreads, 0, stream>>>(grad_out, out, grad_in, lo, hi, n);
            break;
        case 1:
            rectifier_backward_kernel<1, T, I>
                <<<blocks, detail::kThreads, 0, stream>>>(grad_out, out, grad_in, lo, hi, n);
            break;
        default:
            rectifier_backward_kernel<2, T, I>
                <<<blocks, detail::kThreads, 0, stream>>>(grad_out, out, grad_in, lo, hi, n);
            break;
    }
    PYDEVIS_CUDA_CHECK_LAUNCH();
}

// ---------------------------------------------------------------------------------------------
// LRN, two passes over (n, c, p) with p the flat spatial position, window offsets
// a = floor((size-1)/2) before and b = ceil((size-1)/2) after the channel:
//   pass 1: s[c] = bias + alpha/size * sum_{k=c-a}^{c+b} x[k]^2;  grad_in[c] = g[c] * s[c]^-beta;
//           scratch[c] = g[c] * x[c] * s[c]^(-beta-1)
//   pass 2: grad_in[c] -= (2*alpha*beta/size) * x[c] * sum_{j=c-b}^{c+a} scratch[j]
// (c lies in window(j) = [j-a, j+b] exactly when c-b <= j <= c+a.)
template <typename T, typename I>
__global__ void lrn_backward_pass1(const T* __restrict__ grad_out, const T* __restrict__ x,
                                   T* __restrict__ grad_in, T* __restrict__ scratch, I C, I HW,
                                   I before, I after, T alpha_over_size, T beta, T bias,
                                   I total) {
    for (I idx = detail::global_thread<I>(); idx < total; idx += detail::grid_stride<I>()) {
        const I p = idx % HW;
        const I nc = idx / HW;
        const I c = nc % C;
        const I base = (nc - c) * HW + p;  // element (n, 0, p)
        const I k0 = max(c - before, I(0));
        const I k1 = min(c + after, C - 1);
        T sq = T(0);
        for (I k = k0; k <= k1; ++k) {
            const T v = x[base + k * HW];
            sq += v * v;
        }
        const T s = bias + alpha_over_size * sq;
        const T s_pow = detail::pow_(s, -beta);
        const T g = grad_out[idx];
        grad_in[idx] = g * s_pow;
        scratch[idx] = g * x[idx] * s_pow / s;
    }
}

template <typename T, typename I>
__global__ void lrn_backward_pass2(const T* __restrict__ x, const T* __restrict__ scratch,
                                   T* __restrict__ grad_in, I C, I HW, I before, I after,
                                   T coef, I total) {
    for (I idx = detail::global_thread<I>(); idx < total; idx += detail::grid_stride<I>()) {
        const I p = idx % HW;
        const I nc = idx / HW;
        const I c = nc % C;
        const I base = (nc - c) * HW + p;
        const I j0 = max(c - after, I(0));
        const I j1 = min(c + before, C - 1);
        T acc = T(0);
        for (I j = j0; j <= j1; ++j) acc += scratch[base + j * HW];
        grad_in[idx] -= coef * x[idx] * acc;
    }
}

template <typename T, typename I>
void launch_lrn(const T* grad_out, const T* x, T* grad_in, T* scratch, int64_t C, int64_t HW,
                int64_t size, double alpha, double beta, double bias, int64_t total,
                cudaStream_t stream) {
    const I before = static_cast<I>((size - 1) / 2);
    const I after = static_cast<I>(size - 1 - (size - 1) / 2);
    const unsigned int blocks = detail::blocks_for(total);
    lrn_backward_pass1<T, I><<<blocks, detail::kThreads, 0, stream>>>(
        grad_out, x, grad_in, scratch, static_cast<I>(C), static_cast<I>(HW), before, after,
        static_cast<T>(alpha / static_cast<double>(size)), static_cast<T>(beta),
        static_cast<T>(bias), static_cast<I>(total));
    PYDEVIS_CUDA_CHECK_LAUNCH();
    lrn_backward_pass2<T, I><<<blocks, detail::kThreads, 0, stream>>>(
        x, scratch, grad_in, static_cast<I>(C), static_cast<I>(HW), before, after,
        static_cast<T>(2.0 * alpha * beta / static_cast<double>(size)), static_cast<I>(total));
    PYDEVIS_CUDA_CHECK_LAUNCH();
}

}  // namespace

template <typename T>
void rectifier_backward(const T* grad_out, const T* out, T* grad_in, int64_t n, int mode,
                        double lo, double hi, cudaStream_t stream) {
    if (n == 0) return;
    const T lo_t = static_cast<T>(lo);
    const T hi_t = static_cast<T>(hi);
    if (detail::fits_int32({n})) {
        launch_rectifier<T, int32_t>(grad_out, out, grad_in, static_cast<int32_t>(n), mode, lo_t,
                                     hi_t, stream);
    } else {
        launch_rectifier<T, int64_t>(grad_out, out, grad_in, n, mode, lo_t, hi_t, stream);
    }
}

template <typename T>
void lrn_backward(const T* grad_out, const T* x, T* grad_in, T* scratch, int64_t N, int64_t C,
                  int64_t HW, int64_t size, double alpha, double beta, double bias,
                  cudaStream_t stream) {
    const int64_t total = N * C * HW;
    if (total == 0) return;
    if (detail::fits_int32({total, C + size})) {
        launch_lrn<T, int32_t>(grad_out, x, grad_in, scratch, C, HW, size, alpha, beta, bias,
                               total, stream);
    } else {
        launch_lrn<T, int64_t>(grad_out, x, grad_in, scratch, C, HW, size, alpha, beta, bias,
                               total, stream);
    }
}

template void rectifier_backward<float>(const float*, const float*, float*, int64_t, int, double,
                                        double, cudaStream_t);
template void rectifier_backward<double>(const double*, const double*, double*, int64_t, int,
                                         double, double, cudaStream_t);
template void lrn_backward<float>(const float*, const float*, float*, float*, int64_t, int64_t,
                                  int64_t, int64_t, double, double, double, cudaStream_t);
template void lrn_backward<double>(const double*, const double*, double*, double*, int64_t,
                                   int64_t, int64_t, int64_t, double, double, double,
                                   cudaStream_t);

}  // namespace pydevis::cuda
