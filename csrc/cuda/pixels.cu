// The kernels of an ascent that keeps its image on the device (workspace.cpp): the pixel map
// between the centred image v (N, 3, H, W) and the model input x (N, C, H, W) with the jitter's
// wrap-around shift, its adjoint, the per-image sum of squares of the gradient, and the copy of
// chosen images. float32 (the ascent's dtype).
//
// to_input: x[n, c, h, w] = (sum_k A[c, k] * (v[n, k, h', w'] + center[k]) - mean[c]) / std[c],
// h' = (h - dy) mod H, w' = (w - dx) mod W (numpy.roll by (dy, dx)); the terms with A = 0 are
// skipped, so that a channel permutation (RGB, BGR) gives numpy's float32 result bit for bit.
// from_input: g[n, k, h, w] = sum_c A[c, k] * (gx[n, c, h'', w''] / std[c]),
// h'' = (h + dy) mod H, w'' = (w + dx) mod W (the gradient shifted back).
#include "kernels.h"
#include "launch.cuh"

namespace pydevis::cuda {
namespace {

__device__ __forceinline__ int64_t wrap(int64_t i, int64_t n) {
    const int64_t r = i % n;
    return r < 0 ? r + n : r;
}

__global__ void to_input_kernel(const float* __restrict__ v, float* __restrict__ x, PixelMap p,
                                int64_t N, int64_t H, int64_t W, int64_t dy, int64_t dx) {
    const int64_t HW = H * W, total = N * p.channels * HW;
    for (int64_t i = detail::global_thread<int64_t>(); i < total;
         i += detail::grid_stride<int64_t>()) {
        const int64_t w = i % W, h = (i / W) % H;
        const int64_t c = (i / HW) % p.channels, n = i / (HW * p.channels);
        const int64_t src = wrap(h - dy, H) * W + wrap(w - dx, W);
        float acc = 0.0f;
        for (int k = 0; k < 3; ++k) {
            const float a = p.A[c * 3 + k];
            if (a != 0.0f) acc = __fadd_rn(acc, __fmul_rn(a, __fadd_rn(v[(n * 3 + k) * HW + src],
                                                                      p.center[k])));
        }
        x[i] = __fdiv_rn(__fsub_rn(acc, p.mean[c]), p.std[c]);
    }
}

__global__ void from_input_kernel(const float* __restrict__ gx, float* __restrict__ g, PixelMap p,
                                  int64_t N, int64_t H, int64_t W, int64_t dy, int64_t dx) {
    const int64_t HW = H * W, total = N * 3 * HW;
    for (int64_t i = detail::global_thread<int64_t>(); i < total;
         i += detail::grid_stride<int64_t>()) {
        const int64_t w = i % W, h = (i / W) % H, k = (i / HW) % 3, n = i / (HW * 3);
        const int64_t src = wrap(h + dy, H) * W + wrap(w + dx, W);
        float acc = 0.0f;
        for (int c = 0; c < p.channels; ++c) {
            const float a = p.A[c * 3 + k];
            if (a != 0.0f) {
                acc = __fadd_rn(acc, __fmul_rn(a, __fdiv_rn(gx[(n * p.channels + c) * HW + src],
                                                            p.std[c])));
            }
        }
        g[i] = acc;
    }
}

// One block per image: the sum of g² in double (tree reduction in shared memory).
template <typename T>
__global__ void row_sumsq_kernel(const T* __restrict__ g, double* __restrict__ out,
                                 int64_t per_image) {
    __shared__ double part[detail::kThreads];
    const T* row = g + blockIdx.x * per_image;
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < per_image; i += blockDim.x) {
        const double x = static_cast<double>(row[i]);
        s += x * x;
    }
    part[threadIdx.x] = s;
    __syncthreads();
    for (int step = blockDim.x / 2; step > 0; step /= 2) {
        if (threadIdx.x < step) part[threadIdx.x] += part[threadIdx.x + step];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = part[0];
}

}  // namespace

void to_input(const float* v, float* x, const PixelMap& p, int64_t N, int64_t H, int64_t W,
              int64_t dy, int64_t dx, cudaStream_t stream) {
    const int64_t total = N * p.channels * H * W;
    if (total == 0) return;
    to_input_kernel<<<detail::blocks_for(total), detail::kThreads, 0, stream>>>(v, x, p, N, H, W,
                                                                                 dy, dx);
    PYDEVIS_CUDA_CHECK_LAUNCH();
}

void from_input(const float* gx, float* g, const PixelMap& p, int64_t N, int64_t H, int64_t W,
                int64_t dy, int64_t dx, cudaStream_t stream) {
    const int64_t total = N * 3 * H * W;
    if (total == 0) return;
    from_input_kernel<<<detail::blocks_for(total), detail::kThreads, 0, stream>>>(gx, g, p, N, H,
                                                                                   W, dy, dx);
    PYDEVIS_CUDA_CHECK_LAUNCH();
}

template <typename T>
void row_sumsq(const T* g, double* out, int64_t N, int64_t per_image, cudaStream_t stream) {
    if (N == 0) return;
    row_sumsq_kernel<T><<<static_cast<unsigned int>(N), detail::kThreads, 0, stream>>>(g, out,
                                                                                     per_image);
    PYDEVIS_CUDA_CHECK_LAUNCH();
}

template void row_sumsq<float>(const float*, double*, int64_t, int64_t, cudaStream_t);
template void row_sumsq<double>(const double*, double*, int64_t, int64_t, cudaStream_t);

}  // namespace pydevis::cuda
