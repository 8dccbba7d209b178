// conv2d_backward_data by Winograd's F(2×2, 3×3) or F(4×4, 3×3) (Lavin & Gray 2016) for 3×3,
// stride-1, undilated convs in float32 (VGG's and ResNet's 3×3 layers; grouped ones per group).
// F(4×4, 3×3) (winograd_f4.h: 36 planes, 4×4 tiles) serves planes of 28×28 and more when the
// batch has enough pixels (kMinF4Side, kMinF4Pixels); what follows describes F(2×2, 3×3), and
// the scheme is the same for both.
//
// The transposed 3×3 stride-1 conv is itself a 3×3 correlation: with E[m, y, x] =
// grad_out[m, y + pt - 2, x + pl - 2] (zero outside the Ho × Wo plane) and the flipped,
// transposed kernel W'[c, m, a, b] = W[m, c, 2-a, 2-b],
//     grad_in[c, ih, iw] = sum_{m, a, b} W'[c, m, a, b] · E[m, ih + a, iw + b].
// F(2×2, 3×3) computes it per 2×2 block of grad_in (a tile) from the 4×4 patch of E under it:
// Y = Aᵀ [ Σ_m (G·W'[c,m]·Gᵀ) ⊙ (Bᵀ·E_patch[m]·B) ] A, i.e. 16 GEMMs (one per point ξ of the
// 4×4 transform domain) of (C × M) by (M × tiles): 16·M·C multiply-adds per tile where the
// direct path spends 36·M·C, 2.25× fewer. Grad_in is written once, with no col2im and no zero
// fill. The transforms only add, subtract and halve, so float32 stays within ~1e-6 of the
// direct result relative to the largest value (the tests hold it to 1e-5); float64 keeps the
// direct path.
//
// Measured (bench/kernels.py --only conv --threads 2 --repeats 7, batch 8, Intel Xeon with
// AVX-512/AMX, 2 vCPU; min ms, direct path -> this one; torch.nn.grad.conv2d_input in the same
// run): VGG conv1_2 64->64 224² 122 -> 68 (torch 167), 128->128 112² 102 -> 63 (112),
// 256->256 56² 91 -> 50 (92), 512->512 14² 21.8 -> 20.3 (18.7); ResNet 64->64 56² 6.9 -> 4.0.
// On one thread the 64-channel 224² layer splits 73 ms GEMM, ~35 ms each transform.
//
// Scheme: the weights are transformed once per call (U[ξ] stored M × C, transposed for
// gemm_tn), then parallel tasks over blocks of whole tile rows (of any samples) each transform
// their block of grad_out into V (16 × M × tiles), run the 16 single-threaded GEMMs into P
// (16 × C × tiles) and transform P back into grad_in. At most one block per thread: on 13×13
// and 14×14 planes smaller blocks (narrower GEMMs) were slower (AlexNet 384->256 13²: 7.5 ms
// at one block per thread, 8.9 at four).
//
// The transforms run over a tile row at a time with unit stride (the rows of E are split into
// even and odd columns first), compiled for AVX-512 and AVX2 too (target_clones). So does the
// weight transform, over the input channels of one output channel (its taps laid out tap-major
// first): 1.0-1.4 -> 0.8-0.9 ms for 512 -> 512 on 2 threads, where writing U's 16 MiB bounds it.
#include "winograd.h"

#include <algorithm>
#include <vector>

#include "../common/parallel.h"
#include "blas.h"
#include "rectify.h"
#include "scratch.h"
#include "winograd_f4.h"

#include "../common/clones.h"

namespace pydevis::cpu {
namespace {

// Tiles per block: M·C/256, within [128, 256] (measured, one thread: 64-channel layers are
// fastest at 128-224 tiles, 256-512-channel ones at ~256, where OpenBLAS's packing of U[ξ] for
// each of the 16 GEMMs is spread over enough columns).
constexpr int64_t kMinBlockTiles = 128, kMaxBlockTiles = 256;
constexpr int64_t kMinChannels = 16;  // below this (an RGB input), the transforms dominate
// Fewer tiles (N·⌈H/2⌉·⌈W/2⌉) than this: the weight transform and narrow GEMMs cost more than
// the multiply-adds saved (2 threads, min ms Winograd / direct: 13×13 192->384 at N = 1
// 1.3 / 0.8, N = 2 1.8 / 1.5, N = 4 2.7 / 2.8; 14×14 256->256 N = 3 2.0 / 2.2; 28×28 128->128
// at N = 1 (196 tiles) 0.8 / 0.8).
constexpr int64_t kMinTiles = 128;
// F(4×4, 3×3) (winograd_f4.h) for planes at least kMinF4Side wide and high (13×13 and 14×14
// ones would pad 16-31 % of their tiles) with at least kMinF4Pixels pixels over the batch: its
// weight transform writes 36 planes where F(2×2, 3×3) writes 16 (38 MB for 512 -> 512), which
// fewer pixels do not repay. Measured on one thread (min ms F(2×2) / F(4×4), Xeon AVX-512):
// VGG at N = 1 64->64 224² 14.7 / 12.7-13.8, 128->128 112² 14.4 / 10.7-11.5, 256->256 56²
// 12.0 / 9.1-10.4, 512->512 28² 13.0-14.1 / 13.1-15.8 (784 pixels: kept on F(2×2));
// ResNet-18 at N = 8 64->64 56² 7.3 / 7.1-7.5, 128->128 28² 8.5 / 6.6-7.0.
constexpr int64_t kMinF4Side = 28, kMinF4Pixels = 2048;
// The same limits hold with the weights transformed once (winograd_weights, cached by the
// caller): in a whole VGG-16 step at batch 1 (2 threads), Winograd on the 14² layers (>= 32
// tiles) and F(4×4) on the 28² ones (>= 784 pixels) made the convs' backward 64 -> 70 ms, their
// transformed weights (up to 4× the weights: 38 MB for 512 -> 512 F(4×4)) coming from memory
// each step.

using Relu = FusedRelu<float>;  // a Relu fused after the backward (rectify.h)

struct Tiling {
  int64_t TH, TW, rows;  // tile rows and columns of a sample; tile rows per block
  int64_t Wp;            // E row length: R·TW + 2 (R: 2 or 4, the output tile's side)
};

// Planes of 16-plane buffers (V, P, U), 64 bytes off a multiple of 4 KiB apart: the transforms
// touch all 16 at once, which at multiples of 4 KiB would map to the same L1 sets.
int64_t plane_stride(int64_t floats) { return ceil_div(floats, 1024) * 1024 + 16; }

// U[ξ][m][c] = (G · W'[c, m] · Gᵀ)[ξ] for one m, from its taps laid out tap-major
// (tap[j·C + c] = W[m, c, j / 3, j % 3]): unit-stride loops over c that vectorise.
PYDEVIS_CLONES void transform_row(const float* __restrict__ tap, int64_t C, float* u, int64_t us) {
  const float* k[9];
  for (int j = 0; j < 9; ++j) k[j] = tap + j * C;
  float* o[16];
  for (int x = 0; x < 16; ++x) o[x] = u + x * us;
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) {
    float t[4][3];  // G · W'[c, m], W'[a][b] = W[m, c, 2-a, 2-b]
    for (int b = 0; b < 3; ++b) {
      const float r0 = k[8 - b][c], r1 = k[5 - b][c], r2 = k[2 - b][c];
      t[0][b] = r0;
      t[1][b] = 0.5f * (r0 + r1 + r2);
      t[2][b] = 0.5f * (r0 - r1 + r2);
      t[3][b] = r2;
    }
    for (int i = 0; i < 4; ++i) {
      o[i * 4][c] = t[i][0];
      o[i * 4 + 1][c] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
      o[i * 4 + 2][c] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
      o[i * 4 + 3][c] = t[i][2];
    }
  }
}

// U[ξ] at u + ξ·us, M × C (C: input channels per group); 16 planes for F(2×2, 3×3), 36 for
// F(4×4, 3×3).
template <int R>
void transform_weights(const float* w, float* u, int64_t us, int64_t M, int64_t C) {
  parallel_for(M, C * 64, [&](int64_t m) {
    std::vector<float>& tap = thread_scratch<float, 4>(size_t(9 * C));
    const float* wm = w + m * C * 9;
    for (int64_t c = 0; c < C; ++c)
      for (int j = 0; j < 9; ++j) tap[size_t(j * C + c)] = wm[c * 9 + j];
    if constexpr (R == 2) transform_row(tap.data(), C, u + m * C, us);
    else f4::weight_row(tap.data(), C, u + m * C, us);
  });
}

// v[k·s + tx], k = 0..3: row (ev, od) of Bᵀ·E times B, for TW tiles.
PYDEVIS_INLINE void times_b(const float* __restrict__ ev, const float* __restrict__ od,
                            float* __restrict__ v, int64_t s, int64_t TW) {
  float* __restrict__ v0 = v;
  float* __restrict__ v1 = v + s;
  float* __restrict__ v2 = v + 2 * s;
  float* __restrict__ v3 = v + 3 * s;
  for (int64_t tx = 0; tx < TW; ++tx) {
    v0[tx] = ev[tx] - ev[tx + 1];
    v1[tx] = od[tx] + ev[tx + 1];
    v2[tx] = ev[tx + 1] - od[tx];
    v3[tx] = od[tx] - od[tx + 1];
  }
}

// y_rc[tx] = (Aᵀ·P·A)[r][c] for TW tiles, P[ξ][tx] = p[ξ·s + tx].
PYDEVIS_INLINE void a_t_p_a(const float* __restrict__ p, int64_t s, float* __restrict__ y00,
                            float* __restrict__ y01, float* __restrict__ y10,
                            float* __restrict__ y11, int64_t TW) {
  for (int64_t tx = 0; tx < TW; ++tx) {
    const float* q = p + tx;
    const float a0 = q[0] + q[4 * s] + q[8 * s], b0 = q[4 * s] - q[8 * s] - q[12 * s];
    const float a1 = q[s] + q[5 * s] + q[9 * s], b1 = q[5 * s] - q[9 * s] - q[13 * s];
    const float a2 = q[2 * s] + q[6 * s] + q[10 * s], b2 = q[6 * s] - q[10 * s] - q[14 * s];
    const float a3 = q[3 * s] + q[7 * s] + q[11 * s], b3 = q[7 * s] - q[11 * s] - q[15 * s];
    y00[tx] = a0 + a1 + a2;
    y01[tx] = a1 - a2 - a3;
    y10[tx] = b0 + b1 + b2;
    y11[tx] = b1 - b2 - b3;
  }
}

// out[0, W) = a[0], b[0], a[1], b[1], ...
PYDEVIS_INLINE void interleave(const float* __restrict__ a, const float* __restrict__ b,
                               float* __restrict__ out, int64_t W) {
  const int64_t pairs = W / 2;
  for (int64_t tx = 0; tx < pairs; ++tx) {
    out[2 * tx] = a[tx];
    out[2 * tx + 1] = b[tx];
  }
  if (W % 2) out[W - 1] = a[pairs];
}

// V[ξ][m][t0 + tx] (V[ξ] starts at v + ξ·vs) for the TW tiles of tile row ty of one channel
// m of one sample (gm: its grad_out plane): Bᵀ·E_patch·B. `e` is scratch of 4 rows of Wp plus 2 of TW + 1.
PYDEVIS_CLONES void input_row(const float* gm, const ConvGeom& g, const Tiling& tl, int64_t ty,
                              float* v, int64_t vs, float* e) {
  const int64_t Wp = tl.Wp, TW = tl.TW;
  for (int i = 0; i < 4; ++i) {  // E rows 2ty + i, zero outside grad_out
    float* er = e + i * Wp;
    std::fill(er, er + Wp, 0.0f);
    const int64_t oh = 2 * ty + i + g.pt - 2;
    if (oh < 0 || oh >= g.Ho) continue;
    const int64_t x0 = std::max<int64_t>(0, 2 - g.pl), x1 = std::min(Wp, g.Wo + 2 - g.pl);
    if (x0 < x1) std::copy(gm + oh * g.Wo + x0 + g.pl - 2, gm + oh * g.Wo + x1 + g.pl - 2, er + x0);
  }
  float* ev = e + 4 * Wp;
  float* od = ev + TW + 1;
  // Row i of Bᵀ·E is ea[i] + sg[i]·eb[i] (sg = ±1, exact): e0 - e2, e1 + e2, e2 - e1, e1 - e3.
  const float* ea[4] = {e, e + Wp, e + 2 * Wp, e + Wp};
  const float* eb[4] = {e + 2 * Wp, e + 2 * Wp, e + Wp, e + 3 * Wp};
  const float sg[4] = {-1.0f, 1.0f, -1.0f, -1.0f};
  for (int i = 0; i < 4; ++i) {
    const float* __restrict__ a = ea[i];
    const float* __restrict__ b = eb[i];
    const float si = sg[i];
    for (int64_t j = 0; j <= TW; ++j) {  // split into even and odd columns
      ev[j] = a[2 * j] + si * b[2 * j];
      od[j] = a[2 * j + 1] + si * b[2 * j + 1];
    }
    times_b(ev, od, v + 4 * i * vs, vs, TW);
  }
}

// grad_in rows 2ty, 2ty + 1 of one channel (gc: its plane) from P[ξ][c][t0 + tx]: Aᵀ·P·A.
// `y` is scratch of 4·TW.
PYDEVIS_CLONES void output_row(const float* p, int64_t s, const ConvGeom& g,
                               const Tiling& tl, int64_t ty, float* gc, float* y) {
  const int64_t TW = tl.TW;
  float* __restrict__ y00 = y;
  float* __restrict__ y01 = y + TW;
  float* __restrict__ y10 = y + 2 * TW;
  float* __restrict__ y11 = y + 3 * TW;
  a_t_p_a(p, s, y00, y01, y10, y11, TW);
  for (int r = 0; r < 2 && 2 * ty + r < g.H; ++r) {
    float* __restrict__ out = gc + (2 * ty + r) * g.W;
    const float* a = r == 0 ? y00 : y10;
    const float* b = r == 0 ? y01 : y11;
    interleave(a, b, out, g.W);
  }
}

// One task: group gi, global tile rows [r0, r1) (row = n·TH + ty). U[ξ] holds the groups'
// (Mg × Cg) blocks one after the other, in (R + 2)² planes.
template <int R>
void run_block(const float* grad_out, const float* u, int64_t us, float* grad_in,
               const ConvGeom& g, const Tiling& tl, int64_t gi, int64_t r0, int64_t r1,
               const Relu& relu) {
  constexpr int kPlanes = (R + 2) * (R + 2);
  const int64_t M = g.M / g.group, C = g.C / g.group, TW = tl.TW, ld = tl.rows * TW;
  const int64_t nt = (r1 - r0) * TW;
  const int64_t vs = plane_stride(M * ld), ps = plane_stride(C * ld);
  float* v = thread_scratch<float, 0>(size_t(kPlanes * vs)).data();
  float* p = thread_scratch<float, 1>(size_t(kPlanes * ps)).data();
  const int64_t scratch_n = R == 2 ? 4 * tl.Wp + 2 * (TW + 1) + 4 * TW
                                   : std::max(f4::input_scratch(tl.Wp, TW), f4::output_scratch(TW));
  float* scratch = thread_scratch<float, 2>(size_t(scratch_n)).data();
  for (int64_t m = 0; m < M; ++m)
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / tl.TH, ty = r % tl.TH;
      const float* gm = grad_out + (n * g.M + gi * M + m) * g.Ho * g.Wo;
      float* vm = v + m * ld + (r - r0) * TW;
      if constexpr (R == 2) input_row(gm, g, tl, ty, vm, vs, scratch);
      else f4::input_row(gm, g.Ho, g.Wo, g.pt, g.pl, ty, TW, vm, vs, scratch);
    }
  for (int xi = 0; xi < kPlanes; ++xi)
    gemm_tn(int(C), int(nt), int(M), u + xi * us + gi * M * C, int(C), v + xi * vs, int(ld),
            p + xi * ps, int(ld));
  for (int64_t c = 0; c < C; ++c)
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / tl.TH, ty = r % tl.TH;
      const float* pc = p + c * ld + (r - r0) * TW;
      const int64_t plane = (n * g.C + gi * C + c) * g.H * g.W;
      float* gc = grad_in + plane;
      if constexpr (R == 2) output_row(pc, ps, g, tl, ty, gc, scratch);
      else f4::output_row(pc, ps, g.H, g.W, ty, TW, gc, scratch);
      const int64_t y0 = R * ty, rows = std::min<int64_t>(R, g.H - y0);
      relu.apply(gc + y0 * g.W, plane + y0 * g.W, rows * g.W);  // the rows just written
    }
}

}  // namespace

namespace {

template <int R>
int64_t weights_floats(const ConvGeom& g) {
  return (R + 2) * (R + 2) * plane_stride(g.M * (g.C / g.group));
}

template <int R>
void run(const float* grad_out, const float* weight, float* grad_in, const ConvGeom& g,
         const float* prepared, const Relu& relu) {
  constexpr int kPlanes = (R + 2) * (R + 2);
  Tiling tl{ceil_div(g.H, R), ceil_div(g.W, R), 1, 0};
  tl.Wp = R * tl.TW + 2;
  const int64_t total = g.N * tl.TH, nt = max_threads();
  const int64_t Mg = g.M / g.group, Cg = g.C / g.group;
  const int64_t target = std::clamp(Mg * Cg / 256, kMinBlockTiles, kMaxBlockTiles);
  tl.rows = std::clamp(ceil_div(target, tl.TW), int64_t(1),
                       std::max<int64_t>(1, ceil_div(total * g.group, nt)));
  const int64_t us = plane_stride(g.M * Cg);
  const float* u = prepared;
  if (u == nullptr) {
    // U in the calling thread's buffer, reused across calls (fresh pages cost more than the
    // transform: 16 MiB for 512 channels).
    float* fresh = thread_scratch<float, 3>(size_t(kPlanes * us)).data();
    transform_weights<R>(weight, fresh, us, g.M, Cg);
    u = fresh;
  }
  // Whole rounds of tasks: 3 blocks on 2 threads would leave one thread idle a third of the
  // time (VGG's 56² 256-channel layers at batch 1: 28 tile rows, 10 per block).
  const int64_t per_group = ceil_div(total, tl.rows);
  if (g.group == 1 && per_group % nt != 0 && per_group < 8 * nt)
    tl.rows = std::max<int64_t>(1, ceil_div(total, ceil_div(per_group, nt) * nt));
  const int64_t blocks = ceil_div(total, tl.rows);
  BlasSingleThread single;
  parallel_for(g.group * blocks, kPlanes * Mg * Cg * tl.rows * tl.TW * 2, [&](int64_t t) {
    const int64_t gi = t / blocks, b = t % blocks;
    run_block<R>(grad_out, u, us, grad_in, g, tl, gi, b * tl.rows,
                 std::min(total, (b + 1) * tl.rows), relu);
  });
}

}  // namespace

int winograd_variant(const ConvGeom& g) {
  const bool applies = g.kH == 3 && g.kW == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 &&
                       g.dw == 1 && g.C / g.group >= kMinChannels &&
                       g.M / g.group >= kMinChannels && g.Ho > 0 && g.Wo > 0 &&
                       g.N * ceil_div(g.H, 2) * ceil_div(g.W, 2) >= kMinTiles;
  if (!applies) return 0;
  return g.H >= kMinF4Side && g.W >= kMinF4Side && g.N * g.H * g.W >= kMinF4Pixels ? 4 : 2;
}

int64_t winograd_weights_size(const ConvGeom& g, int variant) {
  return variant == 4 ? weights_floats<4>(g) : weights_floats<2>(g);
}

void winograd_weights(const float* weight, const ConvGeom& g, int variant, float* u) {
  const int64_t Cg = g.C / g.group, us = plane_stride(g.M * Cg);
  const int planes = variant == 4 ? 36 : 16;
  std::fill(u, u + planes * us, 0.0f);  // the padding between planes too: no stale bytes
  if (variant == 4) transform_weights<4>(weight, u, us, g.M, Cg);
  else transform_weights<2>(weight, u, us, g.M, Cg);
}

void winograd_backward_data(const float* grad_out, const float* weight, float* grad_in,
                            const ConvGeom& g, int variant, const float* prepared,
                            const Relu& relu) {
  if (variant == 4) return run<4>(grad_out, weight, grad_in, g, prepared, relu);
  run<2>(grad_out, weight, grad_in, g, prepared, relu);
}

}  // namespace pydevis::cpu
