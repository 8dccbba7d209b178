// pydevis._cuda: the backward kernels (docs/kernels.md), same names, arguments and checks as
// pydevis._C: the array arguments are parsed here (numpy or __cuda_array_interface__), the rest
// is checked by the shared fronts of common/front.h before any memory is touched.
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <vector>

#include "arrays.h"
#include "blas.h"
#include "common/front.h"
#include "driver.h"
#include "kernels.h"

namespace pydevis::cuda {
namespace {

using ::pydevis::shape_str;

// Pointers of a run() body, typed.
template <typename T>
const T* in_(const std::vector<const void*>& in, size_t i) {
    return static_cast<const T*>(in[i]);
}

py::object conv2d_backward_data_py(const py::object& grad_out, const py::object& weight,
                                   const Ints& in_hw, const Ints& strides, const Ints& pads,
                                   const Ints& dilations, int64_t group) {
    const Arg g = parse(grad_out, "grad_out");
    require_rank(g, 4);
    const Arg w = parse(weight, "weight");
    require_rank(w, 4);
    require_same_dtype(w, g);
    const ConvGeom s = conv_front(g.shape, w.shape, in_hw, strides, pads, dilations, group);
    const DType dt = g.dtype;
    return run({&g, &w}, {s.N, s.C, s.H, s.W}, dt,
               [s, dt](const std::vector<const void*>& in, void* out, cudaStream_t stream) {
                   by_dtype(dt, [&](auto zero) {
                       using T = decltype(zero);
                       conv2d_backward_data<T>(in_<T>(in, 0), in_<T>(in, 1), static_cast<T*>(out),
                                               s, stream);
                   });
                   return std::string();
               });
}

py::object max_pool2d_backward_py(const py::object& grad_out, const py::object& x,
                                  const Ints& kernel_shape, const Ints& strides, const Ints& pads,
                                  const Ints& dilations) {
    const Arg g = parse(grad_out, "grad_out");
    require_rank(g, 4);
    const Arg xx = parse(x, "x");
    require_rank(xx, 4);
    require_same_dtype(xx, g);
    const MaxPoolGeom s = max_pool_front(g.shape, xx.shape, kernel_shape, strides, pads,
                                         dilations);
    const int64_t out_total = numel(g.shape);
    const DType dt = g.dtype;
    return run({&g, &xx}, xx.shape, dt,
               [=](const std::vector<const void*>& in, void* out, cudaStream_t stream) {
                   DeviceBuffer switches(static_cast<size_t>(out_total) * sizeof(int32_t),
                                         stream);
                   by_dtype(dt, [&](auto zero) {
                       using T = decltype(zero);
                       max_pool2d_backward<T>(in_<T>(in, 0), in_<T>(in, 1), static_cast<T*>(out),
                                              switches.as<int32_t>(), s, stream);
                   });
                   return std::string();
               });
}

py::object rectifier_backward_py(const py::object& grad_out, const py::object& out_arr, int mode,
                                 double lo, double hi) {
    const Arg g = parse(grad_out, "grad_out");
    const Arg y = parse(out_arr, "out");
    require_same_dtype(y, g);
    rectifier_front(g.shape, y.shape, mode);
    const int64_t n = numel(g.shape);
    const DType dt = g.dtype;
    return run({&g, &y}, g.shape, dt,
               [=](const std::vector<const void*>& in, void* out, cudaStream_t stream) {
                   by_dtype(dt, [&](auto zero) {
                       using T = decltype(zero);
                       rectifier_backward<T>(in_<T>(in, 0), in_<T>(in, 1), static_cast<T*>(out),
                                             n, mode, lo, hi, stream);
                   });
                   return std::string();
               });
}

py::object lrn_backward_py(const py::object& grad_out, const py::object& x, int64_t size,
                           double alpha, double beta, double bias) {
    const Arg g = parse(grad_out, "grad_out");
    require_rank(g, 4);
    const Arg xx = parse(x, "x");
    require_rank(xx, 4);
    require_same_dtype(xx, g);
    lrn_front(g.shape, xx.shape, size, alpha, beta, bias);
    const int64_t N = g.shape[0], C = g.shape[1], HW = g.shape[2] * g.shape[3];
    const DType dt = g.dtype;
    return run({&g, &xx}, g.shape, dt,
               [=](const std::vector<const void*>& in, void* out, cudaStream_t stream) {
                   DeviceBuffer scratch(static_cast<size_t>(N * C * HW) * itemsize(dt), stream);
                   by_dtype(dt, [&](auto zero) {
                       using T = decltype(zero);
                       lrn_backward<T>(in_<T>(in, 0), in_<T>(in, 1), static_cast<T*>(out),
                                       scratch.as<T>(), N, C, HW, size, alpha, beta, bias,
                                       stream);
                   });
                   return std::string();
               });
}

py::object avg_pool2d_backward_py(const py::object& grad_out, const Ints& in_shape,
                                  const Ints& kernel_shape, const Ints& strides, const Ints& pads,
                                  bool count_include_pad) {
    const Arg g = parse(grad_out, "grad_out");
    require_rank(g, 4);
    const PoolGeom s = avg_pool_front(g.shape, in_shape, kernel_shape, strides, pads,
                                      count_include_pad);
    const DType dt = g.dtype;
    return run({&g}, in_shape, dt,
               [=](const std::vector<const void*>& in, void* out, cudaStream_t stream) {
                   by_dtype(dt, [&](auto zero) {
                       using T = decltype(zero);
                       avg_pool2d_backward<T>(in_<T>(in, 0), static_cast<T*>(out), s, stream);
                   });
                   return std::string();
               });
}

py::object global_avg_pool_backward_py(const py::object& grad_out, const Ints& in_shape) {
    const Arg g = parse(grad_out, "grad_out");
    require_rank(g, 4);
    global_avg_pool_front(g.shape, in_shape);
    const int64_t planes = in_shape[0] * in_shape[1];
    const int64_t HW = in_shape[2] * in_shape[3];
    const DType dt = g.dtype;
    return run({&g}, in_shape, dt,
               [=](const std::vector<const void*>& in, void* out, cudaStream_t stream) {
                   by_dtype(dt, [&](auto zero) {
                       using T = decltype(zero);
                       global_avg_pool_backward<T>(in_<T>(in, 0), static_cast<T*>(out), planes,
                                                   HW, stream);
                   });
                   return std::string();
               });
}

// Get (name None) or set conv2d_backward_data's algorithm: "auto", "gemm" or "direct".
std::string conv_algorithm_py(const std::optional<std::string>& name) {
    static const char* names[] = {"auto", "gemm", "direct"};
    if (name) {
        int i = 0;
        while (i < 3 && *name != names[i]) ++i;
        PYDEVIS_CHECK(i < 3, "conv_algorithm: expected auto, gemm or direct, got ", *name);
        PYDEVIS_CHECK(i != 1 || have_cublas(), "conv_algorithm: gemm needs cuBLAS, and this "
                      "build of pydevis._cuda has none");
        set_conv_algorithm(static_cast<ConvAlgo>(i));
    }
    return names[static_cast<int>(conv_algorithm())];
}

}  // namespace

void bind_backward(py::module_& m) {
    using py::arg;
    m.attr("has_cublas") = have_cublas();
    m.def("conv_algorithm", &conv_algorithm_py, arg("name") = py::none(),
          "conv2d_backward_data's algorithm, process-wide: 'auto' (GEMM + col2im with cuBLAS "
          "when M/group >= 8, else the direct gather), 'gemm' or 'direct'; sets it when given.");
    m.def("conv2d_backward_data", &conv2d_backward_data_py, arg("grad_out"), arg("weight"),
          arg("in_hw"), arg("strides"), arg("pads"), arg("dilations"), arg("group"),
          "dL/dX of ONNX Conv: (N, M, Ho, Wo) x (M, C/group, kH, kW) -> (N, C, H, W).");
    m.def("max_pool2d_backward", &max_pool2d_backward_py, arg("grad_out"), arg("x"),
          arg("kernel_shape"), arg("strides"), arg("pads"), arg("dilations"),
          "dL/dX of ONNX MaxPool from its forward input (switches: first strict maximum).");
    m.def("rectifier_backward", &rectifier_backward_py, arg("grad_out"), arg("out"), arg("mode"),
          arg("lo"), arg("hi"), "Relu/Clip backward: mode 0 gradient, 1 deconvnet, 2 guided.");
    m.def("lrn_backward", &lrn_backward_py, arg("grad_out"), arg("x"), arg("size"), arg("alpha"),
          arg("beta"), arg("bias"), "dL/dX of ONNX LRN given the forward input x.");
    m.def("avg_pool2d_backward", &avg_pool2d_backward_py, arg("grad_out"), arg("in_shape"),
          arg("kernel_shape"), arg("strides"), arg("pads"), arg("count_include_pad"),
          "dL/dX of ONNX AveragePool (2-D), gather form.");
    m.def("global_avg_pool_backward", &global_avg_pool_backward_py, arg("grad_out"),
          arg("in_shape"), "dL/dX of ONNX GlobalAveragePool: g / (H*W) over each plane.");
}

}  // namespace pydevis::cuda
