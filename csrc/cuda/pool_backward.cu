// Backward of ONNX MaxPool (from the forward input: the switches are found again),
// AveragePool and GlobalAveragePool, CUDA.
#include <limits>

#include "kernels.h"
#include "launch.cuh"

namespace pydevis::cuda {
namespace {

// ---------------------------------------------------------------------------------------------
// max_pool2d_backward from the forward input x, in two passes, no atomics (deterministic) and bit
// for bit the C++ kernel (csrc/cpu/pool.cpp):
//  1. one thread per grad_out element finds its window's switch, ONNX Runtime's: over the taps
//     inside the input, in (kh, kw) row-major order, the first strictly greater than every earlier
//     one and than the lowest finite value (NaN and -inf never win). It stores the tap number
//     kh*kW + kw (int32: the binding checks kH*kW <= INT_MAX), or -1 when nothing wins.
//  2. one thread per input element (ih, iw) sums grad_out over the windows (oh, ow) that hold it,
//     ih = oh*sh - pt + kh*dh and iw = ow*sw - pl + kw*dw, and whose switch is that tap. It visits
//     them in (oh, ow) row-major order (kh, kw descending) and adds them one by one to 0, which is
//     the order in which the C++ kernel scatter-adds them, so the sums round identically.
template <typename I>
struct MaxPoolIdx {
    I H, W, Ho, Wo, kh, kw, sh, sw, pt, pl, dh, dw;
};

// [lo, hi): the taps t < k of a window starting at `start` (dilation d) with start + t*d in
// [0, n); empty when lo >= hi.
// The window fields both pool index structs (MaxPoolIdx, PoolIdx) narrow from their int64 shape.
template <typename Idx, typename Shape>
void narrow_window(Idx& p, const Shape& s) {
    using I = decltype(p.H);
    p.H = static_cast<I>(s.H);
    p.W = static_cast<I>(s.W);
    p.Ho = static_cast<I>(s.Ho);
    p.Wo = static_cast<I>(s.Wo);
    p.kh = static_cast<I>(s.kH);
    p.kw = static_cast<I>(s.kW);
    p.sh = static_cast<I>(s.sh);
    p.sw = static_cast<I>(s.sw);
    p.pt = static_cast<I>(s.pt);
    p.pl = static_cast<I>(s.pl);
}

template <typename I>
__device__ __forceinline__ void taps_inside(I start, I k, I d, I n, I& lo, I& hi) {
    lo = start >= 0 ? I(0) : (-start + d - 1) / d;
    hi = start >= n ? I(0) : min(k, (n - 1 - start) / d + 1);
}

template <typename T, typename I>
__global__ void max_pool2d_switch_kernel(const T* __restrict__ x, int32_t* __restrict__ switches,
                                         MaxPoolIdx<I> p, T lowest, I total) {
    const I in_plane = p.H * p.W;
    const I out_plane = p.Ho * p.Wo;
    for (I idx = detail::global_thread<I>(); idx < total; idx += detail::grid_stride<I>()) {
        const I plane = idx / out_plane;
        const I r = idx - plane * out_plane;
        const I oh = r / p.Wo;
        const I ow = r - oh * p.Wo;
        const I hs = oh * p.sh - p.pt;  // window origin, may lie in the padding
        const I ws = ow * p.sw - p.pl;
        I kh0, kh1, kw0, kw1;
        taps_inside(hs, p.kh, p.dh, p.H, kh0, kh1);
        taps_inside(ws, p.kw, p.dw, p.W, kw0, kw1);
        const T* xp = x + plane * in_plane;
        T best = lowest;
        int32_t tap = -1;
        for (I kh = kh0; kh < kh1; ++kh) {
            const I row = (hs + kh * p.dh) * p.W + ws;  // + kw*dw: a column inside the input
            for (I kw = kw0; kw < kw1; ++kw) {
                const T v = xp[row + kw * p.dw];
                if (v > best) {  // strict: the first of equal values wins; NaN never does
                    best = v;
                    tap = static_cast<int32_t>(kh * p.kw + kw);
                }
            }
        }
        switches[idx] = tap;
    }
}

template <typename T, typename I>
__global__ void max_pool2d_gather_kernel(const T* __restrict__ grad_out,
                                         const int32_t* __restrict__ switches,
                                         T* __restrict__ grad_in, MaxPoolIdx<I> p, I total) {
    const I in_plane = p.H * p.W;
    const I out_plane = p.Ho * p.Wo;
    for (I idx = detail::global_thread<I>(); idx < total; idx += detail::grid_stride<I>()) {
        const I plane = idx / in_plane;
        const I r = idx - plane * in_plane;
        const I ih = r / p.W;
        const I iw = r - ih * p.W;
        const I ph = ih + p.pt;  // position in the padded frame: oh*sh + kh*dh = ph
        const I pw = iw + p.pl;
        // kh <= ph/dh keeps oh >= 0; kh*dh >= ph - (Ho-1)*sh keeps oh <= Ho - 1. Likewise kw.
        const I kh_hi = min(p.kh - 1, ph / p.dh);
        const I rh = ph - (p.Ho - 1) * p.sh;
        const I kh_lo = rh > 0 ? (rh + p.dh - 1) / p.dh : I(0);
        const I kw_hi = min(p.kw - 1, pw / p.dw);
        const I rw = pw - (p.Wo - 1) * p.sw;
        const I kw_lo = rw > 0 ? (rw + p.dw - 1) / p.dw : I(0);
        const T* g = grad_out + plane * out_plane;
        const int32_t* t = switches + plane * out_plane;
        T acc = T(0);
        for (I kh = kh_hi; kh >= kh_lo; --kh) {  // oh ascending
            const I nh = ph - kh * p.dh;
            if (nh % p.sh != 0) continue;
            const I row = (nh / p.sh) * p.Wo;
            for (I kw = kw_hi; kw >= kw_lo; --kw) {  // ow ascending
                const I nw = pw - kw * p.dw;
                if (nw % p.sw != 0) continue;
                const I o = row + nw / p.sw;
                if (t[o] == static_cast<int32_t>(kh * p.kw + kw)) acc += g[o];
            }
        }
        grad_in[idx] = acc;
    }
}

template <typename T, typename I>
void launch_max_pool(const T* grad_out, const T* x, T* grad_in, int32_t* switches,
                     const MaxPoolGeom& s, int64_t in_total, int64_t out_total,
                     cudaStream_t stream) {
    MaxPoolIdx<I> p{};
    narrow_window(p, s);
    p.dh = static_cast<I>(s.dh);
    p.dw = static_cast<I>(s.dw);
    max_pool2d_switch_kernel<T, I><<<detail::blocks_for(out_total), detail::kThreads, 0, stream>>>(
        x, switches, p, std::numeric_limits<T>::lowest(), static_cast<I>(out_total));
    PYDEVIS_CUDA_CHECK_LAUNCH();
    max_pool2d_gather_kernel<T, I><<<detail::blocks_for(in_total), detail::kThreads, 0, stream>>>(
        grad_out, switches, grad_in, p, static_cast<I>(in_total));
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
void launch_avg(const T* grad_out, T* grad_in, const PoolGeom& s, int64_t total,
                cudaStream_t stream) {
    PoolIdx<I> p{};
    narrow_window(p, s);
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
void max_pool2d_backward(const T* grad_out, const T* x, T* grad_in, int32_t* switches,
                         const MaxPoolGeom& s, cudaStream_t stream) {
    const int64_t in_total = s.N * s.C * s.H * s.W;
    if (in_total == 0) return;
    const int64_t out_total = s.N * s.C * s.Ho * s.Wo;
    if (out_total == 0) {  // no window: nothing routed
        PYDEVIS_CUDA_CHECK(
            cudaMemsetAsync(grad_in, 0, static_cast<size_t>(in_total) * sizeof(T), stream));
        return;
    }
    // Every index expression of the two kernels is bounded by one of these (a dilation may
    // exceed the padded extent when its kernel side is 1, hence the separate dh, dw terms).
    if (detail::fits_int32({in_total, out_total, s.H + s.pt + s.dh, s.W + s.pl + s.dw,
                            s.Ho * s.sh + s.pt + s.H, s.Wo * s.sw + s.pl + s.W,
                            s.dh * (s.kH - 1) + s.H, s.dw * (s.kW - 1) + s.W, s.kH * s.kW})) {
        launch_max_pool<T, int32_t>(grad_out, x, grad_in, switches, s, in_total, out_total,
                                    stream);
    } else {
        launch_max_pool<T, int64_t>(grad_out, x, grad_in, switches, s, in_total, out_total,
                                    stream);
    }
}

template <typename T>
void avg_pool2d_backward(const T* grad_out, T* grad_in, const PoolGeom& s,
                         cudaStream_t stream) {
    const int64_t total = s.N * s.C * s.H * s.W;
    if (total == 0) return;
    const int64_t out_total = s.N * s.C * s.Ho * s.Wo;
    if (detail::fits_int32({total, out_total, s.H + s.pt + s.pb + s.kH, s.W + s.pl + s.pr + s.kW,
                            s.Ho * s.sh + s.kH, s.Wo * s.sw + s.kW, s.kH * s.kW})) {
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

template void max_pool2d_backward<float>(const float*, const float*, float*, int32_t*,
                                         const MaxPoolGeom&, cudaStream_t);
template void max_pool2d_backward<double>(const double*, const double*, double*, int32_t*,
                                          const MaxPoolGeom&, cudaStream_t);
template void avg_pool2d_backward<float>(const float*, float*, const PoolGeom&, cudaStream_t);
template void avg_pool2d_backward<double>(const double*, double*, const PoolGeom&,
                                          cudaStream_t);
template void global_avg_pool_backward<float>(const float*, float*, int64_t, int64_t,
                                              cudaStream_t);
template void global_avg_pool_backward<double>(const double*, double*, int64_t, int64_t,
                                               cudaStream_t);

}  // namespace pydevis::cuda
