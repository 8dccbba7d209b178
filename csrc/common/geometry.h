// The geometry of the ops whose backward the kernels compute, shared by the CPU and CUDA kernels
// and built, checked, by the device-neutral argument fronts (front.h). Plain int64 fields: the
// fronts have bounded every value so that no index expression of a kernel overflows.
#pragma once

#include <cstdint>

namespace pydevis {

// ONNX Conv seen from its backward-data pass: grad_out (N, M, Ho, Wo), weight (M, C/group, kH,
// kW), grad_in (N, C, H, W).
struct ConvGeom {
  int64_t N, C, H, W;     // input X
  int64_t M, Ho, Wo;      // output Y
  int64_t kH, kW, group;  // weight (M, C/group, kH, kW)
  // strides, begin pads (the end pads only bound Ho, Wo), dilations
  int64_t sh, sw, pt, pl, dh, dw;
};

// ONNX MaxPool (2-D): input N, C, H, W; output Ho, Wo (ceil_mode is in them).
struct MaxPoolGeom {
  int64_t N, C, H, W, Ho, Wo;
  int64_t kH, kW, sh, sw, pt, pl, dh, dw;
};

// ONNX AveragePool (2-D, no dilation); pads in ONNX order, begins then ends.
struct PoolGeom {
  int64_t N, C, H, W, Ho, Wo;
  int64_t kH, kW, sh, sw, pt, pl, pb, pr;
  bool count_include_pad;
};

}  // namespace pydevis
