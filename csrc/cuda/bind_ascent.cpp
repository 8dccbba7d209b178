// pydevis._cuda: the stateless ascent kernels (docs/kernels.md, "Ascent kernels"), same names,
// arguments and checks as pydevis._C. The ascent loop itself keeps its image on the device in an
// AscentWorkspace (workspace.cpp) instead of calling these once per step.
#include <string>
#include <vector>

#include "arrays.h"
#include "common/front.h"
#include "common/gaussian.h"
#include "driver.h"
#include "kernels.h"

namespace pydevis::cuda {
namespace {

using ::pydevis::shape_str;

// v: 4-D float; g (optional): same dtype and shape.
void check_v_g(const Arg& v, const Arg* g) {
    require_rank(v, 4);
    if (g == nullptr) return;
    require_rank(*g, 4);
    require_same_dtype(*g, v);
    check_same_shape(g->shape, "g", v.shape, "v");
}

py::object ascent_update_py(const py::object& v_arr, const py::object& g_arr,
                            const py::object& eta_arr, double decay) {
    const Arg v = parse(v_arr, "v");
    const Arg g = parse(g_arr, "g");
    check_v_g(v, &g);
    const Ints& vs = v.shape;
    const Arg eta = parse_f64_vector(eta_arr, "eta", vs[0], kPerImage, vs);
    const int64_t N = vs[0], per_image = vs[1] * vs[2] * vs[3];
    const DType dt = v.dtype;
    return run({&v, &g, &eta}, vs, dt,
               [=](const std::vector<const void*>& in, void* out, cudaStream_t stream) {
                   by_dtype(dt, [&](auto zero) {
                       using T = decltype(zero);
                       ascent_update<T>(static_cast<const T*>(in[0]), static_cast<const T*>(in[1]),
                                        static_cast<const double*>(in[2]), static_cast<T*>(out),
                                        N, per_image, decay, stream);
                   });
                   return std::string();
               });
}

py::object gaussian_blur_py(const py::object& v_arr, double sigma) {
    const Arg v = parse(v_arr, "v");
    check_v_g(v, nullptr);
    check_blur_sigma(sigma);
    const Ints& vs = v.shape;
    const DType dt = v.dtype;
    if (sigma <= 0) return run({&v}, vs, dt, copy_of_first(v.nbytes()));
    std::vector<double> w = gaussian_weights(sigma);
    const int64_t r = (static_cast<int64_t>(w.size()) - 1) / 2;
    const int64_t planes = vs[0] * vs[1], H = vs[2], W = vs[3];
    return run({&v}, vs, dt,
               [=, w = std::move(w)](const std::vector<const void*>& in, void* out,
                                     cudaStream_t stream) {
                   const size_t w_bytes = w.size() * sizeof(double);
                   DeviceBuffer weights(w_bytes, stream);
                   PYDEVIS_CUDA_CHECK(cudaMemcpyAsync(weights.get(), w.data(), w_bytes,
                                                      cudaMemcpyHostToDevice, stream));
                   DeviceBuffer tmp(static_cast<size_t>(planes * H * W) * sizeof(double), stream);
                   by_dtype(dt, [&](auto zero) {
                       using T = decltype(zero);
                       gaussian_blur<T>(static_cast<const T*>(in[0]), static_cast<T*>(out),
                                        tmp.as<double>(), weights.as<const double>(), r, planes,
                                        H, W, stream);
                   });
                   // w (host) is read by the copy above: done before run() returns (it syncs)
                   PYDEVIS_CUDA_CHECK(cudaStreamSynchronize(stream));
                   return std::string();
               });
}

// clip_small_norm (g == nullptr) and clip_small_contribution, once v (and g) are parsed.
py::object clip_small_py(const Arg& v, const Arg* g, double pct) {
    check_percentile(pct);
    const Ints& vs = v.shape;
    const DType dt = v.dtype;
    std::vector<const Arg*> ins{&v};
    if (g != nullptr) ins.push_back(g);
    if (pct <= 0) return run(ins, vs, dt, copy_of_first(v.nbytes()));
    const int64_t N = vs[0], C = vs[1], HW = vs[2] * vs[3];
    const bool contribution = g != nullptr;
    return run(ins, vs, dt,
               [=](const std::vector<const void*>& in, void* out, cudaStream_t stream) {
                   DeviceBuffer scratch(
                       static_cast<size_t>(clip_small_scratch(N, HW)) * sizeof(double), stream);
                   by_dtype(dt, [&](auto zero) {
                       using T = decltype(zero);
                       clip_small<T>(static_cast<const T*>(in[0]),
                                     contribution ? static_cast<const T*>(in[1]) : nullptr,
                                     static_cast<T*>(out), scratch.as<double>(), N, C, HW, pct,
                                     stream);
                   });
                   return std::string();
               });
}

py::object clip_small_norm_py(const py::object& v_arr, double pct) {
    const Arg v = parse(v_arr, "v");
    check_v_g(v, nullptr);
    return clip_small_py(v, nullptr, pct);
}

py::object clip_small_contribution_py(const py::object& v_arr, const py::object& g_arr,
                                      double pct) {
    const Arg v = parse(v_arr, "v");
    const Arg g = parse(g_arr, "g");
    check_v_g(v, &g);
    return clip_small_py(v, &g, pct);
}

py::object clamp_channels_py(const py::object& v_arr, const py::object& lo_arr,
                             const py::object& hi_arr) {
    const Arg v = parse(v_arr, "v");
    check_v_g(v, nullptr);
    const Ints& vs = v.shape;
    const Arg lo = parse_f64_vector(lo_arr, "lo", vs[1], kPerChannel, vs);
    const Arg hi = parse_f64_vector(hi_arr, "hi", vs[1], kPerChannel, vs);
    const int64_t N = vs[0], C = vs[1], HW = vs[2] * vs[3];
    const DType dt = v.dtype;
    return run({&v, &lo, &hi}, vs, dt,
               [=](const std::vector<const void*>& in, void* out, cudaStream_t stream) {
                   by_dtype(dt, [&](auto zero) {
                       using T = decltype(zero);
                       clamp_channels<T>(static_cast<const T*>(in[0]),
                                         static_cast<const double*>(in[1]),
                                         static_cast<const double*>(in[2]), static_cast<T*>(out),
                                         N, C, HW, stream);
                   });
                   return std::string();
               });
}

}  // namespace

void bind_ascent(py::module_& m) {
    using py::arg;
    m.def("ascent_update", &ascent_update_py, arg("v"), arg("g"), arg("eta"), arg("decay"),
          "(v + eta[n] * g) * (1 - decay); eta float64 (N,).");
    m.def("gaussian_blur", &gaussian_blur_py, arg("v"), arg("sigma"),
          "Separable Gaussian of each (n, c) plane, radius int(4*sigma + 0.5), reflect boundary.");
    m.def("clip_small_norm", &clip_small_norm_py, arg("v"), arg("pct"),
          "Zero the pixels whose channel norm is below the pct-th percentile of their image.");
    m.def("clip_small_contribution", &clip_small_contribution_py, arg("v"), arg("g"), arg("pct"),
          "Zero the pixels whose |sum_c g * -v| is below the pct-th percentile of their image.");
    m.def("clamp_channels", &clamp_channels_py, arg("v"), arg("lo"), arg("hi"),
          "Clip channel c of v to [lo[c], hi[c]]; lo, hi float64 (C,).");
}

}  // namespace pydevis::cuda
