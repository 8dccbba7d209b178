// Host launchers of the CUDA kernels of pydevis._cuda (backward and ascent kernels).
//
// Every pointer is a device pointer; every launcher enqueues its kernels on `stream` and returns
// without synchronising (CUDA launch errors are thrown as std::runtime_error). Semantics are those
// of docs/kernels.md. Instantiated for float and double in the .cu files of this folder.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace pydevis::cuda {

// Shapes of ONNX Conv's backward-data: grad_out (N, M, Ho, Wo), weight (M, C/group, kH, kW),
// grad_in (N, C, H, W).
struct ConvShape {
    int64_t N, C, H, W;      // grad_in
    int64_t M, Ho, Wo;       // grad_out (channels, height, width)
    int64_t kH, kW;          // kernel
    int64_t sh, sw;          // strides
    int64_t pt, pl;          // begin pads (end pads do not enter the gather)
    int64_t dh, dw;          // dilations
    int64_t group;
};

// Shapes of ONNX AveragePool's backward (2-D, no dilation).
struct AvgPoolShape {
    int64_t N, C, H, W;      // grad_in
    int64_t Ho, Wo;          // grad_out
    int64_t kh, kw;
    int64_t sh, sw;
    int64_t pt, pl, pb, pr;  // ONNX order: begins, then ends
    bool count_include_pad;
};

// Shapes of ONNX MaxPool's backward from its forward input x (2-D).
struct MaxPoolShape {
    int64_t N, C, H, W;      // x and grad_in
    int64_t Ho, Wo;          // grad_out (ceil_mode is in them)
    int64_t kh, kw;
    int64_t sh, sw;
    int64_t pt, pl;          // begin pads (the end pads only bound Ho, Wo)
    int64_t dh, dw;          // dilations
};

// grad_in[n, c, ih, iw] = sum over (m, kh, kw) of W[m, c', kh, kw] * grad_out[n, m, oh, ow].
template <typename T>
void conv2d_backward_data(const T* grad_out, const T* weight, T* grad_in, const ConvShape& s,
                          cudaStream_t stream);

// ONNX MaxPool backward from its forward input x (N, C, H, W): each grad_out element goes to its
// window's switch, the first tap in (kh, kw) order strictly greater than every earlier one and
// than the lowest finite value (ONNX Runtime's rule); bit for bit the C++ kernel. `switches`
// holds N*C*Ho*Wo ints (scratch; kh*kw must be <= INT_MAX). Two passes, no atomics.
template <typename T>
void max_pool2d_backward(const T* grad_out, const T* x, T* grad_in, int32_t* switches,
                         const MaxPoolShape& s, cudaStream_t stream);

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
void avg_pool2d_backward(const T* grad_out, T* grad_in, const AvgPoolShape& s,
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

}  // namespace pydevis::cuda
