// Ascent kernels: the per-step work of activation maximization outside the backward pass
// (docs/kernels.md, "Ascent kernels"; the oracle is pydevis/kernels/_reference.py).
//
// Everything is computed in double and rounded once to T, in numpy's order of operations, so
// ascent_update, clip_small_* and clamp_channels give the reference's values bit for bit (the
// translation unit is built with -ffp-contract=off: no fused multiply-adds; and with
// -fno-trapping-math -fno-math-errno, which change no value but let the selects and square roots
// vectorize):
//  - ascent_update: (v + eta[n] * g) * (1 - decay), the product first (eta is a float64 scalar);
//  - scores: sum over c in order c = 0, 1, ... (numpy's reduction over the outer axis), then
//    sqrt (norm) or abs (contribution);
//  - percentile, numpy's "linear" method: i = (n - 1) * (pct / 100), a = s[floor(i)],
//    b = s[floor(i) + 1] of the sorted scores, gamma = i - floor(i); for i >= n - 1 both are the
//    last element and gamma = i + 1 (numpy's index -1); thr = a + (b - a) * gamma, or
//    b - (b - a) * (1 - gamma) when gamma >= 0.5; any NaN score makes thr NaN (nothing zeroed);
//  - clamp: np.maximum / np.minimum, which propagate NaN from either side.
// gaussian_blur follows the reference's order too (weights normalised by numpy's pairwise sum),
// but its weights come from std::exp where numpy has its own exp: equal to within an ulp or so.
// ascent_step runs the update, blur, clips and clamp above in two stages, with the same helpers
// (so the same roundings): the composition of the five kernels bit for bit.
#include <algorithm>
#include <cmath>
#include <vector>

#include "../common/parallel.h"
#include "kernels.h"
#include "scratch.h"

namespace pydevis::cpu {

namespace {

// scipy.ndimage "reflect" (half-sample symmetric) index of any integer i into [0, n).
inline int64_t reflect(int64_t i, int64_t n) {
  if (n == 1) return 0;
  const int64_t period = 2 * n;
  i %= period;
  if (i < 0) i += period;
  return i < n ? i : period - 1 - i;
}

// numpy.percentile(s, pct) (method "linear") of n > 0 scores; s is reordered.
double percentile(double* s, int64_t n, double pct) {
  for (int64_t i = 0; i < n; ++i)
    if (std::isnan(s[i])) return NAN;
  const double virt = double(n - 1) * (pct / 100.0);
  int64_t prev = int64_t(std::floor(virt));
  double gamma = virt - double(prev);
  if (virt >= double(n - 1)) {
    prev = n - 1;
    gamma = virt + 1.0;
  }
  std::nth_element(s, s + prev, s + n);
  const double a = s[prev];
  const double b = prev + 1 < n ? *std::min_element(s + prev + 1, s + n) : a;
  const double diff = b - a;
  return gamma >= 0.5 ? b - diff * (1.0 - gamma) : a + diff * gamma;
}

// One element of ascent_update: (v + e * g) * keep, in double, rounded once.
template <typename T>
inline T updated(T v, T g, double e, double keep) {
  const double step = e * double(g);
  const double moved = double(v) + step;
  return T(moved * keep);
}

// clamp_channels of the values x(i), i in [0, n), of one channel into d:
// np.minimum(np.maximum(x, lo), hi), NaN when any of the three is NaN. The bounds are checked
// once and the loop is selects only, which vectorize (with -fno-trapping-math, see CMakeLists).
template <typename T, typename X>
void clamp_run(T* d, int64_t n, double lo, double hi, X x) {
  if (std::isnan(lo) || std::isnan(hi)) {
    std::fill(d, d + n, T(NAN));
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const double xi = x(i);
    const double m = xi >= lo ? xi : lo;
    const double c = m <= hi ? m : hi;
    d[i] = T(xi != xi ? NAN : c);
  }
}

// f(p, i0, i1) for every chunk [i0, i1) of 2^14 elements of each of `rows` rows of `len`, split
// over the team (a single image still spreads over the threads).
template <typename F>
void for_chunks(int64_t rows, int64_t len, F&& f) {
  constexpr int64_t kChunk = 1 << 14;
  const int64_t chunks = ceil_div(len, kChunk);
  parallel_for(rows * chunks, kChunk, [&](int64_t t) {
    const int64_t p = t / chunks, i0 = (t % chunks) * kChunk;
    f(p, i0, std::min(len, i0 + kChunk));
  });
}

// The pixels a clip zeroes: those whose score is below thr (none when score is null).
struct Cut {
  const double* score = nullptr;
  double thr = 0.0;
};

// The last pass of ascent_step over one image (C planes of HW), in place: the pixels zero(i)
// says are zeroed, then every value clamped.
template <typename T, typename Zero>
void zero_and_clamp(T* v, int64_t C, int64_t HW, const double* lo, const double* hi, Zero zero) {
  for (int64_t c = 0; c < C; ++c) {
    T* d = v + c * HW;
    clamp_run(d, HW, lo[c], hi[c], [=](int64_t i) {
      const double x = double(d[i]);
      return zero(i) ? 0.0 : x;
    });
  }
}

// The scores of one image (C planes of HW) into score: sqrt(sum_c v²) when g is null, else
// |sum_c g * -v|; a pixel that `prior` zeroes counts as 0. Summed over c in order, a plane at a
// time (one loop per case, so that each vectorizes).
template <typename T>
void pixel_scores(const T* v, const T* g, Cut prior, int64_t C, int64_t HW, double* score) {
  std::fill(score, score + HW, 0.0);
  const double *ps = prior.score, pt = prior.thr;
  for (int64_t c = 0; c < C; ++c) {
    const T* vc = v + c * HW;
    const T* gc = g ? g + c * HW : nullptr;
    if (!g) {
      for (int64_t i = 0; i < HW; ++i) {
        const double x = double(vc[i]);
        score[i] += x * x;
      }
    } else if (!ps) {
      for (int64_t i = 0; i < HW; ++i) score[i] += double(gc[i]) * -double(vc[i]);
    } else {
      for (int64_t i = 0; i < HW; ++i) {
        const double x = double(vc[i]);
        score[i] += double(gc[i]) * -(ps[i] < pt ? 0.0 : x);
      }
    }
  }
  if (g) {
    for (int64_t i = 0; i < HW; ++i) score[i] = std::fabs(score[i]);
  } else {
    for (int64_t i = 0; i < HW; ++i) score[i] = std::sqrt(score[i]);
  }
}

// The cut at the pct-th percentile of n scores (sorted: scratch for a copy of them).
Cut percentile_cut(const double* score, double* sorted, int64_t n, double pct) {
  std::copy(score, score + n, sorted);
  return {score, n > 0 ? percentile(sorted, n, pct) : 0.0};
}

// Gaussian blur of one H × W plane with the 2r + 1 weights w, reflect boundary: load(y, line)
// writes row y of the source as doubles into line[0, W), store(y, acc) takes row y of the result.
// Along W into an H × W buffer, then along H, every tap accumulated in double in order.
template <typename Load, typename Store>
void blur_plane(Load&& load, Store&& store, int64_t H, int64_t W, const double* w, int64_t r) {
  if (H == 0 || W == 0) return;  // (reflect() into an empty row would divide by zero)
  const int64_t HW = H * W, taps = 2 * r + 1;
  // A reflected copy of each row lets the horizontal taps run without index arithmetic, unless
  // the radius makes it unreasonably long.
  const bool padded = W + 2 * r <= (int64_t(1) << 22);
  std::vector<double>& buf = thread_scratch<double>(size_t(HW + 2 * W + (padded ? 2 * r : 0)));
  double* tmp = buf.data();             // horizontal pass, H × W
  double* acc = tmp + HW;               // one output row
  double* row = acc + W;                // the reflected input row (padded mode)
  double* line = padded ? row + r : row;  // the input row
  for (int64_t y = 0; y < H; ++y) {
    double* t = tmp + y * W;
    std::fill(t, t + W, 0.0);
    load(y, line);
    if (padded) {
      for (int64_t i = 0; i < r; ++i) row[i] = line[reflect(i - r, W)];
      for (int64_t i = W + r; i < W + 2 * r; ++i) row[i] = line[reflect(i - r, W)];
      for (int64_t k = 0; k < taps; ++k)
        for (int64_t x = 0; x < W; ++x) t[x] += w[k] * row[x + k];
    } else {
      for (int64_t k = 0; k < taps; ++k)
        for (int64_t x = 0; x < W; ++x) t[x] += w[k] * line[reflect(x + k - r, W)];
    }
  }
  for (int64_t y = 0; y < H; ++y) {
    std::fill(acc, acc + W, 0.0);
    for (int64_t k = 0; k < taps; ++k) {
      const double* t = tmp + reflect(y + k - r, H) * W;
      for (int64_t x = 0; x < W; ++x) acc[x] += w[k] * t[x];
    }
    store(y, acc);
  }
}

}  // namespace

template <typename T>
void ascent_update(const T* v, const T* g, const double* eta, T* out, int64_t N,
                   int64_t per_image, double decay) {
  const double keep = 1.0 - decay;
  for_chunks(N, per_image, [&](int64_t n, int64_t i0, int64_t i1) {
    const double e = eta[n];
    const int64_t base = n * per_image;
    for (int64_t i = base + i0; i < base + i1; ++i) out[i] = updated(v[i], g[i], e, keep);
  });
}

template <typename T>
void gaussian_blur(const T* v, T* out, int64_t planes, int64_t H, int64_t W,
                   const double* w, int64_t r) {
  const int64_t HW = H * W;
  parallel_for(planes, HW * (2 * r + 1) * 2, [&](int64_t p) {
    const T* src = v + p * HW;
    T* dst = out + p * HW;
    blur_plane(
        [=](int64_t y, double* line) {
          for (int64_t x = 0; x < W; ++x) line[x] = double(src[y * W + x]);
        },
        [=](int64_t y, const double* acc) {
          for (int64_t x = 0; x < W; ++x) dst[y * W + x] = T(acc[x]);
        },
        H, W, w, r);
  });
}

template <typename T>
void clip_small(const T* v, const T* g, T* out, int64_t N, int64_t C, int64_t HW, double pct) {
  parallel_for(N, C * HW * 4, [&](int64_t n) {
    std::vector<double>& buf = thread_scratch<double>(size_t(2 * HW));
    const T* vn = v + n * C * HW;
    pixel_scores(vn, g ? g + n * C * HW : nullptr, Cut{}, C, HW, buf.data());
    const Cut cut = percentile_cut(buf.data(), buf.data() + HW, HW, pct);
    const double* score = cut.score;
    T* on = out + n * C * HW;
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < HW; ++i) {
        const T x = vn[c * HW + i];  // loaded either way: the select vectorizes
        on[c * HW + i] = score[i] < cut.thr ? T(0) : x;
      }
  });
}

template <typename T>
void clamp_channels(const T* v, const double* lo, const double* hi, T* out, int64_t N, int64_t C,
                    int64_t HW) {
  parallel_for(N * C, HW, [&](int64_t p) {
    const T* s = v + p * HW;
    clamp_run(out + p * HW, HW, lo[p % C], hi[p % C], [=](int64_t i) { return double(s[i]); });
  });
}

template <typename T>
void ascent_step(const T* v, const T* g, T* out, int64_t N, int64_t C, int64_t H, int64_t W,
                 const AscentStep& a) {
  const int64_t HW = H * W;
  const double keep = 1.0 - a.decay;
  const bool clip = a.norm_pct > 0 || a.contrib_pct > 0;  // else the clamp joins stage 1
  // Stage 1, per (n, c) plane: the update, blurred (the blur loads the updated rows, rounded to
  // T as ascent_update's output is), clamped unless a clip comes first.
  if (a.blur_w) {
    parallel_for(N * C, HW * (2 * a.blur_r + 1) * 2, [&](int64_t p) {
      const double e = a.eta[p / C], lo = a.lo[p % C], hi = a.hi[p % C];
      const T* vp = v + p * HW;
      const T* gp = g + p * HW;
      T* dst = out + p * HW;
      blur_plane(
          [=](int64_t y, double* line) {
            for (int64_t x = 0; x < W; ++x)
              line[x] = double(updated(vp[y * W + x], gp[y * W + x], e, keep));
          },
          [=](int64_t y, const double* acc) {
            T* d = dst + y * W;
            for (int64_t x = 0; x < W; ++x) d[x] = T(acc[x]);
            if (!clip) clamp_run(d, W, lo, hi, [=](int64_t x) { return double(d[x]); });
          },
          H, W, a.blur_w, a.blur_r);
    });
  } else {
    for_chunks(N * C, HW, [&](int64_t p, int64_t i0, int64_t i1) {
      const double e = a.eta[p / C];
      const T* vp = v + p * HW + i0;
      const T* gp = g + p * HW + i0;
      T* d = out + p * HW + i0;
      for (int64_t i = 0; i < i1 - i0; ++i) d[i] = updated(vp[i], gp[i], e, keep);
      if (!clip)  // on the chunk while it is in cache (two loops: each vectorizes better)
        clamp_run(d, i1 - i0, a.lo[p % C], a.hi[p % C], [=](int64_t i) { return double(d[i]); });
    });
  }
  if (!clip) return;
  // Stage 2, per image, in place: the norm scores and their cut, the contribution scores of the
  // image the norm clip leaves and their cut, then one pass that zeroes and clamps.
  parallel_for(N, C * HW * 6, [&](int64_t n) {
    std::vector<double>& buf = thread_scratch<double>(size_t(3 * HW));
    double* sorted = buf.data() + 2 * HW;
    T* on = out + n * C * HW;
    Cut by_norm, by_contrib;
    if (a.norm_pct > 0) {
      pixel_scores<T>(on, nullptr, Cut{}, C, HW, buf.data());
      by_norm = percentile_cut(buf.data(), sorted, HW, a.norm_pct);
    }
    if (a.contrib_pct > 0) {
      pixel_scores(on, g + n * C * HW, by_norm, C, HW, buf.data() + HW);
      by_contrib = percentile_cut(buf.data() + HW, sorted, HW, a.contrib_pct);
    }
    // (one loop per case, no test of a switched-off cut inside, and the cuts captured by value:
    // so that it vectorizes)
    const double *ns = by_norm.score, *cs = by_contrib.score;
    const double nt = by_norm.thr, ct = by_contrib.thr;
    if (ns && cs) {
      zero_and_clamp(on, C, HW, a.lo, a.hi, [=](int64_t i) { return (ns[i] < nt) | (cs[i] < ct); });
    } else if (ns) {
      zero_and_clamp(on, C, HW, a.lo, a.hi, [=](int64_t i) { return ns[i] < nt; });
    } else {
      zero_and_clamp(on, C, HW, a.lo, a.hi, [=](int64_t i) { return cs[i] < ct; });
    }
  });
}

#define PYDEVIS_INSTANTIATE(T)                                                                  \
  template void ascent_update<T>(const T*, const T*, const double*, T*, int64_t, int64_t,      \
                                 double);                                                       \
  template void gaussian_blur<T>(const T*, T*, int64_t, int64_t, int64_t, const double*,       \
                                 int64_t);                                                      \
  template void clip_small<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, double);      \
  template void clamp_channels<T>(const T*, const double*, const double*, T*, int64_t, int64_t, \
                                  int64_t);                                                    \
  template void ascent_step<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, int64_t,     \
                               const AscentStep&);
PYDEVIS_INSTANTIATE(float)
PYDEVIS_INSTANTIATE(double)
#undef PYDEVIS_INSTANTIATE

}  // namespace pydevis::cpu
