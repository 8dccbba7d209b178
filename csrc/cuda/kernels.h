// Host launchers of the CUDA kernels of pydevis._cuda (backward and ascent kernels).
//
// Every pointer is a device pointer; every launcher enqueues its kernels on `stream` and returns
// without synchronising (CUDA launch errors are thrown as std::runtime_error). Semantics are those
// of docs/kernels.md. Instantiated for float and double in the .cu files of this folder.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/geometry.h"

namespace pydevis::cuda {

// The op geometries (ConvGeom, MaxPoolGeom, PoolGeom) are common/geometry.h's, shared with the
// C++ kernels and built by the argument fronts (common/front.h).

// grad_in[n, c, ih, iw] = sum over (m, kh, kw) of W[m, c', kh, kw] * grad_out[n, m, oh, ow].
template <typename T>
void conv2d_backward_data(const T* grad_out, const T* weight, T* grad_in, const ConvGeom& s,
                          cudaStream_t stream);

// conv2d_backward_data's algorithm: GEMM + col2im with cuBLAS, or the direct gather; automatic
// (the default) takes GEMM when cuBLAS is built in and M/group >= 8. Process-wide (tests, bench).
enum class ConvAlgo { automatic = 0, gemm = 1, direct = 2 };
void set_conv_algorithm(ConvAlgo a);
ConvAlgo conv_algorithm();
bool conv_uses_gemm(const ConvGeom& s);  // what conv2d_backward_data runs for s now

// ONNX MaxPool backward from its forward input x (N, C, H, W): each grad_out element goes to its
// window's switch, the first tap in (kh, kw) order strictly greater than every earlier one and
// than the lowest finite value (ONNX Runtime's rule); bit for bit the C++ kernel. `switches`
// holds N*C*Ho*Wo ints (scratch; kh*kw must be <= INT_MAX). Two passes, no atomics.
template <typename T>
void max_pool2d_backward(const T* grad_out, const T* x, T* grad_in, int32_t* switches,
                         const MaxPoolGeom& s, cudaStream_t stream);

// mode 0: g * [lo < out < hi]; 1: max(g, 0); 2: max(g, 0) * [lo < out < hi]. n elements.
template <typename T>
void rectifier_backward(const T* grad_out, const T* out, T* grad_in, int64_t n, int mode,
                        double lo, double hi, cudaStream_t stream);

// ONNX LRN backward given the forward input x (N, C, HW). `scratch` holds N*C*HW elements.
template <typename T>
void lrn_backward(const T* grad_out, const T* x, T* grad_in, T* scratch, int64_t N, int64_t C,
                  int64_t HW, int64_t size, double alpha, double beta, double bias,
                  cudaStream_t stream);

// ONNX AveragePool backward, gather form (one thread per input element, no atomics).
template <typename T>
void avg_pool2d_backward(const T* grad_out, T* grad_in, const PoolGeom& s,
                         cudaStream_t stream);

// grad_in[p, :] = grad_out[p] / HW for each of the `planes` (n, c) planes.
template <typename T>
void global_avg_pool_backward(const T* grad_out, T* grad_in, int64_t planes, int64_t HW,
                              cudaStream_t stream);

// ---- ascent kernels (docs/kernels.md, "Ascent kernels"); v and out are (N, C, H, W) ------------

// out = (v + eta[n] * g) * (1 - decay), computed in double; per_image = C*H*W, eta has N entries.
template <typename T>
void ascent_update(const T* v, const T* g, const double* eta, T* out, int64_t N,
                   int64_t per_image, double decay, cudaStream_t stream);

// Separable Gaussian of each of the `planes` (H, W) planes with the normalised weights[2r+1]
// (radius r >= 0), reflect boundary, rows then columns. `tmp` holds planes*H*W doubles.
template <typename T>
void gaussian_blur(const T* v, T* out, double* tmp, const double* weights, int64_t radius,
                   int64_t planes, int64_t H, int64_t W, cudaStream_t stream);

// Entries per image of clip_small's sort buffer: HW rounded up to a power of two.
inline int64_t sort_width(int64_t HW) {
    int64_t p = 1;
    while (p < HW) p *= 2;
    return p;
}

// Doubles of scratch clip_small needs: scores (N*HW), sort rows (N*sort_width(HW)), thresholds
// (N).
inline int64_t clip_small_scratch(int64_t N, int64_t HW) {
    return N * HW + N * sort_width(HW) + N;
}

// clip_small_norm (g == nullptr: score sqrt(sum_c v^2)) or clip_small_contribution (score
// |sum_c g * -v|): per image, the pixels whose score is below numpy.percentile(scores, pct)
// (linear) get all channels zeroed in out, the others are copied. 0 < pct <= 100.
template <typename T>
void clip_small(const T* v, const T* g, T* out, double* scratch, int64_t N, int64_t C, int64_t HW,
                double pct, cudaStream_t stream);

// out[n, c] = min(max(v[n, c], lo[c]), hi[c]) in double (numpy.maximum/minimum: NaN propagates).
template <typename T>
void clamp_channels(const T* v, const double* lo, const double* hi, T* out, int64_t N, int64_t C,
                    int64_t HW, cudaStream_t stream);

// ---- an ascent kept on the device (pixels.cu, workspace.cpp) -----------------------------------

// The affine pixel map of a model's preprocessing, x[c] = (sum_k A[c, k] (v[k] + center[k]) -
// mean[c]) / std[c], for `channels` (1 or 3) input channels; passed by value to the kernels.
struct PixelMap {
    int channels;
    float A[9];       // (channels, 3), row-major
    float center[3];  // the mean pixel, RGB
    float mean[3];
    float std[3];
};

// x (N, channels, H, W) = the map of v (N, 3, H, W) rolled by (dy, dx), as numpy.roll.
void to_input(const float* v, float* x, const PixelMap& p, int64_t N, int64_t H, int64_t W,
              int64_t dy, int64_t dx, cudaStream_t stream);

// g (N, 3, H, W) = the adjoint of the map applied to gx (N, channels, H, W), rolled by (-dy, -dx).
void from_input(const float* gx, float* g, const PixelMap& p, int64_t N, int64_t H, int64_t W,
                int64_t dy, int64_t dx, cudaStream_t stream);

// out[n] = sum of g[n, ...]^2 in double, per_image elements per image.
template <typename T>
void row_sumsq(const T* g, double* out, int64_t N, int64_t per_image, cudaStream_t stream);

}  // namespace pydevis::cuda
