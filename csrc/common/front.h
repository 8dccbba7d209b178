// The device-neutral argument fronts of the kernels: what the C++ (cpu/bind_*.cpp) and the CUDA
// (cuda/bind_*.cpp) wrappers check alike, once their array arguments are parsed (numpy or
// __cuda_array_interface__: dtype, layout and element count are the wrappers' part). Each front
// takes the array shapes and the scalar arguments, throws std::invalid_argument naming the
// argument (pybind11: ValueError), and returns the op's geometry. Written once, so that both
// backends accept and refuse exactly the same calls with the same messages.
#pragma once

#include <climits>
#include <cstdint>
#include <string>
#include <vector>

#include "checks.h"
#include "geometry.h"

namespace pydevis {

using Ints = std::vector<int64_t>;

// An array argument of `ndim` dimensions (ndim < 0: any).
inline void check_rank(const Ints& shape, const char* name, int ndim) {
  if (ndim >= 0)
    PYDEVIS_CHECK(shape.size() == size_t(ndim), name, ": expected a ", ndim,
                  "-D array, got shape ", shape_str(shape));
}

// `a` has the shape of `ref`.
inline void check_same_shape(const Ints& a, const char* name, const Ints& ref,
                             const char* ref_name) {
  PYDEVIS_CHECK(a == ref, name, ": shape ", shape_str(a), " != ", ref_name, " shape ",
                shape_str(ref));
}

// A value that GEMM (OpenBLAS, cuBLAS) takes as a 32-bit int.
inline void check_int32(int64_t v, const char* what) {
  PYDEVIS_CHECK(v <= INT_MAX, what, " = ", v, " exceeds the BLAS 32-bit integer range");
}

// conv2d_backward_data: grad_out (N, M, Ho, Wo), weight (M, C/group, kH, kW).
inline ConvGeom conv_front(const Ints& gs, const Ints& ws, const Ints& in_hw, const Ints& strides,
                           const Ints& pads, const Ints& dilations, int64_t group) {
  check_window(in_hw, 2, "in_hw", strides, pads, &dilations);
  check_int_range(group, 1, "group");
  PYDEVIS_CHECK(ws[0] == gs[1], "weight: shape ", shape_str(ws), " has ", ws[0],
                " output channels but grad_out ", shape_str(gs), " has ", gs[1]);
  PYDEVIS_CHECK(ws[0] % group == 0, "group: ", group, " does not divide the ", ws[0],
                " output channels");
  PYDEVIS_CHECK(ws[1] >= 1 && ws[2] >= 1 && ws[3] >= 1, "weight: empty kernel, shape ",
                shape_str(ws));
  ConvGeom g{};
  g.N = gs[0], g.M = gs[1], g.Ho = gs[2], g.Wo = gs[3];
  g.C = ws[1] * group, g.kH = ws[2], g.kW = ws[3], g.group = group;
  g.H = in_hw[0], g.W = in_hw[1];
  g.sh = strides[0], g.sw = strides[1], g.pt = pads[0], g.pl = pads[1];
  g.dh = dilations[0], g.dw = dilations[1];
  checked_numel({g.N, g.C, g.H, g.W}, "in_hw", "output shape");
  const int64_t ekh = g.dh * (g.kH - 1) + 1, ekw = g.dw * (g.kW - 1) + 1;
  const int64_t ph = g.H + pads[0] + pads[2], pw = g.W + pads[1] + pads[3];
  PYDEVIS_CHECK(ph >= ekh && pw >= ekw, "weight: dilated kernel ", ekh, "x", ekw,
                " is larger than the padded input ", ph, "x", pw);
  const int64_t Ho = (ph - ekh) / g.sh + 1, Wo = (pw - ekw) / g.sw + 1;
  PYDEVIS_CHECK(g.Ho == Ho && g.Wo == Wo, "grad_out: shape ", shape_str(gs),
                " does not match the Conv output ", Ho, "x", Wo, " of input ", g.H, "x", g.W,
                " (kernel, strides, pads, dilations)");
  // both backends run a GEMM with these as its sizes and leading dimensions
  check_int32(ws[1] * g.kH * g.kW, "C/group*kH*kW");
  check_int32(g.Ho * g.Wo, "Ho*Wo");
  check_int32(g.H * g.W, "H*W");
  check_int32(g.M, "M");
  return g;
}

// max_pool2d_backward: grad_out (N, C, Ho, Wo), x (N, C, H, W).
inline MaxPoolGeom max_pool_front(const Ints& gs, const Ints& xs, const Ints& kernel_shape,
                                  const Ints& strides, const Ints& pads, const Ints& dilations) {
  check_window(kernel_shape, 2, "kernel_shape", strides, pads, &dilations);
  PYDEVIS_CHECK(xs[0] == gs[0] && xs[1] == gs[1], "x: shape ", shape_str(xs),
                " does not match N, C of grad_out ", shape_str(gs));
  PYDEVIS_CHECK(kernel_shape[0] * kernel_shape[1] <= INT_MAX, "kernel_shape: ",
                shape_str(kernel_shape), " has more than 2^31 - 1 taps");
  const MaxPoolGeom g{xs[0], xs[1], xs[2], xs[3], gs[2], gs[3],
                      kernel_shape[0], kernel_shape[1], strides[0], strides[1],
                      pads[0], pads[1], dilations[0], dilations[1]};
  // ceil_mode may add one window per axis to the floor-mode output size, never more; every
  // window must start inside the padded input.
  const int64_t ekh = g.dh * (g.kH - 1) + 1, ekw = g.dw * (g.kW - 1) + 1;
  const int64_t ph = g.H + pads[0] + pads[2], pw = g.W + pads[1] + pads[3];
  PYDEVIS_CHECK(ph >= ekh && pw >= ekw, "kernel_shape: dilated kernel ", ekh, "x", ekw,
                " is larger than the padded input ", ph, "x", pw);
  const int64_t Ho = (ph - ekh + g.sh - 1) / g.sh + 1;
  const int64_t Wo = (pw - ekw + g.sw - 1) / g.sw + 1;
  PYDEVIS_CHECK(g.Ho <= Ho && g.Wo <= Wo, "grad_out: shape ", shape_str(gs),
                " is larger than the MaxPool output (at most ", Ho, "x", Wo, ")");
  return g;
}

// avg_pool2d_backward: grad_out (N, C, Ho, Wo) of an input of in_shape.
inline PoolGeom avg_pool_front(const Ints& gs, const Ints& in_shape, const Ints& kernel_shape,
                               const Ints& strides, const Ints& pads, bool count_include_pad) {
  CHECK_LEN(in_shape, 4, "in_shape");
  check_all_in_range(in_shape, 0, "in_shape");
  check_window(kernel_shape, 2, "kernel_shape", strides, pads);
  PYDEVIS_CHECK(in_shape[0] == gs[0] && in_shape[1] == gs[1], "in_shape: ", shape_str(in_shape),
                " does not match N, C of grad_out ", shape_str(gs));
  checked_numel(in_shape, "in_shape", "output shape");
  const PoolGeom g{gs[0], gs[1], in_shape[2], in_shape[3], gs[2], gs[3],
                   kernel_shape[0], kernel_shape[1], strides[0], strides[1],
                   pads[0], pads[1], pads[2], pads[3], count_include_pad};
  const int64_t ph = g.H + g.pt + g.pb, pw = g.W + g.pl + g.pr;
  PYDEVIS_CHECK(ph >= g.kH && pw >= g.kW, "kernel_shape: ", g.kH, "x", g.kW,
                " is larger than the padded input ", ph, "x", pw);
  // ceil_mode may add one window per axis to the floor-mode output size, never more.
  const int64_t Ho = (ph - g.kH + g.sh - 1) / g.sh + 1;
  const int64_t Wo = (pw - g.kW + g.sw - 1) / g.sw + 1;
  PYDEVIS_CHECK(g.Ho <= Ho && g.Wo <= Wo, "grad_out: shape ", shape_str(gs),
                " is larger than the AveragePool output (at most ", Ho, "x", Wo, ")");
  return g;
}

// global_avg_pool_backward: grad_out (N, C, 1, 1) of an input of in_shape.
inline void global_avg_pool_front(const Ints& gs, const Ints& in_shape) {
  CHECK_LEN(in_shape, 4, "in_shape");
  check_all_in_range(in_shape, 1, "in_shape");
  PYDEVIS_CHECK(gs[0] == in_shape[0] && gs[1] == in_shape[1] && gs[2] == 1 && gs[3] == 1,
                "grad_out: shape ", shape_str(gs), " is not (N, C, 1, 1) of in_shape ",
                shape_str(in_shape));
  checked_numel(in_shape, "in_shape", "output shape");
}

// rectifier_backward: out shaped like grad_out, mode 0, 1 or 2.
inline void rectifier_front(const Ints& gs, const Ints& ys, int mode) {
  check_same_shape(ys, "out", gs, "grad_out");
  PYDEVIS_CHECK(mode >= 0 && mode <= 2,
                "mode: expected 0 (gradient), 1 (deconvnet) or 2 (guided), got ", mode);
}

// lrn_backward: x shaped like grad_out; the LRN attributes.
inline void lrn_front(const Ints& gs, const Ints& xs, int64_t size, double alpha, double beta,
                      double bias) {
  check_same_shape(xs, "x", gs, "grad_out");
  check_lrn_params(size, alpha, beta, bias);
}

// linear_backward_data: grad_out (N, M), weight (M, K); the (N, K) output within kMaxSize.
inline void linear_front(const Ints& gs, const Ints& ws) {
  PYDEVIS_CHECK(ws[0] == gs[1], "weight: shape ", shape_str(ws), " does not match grad_out shape ",
                shape_str(gs), " (expected (", gs[1], ", K))");
  checked_numel({gs[0], ws[1]}, "grad_in", "output shape");
}

// A float64 (len,) argument of the ascent kernels (eta: one per image; lo, hi: one per channel);
// `what` says so, `vshape` is v's shape.
inline void f64_vector_front(const Ints& shape, const char* name, int64_t len, const char* what,
                             const Ints& vshape) {
  check_rank(shape, name, 1);
  PYDEVIS_CHECK(shape[0] == len, name, ": shape ", shape_str(shape), " is not (", len, ",): ",
                what, " ", shape_str(vshape));
}

inline constexpr const char* kPerImage = "one step size per image of v";
inline constexpr const char* kPerChannel = "one bound per channel of v";

}  // namespace pydevis
