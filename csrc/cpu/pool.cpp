// Pooling backward: max-pool backward from the input (the switches found here), average and
// global-average pooling. Planes are independent: one task per (n, c) plane, no atomics,
// and overlapping windows that picked the same switch accumulate in order.
//
// max_pool2d_backward finds the switches itself from the forward input x, so the forward need not
// ask ONNX Runtime for MaxPool's Indices output: that output makes ORT run its generic MaxPool
// instead of the NCHWc one, 5-20x slower (SqueezeNet 1.1 at batch 8: 124 ms of a 253 ms forward
// vs 8 ms). The switch of a window is ORT's: the first tap, in (kh, kw) order, whose value is
// strictly greater than every earlier one, starting from the lowest finite value (so NaN and -inf
// never win; a window with no such tap routes nothing), skipping taps in the padding. The scan runs
// one output row at a time with the output columns as the inner, vectorisable, loop: per tap a
// branch-free compare-and-select into a row of running maxima and tap numbers, then a scatter.
// With a column stride s > 1 the plane is first split into s column phases (x[ih, j*s + r] for
// r < s), so that each tap reads contiguous memory.
//
// VGG's 2x2 stride-2 MaxPool (no padding or dilation, floor output size; H, W even or odd) takes
// a fast path, pool2x2_plane: per output row it reads the two input rows once and writes both
// grad_in rows (g at the switch, 0 at the other taps and at a last row/column no window sees),
// the fused Relu backward applied in the same loop, with the same switch rule as above; no zero
// fill, no phase split, no scatter, no second pass. The loop is float selects only, compiled per
// Relu mode and ISA (target_clones), vectorised; a row's last Wo % 16 windows go through a padded
// block of 16 (GCC's scalar remainder was branchy). Measured (bench/kernels.py --only maxpool,
// 2 threads, Xeon AVX-512, shared machine; medians, run to run spread up to 2x at batch 8): the
// fused Relu+MaxPool backward of VGG-16's five pools at batch 1 (64x224² ... 512x14²)
// 6.7 -> 1.6-2.3 ms in all (two runs), torch's max_pool2d_with_indices_backward alone
// 2.8-3.5 ms; 512x14² at batch 1 0.19 -> 0.095-0.12 ms, torch 0.044-0.15 ms (narrow rows:
// per-row overhead weighs).
//
// The 3×3 stride-2 pools (AlexNet, SqueezeNet, ResNet's stem) take maxpool3x3.cpp's fast path:
// the same switches and bits, vector code throughout.
//
// AveragePool: for output (oh, ow) the window starts at hs = oh*sh - pt and ends at
// he = min(hs + kH, H + pb) (the end may only run into the declared padding, which is how
// ceil_mode's extra last window is cut); the divisor counts the padded window when
// count_include_pad, else only the pixels inside [0, H) × [0, W). Each pixel of the clipped window
// receives g / divisor.
#include <algorithm>
#include <limits>
#include <vector>

#include "../common/clones.h"
#include "../common/parallel.h"
#include "kernels.h"
#include "maxpool3x3.h"
#include "rectify.h"
#include "scratch.h"

namespace pydevis::cpu {

namespace {
// The 2x2 stride-2 fast path (no padding, no dilation, floor output size): one output row oh
// reads input rows 2oh and 2oh+1 once and writes both grad_in rows, the Relu backward (Mode >= 0)
// applied in the same pass. The switch is the general path's: the last tap whose value beat the
// running max (started at lowest()), in the order (0,0), (0,1), (1,0), (1,1); none may win.
//
// count windows of one output row; N > 0 fixes the count at N, so that the loop is all vector
// code: GCC's scalar remainder of a runtime count is branchy (random switches: mispredicted), and
// at VGG's 28- and 14-wide planes all of a row was remainder (2x slower than the general path).
template <typename T, int Mode, int64_t N = 0>
PYDEVIS_INLINE void pool2x2_block(const T* __restrict__ x0, const T* __restrict__ x1,
                                  const T* __restrict__ gr, T* __restrict__ d0,
                                  T* __restrict__ d1, int64_t count = N) {
  const int64_t n = N > 0 ? N : count;
  const T lowest = std::numeric_limits<T>::lowest(), hi = std::numeric_limits<T>::infinity();
  for (int64_t ow = 0; ow < n; ++ow) {  // selects, not branches: vectorised
    const T a = x0[2 * ow], b = x0[2 * ow + 1], c = x1[2 * ow], d = x1[2 * ow + 1];
    const T gv = gr[ow];
    // g follows the running winner: a tap strictly above the running max (from lowest())
    // takes it from the earlier ones. Float selects only (an integer tap number, or boolean
    // combinations of the compares, left GCC 12 with control flow: not vectorised).
    const T m1 = a > lowest ? a : lowest;
    T va = a > lowest ? gv : T(0);
    const bool tb = b > m1;
    T vb = tb ? gv : T(0);
    va = tb ? T(0) : va;
    const T m2 = tb ? b : m1;
    const bool tc = c > m2;
    T vc = tc ? gv : T(0);
    va = tc ? T(0) : va;
    vb = tc ? T(0) : vb;
    const T m3 = tc ? c : m2;
    const bool td = d > m3;
    T vd = td ? gv : T(0);
    va = td ? T(0) : va;
    vb = td ? T(0) : vb;
    vc = td ? T(0) : vc;
    if constexpr (Mode >= 0) {  // the fused Relu backward, y = this pool's input
      va = rectified<T, Mode>(va, a, T(0), hi);
      vb = rectified<T, Mode>(vb, b, T(0), hi);
      vc = rectified<T, Mode>(vc, c, T(0), hi);
      vd = rectified<T, Mode>(vd, d, T(0), hi);
    }
    d0[2 * ow] = va;
    d0[2 * ow + 1] = vb;
    d1[2 * ow] = vc;
    d1[2 * ow + 1] = vd;
  }
}

template <typename T, int Mode>
PYDEVIS_INLINE void pool2x2_plane_mode(const T* gp, const T* xp, T* dp, int64_t H, int64_t W) {
  constexpr int64_t B = 16;  // windows per block: one AVX-512 vector of floats
  const int64_t Ho = H / 2, Wo = W / 2, full = Wo - Wo % B, rem = Wo - full;
  T bx0[2 * B] = {}, bx1[2 * B] = {}, bg[B] = {}, bd0[2 * B], bd1[2 * B];  // the row's tail
  for (int64_t oh = 0; oh < Ho; ++oh) {
    const T* x0 = xp + 2 * oh * W;
    const T* x1 = x0 + W;
    const T* gr = gp + oh * Wo;
    T* d0 = dp + 2 * oh * W;
    T* d1 = d0 + W;
    // a multiple of B: the remainder code never runs (one call: faster than blocks of B at 224²)
    pool2x2_block<T, Mode>(x0, x1, gr, d0, d1, full);
    if (rem) {  // the last rem < B windows through a padded block (the padding's output dropped)
      std::copy(x0 + 2 * full, x0 + 2 * Wo, bx0);
      std::copy(x1 + 2 * full, x1 + 2 * Wo, bx1);
      std::copy(gr + full, gr + Wo, bg);
      pool2x2_block<T, Mode, B>(bx0, bx1, bg, bd0, bd1);
      std::copy(bd0, bd0 + 2 * rem, d0 + 2 * full);
      std::copy(bd1, bd1 + 2 * rem, d1 + 2 * full);
    }
    if (W % 2) d0[W - 1] = d1[W - 1] = T(0);  // the column no window sees
  }
  if (H % 2) std::fill(dp + (H - 1) * W, dp + H * W, T(0));  // the row no window sees
}

template <typename T>
PYDEVIS_INLINE void pool2x2_plane_body(const T* gp, const T* xp, T* dp, int64_t H, int64_t W,
                                       int mode) {
  if (mode < 0) pool2x2_plane_mode<T, -1>(gp, xp, dp, H, W);
  else if (mode == 0) pool2x2_plane_mode<T, 0>(gp, xp, dp, H, W);
  else if (mode == 1) pool2x2_plane_mode<T, 1>(gp, xp, dp, H, W);
  else pool2x2_plane_mode<T, 2>(gp, xp, dp, H, W);
}

PYDEVIS_CLONES void pool2x2_plane(const float* gp, const float* xp, float* dp, int64_t H,
                                  int64_t W, int mode) {
  pool2x2_plane_body(gp, xp, dp, H, W, mode);
}
PYDEVIS_CLONES void pool2x2_plane(const double* gp, const double* xp, double* dp, int64_t H,
                                  int64_t W, int mode) {
  pool2x2_plane_body(gp, xp, dp, H, W, mode);
}

bool is_pool2x2(const MaxPoolGeom& g) {
  return g.kH == 2 && g.kW == 2 && g.sh == 2 && g.sw == 2 && g.dh == 1 && g.dw == 1 &&
         g.pt == 0 && g.pl == 0 && g.Ho == g.H / 2 && g.Wo == g.W / 2;
}

}  // namespace

template <typename T>
void max_pool2d_backward(const T* grad_out, const T* x, T* grad_in, const MaxPoolGeom& g,
                         int rectify) {
  const int64_t HW = g.H * g.W, HoWo = g.Ho * g.Wo;
  if (is_pool2x2(g)) {
    parallel_for(g.N * g.C, 6 * HW, [&](int64_t p) {
      pool2x2_plane(grad_out + p * HoWo, x + p * HW, grad_in + p * HW, g.H, g.W, rectify);
    });
    return;
  }
  if (is_pool3x3s2(g)) {
    parallel_for(g.N * g.C, 12 * HW, [&](int64_t p) {
      maxpool3x3s2_plane(grad_out + p * HoWo, x + p * HW, grad_in + p * HW, g, rectify);
    });
    return;
  }
  const int64_t sw = g.sw, Wp = sw > 1 ? ceil_div(g.W, sw) : g.W;  // phase row length
  // Phases r >= W hold no pixel (iw = j*sw + r >= W) and no in-row tap reads them, so only
  // min(sw, W) are built: a column stride near 2^31 must not size the buffer.
  const int64_t nph = std::min(sw, g.W);
  // Per kernel column kw: the output columns [lo, hi) whose tap iw = ow*sw + off is inside the
  // row, and where tap ow reads in the phase layout: phase r, column ow + q.
  struct Col {
    int64_t lo, hi, phase_off;
  };
  std::vector<Col> cols(size_t(g.kW));
  for (int64_t kw = 0; kw < g.kW; ++kw) {
    const int64_t off = kw * g.dw - g.pl;
    const int64_t r = ((off % sw) + sw) % sw, q = (off - r) / sw;  // off = q*sw + r
    cols[kw].lo = off >= 0 ? 0 : ceil_div(-off, sw);
    cols[kw].hi = std::min(g.Wo, off >= g.W ? 0 : ceil_div(g.W - off, sw));
    if (r >= nph) cols[kw].hi = cols[kw].lo;  // already empty (its taps lie beyond W)
    cols[kw].phase_off = r * g.H * Wp + q;
  }
  std::vector<int64_t> tap_off(size_t(g.kH * g.kW));  // tap k -> its offset in the window
  for (int64_t k = 0; k < g.kH * g.kW; ++k)
    tap_off[k] = (k / g.kW) * g.dh * g.W + (k % g.kW) * g.dw;
  parallel_for(g.N * g.C, HoWo * g.kH * g.kW + HW, [&](int64_t p) {
    T* b = thread_scratch<T, 0>(size_t(g.Wo)).data();
    int32_t* t = thread_scratch<int32_t, 0>(size_t(g.Wo)).data();
    const T* xp = x + p * HW;
    const T* phases = xp;  // stride 1: the rows themselves
    if (sw > 1) {  // de-interleave once, so that every tap below reads contiguous memory
      T* ph = thread_scratch<T, 1>(size_t(nph * g.H * Wp)).data();
      for (int64_t ih = 0; ih < g.H; ++ih) {
        const T* __restrict__ row = xp + ih * g.W;
        if (sw == 2 && nph == 2) {  // the common stride: a fixed 2-way split the compiler
          T* __restrict__ d0 = ph + ih * Wp;  // vectorises (a runtime stride stays scalar:
          T* __restrict__ d1 = ph + (g.H + ih) * Wp;  // it was ~half of the kernel's time)
          const int64_t pairs = g.W / 2;
          for (int64_t j = 0; j < pairs; ++j) {
            d0[j] = row[2 * j];
            d1[j] = row[2 * j + 1];
          }
          if (g.W % 2) d0[pairs] = row[g.W - 1];
          continue;
        }
        for (int64_t r = 0; r < nph; ++r) {
          T* dst = ph + (r * g.H + ih) * Wp;
          for (int64_t j = 0, iw = r; iw < g.W; ++j, iw += sw) dst[j] = row[iw];
        }
      }
      phases = ph;
    }
    T* dst = grad_in + p * HW;
    std::fill(dst, dst + HW, T(0));
    const T* gp = grad_out + p * HoWo;
    for (int64_t oh = 0; oh < g.Ho; ++oh) {
      std::fill(b, b + g.Wo, std::numeric_limits<T>::lowest());
      std::fill(t, t + g.Wo, int32_t(-1));
      const int64_t hs = oh * g.sh - g.pt;
      for (int64_t kh = 0; kh < g.kH; ++kh) {
        const int64_t ih = hs + kh * g.dh;
        if (ih < 0 || ih >= g.H) continue;
        for (int64_t kw = 0; kw < g.kW; ++kw) {
          const Col c = cols[kw];
          const T* __restrict__ src = phases + ih * Wp + c.phase_off;
          const int32_t k = int32_t(kh * g.kW + kw);
          T* __restrict__ bb = b;
          int32_t* __restrict__ tt = t;
          for (int64_t ow = c.lo; ow < c.hi; ++ow) {  // masks, not branches: vectorised
            const T v = src[ow], cur = bb[ow];
            const int32_t take = -int32_t(v > cur);
            bb[ow] = v > cur ? v : cur;
            tt[ow] = (k & take) | (tt[ow] & ~take);
          }
        }
      }
      const T* grow = gp + oh * g.Wo;
      const int64_t origin = hs * g.W - g.pl;  // window origin of column 0 (may be < 0)
      for (int64_t ow = 0; ow < g.Wo; ++ow)
        if (t[ow] >= 0) dst[origin + ow * sw + tap_off[t[ow]]] += grow[ow];
    }
    if (rectify >= 0) rectify_span(dst, xp, HW, rectify);
  });
}

template <typename T>
void avg_pool2d_backward(const T* grad_out, T* grad_in, const PoolGeom& g) {
  const int64_t HW = g.H * g.W, HoWo = g.Ho * g.Wo;
  // A window covers at most min(kH, H) x min(kW, W) pixels (kH * kW alone could overflow).
  const int64_t window = std::min(g.kH, g.H) * std::min(g.kW, g.W);
  parallel_for(g.N * g.C, HoWo * window + HW, [&](int64_t p) {
    T* dst = grad_in + p * HW;
    std::fill(dst, dst + HW, T(0));
    const T* src = grad_out + p * HoWo;
    for (int64_t oh = 0; oh < g.Ho; ++oh) {
      const int64_t hs = oh * g.sh - g.pt, he = std::min(hs + g.kH, g.H + g.pb);
      const int64_t h0 = std::max<int64_t>(hs, 0), h1 = std::min(he, g.H);
      if (h0 >= h1) continue;
      for (int64_t ow = 0; ow < g.Wo; ++ow) {
        const int64_t ws = ow * g.sw - g.pl, we = std::min(ws + g.kW, g.W + g.pr);
        const int64_t w0 = std::max<int64_t>(ws, 0), w1 = std::min(we, g.W);
        if (w0 >= w1) continue;
        const int64_t div = g.count_include_pad ? (he - hs) * (we - ws) : (h1 - h0) * (w1 - w0);
        const T v = src[oh * g.Wo + ow] / T(div);
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) dst[h * g.W + w] += v;
      }
    }
  });
}

template <typename T>
void global_avg_pool_backward(const T* grad_out, T* grad_in, int64_t planes, int64_t HW) {
  parallel_for(planes, HW, [&](int64_t p) {
    const T v = grad_out[p] / T(HW);
    std::fill(grad_in + p * HW, grad_in + (p + 1) * HW, v);
  });
}

#define PYDEVIS_INSTANTIATE(T)                                                               \
  template void max_pool2d_backward<T>(const T*, const T*, T*, const MaxPoolGeom&, int);  \
  template void avg_pool2d_backward<T>(const T*, T*, const PoolGeom&);                     \
  template void global_avg_pool_backward<T>(const T*, T*, int64_t, int64_t);
PYDEVIS_INSTANTIATE(float)
PYDEVIS_INSTANTIATE(double)
#undef PYDEVIS_INSTANTIATE

}  // namespace pydevis::cpu
