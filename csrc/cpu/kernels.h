// CPU kernels of the backward path (semantics: docs/kernels.md). Raw-pointer API on C-contiguous
// NCHW buffers; the caller (csrc/bindings.cpp) has validated every shape, index and argument.
// Each kernel writes every element of its output; T is float or double.
#pragma once

#include <cstdint>
#include <vector>

namespace pydevis::cpu {

// Geometry of an ONNX Conv, as seen from its backward-data pass.
struct ConvGeom {
  int64_t N, C, H, W;     // input X
  int64_t M, Ho, Wo;      // output Y
  int64_t kH, kW, group;  // weight (M, C/group, kH, kW)
  int64_t sh, sw, pt, pl, dh, dw;
};

// Geometry of an ONNX MaxPool (2-D): input N, C, H, W; output Ho, Wo (ceil_mode is in them).
struct MaxPoolGeom {
  int64_t N, C, H, W, Ho, Wo;
  int64_t kH, kW, sh, sw, pt, pl, dh, dw;
};

// Geometry of an ONNX AveragePool (2-D, no dilation).
struct PoolGeom {
  int64_t N, C, H, W, Ho, Wo;
  int64_t kH, kW, sh, sw, pt, pl, pb, pr;
  bool count_include_pad;
};

template <typename T>
void conv2d_backward_data(const T* grad_out, const T* weight, T* grad_in, const ConvGeom& g);

// grad_in (N, C, H, W) of MaxPool from its forward input x: each grad_out element goes to the first
// strict maximum of its window (ONNX Runtime's switch); windows holding no finite value route none.
template <typename T>
void max_pool2d_backward(const T* grad_out, const T* x, T* grad_in, const MaxPoolGeom& g);

// mode 0 gradient, 1 deconvnet, 2 guided.
template <typename T>
void rectifier_backward(const T* grad_out, const T* out, T* grad_in, int64_t n, int mode, T lo,
                        T hi);

template <typename T>
void lrn_backward(const T* grad_out, const T* x, T* grad_in, int64_t N, int64_t C, int64_t HW,
                  int64_t size, double alpha, double beta, double bias);

template <typename T>
void avg_pool2d_backward(const T* grad_out, T* grad_in, const PoolGeom& g);

template <typename T>
void global_avg_pool_backward(const T* grad_out, T* grad_in, int64_t planes, int64_t HW);

// ---- ascent kernels (docs/kernels.md, "Ascent kernels") -----------------------------------------
template <typename T>
void ascent_update(const T* v, const T* g, const double* eta, T* out, int64_t N,
                   int64_t per_image, double decay);

// The 2r + 1 normalised weights exp(-k² / (2 sigma²)), k in [-r, r], r = int(4 sigma + 0.5).
std::vector<double> gaussian_weights(double sigma);

template <typename T>
void gaussian_blur(const T* v, T* out, int64_t planes, int64_t H, int64_t W, const double* w,
                   int64_t r);

// clip_small_norm when g is null, else clip_small_contribution; 0 < pct <= 100.
template <typename T>
void clip_small(const T* v, const T* g, T* out, int64_t N, int64_t C, int64_t HW, double pct);

template <typename T>
void clamp_channels(const T* v, const double* lo, const double* hi, T* out, int64_t N, int64_t C,
                    int64_t HW);

// The arguments of ascent_step besides the arrays.
struct AscentStep {
  const double* eta;      // (N,), one step size per image
  double decay;
  const double* blur_w;   // the 2r + 1 gaussian_weights, or null: no blur
  int64_t blur_r;
  double norm_pct;        // <= 0: no clip_small_norm; else at most 100
  double contrib_pct;     // <= 0: no clip_small_contribution; else at most 100
  const double* lo;       // (C,)
  const double* hi;       // (C,)
};

// clamp_channels(clip_small_contribution(clip_small_norm(gaussian_blur(ascent_update(v, g)),
// norm_pct), g, contrib_pct)) bit for bit, in two stages: per (n, c) plane the update and blur
// (and the clamp when no clip follows), then per image the clips and the clamp, in place.
template <typename T>
void ascent_step(const T* v, const T* g, T* out, int64_t N, int64_t C, int64_t H, int64_t W,
                 const AscentStep& a);

}  // namespace pydevis::cpu
