// The transforms of Winograd's F(4×4, 3×3) (Lavin & Gray 2016, interpolation points 0, ±1, ±2,
// ∞) for winograd.cpp: 36 GEMMs per 4×4 output tile where F(2×2, 3×3) spends 16 per 2×2 tile,
// i.e. 2.25 multiply-adds per output pixel and input channel instead of 4 (direct: 9), and a
// transformed input of 2.25 floats per pixel instead of 4. The price is precision: the
// transforms scale by up to 8 and divide by 6 and 24, so float32 results sit within ~1e-5 of the
// largest value (the tests hold it to 2e-5) where F(2×2, 3×3) stays near 5e-7.
//
//   Bᵀ = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]
//   G  = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]
//   Aᵀ = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
//
// Every loop runs over the tiles of one tile row (or the channels of one weight row) with unit
// stride, so that it vectorises; the callers compile them for AVX-512 and AVX2 (target_clones).
#pragma once

#include <algorithm>
#include <cstdint>

#include "../common/clones.h"
#include "../common/geometry.h"

namespace pydevis::cpu::f4 {

// The six rows of Bᵀ applied to six values d0..d5 (stride ds apart at src), into out[k·os].
PYDEVIS_INLINE void bt6(float d0, float d1, float d2, float d3, float d4, float d5, float& o0,
                        float& o1, float& o2, float& o3, float& o4, float& o5) {
  o0 = 4.0f * d0 - 5.0f * d2 + d4;
  o1 = d3 + d4 - 4.0f * (d1 + d2);
  o2 = 4.0f * (d1 - d2) - d3 + d4;
  o3 = 2.0f * (d3 - d1) - d2 + d4;
  o4 = 2.0f * (d1 - d3) - d2 + d4;
  o5 = 4.0f * d1 - 5.0f * d3 + d5;
}

// U[6i + j][c] (U[ξ] at u + ξ·us) = (G · W'[c] · Gᵀ)[i][j] for the C kernels of one output
// channel m, laid out tap-major: tap[j·C + c] = W[m, c, j / 3, j % 3]; W'[a][b] = W[.., 2-a, 2-b].
PYDEVIS_CLONES inline void weight_row(const float* __restrict__ tap, int64_t C, float* u,
                                      int64_t us) {
  const float* k[9];
  for (int j = 0; j < 9; ++j) k[j] = tap + j * C;
  float* o[36];
  for (int x = 0; x < 36; ++x) o[x] = u + x * us;
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) {
    float t[6][3];  // G · W'
    for (int b = 0; b < 3; ++b) {
      const float r0 = k[8 - b][c], r1 = k[5 - b][c], r2 = k[2 - b][c];
      t[0][b] = r0 * 0.25f;
      t[1][b] = -(r0 + r1 + r2) * (1.0f / 6);
      t[2][b] = -(r0 - r1 + r2) * (1.0f / 6);
      t[3][b] = r0 * (1.0f / 24) + r1 * (1.0f / 12) + r2 * (1.0f / 6);
      t[4][b] = r0 * (1.0f / 24) - r1 * (1.0f / 12) + r2 * (1.0f / 6);
      t[5][b] = r2;
    }
    for (int i = 0; i < 6; ++i) {
      const float a = t[i][0], b = t[i][1], d = t[i][2];
      o[6 * i][c] = a * 0.25f;
      o[6 * i + 1][c] = -(a + b + d) * (1.0f / 6);
      o[6 * i + 2][c] = -(a - b + d) * (1.0f / 6);
      o[6 * i + 3][c] = a * (1.0f / 24) + b * (1.0f / 12) + d * (1.0f / 6);
      o[6 * i + 4][c] = a * (1.0f / 24) - b * (1.0f / 12) + d * (1.0f / 6);
      o[6 * i + 5][c] = d;
    }
  }
}

// Scratch floats input_row needs: 6 E rows of Wp, 24 phases of TW + 1.
inline int64_t input_scratch(int64_t Wp, int64_t TW) { return 6 * Wp + 24 * (TW + 1); }

// V[6i + j][tx] (V[ξ] at v + ξ·vs) = (Bᵀ · E_patch · B)[i][j] for the TW tiles of tile row ty
// of one channel (gm: its Ho × Wo grad_out plane). E[y][x] = grad_out[y + pt - 2][x + pl - 2],
// zero outside; the patch of tile tx is E rows 4ty.., columns 4tx.., six each.
PYDEVIS_CLONES inline void input_row(const float* gm, int64_t Ho, int64_t Wo, int64_t pt,
                                     int64_t pl, int64_t ty, int64_t TW, float* v, int64_t vs,
                                     float* scratch) {
  const int64_t Wp = 4 * TW + 2;
  float* e = scratch;  // 6 rows
  for (int i = 0; i < 6; ++i) {
    float* er = e + i * Wp;
    std::fill(er, er + Wp, 0.0f);
    const int64_t oh = 4 * ty + i + pt - 2;
    if (oh < 0 || oh >= Ho) continue;
    const int64_t x0 = std::max<int64_t>(0, 2 - pl), x1 = std::min(Wp, Wo + 2 - pl);
    if (x0 < x1) std::copy(gm + oh * Wo + x0 + pl - 2, gm + oh * Wo + x1 + pl - 2, er + x0);
  }
  // Bᵀ · E: six rows at once, then each row split into its 4 column phases
  // (ph[4k + q][t] = (Bᵀ·E)[k][4t + q]), so that the column transform reads unit stride.
  float* __restrict__ ph = e + 6 * Wp;  // 24 phases of TW + 1
  const int64_t P = TW + 1;
  const float* __restrict__ e0 = e;
  const float* __restrict__ e1 = e + Wp;
  const float* __restrict__ e2 = e + 2 * Wp;
  const float* __restrict__ e3 = e + 3 * Wp;
  const float* __restrict__ e4 = e + 4 * Wp;
  const float* __restrict__ e5 = e + 5 * Wp;
  for (int q = 0; q < 4; ++q) {
    const int64_t n = q < 2 ? TW + 1 : TW;  // Wp = 4·TW + 2 columns
#pragma omp simd
    for (int64_t t = 0; t < n; ++t) {
      const int64_t x = 4 * t + q;
      bt6(e0[x], e1[x], e2[x], e3[x], e4[x], e5[x], ph[q * P + t], ph[(4 + q) * P + t],
          ph[(8 + q) * P + t], ph[(12 + q) * P + t], ph[(16 + q) * P + t], ph[(20 + q) * P + t]);
    }
  }
  for (int i = 0; i < 6; ++i) {
    const float* __restrict__ p0 = ph + 4 * i * P;
    const float* __restrict__ p1 = p0 + P;
    const float* __restrict__ p2 = p1 + P;
    const float* __restrict__ p3 = p2 + P;
    float* __restrict__ v0 = v + 6 * i * vs;
    float* __restrict__ v1 = v0 + vs;
    float* __restrict__ v2 = v1 + vs;
    float* __restrict__ v3 = v2 + vs;
    float* __restrict__ v4 = v3 + vs;
    float* __restrict__ v5 = v4 + vs;
#pragma omp simd
    for (int64_t t = 0; t < TW; ++t)
      bt6(p0[t], p1[t], p2[t], p3[t], p0[t + 1], p1[t + 1], v0[t], v1[t], v2[t], v3[t], v4[t],
          v5[t]);
  }
}

// Scratch floats output_row needs: 16 rows of TW.
inline int64_t output_scratch(int64_t TW) { return 16 * TW; }

// grad_in rows 4ty .. 4ty + 3 (those < H) of one channel (gc: its H × W plane) from
// P[ξ][tx] = p[ξ·s + tx]: Aᵀ · P · A per tile.
PYDEVIS_CLONES inline void output_row(const float* __restrict__ p, int64_t s, int64_t H, int64_t W,
                                      int64_t ty, int64_t TW, float* gc, float* scratch) {
  float* __restrict__ y = scratch;  // y[(4r + q)·TW + tx] = Y[r][q] of tile tx
#pragma omp simd
  for (int64_t t = 0; t < TW; ++t) {
    float a[4][6];  // Aᵀ · P, column j
    for (int j = 0; j < 6; ++j) {
      const float p0 = p[j * s + t], p1 = p[(6 + j) * s + t], p2 = p[(12 + j) * s + t];
      const float p3 = p[(18 + j) * s + t], p4 = p[(24 + j) * s + t], p5 = p[(30 + j) * s + t];
      a[0][j] = p0 + p1 + p2 + p3 + p4;
      a[1][j] = p1 - p2 + 2.0f * (p3 - p4);
      a[2][j] = p1 + p2 + 4.0f * (p3 + p4);
      a[3][j] = p1 - p2 + 8.0f * (p3 - p4) + p5;
    }
    for (int r = 0; r < 4; ++r) {
      const float* q = a[r];
      y[(4 * r) * TW + t] = q[0] + q[1] + q[2] + q[3] + q[4];
      y[(4 * r + 1) * TW + t] = q[1] - q[2] + 2.0f * (q[3] - q[4]);
      y[(4 * r + 2) * TW + t] = q[1] + q[2] + 4.0f * (q[3] + q[4]);
      y[(4 * r + 3) * TW + t] = q[1] - q[2] + 8.0f * (q[3] - q[4]) + q[5];
    }
  }
  for (int r = 0; r < 4 && 4 * ty + r < H; ++r) {
    float* __restrict__ out = gc + (4 * ty + r) * W;
    const float* __restrict__ y0 = y + (4 * r) * TW;
    const float* __restrict__ y1 = y0 + TW;
    const float* __restrict__ y2 = y1 + TW;
    const float* __restrict__ y3 = y2 + TW;
    const int64_t full = W / 4;
    for (int64_t t = 0; t < full; ++t) {
      out[4 * t] = y0[t];
      out[4 * t + 1] = y1[t];
      out[4 * t + 2] = y2[t];
      out[4 * t + 3] = y3[t];
    }
    const float* tail[4] = {y0, y1, y2, y3};
    for (int64_t x = 4 * full; x < W; ++x) out[x] = tail[x - 4 * full][full];
  }
}

}  // namespace pydevis::cpu::f4
