// pydevis._C: the backward kernels other than the conv (docs/kernels.md).
#include <pybind11/stl.h>

#include "bind.h"
#include "common/front.h"
#include "cpu/kernels.h"

namespace {

// ---- linear_backward_data -----------------------------------------------------------------
template <typename T>
py::array linear_impl(const py::array& go, const py::array& w, int isa) {
  const Ints gs = shape_of(go), ws = shape_of(w);
  auto out = new_array<T>({gs[0], ws[1]});
  T* dst = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    pydevis::cpu::linear_backward_data<T>(cptr<T>(go), cptr<T>(w), dst, gs[0], gs[1], ws[1], isa);
  }
  return std::move(out);
}

py::array linear_backward_data(const py::array& grad_out, const py::array& weight, int isa) {
  pydevis::check_layout(grad_out, "grad_out", 2);
  pydevis::check_layout(weight, "weight", 2);
  const bool f64 = pydevis::is_float64(grad_out, "grad_out");
  pydevis::check_same_dtype(weight, "weight", grad_out, "grad_out");
  pydevis::linear_front(shape_of(grad_out), shape_of(weight));
  CHECK(isa >= 0 && isa <= 2, "isa: expected 0 (baseline), 1 (AVX2) or 2 (AVX-512), got ", isa);
  return f64 ? linear_impl<double>(grad_out, weight, isa)
             : linear_impl<float>(grad_out, weight, isa);
}

// ---- max_pool2d_backward ------------------------------------------------------------------
template <typename T>
py::array maxpool_impl(const py::array& go, const py::array& x,
                       const pydevis::cpu::MaxPoolGeom& g, int rectify) {
  auto out = new_array<T>({g.N, g.C, g.H, g.W});
  T* dst = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    pydevis::cpu::max_pool2d_backward<T>(cptr<T>(go), cptr<T>(x), dst, g, rectify);
  }
  return std::move(out);
}

py::array max_pool2d_backward(const py::array& grad_out, const py::array& x,
                              const Ints& kernel_shape, const Ints& strides, const Ints& pads,
                              const Ints& dilations, int rectify) {
  pydevis::check_layout(grad_out, "grad_out", 4);
  pydevis::check_layout(x, "x", 4);
  PYDEVIS_CHECK(rectify >= -1 && rectify <= 2, "rectify: must be -1 (none) or a mode 0..2, got ",
                rectify);
  const bool f64 = pydevis::is_float64(grad_out, "grad_out");
  pydevis::check_same_dtype(x, "x", grad_out, "grad_out");
  const auto g = pydevis::max_pool_front(shape_of(grad_out), shape_of(x), kernel_shape, strides,
                                         pads, dilations);
  return f64 ? maxpool_impl<double>(grad_out, x, g, rectify)
             : maxpool_impl<float>(grad_out, x, g, rectify);
}

// ---- rectifier_backward -------------------------------------------------------------------
template <typename T>
py::array rect_impl(const py::array& go, const py::array& y, int mode, double lo, double hi) {
  auto out = new_array<T>(shape_of(go));
  T* dst = out.mutable_data();
  const int64_t n = go.size();
  {
    py::gil_scoped_release nogil;
    pydevis::cpu::rectifier_backward<T>(cptr<T>(go), cptr<T>(y), dst, n, mode, T(lo), T(hi));
  }
  return std::move(out);
}

py::array rectifier_backward(const py::array& grad_out, const py::array& out, int mode, double lo,
                             double hi) {
  pydevis::check_layout(grad_out, "grad_out", -1);
  pydevis::check_layout(out, "out", -1);
  const bool f64 = pydevis::is_float64(grad_out, "grad_out");
  pydevis::check_same_dtype(out, "out", grad_out, "grad_out");
  pydevis::rectifier_front(shape_of(grad_out), shape_of(out), mode);
  return f64 ? rect_impl<double>(grad_out, out, mode, lo, hi)
             : rect_impl<float>(grad_out, out, mode, lo, hi);
}

// ---- add ------------------------------------------------------------------------------------
template <typename T>
py::array add_impl(const py::array& a, const py::array& b) {
  auto out = new_array<T>(shape_of(a));
  T* dst = out.mutable_data();
  const int64_t n = a.size();
  {
    py::gil_scoped_release nogil;
    pydevis::cpu::add<T>(cptr<T>(a), cptr<T>(b), dst, n);
  }
  return std::move(out);
}

py::array add(const py::array& a, const py::array& b) {
  pydevis::check_layout(a, "a", -1);
  pydevis::check_layout(b, "b", -1);
  const bool f64 = pydevis::is_float64(a, "a");
  pydevis::check_same_dtype(b, "b", a, "a");
  pydevis::check_same_shape(shape_of(b), "b", shape_of(a), "a");
  return f64 ? add_impl<double>(a, b) : add_impl<float>(a, b);
}


// ---- contiguous ---------------------------------------------------------------------------
template <typename T>
py::array contiguous_impl(const py::array& a, const Ints& shape, const Ints& strides) {
  auto out = new_array<T>(shape);
  T* dst = out.mutable_data();
  const T* src = static_cast<const T*>(a.data());
  {
    py::gil_scoped_release nogil;
    pydevis::cpu::copy_strided<T>(src, shape.data(), strides.data(), int(shape.size()), dst);
  }
  return std::move(out);
}

py::array contiguous(const py::array& a) {
  const Ints shape = shape_of(a);
  pydevis::check_rank(shape, "a", -1);
  pydevis::checked_numel(shape, "a");
  const bool f64 = pydevis::is_float64(a, "a");
  PYDEVIS_CHECK(a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_, "a: array must be aligned");
  const int64_t item = f64 ? 8 : 4;
  Ints strides(shape.size());
  for (size_t d = 0; d < shape.size(); ++d) {
    const int64_t b = a.strides(py::ssize_t(d));
    PYDEVIS_CHECK(b % item == 0, "a: stride ", b, " of dimension ", d,
                  " is not a multiple of the item size");
    strides[d] = b / item;
  }
  return f64 ? contiguous_impl<double>(a, shape, strides)
             : contiguous_impl<float>(a, shape, strides);
}

// ---- lrn_backward -------------------------------------------------------------------------
template <typename T>
py::array lrn_impl(const py::array& go, const py::array& x, int64_t size, double alpha,
                   double beta, double bias) {
  const Ints s = shape_of(go);
  auto out = new_array<T>(s);
  T* dst = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    pydevis::cpu::lrn_backward<T>(cptr<T>(go), cptr<T>(x), dst, s[0], s[1], s[2] * s[3], size,
                                  alpha, beta, bias);
  }
  return std::move(out);
}

py::array lrn_backward(const py::array& grad_out, const py::array& x, int64_t size, double alpha,
                       double beta, double bias) {
  pydevis::check_layout(grad_out, "grad_out", 4);
  pydevis::check_layout(x, "x", 4);
  const bool f64 = pydevis::is_float64(grad_out, "grad_out");
  pydevis::check_same_dtype(x, "x", grad_out, "grad_out");
  pydevis::lrn_front(shape_of(grad_out), shape_of(x), size, alpha, beta, bias);
  return f64 ? lrn_impl<double>(grad_out, x, size, alpha, beta, bias)
             : lrn_impl<float>(grad_out, x, size, alpha, beta, bias);
}

// ---- avg_pool2d_backward ------------------------------------------------------------------
template <typename T>
py::array avg_impl(const py::array& go, const pydevis::cpu::PoolGeom& g) {
  auto out = new_array<T>({g.N, g.C, g.H, g.W});
  T* dst = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    pydevis::cpu::avg_pool2d_backward<T>(cptr<T>(go), dst, g);
  }
  return std::move(out);
}

py::array avg_pool2d_backward(const py::array& grad_out, const Ints& in_shape,
                              const Ints& kernel_shape, const Ints& strides, const Ints& pads,
                              bool count_include_pad) {
  pydevis::check_layout(grad_out, "grad_out", 4);
  const bool f64 = pydevis::is_float64(grad_out, "grad_out");
  const auto g = pydevis::avg_pool_front(shape_of(grad_out), in_shape, kernel_shape, strides,
                                         pads, count_include_pad);
  return f64 ? avg_impl<double>(grad_out, g) : avg_impl<float>(grad_out, g);
}

// ---- global_avg_pool_backward -------------------------------------------------------------
template <typename T>
py::array gap_impl(const py::array& go, const Ints& in_shape) {
  auto out = new_array<T>(in_shape);
  T* dst = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    pydevis::cpu::global_avg_pool_backward<T>(cptr<T>(go), dst, in_shape[0] * in_shape[1],
                                              in_shape[2] * in_shape[3]);
  }
  return std::move(out);
}

py::array global_avg_pool_backward(const py::array& grad_out, const Ints& in_shape) {
  pydevis::check_layout(grad_out, "grad_out", 4);
  const bool f64 = pydevis::is_float64(grad_out, "grad_out");
  pydevis::global_avg_pool_front(shape_of(grad_out), in_shape);
  return f64 ? gap_impl<double>(grad_out, in_shape) : gap_impl<float>(grad_out, in_shape);
}

}  // namespace

void bind_backward(py::module_& m) {
  m.def("linear_backward_data", &linear_backward_data, py::arg("grad_out"), py::arg("weight"),
        py::arg("isa") = 2,
        "grad_out (N, M) · weight (M, K): dL/dX of Gemm with transB = 1, streaming W once "
        "(small N). isa caps the vector code: 0 baseline, 1 AVX2+FMA, 2 AVX-512.");
  m.attr("linear_isa_level") = pydevis::cpu::linear_isa_level();
  m.def("max_pool2d_backward", &max_pool2d_backward, py::arg("grad_out"), py::arg("x"),
        py::arg("kernel_shape"), py::arg("strides"), py::arg("pads"), py::arg("dilations"),
        py::arg("rectify") = -1,
        "dL/dX of ONNX MaxPool from its forward input (switches: first strict maximum); "
        "rectify 0..2: x is a Relu's output and that Relu's backward in that mode follows.");
  m.def("rectifier_backward", &rectifier_backward, py::arg("grad_out"), py::arg("out"),
        py::arg("mode"), py::arg("lo"), py::arg("hi"),
        "Relu/Clip backward: mode 0 gradient, 1 deconvnet, 2 guided.");
  m.def("add", &add, py::arg("a"), py::arg("b"),
        "a + b (same shape and float dtype), on the thread pool past 2^18 elements.");
  m.def("contiguous", &contiguous, py::arg("a"),
        "A C-contiguous copy of a float32/float64 array of any strides (a view), on the thread "
        "pool past 2^18 elements.");
  m.def("lrn_backward", &lrn_backward, py::arg("grad_out"), py::arg("x"), py::arg("size"),
        py::arg("alpha"), py::arg("beta"), py::arg("bias"), "dL/dX of ONNX LRN.");
  m.def("avg_pool2d_backward", &avg_pool2d_backward, py::arg("grad_out"), py::arg("in_shape"),
        py::arg("kernel_shape"), py::arg("strides"), py::arg("pads"),
        py::arg("count_include_pad"), "dL/dX of ONNX AveragePool (2-D).");
  m.def("global_avg_pool_backward", &global_avg_pool_backward, py::arg("grad_out"),
        py::arg("in_shape"), "dL/dX of ONNX GlobalAveragePool.");
}
