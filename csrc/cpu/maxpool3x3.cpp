// The 3×3 stride-2 max-pool backward, a plane at a time, all vector code.
//
// Why. The general path of pool.cpp keeps a running maximum and tap number per output column
// and scatters each window's gradient one element at a time; it is compiled for the build's
// baseline ISA. On the 3×3 stride-2 pools of SqueezeNet, AlexNet and ResNet's stem it took
// 3-4× the time of its memory traffic (SqueezeNet 1.1's 64 × 111² pool at batch 1, Relu fused,
// 2 threads: 0.57 ms for 7 MB moved; this path 0.37, docs/kernels.md).
//
// Scheme. Each input row is split once into its even and odd columns, E and O, padded with
// lowest() where a window reaches past the plane (with a left padding of 1, E[0] is padding):
// the window of output column ow reads E[ow], O[ow], E[ow + 1] of its three rows. Per output
// row: (1) the switch of every window, vectorised over ow: the running maximum from lowest()
// and the tap number (a float, so that the loop is selects only) of the last tap strictly above
// it, in (kh, kw) order, as the general path; (2) for each of the three rows, its gradient's
// even and odd columns dE, dO gain g where the switch is that row's tap: dE[j] from windows j - 1
// (its third column) then j (its first), dO[j] from window j. (3) Finally each row's dE and dO
// are interleaved into grad_in, the fused Relu's backward applied in the same pass.
//
// The same bits as the general path: a pixel's terms are added from zero in the order of their
// windows (output row, then column), and adding +0 where a tap is not the switch changes no sum
// (no sum started from +0 is -0).
#include "maxpool3x3.h"

#include <algorithm>
#include <limits>

#include "../common/clones.h"
#include "../common/parallel.h"
#include "rectify.h"
#include "scratch.h"

namespace pydevis::cpu {
namespace {

constexpr int64_t kBlock = 16;  // columns: an AVX-512 vector of floats

// x[2j] -> a[j], x[2j + 1] -> b[j] (a fixed 2-way split: vectorised).
template <typename T>
PYDEVIS_INLINE void even_odd(const T* __restrict__ x, int64_t W, T* __restrict__ a,
                              T* __restrict__ b) {
  const int64_t pairs = W / 2;
  for (int64_t j = 0; j < pairs; ++j) {
    a[j] = x[2 * j];
    b[j] = x[2 * j + 1];
  }
  if (W % 2) a[pairs] = x[W - 1];
}

// The switches of n windows of one output row: ix[ow + 1] = the tap number 0..8 of window ow,
// -1: none.
template <typename T>
PYDEVIS_INLINE void switches(const T* __restrict__ e0, const T* __restrict__ o0,
                             const T* __restrict__ e1, const T* __restrict__ o1,
                             const T* __restrict__ e2, const T* __restrict__ o2, int64_t n,
                             T* __restrict__ ix) {
  const T lowest = std::numeric_limits<T>::lowest();
  for (int64_t ow = 0; ow < n; ++ow) {
    T m = lowest, k = T(-1);
    auto tap = [&](T v, T number) {
      const bool w = v > m;
      m = w ? v : m;
      k = w ? number : k;
    };
    tap(e0[ow], T(0));
    tap(o0[ow], T(1));
    tap(e0[ow + 1], T(2));
    tap(e1[ow], T(3));
    tap(o1[ow], T(4));
    tap(e1[ow + 1], T(5));
    tap(e2[ow], T(6));
    tap(o2[ow], T(7));
    tap(e2[ow + 1], T(8));
    ix[ow + 1] = k;
  }
}

// Row kh of the windows of one output row adds its gradient to columns j < n: taps 3kh,
// 3kh + 1, 3kh + 2.
template <typename T>
PYDEVIS_INLINE void route(const T* __restrict__ ix, const T* __restrict__ gq, int64_t n, T kh,
                          T* __restrict__ de, T* __restrict__ dod) {
  const T k0 = 3 * kh, k1 = k0 + 1, k2 = k0 + 2;
  for (int64_t j = 0; j < n; ++j) {  // window j - 1's third column, then window j's first
    const T third = ix[j] == k2 ? gq[j] : T(0);
    const T first = ix[j + 1] == k0 ? gq[j + 1] : T(0);
    de[j] = (de[j] + third) + first;
  }
  for (int64_t j = 0; j < n; ++j) dod[j] = dod[j] + (ix[j + 1] == k1 ? gq[j + 1] : T(0));
}

// d[2j] = a[j], d[2j + 1] = b[j] for j < n, then the fused Relu backward (Mode >= 0) with
// y = x, whose columns 2j and 2j + 1 are ya[j] and yb[j] (the phase rows: already split, and in
// cache).
template <typename T, int Mode>
PYDEVIS_INLINE void interleave(const T* __restrict__ a, const T* __restrict__ b,
                               const T* __restrict__ ya, const T* __restrict__ yb, int64_t n,
                               T* __restrict__ d) {
  const T hi = std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < n; ++j) {
    T va = a[j], vb = b[j];
    if constexpr (Mode >= 0) {
      va = rectified<T, Mode>(va, ya[j], T(0), hi);
      vb = rectified<T, Mode>(vb, yb[j], T(0), hi);
    }
    d[2 * j] = va;
    d[2 * j + 1] = vb;
  }
}

// A grad_in row of W columns from its phases: whole blocks of kBlock pairs in place, the rest
// (and an odd W's last column, a[W / 2]) through a block in `tail` (GCC's scalar remainder
// branched on each y: mispredicted on a Relu's output, 3-4 µs per 111² plane).
template <typename T, int Mode>
PYDEVIS_INLINE void unsplit_row(const T* a, const T* b, const T* ya, const T* yb, int64_t W,
                                T* d, T* tail) {
  const int64_t full = W / 2 / kBlock * kBlock;
  interleave<T, Mode>(a, b, ya, yb, full, d);
  if (2 * full == W) return;
  interleave<T, Mode>(a + full, b + full, ya + full, yb + full, kBlock, tail);
  std::copy_n(tail, W - 2 * full, d + 2 * full);
}

template <typename T, int Mode>
PYDEVIS_INLINE void plane_mode(const T* gp, const T* xp, T* dp, const MaxPoolGeom& g) {
  const T lowest = std::numeric_limits<T>::lowest();
  const int64_t H = g.H, W = g.W, Ho = g.Ho, Wo = g.Wo, pl = g.pl;
  // A phase row: E and O hold columns j <= Wo (the windows' reach) and the plane's own ones.
  // The loops over a row run over whole blocks of kBlock columns (GCC's scalar remainder of a
  // runtime count was branchy): the extra windows' grad_out is 0, so what they route adds +0.
  const int64_t Lc = ceil_div(std::max(Wo + 1, (W + 1) / 2 + 1), kBlock) * kBlock;
  const int64_t L = Lc + kBlock;
  T* buf = thread_scratch<T, 3>(size_t(4 * H * L + 3 * L + 2 * kBlock)).data();
  T* E = buf;           // H rows of L: the even-column phase of x (padded with lowest)
  T* O = E + H * L;     // odd
  T* dE = O + H * L;    // the gradient's even columns
  T* dO = dE + H * L;   // odd
  T* low = dO + H * L;  // a row of lowest(): a window row in the padding
  T* ix = low + L;      // the switches of an output row (ix[0]: none)
  T* gq = ix + L;       // its grad_out row, 0 at both ends
  T* tail = gq + L;     // the last block of a grad_in row
  std::fill(low, low + L, lowest);
  std::fill(dE, dE + 2 * H * L, T(0));
  // Written by even_odd: pl 0: E[0, ceil(W/2)), O[0, floor(W/2)); pl 1: O[0, ceil(W/2)),
  // E[1, floor(W/2) + 1). The rest is padding.
  const int64_t e0 = pl, e1 = pl == 0 ? (W + 1) / 2 : W / 2 + 1, o1 = pl == 0 ? W / 2 : (W + 1) / 2;
  for (int64_t ih = 0; ih < H; ++ih) {
    T* e = E + ih * L;
    T* o = O + ih * L;
    if (pl == 0) even_odd(xp + ih * W, W, e, o);
    else even_odd(xp + ih * W, W, o, e + 1);
    std::fill(e, e + e0, lowest);
    std::fill(e + e1, e + L, lowest);
    std::fill(o + o1, o + L, lowest);
  }
  ix[0] = T(-1);
  std::fill(gq, gq + L, T(0));
  for (int64_t oh = 0; oh < Ho; ++oh) {
    const T* er[3];
    const T* orr[3];
    for (int64_t kh = 0; kh < 3; ++kh) {
      const int64_t ih = 2 * oh - g.pt + kh;
      const bool in = ih >= 0 && ih < H;
      er[kh] = in ? E + ih * L : low;
      orr[kh] = in ? O + ih * L : low;
    }
    switches(er[0], orr[0], er[1], orr[1], er[2], orr[2], Lc, ix);
    std::copy_n(gp + oh * Wo, Wo, gq + 1);
    for (int64_t kh = 0; kh < 3; ++kh) {
      const int64_t ih = 2 * oh - g.pt + kh;
      if (ih >= 0 && ih < H) route(ix, gq, Lc, T(kh), dE + ih * L, dO + ih * L);
    }
  }
  for (int64_t ih = 0; ih < H; ++ih) {
    const T* de = dE + ih * L;
    const T* dod = dO + ih * L;
    const T* e = E + ih * L;
    const T* o = O + ih * L;
    if (pl == 0) unsplit_row<T, Mode>(de, dod, e, o, W, dp + ih * W, tail);
    else unsplit_row<T, Mode>(dod, de + 1, o, e + 1, W, dp + ih * W, tail);
  }
}

template <typename T>
PYDEVIS_INLINE void plane_body(const T* gp, const T* xp, T* dp, const MaxPoolGeom& g, int mode) {
  if (mode < 0) plane_mode<T, -1>(gp, xp, dp, g);
  else if (mode == 0) plane_mode<T, 0>(gp, xp, dp, g);
  else if (mode == 1) plane_mode<T, 1>(gp, xp, dp, g);
  else plane_mode<T, 2>(gp, xp, dp, g);
}

}  // namespace

bool is_pool3x3s2(const MaxPoolGeom& g) {
  return g.kH == 3 && g.kW == 3 && g.sh == 2 && g.sw == 2 && g.dh == 1 && g.dw == 1 &&
         (g.pt == 0 || g.pt == 1) && (g.pl == 0 || g.pl == 1) && g.Ho > 0 && g.Wo > 0;
}

PYDEVIS_CLONES void maxpool3x3s2_plane(const float* gp, const float* xp, float* dp,
                                       const MaxPoolGeom& g, int mode) {
  plane_body(gp, xp, dp, g, mode);
}
PYDEVIS_CLONES void maxpool3x3s2_plane(const double* gp, const double* xp, double* dp,
                                       const MaxPoolGeom& g, int mode) {
  plane_body(gp, xp, dp, g, mode);
}

}  // namespace pydevis::cpu
