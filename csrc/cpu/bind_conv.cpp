// pydevis._C: the conv backward (dL/dX of Conv), its Winograd weights and its narrow-plane GEMM
// (docs/kernels.md).
#include <pybind11/stl.h>

#include <cmath>
#include <limits>
#include <optional>
#include <string>

#include "bind.h"
#include "common/front.h"
#include "cpu/kernels.h"
#include "cpu/small_gemm.h"
#include "cpu/winograd.h"

namespace {

// ---- conv2d_backward_data ---------------------------------------------------------------------
template <typename T>
py::array conv_impl(const py::array& go, const py::array& w, const pydevis::cpu::ConvGeom& g,
                    const float* u, const py::array* y, int rectify, double lo, double hi) {
  auto out = new_array<T>({g.N, g.C, g.H, g.W});
  T* dst = out.mutable_data();
  const pydevis::cpu::FusedRelu<T> relu{y ? cptr<T>(*y) : nullptr, rectify, T(lo), T(hi)};
  {
    py::gil_scoped_release nogil;
    pydevis::cpu::conv2d_backward_data<T>(cptr<T>(go), cptr<T>(w), dst, g, u, relu);
  }
  return std::move(out);
}

pydevis::cpu::ConvGeom conv_geometry(const py::array& grad_out, const py::array& weight,
                                     const Ints& in_hw, const Ints& strides, const Ints& pads,
                                     const Ints& dilations, int64_t group) {
  pydevis::check_layout(grad_out, "grad_out", 4);
  pydevis::check_layout(weight, "weight", 4);
  pydevis::is_float64(grad_out, "grad_out");  // a float32/float64 check; the value is unused
  pydevis::check_same_dtype(weight, "weight", grad_out, "grad_out");
  return pydevis::conv_front(shape_of(grad_out), shape_of(weight), in_hw, strides, pads,
                             dilations, group);
}

py::array conv2d_backward_data(const py::array& grad_out, const py::array& weight,
                               const Ints& in_hw, const Ints& strides, const Ints& pads,
                               const Ints& dilations, int64_t group,
                               const std::optional<py::array>& winograd_u,
                               const std::optional<py::array>& y, int rectify, double lo,
                               double hi) {
  const auto g = conv_geometry(grad_out, weight, in_hw, strides, pads, dilations, group);
  const bool f64 = pydevis::is_float64(grad_out, "grad_out");
  PYDEVIS_CHECK(rectify >= -1 && rectify <= 2, "rectify: must be -1 (none) or a mode 0..2, got ",
                rectify);
  PYDEVIS_CHECK(!std::isnan(lo) && !std::isnan(hi) && lo <= hi,
                "lo, hi: the rectifier's bounds must be numbers with lo <= hi, got ", lo, ", ", hi);
  if (rectify >= 0) {
    PYDEVIS_CHECK(y.has_value(), "y: the Relu output is needed with rectify ", rectify);
    pydevis::check_layout(*y, "y", 4);
    pydevis::check_same_dtype(*y, "y", grad_out, "grad_out");
    const Ints want{g.N, g.C, g.H, g.W};
    if (shape_of(*y) != want)
      throw py::value_error("y: shape " + shape_str(shape_of(*y)) + ", expected " +
                            shape_str(want) + " (the conv's input)");
  }
  const py::array* relu_y = rectify >= 0 ? &*y : nullptr;
  const float* u = nullptr;
  if (winograd_u) {
    const int variant = f64 ? 0 : pydevis::cpu::winograd_variant(g);
    if (variant == 0)
      throw py::value_error("winograd_u: this conv does not take the Winograd path");
    pydevis::check_layout(*winograd_u, "winograd_u", 1);
    if (pydevis::is_float64(*winograd_u, "winograd_u") ||
        winograd_u->shape(0) != pydevis::cpu::winograd_weights_size(g, variant))
      throw py::value_error("winograd_u: expected winograd_weights(weight, ..., " +
                            std::to_string(variant) + ") of this conv");
    u = static_cast<const float*>(winograd_u->data());
  }
  return f64 ? conv_impl<double>(grad_out, weight, g, nullptr, relu_y, rectify, lo, hi)
             : conv_impl<float>(grad_out, weight, g, u, relu_y, rectify, lo, hi);
}

// The Winograd variant (0, 2, 4) conv2d_backward_data runs for these float32 arguments; the
// arguments are checked as conv2d_backward_data checks them.
int winograd_variant(const py::array& grad_out, const py::array& weight, const Ints& in_hw,
                     const Ints& strides, const Ints& pads, const Ints& dilations,
                     int64_t group) {
  const auto g = conv_geometry(grad_out, weight, in_hw, strides, pads, dilations, group);
  return pydevis::is_float64(grad_out, "grad_out") ? 0 : pydevis::cpu::winograd_variant(g);
}

// The transformed weights of a variant: they depend on the weights and groups only.
py::array winograd_weights(const py::array& weight, int64_t group, int variant) {
  pydevis::check_layout(weight, "weight", 4);
  if (pydevis::is_float64(weight, "weight"))
    throw py::value_error("weight: Winograd weights are float32 only");
  const Ints ws = shape_of(weight);
  if (ws[2] != 3 || ws[3] != 3) throw py::value_error("weight: expected 3x3 kernels");
  if (variant != 2 && variant != 4) throw py::value_error("variant: expected 2 or 4");
  if (group < 1 || ws[0] % group != 0)
    throw py::value_error("group: must be >= 1 and divide the " + std::to_string(ws[0]) +
                          " output channels");
  pydevis::cpu::ConvGeom g{};
  g.M = ws[0];
  g.group = group;
  g.C = ws[1] * group;
  g.kH = g.kW = 3;
  auto out = new_array<float>({pydevis::cpu::winograd_weights_size(g, variant)});
  float* dst = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    pydevis::cpu::winograd_weights(cptr<float>(weight), g, variant, dst);
  }
  return std::move(out);
}


// ---- small_gemm_tn (the narrow-plane GEMM of the conv backward, exposed for its tests) -----
py::array small_gemm_tn(const py::array& a, const py::array& b, int64_t m) {
  pydevis::check_layout(a, "a", 2);
  pydevis::check_layout(b, "b", 2);
  CHECK(pydevis::has_dtype<float>(a) && pydevis::has_dtype<float>(b),
        "small_gemm_tn: a and b must be float32");
  const Ints as = shape_of(a), bs = shape_of(b);
  CHECK(as[0] == bs[0], "small_gemm_tn: a has ", as[0], " rows, b ", bs[0]);
  CHECK(bs[1] >= 1 && bs[1] <= pydevis::cpu::kSmallGemmMaxCols, "small_gemm_tn: b has ", bs[1],
        " columns, expected 1..", pydevis::cpu::kSmallGemmMaxCols);
  CHECK(m >= 1 && m <= as[1], "small_gemm_tn: m = ", m, ", expected 1..", as[1]);
  auto out = new_array<float>({m, bs[1]});
  float* dst = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    pydevis::cpu::small_gemm_tn(m, bs[1], as[0], cptr<float>(a), as[1], cptr<float>(b), bs[1],
                                dst, bs[1]);
  }
  return std::move(out);
}

}  // namespace

void bind_conv(py::module_& m) {
  m.def("conv2d_backward_data", &conv2d_backward_data, py::arg("grad_out"), py::arg("weight"),
        py::arg("in_hw"), py::arg("strides"), py::arg("pads"), py::arg("dilations"),
        py::arg("group"), py::arg("winograd_u") = py::none(), py::arg("y") = py::none(),
        py::arg("rectify") = -1, py::arg("lo") = 0.0,
        py::arg("hi") = std::numeric_limits<double>::infinity(),
        "dL/dX of ONNX Conv (the transposed convolution). winograd_u: winograd_weights(weight, "
        "group, winograd_variant(...)) of this conv, when that variant is not 0. rectify 0..2: "
        "X is y, the output of a Relu (lo 0, hi inf) or Clip (lo, hi), and that rectifier's "
        "backward in that mode follows.");
  m.def("winograd_variant", &winograd_variant, py::arg("grad_out"), py::arg("weight"),
        py::arg("in_hw"), py::arg("strides"), py::arg("pads"), py::arg("dilations"),
        py::arg("group"),
        "0, 2 or 4: the Winograd variant conv2d_backward_data runs (none, F(2x2, 3x3), "
        "F(4x4, 3x3)).");
  m.def("winograd_weights", &winograd_weights, py::arg("weight"), py::arg("group"),
        py::arg("variant"), "The float32 weights transformed for Winograd variant 2 or 4.");
  m.def("small_gemm_tn", &small_gemm_tn, py::arg("a"), py::arg("b"), py::arg("m"),
        "a[:, :m].T @ b for float32 a (k x lda), b (k x n), n <= 64: the conv backward's GEMM "
        "on narrow planes (its tests; the scalar loop where small_gemm_available() is False).");
  m.def("small_gemm_available", &pydevis::cpu::small_gemm_available,
        "Whether the conv backward uses small_gemm_tn here (x86-64 with AVX-512F).");
}
