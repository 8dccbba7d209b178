// The ascent kernels of activation maximization (docs/kernels.md, "Ascent kernels"), CUDA.
//
// Every value is computed in double whatever T is, and stored in T at the end, as the numpy
// reference does (pydevis/kernels/_reference.py: float64 scalars and scores promote float32
// arrays). The pixel scores and the percentile of clip_small_* use once-rounded products and
// sums (no FMA contraction), so they are bit-identical to numpy's and the same pixels are zeroed.
//
// The percentile needs each image's sorted scores: a bitonic sort over a global buffer with one
// row of sort_width(HW) entries per image (NaN padding sorts last), one launch per network stage
// and every image in the same launch. Simple and exact; a shared-memory or cub segmented sort
// would be faster for large images.
#include <limits>

#include "kernels.h"
#include "launch.cuh"

namespace pydevis::cuda {
namespace {

// a * b, a + b, a - b rounded once each (nvcc would otherwise fuse a * b + c into an FMA).
__device__ __forceinline__ double mul_rn(double a, double b) {
#ifdef __CUDA_ARCH__
    return __dmul_rn(a, b);
#else
    return a * b;
#endif
}

__device__ __forceinline__ double add_rn(double a, double b) {
#ifdef __CUDA_ARCH__
    return __dadd_rn(a, b);
#else
    return a + b;
#endif
}

__device__ __forceinline__ double sub_rn(double a, double b) {
#ifdef __CUDA_ARCH__
    return __dsub_rn(a, b);
#else
    return a - b;
#endif
}

// ---------------------------------------------------------------------------------------------
// ascent_update: out = (v + eta[n] * g) * keep with keep = 1 - decay, per_image = C*H*W.
template <typename T>
__global__ void ascent_update_kernel(const T* __restrict__ v, const T* __restrict__ g,
                                     const double* __restrict__ eta, T* __restrict__ out,
                                     int64_t per_image, double keep, int64_t total) {
    for (int64_t i = detail::global_thread<int64_t>(); i < total;
         i += detail::grid_stride<int64_t>()) {
        const double step = mul_rn(eta[i / per_image], static_cast<double>(g[i]));
        out[i] = static_cast<T>(mul_rn(add_rn(static_cast<double>(v[i]), step), keep));
    }
}

// ---------------------------------------------------------------------------------------------
// gaussian_blur: rows (along W) into a double scratch, then columns (along H) into out; the taps
// are summed in order k = -r..r as the reference does. reflect() is scipy.ndimage's "reflect"
// (half-sample symmetric) for any integer i, however far outside [0, n) (r may exceed n).
__device__ __forceinline__ int64_t reflect(int64_t i, int64_t n) {
    if (n == 1) return 0;
    const int64_t period = 2 * n;
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - 1 - i;
}

template <typename T>
__global__ void blur_rows_kernel(const T* __restrict__ v, const double* __restrict__ w,
                                 double* __restrict__ tmp, int64_t r, int64_t W, int64_t total) {
    for (int64_t i = detail::global_thread<int64_t>(); i < total;
         i += detail::grid_stride<int64_t>()) {
        const int64_t x = i % W;
        const T* row = v + (i - x);
        double acc = 0.0;
        if (x >= r && x + r < W) {  // the window lies inside the row
            for (int64_t k = -r; k <= r; ++k) acc += w[k + r] * static_cast<double>(row[x + k]);
        } else {
            for (int64_t k = -r; k <= r; ++k) {
                acc += w[k + r] * static_cast<double>(row[reflect(x + k, W)]);
            }
        }
        tmp[i] = acc;
    }
}

template <typename T>
__global__ void blur_cols_kernel(const double* __restrict__ tmp, const double* __restrict__ w,
                                 T* __restrict__ out, int64_t r, int64_t H, int64_t W,
                                 int64_t total) {
    for (int64_t i = detail::global_thread<int64_t>(); i < total;
         i += detail::grid_stride<int64_t>()) {
        const int64_t y = (i / W) % H;
        const double* col = tmp + (i - y * W);  // element (y = 0, x) of the plane
        double acc = 0.0;
        if (y >= r && y + r < H) {
            for (int64_t k = -r; k <= r; ++k) acc += w[k + r] * col[(y + k) * W];
        } else {
            for (int64_t k = -r; k <= r; ++k) acc += w[k + r] * col[reflect(y + k, H) * W];
        }
        out[i] = static_cast<T>(acc);
    }
}

// ---------------------------------------------------------------------------------------------
// clip_small_*: per-pixel scores, per-image sort, percentile, zeroing.

// Score of pixel p of image n (entry n*P + p of `sorted`, and n*HW + p of `scores`):
//   g == nullptr: sqrt(sum_c v²);  else |sum_c g * (-v)|  (sums in channel order, like numpy's
// reduction over axis 0). The P - HW padding entries of each row get `pad` (NaN: sorts last).
template <typename T>
__global__ void pixel_scores_kernel(const T* __restrict__ v, const T* __restrict__ g,
                                    double* __restrict__ scores, double* __restrict__ sorted,
                                    int64_t C, int64_t HW, int64_t P, double pad, int64_t total) {
    for (int64_t i = detail::global_thread<int64_t>(); i < total;
         i += detail::grid_stride<int64_t>()) {
        const int64_t n = i / P;
        const int64_t p = i % P;
        if (p >= HW) {
            sorted[i] = pad;
            continue;
        }
        const int64_t base = n * C * HW + p;
        double acc = 0.0;
        for (int64_t c = 0; c < C; ++c) {
            const double x = static_cast<double>(v[base + c * HW]);
            acc = g == nullptr ? add_rn(acc, mul_rn(x, x))
                               : add_rn(acc, mul_rn(static_cast<double>(g[base + c * HW]), -x));
        }
        const double s = g == nullptr ? sqrt(acc) : fabs(acc);
        scores[n * HW + p] = s;
        sorted[i] = s;
    }
}

// Strict order of the sort: numeric, with NaN after everything (numpy.sort's order).
__device__ __forceinline__ bool sorts_before(double a, double b) {
    return a < b || (b != b && a == a);
}

// One compare-exchange stage (k, j) of the bitonic network on every row of P entries (P a power
// of two): pairs (i, i + j) with bit j of i clear, ascending where bit k of i is clear.
__global__ void bitonic_stage_kernel(double* __restrict__ sorted, int64_t P, int64_t k, int64_t j,
                                     int64_t pairs) {
    const int64_t half = P / 2;
    for (int64_t t = detail::global_thread<int64_t>(); t < pairs;
         t += detail::grid_stride<int64_t>()) {
        const int64_t q = t % half;
        const int64_t i = 2 * j * (q / j) + q % j;
        double* row = sorted + (t / half) * P;
        const double a = row[i];
        const double b = row[i + j];
        const bool ascending = (i & k) == 0;
        if (ascending ? sorts_before(b, a) : sorts_before(a, b)) {
            row[i] = b;
            row[i + j] = a;
        }
    }
}

// numpy.percentile(scores, 100 * q) (method "linear") of each sorted row, operation for operation
// (numpy/lib/_function_base_impl.py: _quantile, _get_indexes, _get_gamma, _lerp), so that
// infinities give the same NaN; a NaN score makes the percentile NaN (nothing is then zeroed).
__global__ void percentile_kernel(const double* __restrict__ sorted, double* __restrict__ thr,
                                  int64_t P, int64_t HW, double q, int64_t N) {
    for (int64_t n = detail::global_thread<int64_t>(); n < N;
         n += detail::grid_stride<int64_t>()) {
        const double* row = sorted + n * P;
        const double last = row[HW - 1];
        if (last != last) {
            thr[n] = last;
            continue;
        }
        const double virtual_index = mul_rn(static_cast<double>(HW - 1), q);
        int64_t lo = HW - 1;
        int64_t hi = HW - 1;
        double gamma = add_rn(virtual_index, 1.0);  // numpy: previous index -1 (the last)
        if (virtual_index < static_cast<double>(HW - 1)) {
            const double previous = floor(virtual_index);
            lo = static_cast<int64_t>(previous);
            hi = lo + 1;
            gamma = sub_rn(virtual_index, previous);
        }
        const double a = row[lo];
        const double b = row[hi];
        const double diff = sub_rn(b, a);
        thr[n] = gamma >= 0.5 ? sub_rn(b, mul_rn(diff, sub_rn(1.0, gamma)))
                              : add_rn(a, mul_rn(diff, gamma));
    }
}

template <typename T>
__global__ void zero_below_kernel(const T* __restrict__ v, const double* __restrict__ scores,
                                  const double* __restrict__ thr, T* __restrict__ out, int64_t C,
                                  int64_t HW, int64_t total) {
    for (int64_t i = detail::global_thread<int64_t>(); i < total;
         i += detail::grid_stride<int64_t>()) {
        const int64_t p = i % HW;
        const int64_t n = i / (C * HW);
        out[i] = scores[n * HW + p] < thr[n] ? T(0) : v[i];
    }
}

// ---------------------------------------------------------------------------------------------
// clamp_channels: numpy.minimum(numpy.maximum(v, lo[c]), hi[c]) in double (NaN propagates from
// v or from a bound).
template <typename T>
__global__ void clamp_channels_kernel(const T* __restrict__ v, const double* __restrict__ lo,
                                      const double* __restrict__ hi, T* __restrict__ out,
                                      int64_t C, int64_t HW, int64_t total) {
    for (int64_t i = detail::global_thread<int64_t>(); i < total;
         i += detail::grid_stride<int64_t>()) {
        const int64_t c = (i / HW) % C;
        const double x = static_cast<double>(v[i]);
        const double a = lo[c];
        const double b = hi[c];
        const double m = (x >= a || x != x) ? x : a;
        out[i] = static_cast<T>((m <= b || m != m) ? m : b);
    }
}

}  // namespace

template <typename T>
void ascent_update(const T* v, const T* g, const double* eta, T* out, int64_t N,
                   int64_t per_image, double decay, cudaStream_t stream) {
    const int64_t total = N * per_image;
    if (total == 0) return;
    ascent_update_kernel<T><<<detail::blocks_for(total), detail::kThreads, 0, stream>>>(
        v, g, eta, out, per_image, 1.0 - decay, total);
    PYDEVIS_CUDA_CHECK_LAUNCH();
}

template <typename T>
void gaussian_blur(const T* v, T* out, double* tmp, const double* weights, int64_t radius,
                   int64_t planes, int64_t H, int64_t W, cudaStream_t stream) {
    const int64_t total = planes * H * W;
    if (total == 0) return;
    const unsigned int blocks = detail::blocks_for(total);
    blur_rows_kernel<T><<<blocks, detail::kThreads, 0, stream>>>(v, weights, tmp, radius, W,
                                                                 total);
    PYDEVIS_CUDA_CHECK_LAUNCH();
    blur_cols_kernel<T><<<blocks, detail::kThreads, 0, stream>>>(tmp, weights, out, radius, H, W,
                                                                 total);
    PYDEVIS_CUDA_CHECK_LAUNCH();
}

template <typename T>
void clip_small(const T* v, const T* g, T* out, double* scratch, int64_t N, int64_t C, int64_t HW,
                double pct, cudaStream_t stream) {
    const int64_t total = N * C * HW;
    if (total == 0) return;
    const int64_t P = sort_width(HW);
    double* scores = scratch;
    double* sorted = scores + N * HW;
    double* thr = sorted + N * P;
    const double nan = std::numeric_limits<double>::quiet_NaN();

    pixel_scores_kernel<T><<<detail::blocks_for(N * P), detail::kThreads, 0, stream>>>(
        v, g, scores, sorted, C, HW, P, nan, N * P);
    PYDEVIS_CUDA_CHECK_LAUNCH();
    const int64_t pairs = N * P / 2;
    for (int64_t k = 2; k <= P; k *= 2) {
        for (int64_t j = k / 2; j > 0; j /= 2) {
            bitonic_stage_kernel<<<detail::blocks_for(pairs), detail::kThreads, 0, stream>>>(
                sorted, P, k, j, pairs);
            PYDEVIS_CUDA_CHECK_LAUNCH();
        }
    }
    percentile_kernel<<<detail::blocks_for(N), detail::kThreads, 0, stream>>>(
        sorted, thr, P, HW, pct / 100.0, N);
    PYDEVIS_CUDA_CHECK_LAUNCH();
    zero_below_kernel<T><<<detail::blocks_for(total), detail::kThreads, 0, stream>>>(
        v, scores, thr, out, C, HW, total);
    PYDEVIS_CUDA_CHECK_LAUNCH();
}

template <typename T>
void clamp_channels(const T* v, const double* lo, const double* hi, T* out, int64_t N, int64_t C,
                    int64_t HW, cudaStream_t stream) {
    const int64_t total = N * C * HW;
    if (total == 0) return;
    clamp_channels_kernel<T><<<detail::blocks_for(total), detail::kThreads, 0, stream>>>(
        v, lo, hi, out, C, HW, total);
    PYDEVIS_CUDA_CHECK_LAUNCH();
}

#define PYDEVIS_ASCENT_INSTANTIATE(T)                                                           \
    template void ascent_update<T>(const T*, const T*, const double*, T*, int64_t, int64_t,     \
                                   double, cudaStream_t);                                       \
    template void gaussian_blur<T>(const T*, T*, double*, const double*, int64_t, int64_t,      \
                                   int64_t, int64_t, cudaStream_t);                             \
    template void clip_small<T>(const T*, const T*, T*, double*, int64_t, int64_t, int64_t,     \
                                double, cudaStream_t);                                          \
    template void clamp_channels<T>(const T*, const double*, const double*, T*, int64_t,        \
                                    int64_t, int64_t, cudaStream_t);
PYDEVIS_ASCENT_INSTANTIATE(float)
PYDEVIS_ASCENT_INSTANTIATE(double)
#undef PYDEVIS_ASCENT_INSTANTIATE

}  // namespace pydevis::cuda
