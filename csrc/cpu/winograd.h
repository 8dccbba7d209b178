// conv2d_backward_data for 3×3, stride-1, undilated float32 convs by Winograd's
// F(2×2, 3×3) or F(4×4, 3×3): see winograd.cpp.
#pragma once

#include <cstdint>

#include "../common/geometry.h"
#include "rectify.h"

namespace pydevis::cpu {

// The Winograd variant winograd_backward_data runs for this float32 conv: 0 none (it does not
// apply, or is not expected to win), 2 F(2×2, 3×3), 4 F(4×4, 3×3).
int winograd_variant(const ConvGeom& g);

// Floats of the transformed weights of a variant (2 or 4), and the transform itself (u of that
// size, fully written). They depend on the weights only (M, C / group, group), not on N, H, W.
int64_t winograd_weights_size(const ConvGeom& g, int variant);
void winograd_weights(const float* weight, const ConvGeom& g, int variant, float* u);

// grad_in (N, C, H, W) = the VJP of the conv w.r.t. its input; grad_in is fully written.
// `prepared`: winograd_weights(weight, g, variant) or nullptr (transformed here, per call).
// relu: the Relu or Clip that X is the output of (N, C, H, W), whose backward is applied to
// grad_in as it is written (rectify.h); relu.y nullptr: none.
void winograd_backward_data(const float* grad_out, const float* weight, float* grad_in,
                            const ConvGeom& g, int variant, const float* prepared,
                            const FusedRelu<float>& relu = {});

}  // namespace pydevis::cpu
