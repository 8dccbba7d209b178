// The 3×3 stride-2 max-pool backward (AlexNet, CaffeNet, SqueezeNet, ResNet's stem): a plane at a
// time, vector code (maxpool3x3.cpp).
#pragma once

#include <cstdint>

#include "../common/geometry.h"

namespace pydevis::cpu {

// Whether maxpool3x3s2_plane serves this MaxPool: 3×3 window, stride 2, no dilation, padding
// at the top and left of 0 or 1 (any output size, any end padding).
bool is_pool3x3s2(const MaxPoolGeom& g);

// grad_in of one (n, c) plane (H × W, fully written) from its grad_out (Ho × Wo) and forward
// input x; mode -1: nothing fused, 0..2: x is a Relu's output and that Relu's backward in that
// mode follows. The same switches and the same bits as the general path of pool.cpp.
void maxpool3x3s2_plane(const float* gp, const float* xp, float* dp, const MaxPoolGeom& g,
                        int mode);
void maxpool3x3s2_plane(const double* gp, const double* xp, double* dp, const MaxPoolGeom& g,
                        int mode);

}  // namespace pydevis::cpu
