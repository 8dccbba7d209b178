// conv2d_backward_data for depthwise convs (Cg == Mg == 1: MobileNet's 3×3 and 5×5 layers).
//
// Gather form. Split grad_in by the phase (rh, rw) of its pixel
// (ih = rh + sh·a, iw = rw + sw·b): the taps that reach a phase are the (kh, kw) with
// rh + pt − kh·dh ≡ 0 (mod sh) and rw + pl − kw·dw ≡ 0 (mod sw), and each reads G at the
// constant shift (a + δh, b + δw). With G copied into a zero-padded plane Gp of row length Wp,
// a phase is then Z[i] = Σ_t W_t · Gp[i + off_t] over the flat index i = a·Wp + b: one long
// vectorised loop of loads and multiply-adds, every output written once (the columns b ≥ the
// phase's width are computed and dropped). Z is then copied (interleaved when sw > 1) into
// grad_in. Against the former scatter (nine read-modify-write passes of each plane, strided
// stores when sw > 1): see docs/kernels.md.
//
// Parallel scheme: the thread pool over the N·C planes, each with this thread's Gp and Z
// (thread_local, reused across calls); the per-plane work, the fused rectifier's included, is
// compiled for AVX-512, AVX2 and the baseline and the widest the CPU has runs (clones.h).
#include "depthwise.h"

#include <algorithm>
#include <vector>

#include "../common/clones.h"
#include "../common/parallel.h"
#include "col2im.h"
#include "scratch.h"

namespace pydevis::cpu {
namespace depthwise_detail {

// dst (one input plane, H × W) += scatter of one col row restricted to output rows [oh0, oh1).
template <typename T>
inline void scatter_row(const T* row, int64_t oh0, int64_t oh1, T* dst, const ConvGeom& g,
                        int64_t kh, int64_t kw, T scale) {
  const Span sw = valid_span(g.Wo, g.W, g.sw, kw * g.dw - g.pl);
  if (sw.lo >= sw.hi) return;
  const int64_t off = kw * g.dw - g.pl;
  for (int64_t oh = oh0; oh < oh1; ++oh) {
    const int64_t ih = oh * g.sh - g.pt + kh * g.dh;
    if (ih < 0 || ih >= g.H) continue;
    const T* __restrict__ src = row + (oh - oh0) * g.Wo;
    T* __restrict__ d = dst + ih * g.W + off;
    if (g.sw == 1) {
      for (int64_t ow = sw.lo; ow < sw.hi; ++ow) d[ow] += scale * src[ow];
    } else {
      for (int64_t ow = sw.lo; ow < sw.hi; ++ow) d[ow * g.sw] += scale * src[ow];
    }
  }
}

constexpr int64_t kRowForm = 24;
// A flat sum runs over a multiple of kFlatRound elements (whole AVX-512 vectors of float, two
// of double), the extra ones computed from Gp's zero slack into Z's and dropped: on small
// planes (7², 14²) the loop's scalar remainder cost as much as its vector body.
constexpr int64_t kFlatRound = 16;
inline int64_t flat_size(int64_t n) { return ceil_div(n, kFlatRound) * kFlatRound; }
// A fused rectifier runs over each grad_in row right after it is written when rows are this
// wide (a 112² plane is 50 KB: by the plane's end its first rows have left L1), else over the
// whole plane after it (rows of 7-56 as separate calls cost 1.7-3x more than one pass).
constexpr int64_t kRowRectify = 64;
struct DepthwisePlan {
  struct Phase {
    int64_t rh, rw, Ha, Jb;       // first pixel, rows and columns of the phase
    std::vector<int64_t> w, off;  // taps: weight index kh·kW + kw, offset into Gp
  };
  std::vector<Phase> phases;
  int64_t A0 = 0, B0 = 0, Wp = 1, rows = 1;  // Gp row r, column k hold G[A0 + r, B0 + k]
  int64_t zmax = 0;                          // the largest phase, Ha · Wp

  explicit DepthwisePlan(const ConvGeom& g) {
    struct Raw { int64_t rh, rw, Ha, Jb; std::vector<int64_t> kh, dh, kw, dw; };
    std::vector<Raw> raw;
    int64_t A1 = 1, B1 = 1;
    auto shifts = [](int64_t r, int64_t p, int64_t k, int64_t d, int64_t s,
                     std::vector<int64_t>& ks, std::vector<int64_t>& ds) {
      for (int64_t i = 0; i < k; ++i) {
        const int64_t u = r + p - i * d, m = ((u % s) + s) % s;
        if (m == 0) ks.push_back(i), ds.push_back((u - m) / s);
      }
    };
    for (int64_t rh = 0; rh < std::min(g.sh, g.H); ++rh)
      for (int64_t rw = 0; rw < std::min(g.sw, g.W); ++rw) {
        Raw p{rh, rw, ceil_div(g.H - rh, g.sh), ceil_div(g.W - rw, g.sw), {}, {}, {}, {}};
        shifts(rh, g.pt, g.kH, g.dh, g.sh, p.kh, p.dh);
        shifts(rw, g.pl, g.kW, g.dw, g.sw, p.kw, p.dw);
        for (int64_t d : p.dh) A0 = std::min(A0, d), A1 = std::max(A1, p.Ha - 1 + d + 1);
        for (int64_t d : p.dw) B0 = std::min(B0, d), B1 = std::max(B1, p.Jb - 1 + d + 1);
        raw.push_back(std::move(p));
      }
    A1 = std::max(A1, g.Ho), B1 = std::max(B1, g.Wo);
    Wp = B1 - B0, rows = A1 - A0;
    for (Raw& r : raw) {
      Phase p{r.rh, r.rw, r.Ha, r.Jb, {}, {}};
      for (size_t i = 0; i < r.kh.size(); ++i)
        for (size_t j = 0; j < r.kw.size(); ++j) {
          p.w.push_back(r.kh[i] * g.kW + r.kw[j]);
          p.off.push_back((r.dh[i] - A0) * Wp + (r.dw[j] - B0));
        }
      zmax = std::max(zmax, flat_size(p.Ha * Wp));
      phases.push_back(std::move(p));
    }
  }
  // Gp's length: its rows, plus one row of slack for the dropped columns of the last row and
  // kFlatRound for the rounded-up length of the flat sums.
  int64_t gp_size() const { return (rows + 1) * Wp + kFlatRound; }
};

// z[i] (=, or += with Acc) Σ_{t<K} w[t]·src[i + off[t]] over i in [0, n).
template <typename T, int K, bool Acc>
PYDEVIS_INLINE void sum_taps(T* __restrict__ z, const T* __restrict__ src, const int64_t* off,
                     const T* w, int64_t n) {
  const T* s[K];
  T c[K];
  for (int t = 0; t < K; ++t) s[t] = src + off[t], c[t] = w[t];
#pragma GCC ivdep
  for (int64_t i = 0; i < n; ++i) {
    T acc = Acc ? z[i] : T(0);
    for (int t = 0; t < K; ++t) acc += c[t] * s[t][i];
    z[i] = acc;
  }
}

template <typename T, bool Acc>
PYDEVIS_INLINE void sum_taps_k(T* z, const T* src, const int64_t* off, const T* w, int64_t k,
                               int64_t n) {
  switch (k) {
    case 1: return sum_taps<T, 1, Acc>(z, src, off, w, n);
    case 2: return sum_taps<T, 2, Acc>(z, src, off, w, n);
    case 3: return sum_taps<T, 3, Acc>(z, src, off, w, n);
    case 4: return sum_taps<T, 4, Acc>(z, src, off, w, n);
    case 5: return sum_taps<T, 5, Acc>(z, src, off, w, n);
    case 6: return sum_taps<T, 6, Acc>(z, src, off, w, n);
    case 7: return sum_taps<T, 7, Acc>(z, src, off, w, n);
    case 8: return sum_taps<T, 8, Acc>(z, src, off, w, n);
    default: return sum_taps<T, 9, Acc>(z, src, off, w, n);
  }
}

// z[0, n) = the phase's taps over src (weights wc, this channel's kH·kW), nine at a time.
template <typename T>
PYDEVIS_INLINE void phase_sum(T* z, const T* src, const DepthwisePlan::Phase& ph, const T* wc,
                              int64_t n) {
  const int64_t k = int64_t(ph.w.size());
  if (k == 0) std::fill(z, z + n, T(0));
  T wv[9];
  for (int64_t t0 = 0; t0 < k; t0 += 9) {
    const int64_t kk = std::min<int64_t>(9, k - t0);
    for (int64_t t = 0; t < kk; ++t) wv[t] = wc[ph.w[size_t(t0 + t)]];
    if (t0 == 0) sum_taps_k<T, false>(z, src, ph.off.data() + t0, wv, kk, n);
    else sum_taps_k<T, true>(z, src, ph.off.data() + t0, wv, kk, n);
  }
}

// Gp = the plane G (Ho × Wo) inside zeros, as the plan lays it out. Short rows (the 7² and 14²
// planes) are written element by element: there, a memset and a memcpy call per row cost more
// than the plane's taps.
template <typename T>
PYDEVIS_INLINE void pad_plane(const T* G, T* Gp, const DepthwisePlan& plan,
                              const ConvGeom& g) {
  const int64_t top = -plan.A0, left = -plan.B0, right = plan.Wp - left - g.Wo;
  std::fill(Gp, Gp + top * plan.Wp, T(0));
  for (int64_t oh = 0; oh < g.Ho; ++oh) {
    T* row = Gp + (top + oh) * plan.Wp;
    const T* src = G + oh * g.Wo;
    if (plan.Wp < kRowForm) {
      for (int64_t k = 0; k < plan.Wp; ++k)
        row[k] = k >= left && k < left + g.Wo ? src[k - left] : T(0);
      continue;
    }
    std::fill(row, row + left, T(0));
    std::copy_n(src, g.Wo, row + left);
    std::fill(row + left + g.Wo, row + left + g.Wo + right, T(0));
  }
  std::fill(Gp + (top + g.Ho) * plan.Wp, Gp + plan.gp_size(), T(0));
}

// Every phase computed flat into Z (one plan.zmax slot each), then grad_in written row by row
// in order (a single sequential stream), each row interleaving its row phase's prw = min(sw, W)
// phase rows (phase q = rh·prw + rw).
template <typename T>
PYDEVIS_INLINE void flat_phases(const T* Gp, T* Z, T* dst, const T* wc,
                                const DepthwisePlan& plan, int64_t prw, const ConvGeom& g,
                                const FusedRelu<T>& relu) {
  const int64_t nph = int64_t(plan.phases.size());
  for (int64_t q = 0; q < nph; ++q) {
    const DepthwisePlan::Phase& ph = plan.phases[size_t(q)];
    phase_sum(Z + q * plan.zmax, Gp, ph, wc, flat_size(ph.Ha * plan.Wp));
  }
  for (int64_t ih = 0; ih < g.H; ++ih) {
    T* __restrict__ o = dst + ih * g.W;
    const T* __restrict__ z0 = Z + (ih % g.sh) * prw * plan.zmax + (ih / g.sh) * plan.Wp;
    if (prw == 1) {
      std::copy_n(z0, g.W, o);
    } else if (prw == 2) {  // interleave two phase rows (vectorises)
      const T* __restrict__ z1 = z0 + plan.zmax;
      const int64_t half = g.W / 2;
      for (int64_t b = 0; b < half; ++b) o[2 * b] = z0[b], o[2 * b + 1] = z1[b];
      if (g.W % 2) o[g.W - 1] = z0[half];
    } else {
      for (int64_t rw = 0; rw < prw; ++rw) {
        const T* zr = z0 + rw * plan.zmax;
        for (int64_t b = 0; rw + b * g.sw < g.W; ++b) o[rw + b * g.sw] = zr[b];
      }
    }
    if (g.W >= kRowRectify) relu.apply(o, ih * g.W, g.W);
  }
}

// One plane p of the N·C: Gp and Z are this thread's scratch (gp_size and zmax per phase).
template <typename T>
PYDEVIS_INLINE void plane_body(const T* G, const T* wc, T* dst, T* Gp, T* Z,
                               const DepthwisePlan& plan, const ConvGeom& g,
                               const FusedRelu<T>& relu) {
  pad_plane(G, Gp, plan, g);
  const int64_t prw = std::min(g.sw, g.W);
  if (prw == 1 && g.W >= kRowForm) {  // sw = 1 and wide rows: each grad_in row from Gp's rows
    for (const DepthwisePlan::Phase& ph : plan.phases)
      for (int64_t a = 0; a < ph.Ha; ++a) {
        const int64_t at = (ph.rh + a * g.sh) * g.W;
        phase_sum(dst + at, Gp + a * plan.Wp, ph, wc, g.W);
        if (g.W >= kRowRectify) relu.apply(dst + at, at, g.W);
      }
  } else {
    flat_phases(Gp, Z, dst, wc, plan, prw, g, relu);
  }
  if (g.W < kRowRectify) relu.apply(dst, 0, g.H * g.W);  // short rows: the plane at once
}

}  // namespace depthwise_detail

// The widest vector code the CPU has, chosen at load time (clones.h).
PYDEVIS_CLONES void depthwise_plane(const float* G, const float* wc, float* dst, float* Gp,
                                    float* Z, const depthwise_detail::DepthwisePlan& plan,
                                    const ConvGeom& g,
                                    const FusedRelu<float>& relu) {
  depthwise_detail::plane_body(G, wc, dst, Gp, Z, plan, g, relu);
}
PYDEVIS_CLONES void depthwise_plane(const double* G, const double* wc, double* dst, double* Gp,
                                    double* Z, const depthwise_detail::DepthwisePlan& plan,
                                    const ConvGeom& g,
                                    const FusedRelu<double>& relu) {
  depthwise_detail::plane_body(G, wc, dst, Gp, Z, plan, g, relu);
}

namespace depthwise_detail {

// The former scatter form: zero each plane, then add each tap's G plane into it (nine
// read-modify-write passes for a 3×3). Kept for the geometries whose phases or padded plane
// would be large (strides above 4, dilations far beyond the plane).
template <typename T>
void depthwise_scatter(const T* grad_out, const T* weight, T* grad_in, const ConvGeom& g,
                       const FusedRelu<T>& relu) {
  const int64_t planes = g.N * g.C, HW = g.H * g.W, HoWo = g.Ho * g.Wo;
  parallel_for(planes, HoWo * g.kH * g.kW + HW, [&](int64_t p) {
    const int64_t c = p % g.C;
    T* dst = grad_in + p * HW;
    std::fill(dst, dst + HW, T(0));
    for (int64_t kh = 0; kh < g.kH; ++kh)
      for (int64_t kw = 0; kw < g.kW; ++kw)
        scatter_row(grad_out + p * HoWo, 0, g.Ho, dst, g, kh, kw,
                    weight[(c * g.kH + kh) * g.kW + kw]);
    relu.apply(dst, p * HW, HW);
  });
}

}  // namespace depthwise_detail

template <typename T>
void depthwise_backward_data(const T* grad_out, const T* weight, T* grad_in, const ConvGeom& g,
                             const FusedRelu<T>& relu) {
  using namespace depthwise_detail;
  const int64_t planes = g.N * g.C, HW = g.H * g.W, HoWo = g.Ho * g.Wo;
  if (g.sh > 4 || g.sw > 4 || g.kH * g.dh > 4 * g.H + 8 || g.kW * g.dw > 4 * g.W + 8)
    return depthwise_scatter(grad_out, weight, grad_in, g, relu);
  const DepthwisePlan plan(g);
  parallel_for(planes, HoWo * g.kH * g.kW + HW, [&](int64_t p) {
    T* Gp = thread_scratch<T, 0>(size_t(plan.gp_size())).data();
    T* Z = thread_scratch<T, 1>(size_t(plan.zmax * int64_t(plan.phases.size()))).data();
    T* dst = grad_in + p * HW;
    // the plane's rectifier: its y from this plane on, applied in the plane's vector code
    const FusedRelu<T> pr{relu.y == nullptr ? nullptr : relu.y + p * HW, relu.mode, relu.lo,
                          relu.hi};
    depthwise_plane(grad_out + p * HoWo, weight + (p % g.C) * g.kH * g.kW, dst, Gp, Z, plan, g,
                    pr);
  });
}

template void depthwise_backward_data<float>(const float*, const float*, float*, const ConvGeom&,
                                             const FusedRelu<float>&);
template void depthwise_backward_data<double>(const double*, const double*, double*,
                                              const ConvGeom&, const FusedRelu<double>&);

}  // namespace pydevis::cpu
