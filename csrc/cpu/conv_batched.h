// What conv.cpp and conv_batched.cpp share: the tuning of their tasks, and the batched scheme's
// entry (conv2d_backward_data calls it for small output planes at batch > 1).
#pragma once

#include <cstdint>

#include "kernels.h"
#include "rectify.h"

namespace pydevis::cpu {

constexpr int64_t kMinBlockRows = 64;             // GEMM rows per channel block, at least
constexpr int64_t kTileBytes = 512 * 1024;        // col tile target (half an L2)
constexpr int64_t kMinDirectPartCols = 64;        // a 1×1 conv's pixels split this finely

// grad_in of a conv whose output planes are small (Ho·Wo < conv.cpp's kBatchedCols), N > 1;
// direct: a 1×1, unit-stride, unpadded conv (no col2im). relu: a rectifier fused after it.
template <typename T>
void conv_batched_backward_data(const T* grad_out, const T* weight, T* grad_in,
                                const ConvGeom& g, bool direct, const FusedRelu<T>& relu);

}  // namespace pydevis::cpu
