// CPU kernels of the backward path (semantics: docs/kernels.md). Raw-pointer API on C-contiguous
// NCHW buffers; the caller (csrc/cpu/bind_*.cpp) has validated every shape, index and argument.
// Each kernel writes every element of its output; T is float or double.
#pragma once

#include <cstdint>
#include <vector>

#include "../common/geometry.h"
#include "rectify.h"

namespace pydevis::cpu {

// The op geometries, shared with the CUDA kernels and built by the fronts (common/front.h).
using ConvGeom = ::pydevis::ConvGeom;
using MaxPoolGeom = ::pydevis::MaxPoolGeom;
using PoolGeom = ::pydevis::PoolGeom;

// winograd_u: float32 weights transformed by winograd_weights (winograd.h) for the variant
// winograd_variant(g) names, or nullptr. relu: X is the output y of a Relu or Clip whose
// backward in relu.mode (0 gradient, 1 deconvnet, 2 guided) with bounds (relu.lo, relu.hi)
// follows, applied here to grad_in while it is in cache (rectify.h); relu.y nullptr: none.
template <typename T>
void conv2d_backward_data(const T* grad_out, const T* weight, T* grad_in, const ConvGeom& g,
                          const float* winograd_u = nullptr, const FusedRelu<T>& relu = {});

// grad_in (N, K) = G (N, M) · W (M, K): the Gemm backward (transB = 1), for a small batch N.
// isa caps the vector code used: 0 baseline, 1 AVX2 + FMA, 2 AVX-512 (when the CPU has it);
// linear_isa_level() is what this CPU has (0 off x86-64).
template <typename T>
void linear_backward_data(const T* g, const T* w, T* grad_in, int64_t N, int64_t M, int64_t K,
                          int isa);
int linear_isa_level();

// grad_in (N, C, H, W) of MaxPool from its forward input x: each grad_out element goes to the first
// strict maximum of its window (ONNX Runtime's switch); windows holding no finite value route none.
// rectify >= 0: x is a Relu's output and that Relu's backward (mode 0/1/2) follows, fused.
template <typename T>
void max_pool2d_backward(const T* grad_out, const T* x, T* grad_in, const MaxPoolGeom& g,
                         int rectify = -1);

// mode 0 gradient, 1 deconvnet, 2 guided.
template <typename T>
void rectifier_backward(const T* grad_out, const T* out, T* grad_in, int64_t n, int mode, T lo,
                        T hi);

// out = a + b, n elements (the walk's sums of fan-out gradients).
template <typename T>
void add(const T* a, const T* b, T* out, int64_t n);

// dst (C-contiguous) = the array at src with shape[ndim] and strides[ndim] in elements (any
// sign): a view's copy, e.g. a Concat backward's channel slice at batch > 1.
template <typename T>
void copy_strided(const T* src, const int64_t* shape, const int64_t* strides, int ndim, T* dst);

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

// The blur weights w: gaussian_weights(sigma) of common/gaussian.h, r = (len(w) - 1) / 2.

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
