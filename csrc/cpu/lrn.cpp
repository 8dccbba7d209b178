// lrn_backward: VJP of ONNX LRN with respect to its input x.
//
// Forward: s[c] = bias + alpha/size · sum_{j in win(c)} x[j]²,  win(c) = [c - lo, c + hi] ∩ [0, C)
// with lo = floor((size-1)/2), hi = ceil((size-1)/2);  y[c] = x[c] · s[c]^-beta.
// dy[j]/dx[c] = [j == c] s[c]^-beta - beta · x[j] · s[j]^(-beta-1) · (2 alpha/size) x[c] [c in win(j)],
// hence gx[c] = g[c] s[c]^-beta - (2 alpha beta/size) x[c] · sum_{j : c in win(j)} t[j]
// with t[j] = g[j] x[j] s[j]^(-beta-1), and c in win(j)  <=>  j in [c - hi, c + lo].
// Channels are strided by H·W in NCHW, so the work is tiled over (n, block of pixels): each task
// holds s^-beta and t for all channels of its pixel block, the inner loops run over contiguous
// pixels.
#include <algorithm>
#include <cmath>
#include <vector>

#include "../common/parallel.h"
#include "kernels.h"
#include "scratch.h"

namespace pydevis::cpu {

namespace {
constexpr int64_t kPixelTile = 256;

}  // namespace

template <typename T>
void lrn_backward(const T* grad_out, const T* x, T* grad_in, int64_t N, int64_t C, int64_t HW,
                  int64_t size, double alpha, double beta, double bias) {
  const int64_t lo = (size - 1) / 2, hi = size - 1 - lo;
  const T a_n = T(alpha / double(size)), coef = T(2.0 * alpha * beta / double(size));
  const T b = T(bias), nbeta = T(-beta);
  const int64_t tiles = ceil_div(HW, kPixelTile);
  // Work per task, saturated (size and C may each be up to 2^31 - 1).
  const int64_t cost = std::min(C * (std::min(size, C) + 4), kMinParallelWork) * kPixelTile;
  parallel_for(N * tiles, cost, [&](int64_t task) {
    const int64_t n = task / tiles, p0 = (task % tiles) * kPixelTile;
    const int64_t tw = std::min(kPixelTile, HW - p0);
    T* sb = thread_scratch<T>(size_t(2 * C * kPixelTile)).data();  // s^-beta, then t
    T* t = sb + C * kPixelTile;
    const T* xn = x + n * C * HW + p0;
    const T* gn = grad_out + n * C * HW + p0;
    T* out = grad_in + n * C * HW + p0;
    for (int64_t c = 0; c < C; ++c) {
      T* s = t + c * kPixelTile;  // window sum of squares, kept in t for now
      std::fill(s, s + tw, T(0));
      for (int64_t j = std::max<int64_t>(0, c - lo); j <= std::min(C - 1, c + hi); ++j)
        for (int64_t p = 0; p < tw; ++p) s[p] += xn[j * HW + p] * xn[j * HW + p];
      for (int64_t p = 0; p < tw; ++p) {
        const T sc = b + a_n * s[p];
        const T pw = std::pow(sc, nbeta);
        sb[c * kPixelTile + p] = pw;
        s[p] = gn[c * HW + p] * xn[c * HW + p] * pw / sc;
      }
    }
    for (int64_t c = 0; c < C; ++c) {
      T* o = out + c * HW;
      for (int64_t p = 0; p < tw; ++p) o[p] = T(0);
      for (int64_t j = std::max<int64_t>(0, c - hi); j <= std::min(C - 1, c + lo); ++j)
        for (int64_t p = 0; p < tw; ++p) o[p] += t[j * kPixelTile + p];
      for (int64_t p = 0; p < tw; ++p)
        o[p] = gn[c * HW + p] * sb[c * kPixelTile + p] - coef * xn[c * HW + p] * o[p];
    }
  });
}

template void lrn_backward<float>(const float*, const float*, float*, int64_t, int64_t, int64_t,
                                  int64_t, double, double, double);
template void lrn_backward<double>(const double*, const double*, double*, int64_t, int64_t, int64_t,
                                   int64_t, double, double, double);

}  // namespace pydevis::cpu
