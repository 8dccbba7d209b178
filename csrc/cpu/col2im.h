// col2im for conv2d_backward_data: the scatter-add of a GEMM's col tile back into input planes.
//
// A col tile holds, for nc input channels, one row per (c, kh, kw) over the output pixels of
// output rows [oh0, oh1); row (c, kh, kw) at output pixel (oh, ow) adds into input pixel
// ih = oh*sh - pt + kh*dh, iw = ow*sw - pl + kw*dw (dropped when that lies in the padding).
//
// Unit-stride access. With sw = 1 the scatter adds each col row with unit stride into the input
// planes themselves. With sw > 1, iw = ow*sw + offset would be a strided store; the planes are
// then kept phase-split instead, each input row stored as sw runs of J = ceil(W/sw): input column
// iw = j*sw + r at r*J + j, so that every col row again adds with unit stride (in run r, from
// j = ow + (offset - r)/sw), and unsplit() interleaves each row back once at the end. Measured
// with the AVX-512 clone below (bench/kernels.py --only conv, 2 threads, Xeon with AVX-512):
// AlexNet conv1 11×11/4 b8 6.05 -> 4.75 ms (43 -> 56 % of the sgemm peak), ResNet conv1 7×7/2
// b8 8.97 -> 7.55 ms; the unit-stride layers gained ~1-3 % (their scatter is bound by L2, not
// by the vector width).
//
// Vector width. The package is built for baseline x86-64 (SSE2); the two loops here run in L2
// and are compiled for AVX-512 and AVX2 too (target_clones, chosen at load time). An add of
// two floats rounds the same at any vector width, so every clone gives the same bits.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../common/geometry.h"
#include "../common/parallel.h"

namespace pydevis::cpu {

// Output columns ow whose input column iw = ow*stride + offset lies in [0, nin): [lo, hi).
struct Span {
  int64_t lo, hi;
};
inline Span valid_span(int64_t nout, int64_t nin, int64_t stride, int64_t offset) {
  int64_t lo = offset >= 0 ? 0 : ceil_div(-offset, stride);
  int64_t hi = offset >= nin ? 0 : ceil_div(nin - offset, stride);
  lo = std::min(lo, nout);
  hi = std::clamp(hi, lo, nout);
  return {lo, hi};
}

// Row length of the planes the scatter writes: W, or sw runs of J = ceil(W / sw) (phase-split).
inline int64_t split_runs(const ConvGeom& g) { return ceil_div(g.W, g.sw); }
inline int64_t split_row(const ConvGeom& g) { return g.sw == 1 ? g.W : g.sw * split_runs(g); }

// dst (nc planes of H × split_row, plane after plane) += col2im of the tile `col` (nc·kH·kW rows
// of `cols` = (oh1 - oh0)·Wo values).
void scatter_tile(const float* col, int64_t cols, int64_t nc, int64_t oh0, int64_t oh1,
                  float* dst, const ConvGeom& g);
void scatter_tile(const double* col, int64_t cols, int64_t nc, int64_t oh0, int64_t oh1,
                  double* dst, const ConvGeom& g);

// out (nc planes of H × W) = the phase-split planes `split` (nc planes of H × split_row).
void unsplit(const float* split, int64_t nc, float* out, const ConvGeom& g);
void unsplit(const double* split, int64_t nc, double* out, const ConvGeom& g);

}  // namespace pydevis::cpu
