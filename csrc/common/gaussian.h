// The Gaussian blur weights of the ascent, shared by the C++ and CUDA kernels.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

namespace pydevis {

// numpy's pairwise summation of a contiguous float64 array (what w.sum() does).
inline double pairwise_sum(const double* a, int64_t n) {
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

// The 2r + 1 normalised weights exp(-k² / (2 sigma²)), k in [-r, r], r = int(4 sigma + 0.5),
// as the numpy reference computes them (the same divisions, numpy's pairwise sum).
inline std::vector<double> gaussian_weights(double sigma) {
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

}  // namespace pydevis
