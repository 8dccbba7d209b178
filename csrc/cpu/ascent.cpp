// Ascent kernels: the per-step work of activation maximization outside the backward pass
// (docs/kernels.md, "Ascent kernels"; the oracle is pydevis/kernels/_reference.py).
//
// Everything is computed in double and rounded once to T, in numpy's order of operations, so
// ascent_update, clip_small_* and clamp_channels give the reference's values bit for bit (the
// translation unit is built with -ffp-contract=off: no fused multiply-adds):
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
#include <algorithm>
#include <cmath>
#include <vector>

#include "../common/parallel.h"
#include "kernels.h"

namespace pydevis::cpu {

namespace {

template <typename T>
std::vector<T>& scratch(size_t n) {
  thread_local std::vector<T> buf;
  if (buf.size() < n) buf.resize(n);
  return buf;
}

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

// numpy's pairwise summation of a contiguous float64 array (what w.sum() does).
double pairwise_sum(const double* a, int64_t n) {
  if (n < 8) {
    double res = 0.0;
    for (int64_t i = 0; i < n; ++i) res += a[i];
    return res;
  }
  if (n <= 128) {
    double r[8];
    for (int j = 0; j < 8; ++j) r[j] = a[j];
    int64_t i = 8;
    for (; i < n - (n % 8); i += 8)
      for (int j = 0; j < 8; ++j) r[j] += a[i + j];
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  }
  int64_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

inline double np_maximum(double a, double b) {
  return std::isnan(a) || std::isnan(b) ? NAN : (a >= b ? a : b);
}
inline double np_minimum(double a, double b) {
  return std::isnan(a) || std::isnan(b) ? NAN : (a <= b ? a : b);
}

}  // namespace

template <typename T>
void ascent_update(const T* v, const T* g, const double* eta, T* out, int64_t N,
                   int64_t per_image, double decay) {
  const double keep = 1.0 - decay;
  const int64_t chunks = ceil_div(per_image, 1 << 14);
  parallel_for(N * chunks, 1 << 14, [&](int64_t t) {
    const int64_t n = t / chunks, i0 = (t % chunks) << 14;
    const int64_t i1 = std::min(per_image, i0 + (1 << 14)), base = n * per_image;
    const double e = eta[n];
    for (int64_t i = base + i0; i < base + i1; ++i) {
      const double step = e * double(g[i]);
      const double moved = double(v[i]) + step;
      out[i] = T(moved * keep);
    }
  });
}

std::vector<double> gaussian_weights(double sigma) {
  const int64_t r = int64_t(4.0 * sigma + 0.5);
  std::vector<double> w(size_t(2 * r + 1));
  const double den = 2.0 * sigma * sigma;
  for (int64_t k = -r; k <= r; ++k) {
    const double kd = double(k);
    w[size_t(k + r)] = std::exp(-kd * kd / den);
  }
  const double sum = pairwise_sum(w.data(), int64_t(w.size()));
  for (double& x : w) x /= sum;
  return w;
}

template <typename T>
void gaussian_blur(const T* v, T* out, int64_t planes, int64_t H, int64_t W,
                   const double* w, int64_t r) {
  const int64_t HW = H * W, taps = 2 * r + 1;
  // A reflected copy of each row lets the horizontal taps run without index arithmetic, unless
  // the radius makes it unreasonably long.
  const bool padded = W + 2 * r <= (int64_t(1) << 22);
  parallel_for(planes, HW * taps * 2, [&](int64_t p) {
    std::vector<double>& buf = scratch<double>(size_t(HW + W + (padded ? W + 2 * r : 0)));
    double* tmp = buf.data();       // horizontal pass, H × W
    double* acc = tmp + HW;         // one output row
    double* row = acc + W;          // reflected input row (padded mode)
    const T* src = v + p * HW;
    for (int64_t y = 0; y < H; ++y) {
      double* t = tmp + y * W;
      std::fill(t, t + W, 0.0);
      const T* s = src + y * W;
      if (padded) {
        for (int64_t i = 0; i < W + 2 * r; ++i) row[i] = double(s[reflect(i - r, W)]);
        for (int64_t k = 0; k < taps; ++k)
          for (int64_t x = 0; x < W; ++x) t[x] += w[k] * row[x + k];
      } else {
        for (int64_t k = 0; k < taps; ++k)
          for (int64_t x = 0; x < W; ++x) t[x] += w[k] * double(s[reflect(x + k - r, W)]);
      }
    }
    T* dst = out + p * HW;
    for (int64_t y = 0; y < H; ++y) {
      std::fill(acc, acc + W, 0.0);
      for (int64_t k = 0; k < taps; ++k) {
        const double* t = tmp + reflect(y + k - r, H) * W;
        for (int64_t x = 0; x < W; ++x) acc[x] += w[k] * t[x];
      }
      for (int64_t x = 0; x < W; ++x) dst[y * W + x] = T(acc[x]);
    }
  });
}

template <typename T>
void clip_small(const T* v, const T* g, T* out, int64_t N, int64_t C, int64_t HW, double pct) {
  parallel_for(N, C * HW * 4, [&](int64_t n) {
    std::vector<double>& buf = scratch<double>(size_t(2 * HW));
    double* score = buf.data();
    double* sorted = score + HW;
    const T* vn = v + n * C * HW;
    const T* gn = g ? g + n * C * HW : nullptr;
    for (int64_t i = 0; i < HW; ++i) {
      double s = 0.0;
      for (int64_t c = 0; c < C; ++c) {
        const double x = double(vn[c * HW + i]);
        s += gn ? double(gn[c * HW + i]) * -x : x * x;
      }
      score[i] = gn ? std::fabs(s) : std::sqrt(s);
    }
    std::copy(score, score + HW, sorted);
    const double thr = HW > 0 ? percentile(sorted, HW, pct) : 0.0;
    T* on = out + n * C * HW;
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < HW; ++i) on[c * HW + i] = score[i] < thr ? T(0) : vn[c * HW + i];
  });
}

template <typename T>
void clamp_channels(const T* v, const double* lo, const double* hi, T* out, int64_t N, int64_t C,
                    int64_t HW) {
  parallel_for(N * C, HW, [&](int64_t p) {
    const double l = lo[p % C], h = hi[p % C];
    const T* s = v + p * HW;
    T* d = out + p * HW;
    for (int64_t i = 0; i < HW; ++i) d[i] = T(np_minimum(np_maximum(double(s[i]), l), h));
  });
}

#define PYDEVIS_INSTANTIATE(T)                                                                  \
  template void ascent_update<T>(const T*, const T*, const double*, T*, int64_t, int64_t,      \
                                 double);                                                       \
  template void gaussian_blur<T>(const T*, T*, int64_t, int64_t, int64_t, const double*,       \
                                 int64_t);                                                      \
  template void clip_small<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, double);      \
  template void clamp_channels<T>(const T*, const double*, const double*, T*, int64_t, int64_t, \
                                  int64_t);
PYDEVIS_INSTANTIATE(float)
PYDEVIS_INSTANTIATE(double)
#undef PYDEVIS_INSTANTIATE

}  // namespace pydevis::cpu
