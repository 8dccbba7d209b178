// col2im for conv2d_backward_data: see col2im.h.
#include "col2im.h"

#include "../common/clones.h"

namespace pydevis::cpu {
namespace {

template <typename T>
PYDEVIS_INLINE void scatter_tile_body(const T* col, int64_t cols, int64_t nc, int64_t oh0,
                                      int64_t oh1, T* dst, const ConvGeom& g) {
  const int64_t row_len = split_row(g), runs = g.sw == 1 ? 0 : split_runs(g);
  const int64_t plane = g.H * row_len;
  for (int64_t c = 0; c < nc; ++c)
    for (int64_t kh = 0; kh < g.kH; ++kh)
      for (int64_t kw = 0; kw < g.kW; ++kw) {
        const int64_t off = kw * g.dw - g.pl;  // iw = ow*sw + off
        const Span sp = valid_span(g.Wo, g.W, g.sw, off);
        if (sp.lo >= sp.hi) continue;
        const int64_t r = ((off % g.sw) + g.sw) % g.sw;  // the run of every iw of this row
        const int64_t start = r * runs + (off - r) / g.sw;  // sw = 1: r = 0, start = off
        const T* row = col + ((c * g.kH + kh) * g.kW + kw) * cols;
        for (int64_t oh = oh0; oh < oh1; ++oh) {
          const int64_t ih = oh * g.sh - g.pt + kh * g.dh;
          if (ih < 0 || ih >= g.H) continue;
          const T* __restrict__ s = row + (oh - oh0) * g.Wo;
          T* __restrict__ d = dst + c * plane + ih * row_len + start;
          for (int64_t ow = sp.lo; ow < sp.hi; ++ow) d[ow] += s[ow];
        }
      }
}

template <typename T>
PYDEVIS_INLINE void unsplit_body(const T* split, int64_t nc, T* out, const ConvGeom& g) {
  const int64_t row_len = split_row(g), runs = split_runs(g);
  for (int64_t i = 0; i < nc * g.H; ++i) {
    const T* __restrict__ s = split + i * row_len;
    T* __restrict__ o = out + i * g.W;
    for (int64_t r = 0; r < g.sw; ++r) {
      const int64_t n = (g.W - r + g.sw - 1) / g.sw;  // j with j*sw + r < W
      for (int64_t j = 0; j < n; ++j) o[j * g.sw + r] = s[r * runs + j];
    }
  }
}

}  // namespace

PYDEVIS_CLONES void scatter_tile(const float* col, int64_t cols, int64_t nc, int64_t oh0,
                                 int64_t oh1, float* dst, const ConvGeom& g) {
  scatter_tile_body(col, cols, nc, oh0, oh1, dst, g);
}
PYDEVIS_CLONES void scatter_tile(const double* col, int64_t cols, int64_t nc, int64_t oh0,
                                 int64_t oh1, double* dst, const ConvGeom& g) {
  scatter_tile_body(col, cols, nc, oh0, oh1, dst, g);
}
PYDEVIS_CLONES void unsplit(const float* split, int64_t nc, float* out, const ConvGeom& g) {
  unsplit_body(split, nc, out, g);
}
PYDEVIS_CLONES void unsplit(const double* split, int64_t nc, double* out, const ConvGeom& g) {
  unsplit_body(split, nc, out, g);
}

}  // namespace pydevis::cpu
