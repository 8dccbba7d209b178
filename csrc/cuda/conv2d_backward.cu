// dL/dX of ONNX Conv (the transposed convolution, the deconvnet "filtering"), CUDA.
//
// Direct gather: one thread per input element (n, c, ih, iw) sums
// W[m, c', kh, kw] * grad_out[n, m, oh, ow] over the (kh, kw) taps whose output position
// oh = (ih + pt - kh*dh) / sh, ow = (iw + pl - kw*dw) / sw is integral and in range, and over the
// M/group output channels m of c's group. No atomics: every output element is written once.
#include "kernels.h"
#include "launch.cuh"

namespace pydevis::cuda {
namespace {

template <typename I>
struct ConvIdx {
    I C, H, W, M, Ho, Wo, kH, kW, sh, sw, pt, pl, dh, dw, Cg, Mg;
};

template <typename T, typename I>
__global__ void conv2d_backward_data_kernel(const T* __restrict__ grad_out,
                                            const T* __restrict__ weight,
                                            T* __restrict__ grad_in, ConvIdx<I> p, I total) {
    const I out_plane = p.Ho * p.Wo;
    const I w_m_stride = p.Cg * p.kH * p.kW;
    for (I idx = detail::global_thread<I>(); idx < total; idx += detail::grid_stride<I>()) {
        const I iw = idx % p.W;
        I t = idx / p.W;
        const I ih = t % p.H;
        t /= p.H;
        const I c = t % p.C;
        const I n = t / p.C;
        const I grp = c / p.Cg;
        const I cc = c - grp * p.Cg;
        const I m0 = grp * p.Mg;

        const T* g_base = grad_out + (n * p.M + m0) * out_plane;
        const T* w_base = weight + (m0 * p.Cg + cc) * p.kH * p.kW;
        T acc = T(0);
        for (I kh = 0; kh < p.kH; ++kh) {
            const I th = ih + p.pt - kh * p.dh;
            if (th < 0) break;  // th only decreases with kh
            if (th % p.sh != 0) continue;
            const I oh = th / p.sh;
            if (oh >= p.Ho) continue;
            for (I kw = 0; kw < p.kW; ++kw) {
                const I tw = iw + p.pl - kw * p.dw;
                if (tw < 0) break;
                if (tw % p.sw != 0) continue;
                const I ow = tw / p.sw;
                if (ow >= p.Wo) continue;
                const T* gp = g_base + oh * p.Wo + ow;
                const T* wp = w_base + kh * p.kW + kw;
                for (I m = 0; m < p.Mg; ++m) {
                    acc += wp[m * w_m_stride] * gp[m * out_plane];
                }
            }
        }
        grad_in[idx] = acc;
    }
}

template <typename T, typename I>
void launch(const T* grad_out, const T* weight, T* grad_in, const ConvShape& s, int64_t total,
            cudaStream_t stream) {
    ConvIdx<I> p{};
    p.C = static_cast<I>(s.C);
    p.H = static_cast<I>(s.H);
    p.W = static_cast<I>(s.W);
    p.M = static_cast<I>(s.M);
    p.Ho = static_cast<I>(s.Ho);
    p.Wo = static_cast<I>(s.Wo);
    p.kH = static_cast<I>(s.kH);
    p.kW = static_cast<I>(s.kW);
    p.sh = static_cast<I>(s.sh);
    p.sw = static_cast<I>(s.sw);
    p.pt = static_cast<I>(s.pt);
    p.pl = static_cast<I>(s.pl);
    p.dh = static_cast<I>(s.dh);
    p.dw = static_cast<I>(s.dw);
    p.Cg = static_cast<I>(s.C / s.group);
    p.Mg = static_cast<I>(s.M / s.group);
    conv2d_backward_data_kernel<T, I>
        <<<detail::blocks_for(total), detail::kThreads, 0, stream>>>(grad_out, weight, grad_in, p,
                                                                     static_cast<I>(total));
    PYDEVIS_CUDA_CHECK_LAUNCH();
}

}  // namespace

template <typename T>
void conv2d_backward_data(const T* grad_out, const T* weight, T* grad_in, const ConvShape& s,
                          cudaStream_t stream) {
    const int64_t total = s.N * s.C * s.H * s.W;
    if (total == 0) return;
    const int64_t out_total = s.N * s.M * s.Ho * s.Wo;
    const int64_t w_total = s.M * (s.C / s.group) * s.kH * s.kW;
    // Intermediate values: ih + pt (< H + pt), kh * dh, iw + pl, kw * dw.
    if (detail::fits_int32({total, out_total, w_total, s.H + s.pt, s.W + s.pl, s.kH * s.dh,
                            s.kW * s.dw})) {
        launch<T, int32_t>(grad_out, weight, grad_in, s, total, stream);
    } else {
        launch<T, int64_t>(grad_out, weight, grad_in, s, total, stream);
    }
}

template void conv2d_backward_data<float>(const float*, const float*, float*, const ConvShape&,
                                          cudaStream_t);
template void conv2d_backward_data<double>(const double*, const double*, double*,
                                           const ConvShape&, cudaStream_t);

}  // namespace pydevis::cuda
