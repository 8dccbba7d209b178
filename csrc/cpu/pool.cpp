// Pooling backward: max-unpooling through the switches, average and global-average pooling.
//
// MaxPool switches (ONNX Runtime's Indices, storage_order 0) are flat offsets into the whole input,
// ((n*C + c)*H + h)*W + w, so output element i of plane p = i / (Ho*Wo) must point into
// [p*H*W, (p+1)*H*W). Planes are independent: one OpenMP task per (n, c) plane, no atomics, and
// overlapping windows that picked the same switch accumulate in order.
//
// AveragePool: for output (oh, ow) the window starts at hs = oh*sh - pt and ends at
// he = min(hs + kH, H + pb) (the end may only run into the declared padding, which is how
// ceil_mode's extra last window is cut); the divisor counts the padded window when
// count_include_pad, else only the pixels inside [0, H) × [0, W). Each pixel of the clipped window
// receives g / divisor.
#include <algorithm>

#include "../common/parallel.h"
#include "kernels.h"

namespace pydevis::cpu {

int64_t first_bad_unpool_index(const int64_t* indices, int64_t planes, int64_t plane_out,
                               int64_t plane_in) {
  int64_t bad = -1;
  for (int64_t p = 0; p < planes && bad < 0; ++p) {
    const int64_t lo = p * plane_in, hi = lo + plane_in;
    const int64_t* idx = indices + p * plane_out;
    for (int64_t i = 0; i < plane_out; ++i)
      if (idx[i] < lo || idx[i] >= hi) {
        bad = p * plane_out + i;
        break;
      }
  }
  return bad;
}

template <typename T>
void max_unpool2d(const T* grad_out, const int64_t* indices, T* grad_in, int64_t planes,
                  int64_t plane_out, int64_t plane_in) {
  parallel_for(planes, plane_out + plane_in, [&](int64_t p) {
    T* dst = grad_in + p * plane_in;
    std::fill(dst, dst + plane_in, T(0));
    const T* g = grad_out + p * plane_out;
    const int64_t* idx = indices + p * plane_out;
    const int64_t base = p * plane_in;
    for (int64_t i = 0; i < plane_out; ++i) dst[idx[i] - base] += g[i];
  });
}

template <typename T>
void avg_pool2d_backward(const T* grad_out, T* grad_in, const PoolGeom& g) {
  const int64_t HW = g.H * g.W, HoWo = g.Ho * g.Wo;
  parallel_for(g.N * g.C, HoWo * g.kH * g.kW + HW, [&](int64_t p) {
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
  template void max_unpool2d<T>(const T*, const int64_t*, T*, int64_t, int64_t, int64_t); \
  template void avg_pool2d_backward<T>(const T*, T*, const PoolGeom&);                     \
  template void global_avg_pool_backward<T>(const T*, T*, int64_t, int64_t);
PYDEVIS_INSTANTIATE(float)
PYDEVIS_INSTANTIATE(double)
#undef PYDEVIS_INSTANTIATE

}  // namespace pydevis::cpu
