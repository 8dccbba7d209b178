// conv2d_backward_data's batched scheme (conv.cpp calls it): small output planes (Ho·Wo below
// conv.cpp's kBatchedCols, N > 1: ResNet's and VGG's 7×7 and 14×14 layers, AlexNet's 13×13),
// where a per-sample GEMM would have only Ho·Wo columns, a shape OpenBLAS runs far below its
// peak. grad_out is packed once as an (M × N·Ho·Wo) matrix and each task, a (group, channel
// block, part), runs its GEMMs over the columns of several samples at once, then col2im's each
// sample (tiles of whole samples; a part is a range of samples), or, for a direct (1×1) conv,
// copies each tile's columns out to the samples they belong to (a part is any range of the
// columns). A task owns its channels in its part. Parts exist only when the channel blocks are
// too few for the team.
#include "conv_batched.h"

#include <algorithm>
#include <vector>

#include "../common/parallel.h"
#include "blas.h"
#include "col2im.h"
#include "scratch.h"

namespace pydevis::cpu {
namespace {

constexpr int64_t kBatchedTileCols = 768;         // GEMM tiles at least this wide
constexpr int64_t kMinPartCols = 128;             // a batched task's samples: this many columns

template <typename T>
using Fused = FusedRelu<T>;

// One batched task (not a direct conv): group gi, input channels [c0, c1) of that group, in
// samples [s0, s1). B is the packed grad_out of the group (Mg × N·Ho·Wo); tiles of tile_n
// whole samples.
template <typename T>
void run_batched_task(const T* B, const T* weight, T* grad_in, const ConvGeom& g, int64_t gi,
                      int64_t c0, int64_t c1, int64_t s0, int64_t s1, int64_t tile_n,
                      const Fused<T>& relu) {
  const int64_t Cg = g.C / g.group, Mg = g.M / g.group, kk = g.kH * g.kW;
  const int64_t HW = g.H * g.W, HoWo = g.Ho * g.Wo, NP = g.N * HoWo, rows = (c1 - c0) * kk;
  const int64_t nc = c1 - c0, plane = g.H * split_row(g);
  const T* A = weight + gi * Mg * Cg * kk + c0 * kk;
  T* col = thread_scratch<T>(size_t(rows * tile_n * HoWo)).data();
  for (int64_t n0 = s0; n0 < s1; n0 += tile_n) {
    const int64_t n1 = std::min(s1, n0 + tile_n), cols = (n1 - n0) * HoWo;
    gemm_tn(int(rows), int(cols), int(Mg), A, int(Cg * kk), B + n0 * HoWo, int(NP), col,
            int(cols));
    for (int64_t n = n0; n < n1; ++n) {
      const int64_t first = (n * g.C + gi * Cg + c0) * HW;
      T* dst = grad_in + first;
      const T* src = col + (n - n0) * HoWo;
      T* acc = g.sw > 1 ? thread_scratch<T, 1>(size_t(nc * plane)).data() : dst;
      std::fill(acc, acc + nc * plane, T(0));
      scatter_tile(src, cols, nc, 0, g.Ho, acc, g);
      if (g.sw > 1) unsplit(acc, nc, dst, g);
      relu.apply(dst, first, nc * HW);
    }
  }
}

// One batched task of a direct (1×1) conv: group gi, input channels [c0, c1), the columns
// [j0, j1) of the packed grad_out (pixels of any samples: a part may end inside a sample), in
// tiles of tile_cols columns, each copied out to the samples' planes it covers.
template <typename T>
void run_batched_direct_task(const T* B, const T* weight, T* grad_in, const ConvGeom& g,
                             int64_t gi, int64_t c0, int64_t c1, int64_t j0, int64_t j1,
                             int64_t tile_cols, const Fused<T>& relu) {
  const int64_t Cg = g.C / g.group, Mg = g.M / g.group;
  const int64_t HW = g.H * g.W, NP = g.N * HW, nc = c1 - c0;
  const T* A = weight + gi * Mg * Cg + c0;
  T* col = thread_scratch<T>(size_t(nc * std::min(tile_cols, j1 - j0))).data();
  for (int64_t t0 = j0; t0 < j1; t0 += tile_cols) {
    const int64_t t1 = std::min(j1, t0 + tile_cols), cols = t1 - t0;
    gemm_tn(int(nc), int(cols), int(Mg), A, int(Cg), B + t0, int(NP), col, int(cols));
    for (int64_t n = t0 / HW; n * HW < t1; ++n) {  // the samples this tile reaches
      const int64_t p0 = std::max(t0, n * HW) - n * HW, p1 = std::min(t1, (n + 1) * HW) - n * HW;
      const int64_t first = (n * g.C + gi * Cg + c0) * HW;
      for (int64_t c = 0; c < nc; ++c) {
        std::copy_n(col + c * cols + (n * HW + p0 - t0), p1 - p0, grad_in + first + c * HW + p0);
        relu.apply(grad_in + first + c * HW + p0, first + c * HW + p0, p1 - p0);
      }
    }
  }
}

}  // namespace

// Pack grad_out (N, M, Ho·Wo) as (M, N·Ho·Wo), then (group, channel block, part) tasks.
template <typename T>
void conv_batched_backward_data(const T* grad_out, const T* weight, T* grad_in,
                                const ConvGeom& g, bool direct, const FusedRelu<T>& relu) {
  const int64_t Cg = g.C / g.group, kk = g.kH * g.kW, HoWo = g.Ho * g.Wo, NP = g.N * HoWo;
  std::vector<T> packed(size_t(g.M * NP));
  T* B = packed.data();
  parallel_for(g.M, NP, [&](int64_t m) {
    for (int64_t n = 0; n < g.N; ++n)
      std::copy_n(grad_out + (n * g.M + m) * HoWo, HoWo, B + m * NP + n * HoWo);
  });
  const int64_t nt = max_threads();
  int64_t blocks = std::max<int64_t>(1, ceil_div(2 * nt, g.group));
  blocks = std::min({blocks, Cg, std::max<int64_t>(1, Cg * kk / kMinBlockRows)});
  // Too few channel blocks for the team (a 1×1 conv from 64-96 channels has one block of
  // kMinBlockRows: MobileNetV2's 14×14 layers ran on one thread of 16): the samples are split
  // too, each part keeping >= kMinPartCols GEMM columns. A direct conv's parts are ranges of
  // columns (>= kMinDirectPartCols), not whole samples: with whole samples, MobileNetV2's
  // 96 <- 576 1×1 convs at 14×14, batch 8, had 8 tasks for 16 threads (the loop census), and
  // its 160 <- 960 ones at 7×7 3 parts; a count above the team is rounded down to a multiple
  // of it, as at batch 1.
  int64_t parts = 1;
  const int64_t gb = g.group * blocks;
  if (gb < 2 * nt) {
    if (direct) {
      parts = std::min(ceil_div(2 * nt, gb), std::max<int64_t>(1, NP / kMinDirectPartCols));
      if (gb * parts > nt && (gb * parts) % nt != 0)
        parts = std::max<int64_t>(1, gb * parts / nt * nt / gb);
    } else {
      parts = std::min({ceil_div(2 * nt, gb), g.N, std::max<int64_t>(1, NP / kMinPartCols)});
    }
  }
  const int64_t rows_max = ceil_div(Cg, blocks) * kk;
  const int64_t tile_cols = std::max(
      kBatchedTileCols, 2 * kTileBytes / int64_t(sizeof(T) * std::max<int64_t>(rows_max, 1)));
  const int64_t tile_n = std::clamp(ceil_div(tile_cols, HoWo), int64_t(1), g.N);
  const int64_t Mg = g.M / g.group;
  BlasSingleThread single;
  parallel_for(gb * parts, Mg * NP * rows_max * 2 / parts, [&](int64_t t) {
    const int64_t part = t % parts, b = (t / parts) % blocks, gi = t / parts / blocks;
    const int64_t c0 = Cg * b / blocks, c1 = Cg * (b + 1) / blocks;
    if (direct)
      run_batched_direct_task(B + gi * Mg * NP, weight, grad_in, g, gi, c0, c1,
                              NP * part / parts, NP * (part + 1) / parts, tile_n * HoWo, relu);
    else
      run_batched_task(B + gi * Mg * NP, weight, grad_in, g, gi, c0, c1, g.N * part / parts,
                       g.N * (part + 1) / parts, tile_n, relu);
  });
}


template void conv_batched_backward_data<float>(const float*, const float*, float*,
                                                const ConvGeom&, bool, const FusedRelu<float>&);
template void conv_batched_backward_data<double>(const double*, const double*, double*,
                                                 const ConvGeom&, bool,
                                                 const FusedRelu<double>&);

}  // namespace pydevis::cpu
