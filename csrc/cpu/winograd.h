// conv2d_backward_data for 3×3, stride-1, undilated float32 convs by Winograd's
// F(2×2, 3×3): see winograd.cpp.
#pragma once

#include "../common/geometry.h"

namespace pydevis::cpu {

// Whether winograd_backward_data serves this float32 conv (and is expected to win).
bool winograd_applies(const ConvGeom& g);

// Whether winograd_backward_data takes F(4×4, 3×3) (else F(2×2, 3×3)).
bool winograd_f4_applies(const ConvGeom& g);

// grad_in (N, C, H, W) = the VJP of the conv w.r.t. its input; grad_in is fully written.
void winograd_backward_data(const float* grad_out, const float* weight, float* grad_in,
                            const ConvGeom& g);

}  // namespace pydevis::cpu
