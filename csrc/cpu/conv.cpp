// conv2d_backward_data: the VJP of ONNX Conv with respect to X (the transposed convolution).
//
// Derivation. The forward pass is, per group g with Cg = C/group input and Mg = M/group output
// channels,  Y[n, m, oh, ow] = sum_{c, kh, kw} W[m, c, kh, kw] * X[n, c, ih, iw]  with
// ih = oh*sh - pt + kh*dh, iw = ow*sw - pl + kw*dw (X out of range = zero padding). Written as
// Y_g = W_g · im2col(X_g), with W_g the (Mg × Cg·kH·kW) matrix and im2col a (Cg·kH·kW × Ho·Wo)
// matrix, its transpose gives  grad X_g = col2im(W_gᵀ · G_g): one GEMM ((Cg·kH·kW) × Mg times
// Mg × (Ho·Wo)) then a scatter-add of each column row back to the pixel it was read from (col2im;
// positions that fell in the padding are dropped).
//
// Parallel scheme: the thread pool over independent tasks, each a (sample n, group g, block of
// input channels), with OpenBLAS held single-threaded (BlasSingleThread). A task owns its output
// planes, so the col2im needs no atomics; its GEMM runs over Ho-row tiles whose col buffer
// (thread-local, reused across calls, bounded by kTileBytes) stays in cache between the GEMM and
// the scatter.
// The alternative, one multi-threaded OpenBLAS GEMM per (n, g) followed by a parallel col2im, was
// measured 3-6x slower on 2 cores (N=8, C=128, M=256, 28x28, 3x3 and N=8, C=M=64, 56x56): the
// pthreads OpenBLAS workers spin after each call on the cores the pool needs, and the full
// col matrix round-trips through memory. Per core, this scheme runs at 92-99% of the
// single-threaded sgemm rate of the same shape when K = M/group is large (256) and ~85% when it
// is 64 (the col2im then weighs more). Channel blocks only exist to give the team enough tasks
// when N·group is small (one picture); each block keeps >= kMinBlockRows GEMM rows.
//
// Small output planes (Ho·Wo < kBatchedCols, N > 1) take the batched scheme of
// conv_batched.cpp: GEMMs over the columns of several samples at once.
//
// 3×3 stride-1 undilated float32 convs with >= 16 channels per group each way (and enough
// tiles) go to Winograd's F(2×2, 3×3) or F(4×4, 3×3) instead (winograd.cpp: 2.25× or 4× fewer
// multiply-adds, no col2im), with the weights transformed per call or, given winograd_u, once by
// the caller (winograd_weights); float64 stays here.
//
// The col2im is col2im.h's scatter_tile (vectorised; strided convs through phase-split planes).
//
// Special cases: 1×1 kernels with unit stride and no padding GEMM straight into grad_in (col2im
// is the identity; batched, each task a range of the packed columns, copied out to the samples
// it covers; at batch 1 with few channel blocks the pixels are split across the threads too);
// depthwise convs (Cg == Mg == 1) skip BLAS for their own gather kernel (depthwise.cpp).
#include <algorithm>
#include <type_traits>
#include <vector>

#include "../common/parallel.h"
#include "blas.h"
#include "col2im.h"
#include "conv_batched.h"
#include "depthwise.h"
#include "kernels.h"
#include "rectify.h"
#include "scratch.h"
#include "small_gemm.h"
#include "winograd.h"

namespace pydevis::cpu {
namespace {

constexpr int64_t kMinTileCols = 256;             // GEMM tiles at least this wide
constexpr int64_t kBatchedCols = 400;             // Ho·Wo below this: GEMMs over the batch
constexpr int64_t kSparseMinChannels = 64;        // zero grad_out channels dropped from here

// The GEMM of a task: OpenBLAS, or for a float32 conv on a narrow plane (narrow: chosen once per
// conv, so that every task of it, any team size, sums alike) small_gemm_tn, which does not pack
// A (small_gemm.cpp: 576 × 49 × 512, one core, 0.33 -> 0.27 ms).
template <typename T>
void gemm_cols(bool narrow, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda,
               const T* b, int64_t ldb, T* c, int64_t ldc) {
  if constexpr (std::is_same_v<T, float>) {
    if (narrow) return small_gemm_tn(m, n, k, a, lda, b, ldb, c, ldc);
  }
  gemm_tn(int(m), int(n), int(k), a, int(lda), b, int(ldb), c, int(ldc));
}

// A Relu fused after the conv's backward (rectify.h's FusedRelu) is applied to each task's
// grad_in planes right after they are written, while they are in cache.
template <typename T>
using Fused = FusedRelu<T>;

// Input rows [h0, h1) of nc channel planes (dst: the first plane's row 0): the GEMM over the
// output rows that reach them (a neighbour part computes the rows they share again, the halo),
// scattered into a scratch window of those rows only (a geometry whose padding ends at the
// window: the scatter drops every other row), then copied (or unsplit) into place. The tiles
// are the whole-plane task's, clipped to those output rows, so each pixel's terms are summed in
// the same order as there (the same bits as without parts, for the same tile height).
template <typename T>
void run_rows(const T* G, const T* A, T* dst, const ConvGeom& g, int64_t nc, int64_t rows,
              int64_t tile_oh, int64_t h0, int64_t h1, int64_t first, bool narrow,
              const Fused<T>& relu) {
  const int64_t Cg = g.C / g.group, Mg = g.M / g.group, kk = g.kH * g.kW;
  const int64_t HW = g.H * g.W, HoWo = g.Ho * g.Wo;
  // oh reaches input rows [oh·sh - pt, oh·sh - pt + (kH-1)·dh]
  const int64_t lo_num = h0 + g.pt - (g.kH - 1) * g.dh;
  const int64_t oh_lo = lo_num <= 0 ? 0 : ceil_div(lo_num, g.sh);
  const int64_t oh_hi = std::min(g.Ho, (h1 - 1 + g.pt) / g.sh + 1);
  ConvGeom w = g;  // the window: rows [h0, h1) as a whole plane
  w.H = h1 - h0;
  w.pt = g.pt + h0;
  const int64_t row_len = split_row(w), plane = w.H * row_len;
  T* acc = thread_scratch<T, 1>(size_t(nc * plane)).data();
  std::fill(acc, acc + nc * plane, T(0));
  T* col = thread_scratch<T>(size_t(rows * tile_oh * g.Wo)).data();
  for (int64_t oh0 = oh_lo, oh1; oh0 < oh_hi; oh0 = oh1) {  // the whole plane's tiles, clipped
    oh1 = std::min(oh_hi, (oh0 / tile_oh + 1) * tile_oh);
    const int64_t cols = (oh1 - oh0) * g.Wo;
    gemm_cols(narrow, rows, cols, Mg, A, Cg * kk, G + oh0 * g.Wo, HoWo, col, cols);
    scatter_tile(col, cols, nc, oh0, oh1, acc, w);
  }
  for (int64_t c = 0; c < nc; ++c) {
    T* out = dst + c * HW + h0 * g.W;
    if (g.sw > 1) unsplit(acc + c * plane, 1, out, w);
    else std::copy_n(acc + c * plane, w.H * g.W, out);
    relu.apply(out, first + c * HW + h0 * g.W, w.H * g.W);
  }
}

// One task: sample n, group gi, input channels [c0, c1) of that group; for a direct (1×1)
// conv only the pixels [j0, j1) of their planes, for another conv only the input rows
// [j0, j1) (all of them: [0, H)).
template <typename T>
void run_task(const T* grad_out, const T* weight, T* grad_in, const ConvGeom& g, int64_t n,
              int64_t gi, int64_t c0, int64_t c1, int64_t tile_oh, bool direct, int64_t j0,
              int64_t j1, bool narrow, const Fused<T>& relu) {
  const int64_t Cg = g.C / g.group, Mg = g.M / g.group, kk = g.kH * g.kW;
  const int64_t HW = g.H * g.W, HoWo = g.Ho * g.Wo, rows = (c1 - c0) * kk;
  const T* G = grad_out + (n * g.M + gi * Mg) * HoWo;
  const T* A = weight + gi * Mg * Cg * kk + c0 * kk;  // columns c0*kk.. of W_g (Mg × Cg·kk)
  const int64_t first = (n * g.C + gi * Cg + c0) * HW;
  T* dst = grad_in + first;
  if (direct) {  // 1×1, unit stride, no padding: grad_in rows are the GEMM output
    if (HoWo == 1)  // a matrix-vector product (OpenBLAS's sgemm with n = 1 is ~4x slower)
      gemv_t(int(rows), int(Mg), A, int(Cg * kk), G, int(HoWo), dst, int(HW));
    else
      gemm_cols(narrow, rows, j1 - j0, Mg, A, Cg * kk, G + j0, HoWo, dst + j0, HW);
    for (int64_t c = 0; c < c1 - c0; ++c)
      relu.apply(dst + c * HW + j0, first + c * HW + j0, j1 - j0);
    return;
  }
  const int64_t nc = c1 - c0;
  if (j0 != 0 || j1 != g.H) {  // input rows [j0, j1) only
    run_rows(G, A, dst, g, nc, rows, tile_oh, j0, j1, first, narrow, relu);
    return;
  }
  const int64_t plane = g.H * split_row(g);
  T* acc = g.sw > 1 ? thread_scratch<T, 1>(size_t(nc * plane)).data() : dst;
  std::fill(acc, acc + nc * plane, T(0));
  T* col = thread_scratch<T>(size_t(rows * tile_oh * g.Wo)).data();
  for (int64_t oh0 = 0; oh0 < g.Ho; oh0 += tile_oh) {
    const int64_t oh1 = std::min(g.Ho, oh0 + tile_oh), cols = (oh1 - oh0) * g.Wo;
    gemm_cols(narrow, rows, cols, Mg, A, Cg * kk, G + oh0 * g.Wo, HoWo, col, cols);
    scatter_tile(col, cols, nc, oh0, oh1, acc, g);
  }
  if (g.sw > 1) unsplit(acc, nc, dst, g);
  relu.apply(dst, first, nc * HW);
}

// Output channels whose gradient is zero in every sample add nothing to grad_in. With a class
// target the last conv of a net often has one nonzero channel per image (SqueezeNet's conv10:
// grad_out 1000 × 13 × 13, of which the class's plane is nonzero; 2.4 ms of a 17 ms step as a
// dense GEMM). The channels that are nonzero somewhere, in order. First, on the calling thread,
// each channel's first chunk in the first sample: that decides a dense grad_out at once (one
// chunk per channel, no loop on the pool). The channels still open are then read whole, on the
// pool when they are many: SqueezeNet's 999 zero planes at batch 8, 5.4 MB, were the largest
// serial part of its backward in the loop census.
template <typename T>
std::vector<int64_t> nonzero_channels(const T* grad_out, const ConvGeom& g) {
  constexpr int64_t kChunk = 64;
  const int64_t HoWo = g.Ho * g.Wo;
  auto any_in = [](const T* p, int64_t i0, int64_t i1) {
    bool nz = false;
    for (int64_t i = i0; i < i1; ++i) nz |= p[i] != T(0);  // NaN counts as nonzero
    return nz;
  };
  std::vector<char> nonzero(size_t(g.M), 0);
  std::vector<int64_t> open;
  for (int64_t m = 0; m < g.M; ++m) {
    if (any_in(grad_out + m * HoWo, 0, std::min(kChunk, HoWo))) nonzero[size_t(m)] = 1;
    else open.push_back(m);
  }
  if (!open.empty())
    parallel_for(int64_t(open.size()), g.N * HoWo, [&](int64_t i) {
      const int64_t m = open[size_t(i)];
      bool any = false;
      for (int64_t n = 0; n < g.N && !any; ++n) {
        const T* p = grad_out + (n * g.M + m) * HoWo;
        for (int64_t i0 = 0; i0 < HoWo && !any; i0 += kChunk)
          any = any_in(p, i0, std::min(HoWo, i0 + kChunk));
      }
      nonzero[size_t(m)] = any;
    });
  std::vector<int64_t> act;
  for (int64_t m = 0; m < g.M; ++m)
    if (nonzero[size_t(m)]) act.push_back(m);
  return act;
}

}  // namespace

template <typename T>
void conv2d_backward_data(const T* grad_out, const T* weight, T* grad_in, const ConvGeom& g,
                          const float* winograd_u, const Fused<T>& relu) {
  const int64_t Cg = g.C / g.group, Mg = g.M / g.group, kk = g.kH * g.kW;
  const int64_t HW = g.H * g.W, HoWo = g.Ho * g.Wo;
  if (g.N * g.C * HW == 0) return;
  if (Mg == 0 || HoWo == 0) {  // nothing flows back
    std::fill(grad_in, grad_in + g.N * g.C * HW, T(0));
    return;
  }
  if (Cg == 1 && Mg == 1) return depthwise_backward_data(grad_out, weight, grad_in, g, relu);
  if (g.group == 1 && g.M >= kSparseMinChannels) {
    // At most half the output channels nonzero: the conv of the compacted weights and grad_out
    // (only exact zero terms are dropped; the rest is summed in the same order).
    const std::vector<int64_t> act = nonzero_channels(grad_out, g);
    const int64_t a = int64_t(act.size()), row = g.C * kk;
    if (2 * a <= g.M) {
      ConvGeom gc = g;
      gc.M = a;  // 0: grad_in is zero
      std::vector<T> w(size_t(a * row)), go(size_t(g.N * a * HoWo));
      for (int64_t j = 0; j < a; ++j) {
        std::copy_n(weight + act[size_t(j)] * row, row, w.data() + j * row);
        for (int64_t n = 0; n < g.N; ++n)
          std::copy_n(grad_out + (n * g.M + act[size_t(j)]) * HoWo, HoWo,
                      go.data() + (n * a + j) * HoWo);
      }
      return conv2d_backward_data(go.data(), w.data(), grad_in, gc, nullptr, relu);
    }
  }
  if constexpr (std::is_same_v<T, float>) {
    const int variant = winograd_variant(g);
    if (variant != 0)
      return winograd_backward_data(grad_out, weight, grad_in, g, variant, winograd_u, relu);
  }

  const bool direct = g.kH == 1 && g.kW == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 &&
                      g.pl == 0 && g.Ho == g.H && g.Wo == g.W;
  if (g.N > 1 && HoWo < kBatchedCols)
    return conv_batched_backward_data(grad_out, weight, grad_in, g, direct, relu);
  // Tasks: (n, group, channel block); split channels only when N·group leaves threads idle.
  const int64_t nt = max_threads(), base = g.N * g.group;
  int64_t blocks = 1;
  if (nt > 1 && base % nt != 0 && base < 4 * nt) {
    blocks = ceil_div(4 * nt, base);
    blocks = std::min({blocks, Cg, std::max<int64_t>(1, Cg * kk / kMinBlockRows)});
  }
  // Still fewer tasks than 2 per thread, and not a 1×1 conv: the input rows are split too
  // (run_rows), each part's output rows at least 4 times those it shares with a neighbour
  // (<= 25 % of its GEMM done twice), their count rounded down to a multiple of the team when
  // it exceeds it. A net's first conv, to 3 channels, had 1 task (3×3, MobileNetV2) or 2 of 1
  // and 2 channels (7×7, ResNet); such uneven channel blocks are dropped when the rows alone
  // give the shorter loop (its estimate: rounds of the team × the largest task's share).
  int64_t row_parts = 1;
  if (!direct && nt > 1 && base * blocks < 2 * nt) {
    const int64_t halo = std::max<int64_t>(1, ceil_div((g.kH - 1) * g.dh, g.sh));
    auto rows_for = [&](int64_t nb) {
      int64_t p = std::min(
          {ceil_div(2 * nt, base * nb), std::max<int64_t>(1, g.Ho / (4 * halo)), g.H});
      if (base * nb * p > nt && (base * nb * p) % nt != 0)
        p = std::max<int64_t>(1, base * nb * p / nt * nt / (base * nb));
      return p;
    };
    auto makespan = [&](int64_t nb, int64_t p) {
      const double share = double(ceil_div(Cg, nb)) / double(Cg) / double(p) *
                           (1.0 + double(halo * (p - 1)) / double(g.Ho));
      return double(ceil_div(base * nb * p, nt)) * share;
    };
    row_parts = rows_for(blocks);
    const int64_t alone = rows_for(1);
    if (blocks > 1 && makespan(1, alone) < makespan(blocks, row_parts)) {
      blocks = 1;
      row_parts = alone;
    }
  }
  const int64_t rows_max = ceil_div(Cg, blocks) * kk;
  // Tile height from a whole group's rows, not a block's: the same tiles for any team size, so
  // each pixel's terms add in one order and the result is the same bits on any thread count
  // (with a block's rows, a picture's strided convs differed in the last bits from 1 to 2
  // threads).
  const int64_t tile_cols =
      std::max(kMinTileCols, kTileBytes / int64_t(sizeof(T) * std::max<int64_t>(Cg * kk, 1)));
  const int64_t tile_oh = std::clamp(tile_cols / g.Wo, int64_t(1), g.Ho);

  // A direct conv with too few channel blocks for the team (MobileNet's 1×1 convs to 16-24
  // channels at batch 1 ran on one thread) also splits its pixels: no two tasks then write the
  // same output.
  // Parts of >= kMinDirectPartCols pixels (a 14×14 plane has 196: MobileNetV2's 576 -> 96 and
  // 384 -> 64 1×1 convs at batch 1 ran on one thread with the 256 of a tile), their count
  // rounded down to a multiple of the team when it exceeds it (3 equal tasks on 2 threads take
  // as long as 2 of them on one).
  int64_t parts = 1;
  if (direct && nt > 1 && HoWo > 1 && base * blocks < 4 * nt && (base * blocks) % nt != 0) {
    parts = std::min(ceil_div(4 * nt, base * blocks),
                     std::max<int64_t>(1, HoWo / kMinDirectPartCols));
    const int64_t tasks = base * blocks * parts;
    if (tasks > nt && tasks % nt != 0)
      parts = std::max<int64_t>(1, tasks / nt * nt / (base * blocks));
  }

  if (!direct) parts = row_parts;
  const int64_t span = direct ? HoWo : g.H;  // what the parts split: pixels, or input rows

  // Planes of <= 64 pixels (7×7, 8×8; the batch is 1 here) run small_gemm_tn where it runs.
  const bool narrow = std::is_same_v<T, float> && HoWo > 1 && HoWo <= kSmallGemmMaxCols &&
                      small_gemm_available();
  BlasSingleThread single;
  const int64_t tasks = base * blocks * parts;
  parallel_for(tasks, Mg * HoWo * rows_max * 2 / parts, [&](int64_t t) {
    const int64_t part = t % parts, b = (t / parts) % blocks, ng = t / parts / blocks;
    const int64_t gi = ng % g.group, n = ng / g.group;
    const int64_t c0 = Cg * b / blocks, c1 = Cg * (b + 1) / blocks;
    run_task(grad_out, weight, grad_in, g, n, gi, c0, c1, tile_oh, direct, span * part / parts,
             span * (part + 1) / parts, narrow, relu);
  });
}

template void conv2d_backward_data<float>(const float*, const float*, float*, const ConvGeom&,
                                          const float*, const FusedRelu<float>&);
template void conv2d_backward_data<double>(const double*, const double*, double*,
                                           const ConvGeom&, const float*,
                                           const FusedRelu<double>&);

}  // namespace pydevis::cpu
