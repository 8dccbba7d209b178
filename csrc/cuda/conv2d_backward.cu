// dL/dX of ONNX Conv (the transposed convolution, the deconvnet "filtering"), CUDA.
//
// GEMM + col2im (with cuBLAS, for M/group >= kGemmMinChannels): per group g and chunk of images,
// cols[n] (Cg*kH*kW, Ho*Wo) = W_g^T (Cg*kH*kW, Mg) * G[n, g] (Mg, Ho*Wo), one strided-batched
// cuBLAS GEMM over the chunk, then col2im: one thread per input element (n, c, ih, iw) of the
// group gathers cols over its (kh, kw) taps (no atomics, deterministic). The chunk bounds the
// cols buffer to kColsBytes.
//
// Direct gather (depthwise and small groups, or without cuBLAS): one thread per input element
// sums W[m, c', kh, kw] * grad_out[n, m, oh, ow] over the (kh, kw) taps whose output position
// oh = (ih + pt - kh*dh) / sh, ow = (iw + pl - kw*dw) / sw is integral and in range, and over the
// M/group output channels m of c's group.
#include <algorithm>
#include <atomic>

#include "blas.h"
#include "device_memory.h"
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

template <typename I>
ConvIdx<I> conv_idx(const ConvGeom& s) {
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
    return p;
}

template <typename T, typename I>
void launch(const T* grad_out, const T* weight, T* grad_in, const ConvGeom& s, int64_t total,
            cudaStream_t stream) {
    const ConvIdx<I> p = conv_idx<I>(s);
    conv2d_backward_data_kernel<T, I>
        <<<detail::blocks_for(total), detail::kThreads, 0, stream>>>(grad_out, weight, grad_in, p,
                                                                     static_cast<I>(total));
    PYDEVIS_CUDA_CHECK_LAUNCH();
}


// col2im of one group: grad_in[n, g*Cg + cc, ih, iw] = sum over the taps (kh, kw) that reach
// (ih, iw) of cols[n - n0][(cc*kH + kh)*kW + kw][oh*Wo + ow], for the images [n0, n0 + nb).
template <typename T, typename I>
__global__ void col2im_kernel(const T* __restrict__ cols, T* __restrict__ grad_in, ConvIdx<I> p,
                              I n0, I g, I total) {
    const I plane = p.H * p.W, P = p.Ho * p.Wo, K = p.Cg * p.kH * p.kW;
    for (I idx = detail::global_thread<I>(); idx < total; idx += detail::grid_stride<I>()) {
        const I iw = idx % p.W;
        const I ih = (idx / p.W) % p.H;
        const I cc = (idx / plane) % p.Cg;
        const I nl = idx / (plane * p.Cg);
        const T* col = cols + nl * K * P + cc * p.kH * p.kW * P;
        T acc = T(0);
        for (I kh = 0; kh < p.kH; ++kh) {
            const I th = ih + p.pt - kh * p.dh;
            if (th < 0) break;
            if (th % p.sh != 0) continue;
            const I oh = th / p.sh;
            if (oh >= p.Ho) continue;
            for (I kw = 0; kw < p.kW; ++kw) {
                const I tw = iw + p.pl - kw * p.dw;
                if (tw < 0) break;
                if (tw % p.sw != 0) continue;
                const I ow = tw / p.sw;
                if (ow >= p.Wo) continue;
                acc += col[(kh * p.kW + kw) * P + oh * p.Wo + ow];
            }
        }
        grad_in[((n0 + nl) * p.C + g * p.Cg + cc) * plane + ih * p.W + iw] = acc;
    }
}

constexpr int64_t kGemmMinChannels = 8;          // M/group below this: the direct kernel
constexpr int64_t kColsBytes = int64_t{1} << 28;  // the cols buffer of one chunk: 256 MiB

std::atomic<int> g_algorithm{static_cast<int>(ConvAlgo::automatic)};

template <typename T, typename I>
void gemm_col2im(const T* grad_out, const T* weight, T* grad_in, const ConvGeom& s,
                 cudaStream_t stream) {
    const ConvIdx<I> p = conv_idx<I>(s);
    const int64_t P = s.Ho * s.Wo, Mg = s.M / s.group, Cg = s.C / s.group;
    const int64_t K = Cg * s.kH * s.kW, plane = s.H * s.W;
    const int64_t per_image = K * P * static_cast<int64_t>(sizeof(T));
    const int64_t chunk = std::clamp<int64_t>(kColsBytes / std::max<int64_t>(per_image, 1), 1,
                                              s.N);
    DeviceBuffer cols(static_cast<size_t>(chunk * K * P) * sizeof(T), stream);
    for (int64_t n0 = 0; n0 < s.N; n0 += chunk) {
        const int64_t nb = std::min(chunk, s.N - n0);
        for (int64_t g = 0; g < s.group; ++g) {
            gemm_nt_strided<T>(static_cast<int>(P), static_cast<int>(K), static_cast<int>(Mg),
                               grad_out + (n0 * s.M + g * Mg) * P, static_cast<int>(P),
                               s.M * P, weight + g * Mg * K, static_cast<int>(K), 0,
                               cols.as<T>(), static_cast<int>(P), K * P, static_cast<int>(nb),
                               stream);
            const int64_t total = nb * Cg * plane;
            col2im_kernel<T, I><<<detail::blocks_for(total), detail::kThreads, 0, stream>>>(
                cols.as<const T>(), grad_in, p, static_cast<I>(n0), static_cast<I>(g),
                static_cast<I>(total));
            PYDEVIS_CUDA_CHECK_LAUNCH();
        }
    }
}

}  // namespace

void set_conv_algorithm(ConvAlgo a) { g_algorithm.store(static_cast<int>(a)); }

ConvAlgo conv_algorithm() { return static_cast<ConvAlgo>(g_algorithm.load()); }

bool conv_uses_gemm(const ConvGeom& s) {
    const ConvAlgo a = conv_algorithm();
    if (!have_cublas() || a == ConvAlgo::direct) return false;
    return a == ConvAlgo::gemm || s.M / s.group >= kGemmMinChannels;
}

template <typename T>
void conv2d_backward_data(const T* grad_out, const T* weight, T* grad_in, const ConvGeom& s,
                          cudaStream_t stream) {
    const int64_t total = s.N * s.C * s.H * s.W;
    if (total == 0) return;
    const int64_t out_total = s.N * s.M * s.Ho * s.Wo;
    const int64_t w_total = s.M * (s.C / s.group) * s.kH * s.kW;
    if (out_total == 0 || w_total == 0) {  // no output position: a zero gradient
        PYDEVIS_CUDA_CHECK(
            cudaMemsetAsync(grad_in, 0, static_cast<size_t>(total) * sizeof(T), stream));
        return;
    }
    // Intermediate values: ih + pt (< H + pt), kh * dh, iw + pl, kw * dw; col2im's chunk offsets
    // stay below kColsBytes / sizeof(T) + one image's cols.
    const int64_t cols = (s.C / s.group) * s.kH * s.kW * s.Ho * s.Wo;
    const bool small = detail::fits_int32({total, out_total, w_total, s.H + s.pt, s.W + s.pl,
                                           s.kH * s.dh, s.kW * s.dw});
    if (conv_uses_gemm(s)) {
        if (small && detail::fits_int32({kColsBytes / int64_t(sizeof(T)) + cols})) {
            gemm_col2im<T, int32_t>(grad_out, weight, grad_in, s, stream);
        } else {
            gemm_col2im<T, int64_t>(grad_out, weight, grad_in, s, stream);
        }
    } else if (small) {
        launch<T, int32_t>(grad_out, weight, grad_in, s, total, stream);
    } else {
        launch<T, int64_t>(grad_out, weight, grad_in, s, total, stream);
    }
}

template void conv2d_backward_data<float>(const float*, const float*, float*, const ConvGeom&,
                                          cudaStream_t);
template void conv2d_backward_data<double>(const double*, const double*, double*,
                                           const ConvGeom&, cudaStream_t);

}  // namespace pydevis::cuda
