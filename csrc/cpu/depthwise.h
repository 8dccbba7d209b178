// conv2d_backward_data for depthwise convs (one input and one output channel per group).
#pragma once

#include "../common/geometry.h"
#include "rectify.h"

namespace pydevis::cpu {

// grad_in (N, C, H, W) = the VJP of a depthwise conv (group = C = M) w.r.t. its input, fully
// written; relu: the rectifier fused after it (rectify.h). See depthwise.cpp.
template <typename T>
void depthwise_backward_data(const T* grad_out, const T* weight, T* grad_in, const ConvGeom& g,
                             const FusedRelu<T>& relu);

}  // namespace pydevis::cpu
