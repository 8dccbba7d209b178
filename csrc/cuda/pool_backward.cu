// Backward of ONNX MaxPool (unpooling through the switches), AveragePool and
// GlobalAveragePool, CUDA.
#include "kernels.h"
#include "launch.cuh"

namespace pydevis::cuda {
namespace {

// ---------------------------------------------------------------------------------------------
// max_unpool2d: one thread per grad_out element, atomicAdd into its switch (overlapping windows
// may pick the same input pixel). An index outside the element's own (n, c) plane is not written;
// the smallest such position is recorded in *bad_pos for the host to report.
template <typename T, typename I>
__global__ void max_unpool2d_kernel(const T* __restrict__ grad_out,
                                    const int64_t* __restrict__ indices, T* __restrict__ grad_in,
                                    I out_plane, int64_t in_plane, I total,
                                    unsigned long long* __restrict__ bad_pos) {
    for (I i = detail::global_thread<I>(); i < total; i += detail::grid_stride<I>()) {
        const int64_t plane = static_cast<int64_t>(i / out_plane);
        const int64_t begin = plane * in_plane;
        const int64_t k = indices[i];
        if (k < begin || k >= begin + in_plane) {
            atomicMin(bad_pos, static_cast<unsigned long long>(i));
            continue;
        }
        atomicAdd(grad_in + k, grad_out[i]);
    }
}

template <typename T, typename I>
void launch_unpool(const T* grad_out, const int64_t* indices, T* grad_in, int64_t out_plane,
                   int64_t in_plane, int64_t total, unsigned long long* bad_pos,
                   cudaStream_t stream) {
    max_unpool2d_kernel<T, I><<<detail::blocks_for(total), detail::kThreads, 0, stream>>>(
        grad_out, indices, grad_in, static_cast<I>(out_plane), in_plane, static_cast<I>(total),
        bad_pos);
    PYDEVIS_CUDA_CHECK_LAUNCH();
}

// ---------------------------------------------------------------------------------------------
// avg_pool2d_backward, gather form: input pixel (ih, iw) lies in the windows oh with
// oh*sh - pt <= ih < oh*sh - pt + kh (the end clip to H + pb never excludes a pixel ih < H),
// each contributing grad_out / divisor.
template <typename I>
struct PoolIdx {
    I H, W, Ho, Wo, kh, kw, sh, sw, pt, pl, pb, pr;
};

template <typename I>
__device__ __forceinline__ I window_size(I start, I k, I n, I pad_end, bool include_pad) {
    const I end = min(start + k, n + pad_end);
    if (include_pad) return end - start;
    return min(end, n) - max(start, I(0));
}

template <typename T, typename I>
__global__ void avg_pool2d_backward_kernel(const T* __restrict__ grad_out,
                                           T* __restrict__ grad_in, PoolIdx<I> p,
                                           bool count_include_pad, I total) {
    const I in_plane = p.H * p.W;
    const I out_plane = p.Ho * p.Wo;
    for (I idx = detail::global_thread<I>(); idx < total; idx += detail::grid_stride<I>()) {
        const I plane = idx / in_plane;
        const I r = idx - plane * in_plane;
        const I ih = r / p.W;
        const I iw = r - ih * p.W;

        const I ph = ih + p.pt;  // position in the padded frame
        const I pw = iw + p.pl;
        const I oh_lo = ph >= p.kh ? (ph - p.kh) / p.sh + 1 : I(0);
        const I oh_hi = min(ph / p.sh, p.Ho - 1);
        const I ow_lo = pw >= p.kw ? (pw - p.kw) / p.sw + 1 : I(0);
        const I ow_hi = min(pw / p.sw, p.Wo - 1);

        const T* g = grad_out + plane * out_plane;
        T acc = T(0);
        for (I oh = oh_lo; oh <= oh_hi; ++oh) {
            const I hs = oh * p.sh - p.pt;
            const I nh = window_size(hs, p.kh, p.H, p.pb, count_include_pad);
            for (I ow = ow_lo; ow <= ow_hi; ++ow) {
                const I ws = ow * p.sw - p.pl;
                const I nw = window_size(ws, p.kw, p.W, p.pr, count_include_pad);
                acc += g[oh * p.Wo + ow] / static_cast<T>(nh * nw);
            }
        }
        grad_in[idx] = acc;
    }
}

template <typename T, typename I>
void launch_avg(const T* grad_out, T* grad_in, const AvgPoolShape& s, int64_t total,
                cudaStream_t stream) {
    PoolIdx<I> p{};
    p.H = static_cast<I>(s.H);
    p.W = static_cast<I>(s.W);
    p.Ho = static_cast<I>(s.Ho);
    p.Wo = static_cast<I>(s.Wo);
    p.kh = static_cast<I>(s.kh);
    p.kw = static_cast<I>(s.kw);
    p.sh = static_cast<I>(s.sh);
    p.sw = static_cast<I>(s.sw);
    p.pt = static_cast<I>(s.pt);
    p.pl = static_cast<I>(s.pl);
    p.pb = static_cast<I>(s.pb);
    p.pr = static_cast<I>(s.pr);
    avg_pool2d_backward_kernel<T, I><<<detail::blocks_for(total), detail::kThreads, 0, stream>>>(
        grad_out, grad_in, p, s.count_include_pad, static_cast<I>(total));
    PYDEVIS_CUDA_CHECK_LAUNCH();
}

// ---------------------------------------------------------------------------------------------
template <typename T, typename I>
__global__ void global_avg_pool_backward_kernel(const T* __restrict__ grad_out,
                                                T* __restrict__ grad_in, I hw, I total) {
    const T count = static_cast<T>(hw);
    for (I idx = detail::global_thread<I>(); idx < total; idx += detail::grid_stride<I>()) {
        grad_in[idx] = grad_out[idx / hw] / count;
    }
}

}  // namespace

template <typename T>
void max_unpool2d(const T* grad_out, const int64_t* indices, T* grad_in, int64_t planes,
                  int64_t out_plane, int64_t in_plane, unsigned long long* bad_pos,
                  cudaStream_t stream) {
    PYDEVIS_CUDA_CHECK(cudaMemsetAsync(bad_pos, 0xFF, sizeof(unsigned long long), stream));
    const int64_t in_total = planes * in_plane;
    if (in_total > 0) {
        PYDEVIS_CUDA_CHECK(
            cudaMemsetAsync(grad_in, 0, static_cast<size_t>(in_total) * sizeof(T), stream));
    }
    const int64_t total = planes * out_plane;
    if (total == 0) return;
    if (detail::fits_int32({total})) {
        launch_unpool<T, int32_t>(grad_out, indices, grad_in, out_plane, in_plane, total, bad_pos,
                                  stream);
    } else {
        launch_unpool<T, int64_t>(grad_out, indices, grad_in, out_plane, in_plane, total, bad_pos,
                                  stream);
    }
}

template <typename T>
void avg_pool2d_backward(const T* grad_out, T* grad_in, const AvgPoolShape& s,
                         cudaStream_t stream) {
    const int64_t total = s.N * s.C * s.H * s.W;
    if (total == 0) return;
    const int64_t out_total = s.N * s.C * s.Ho * s.Wo;
    if (detail::fits_int32({total, out_total, s.H + s.pt + s.pb + s.kh, s.W + s.pl + s.pr + s.kw,
                            s.Ho * s.sh + s.kh, s.Wo * s.sw + s.kw, s.kh * s.kw})) {
        launch_avg<T, int32_t>(grad_out, grad_in, s, total, stream);
    } else {
        launch_avg<T, int64_t>(grad_out, grad_in, s, total, stream);
    }
}

template <typename T>
void global_avg_pool_backward(const T* grad_out, T* grad_in, int64_t planes, int64_t HW,
                              cudaStream_t stream) {
    const int64_t total = planes * HW;
    if (total == 0) return;
    if (detail::fits_int32({total})) {
        global_avg_pool_backward_kernel<T, int32_t>
            <<<detail::blocks_for(total), detail::kThreads, 0, stream>>>(
                grad_out, grad_in, static_cast<int32_t>(HW), static_cast<int32_t>(total));
    } else {
        global_avg_pool_backward_kernel<T, int64_t>
            <<<detail::blocks_for(total), detail::kThreads, 0, stream>>>(grad_out, grad_in, HW,
                                                                         total);
    }
    PYDEVIS_CUDA_CHECK_LAUNCH();
}

template void max_unpool2d<float>(const float*, const int64_t*, float*, int64_t, int64_t, int64_t,
                                  unsigned long long*, cudaStream_t);
template void max_unpool2d<double>(const double*, const int64_t*, double*, int64_t, int64_t,
                                   int64_t, unsigned long long*, cudaStream_t);
template void avg_pool2d_backward<float>(const float*, float*, const AvgPoolShape&, cudaStream_t);
template void avg_pool2d_backward<double>(const double*, double*, const AvgPoolShape&,
                                          cudaStream_t);
template void global_avg_pool_backward<float>(const float*, float*, int64_t, int64_t,
                                              cudaStream_t);
template void global_avg_pool_backward<double>(const double*, double*, int64_t, int64_t,
                                               cudaStream_t);

}  // namespace pydevis::cuda
