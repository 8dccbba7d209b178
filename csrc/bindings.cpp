// pydevis._C: the CPU kernels of the backward path (semantics: docs/kernels.md).
//
// Each wrapper checks rank, dtype, contiguity, shape agreement and index ranges first (a failure is
// a ValueError naming the argument), allocates a new output array, then releases the GIL for the
// kernel. Arrays are taken as they are: nothing is converted or copied on the way in.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "common/checks.h"
#include "common/front.h"
#include "common/gaussian.h"
#include "common/numpy_checks.h"
#include "common/parallel.h"
#include "cpu/kernels.h"
#include "cpu/small_gemm.h"
#include "cpu/winograd.h"

namespace py = pybind11;
using pydevis::shape_of;
using pydevis::shape_str;
using Ints = std::vector<int64_t>;

namespace {

template <typename T>
py::array_t<T> new_array(const Ints& shape) {
  return py::array_t<T>(std::vector<py::ssize_t>(shape.begin(), shape.end()));
}

template <typename T>
const T* cptr(const py::array& a) {
  return static_cast<const T*>(a.data());
}

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

// ---- ascent kernels ----------------------------------------------------------------------
// A C-contiguous float64 (len,) argument: eta (one per image), lo and hi (one per channel).
void check_f64_vector(const py::array& a, const char* name, int64_t len, const Ints& vshape,
                      const char* what) {
  pydevis::check_layout(a, name, 1);
  CHECK(pydevis::has_dtype<double>(a), name, ": dtype ", pydevis::dtype_str(a),
        " is not float64");
  pydevis::f64_vector_front(shape_of(a), name, len, what, vshape);
}

// v: a 4-D float array; g (optional): same dtype and shape.
bool check_v_g(const py::array& v, const py::array* g) {
  pydevis::check_layout(v, "v", 4);
  const bool f64 = pydevis::is_float64(v, "v");
  if (g) {
    pydevis::check_layout(*g, "g", 4);
    pydevis::check_same_dtype(*g, "g", v, "v");
    pydevis::check_same_shape(shape_of(*g), "g", shape_of(v), "v");
  }
  return f64;
}

// A new array like v, filled by fn(out) with the GIL released.
template <typename T, typename F>
py::array run_like(const py::array& v, F&& fn) {
  auto out = new_array<T>(shape_of(v));
  T* dst = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    fn(dst);
  }
  return std::move(out);
}

template <typename T>
py::array copy_of(const py::array& v) {
  return run_like<T>(v, [&](T* dst) { std::memcpy(dst, v.data(), size_t(v.nbytes())); });
}

py::array ascent_update(const py::array& v, const py::array& g, const py::array& eta,
                        double decay) {
  const bool f64 = check_v_g(v, &g);
  const Ints s = shape_of(v);
  check_f64_vector(eta, "eta", s[0], s, pydevis::kPerImage);
  const int64_t per_image = s[1] * s[2] * s[3];
  const double* e = cptr<double>(eta);
  auto run = [&](auto zero) {
    using T = decltype(zero);
    return run_like<T>(v, [&](T* dst) {
      pydevis::cpu::ascent_update<T>(cptr<T>(v), cptr<T>(g), e, dst, s[0], per_image, decay);
    });
  };
  return f64 ? run(0.0) : run(0.0f);
}

py::array gaussian_blur(const py::array& v, double sigma) {
  const bool f64 = check_v_g(v, nullptr);
  pydevis::check_blur_sigma(sigma);
  if (sigma <= 0) return f64 ? copy_of<double>(v) : copy_of<float>(v);
  const Ints s = shape_of(v);
  const std::vector<double> w = pydevis::gaussian_weights(sigma);
  const int64_t r = (int64_t(w.size()) - 1) / 2;
  auto run = [&](auto zero) {
    using T = decltype(zero);
    return run_like<T>(v, [&](T* dst) {
      pydevis::cpu::gaussian_blur<T>(cptr<T>(v), dst, s[0] * s[1], s[2], s[3], w.data(), r);
    });
  };
  return f64 ? run(0.0) : run(0.0f);
}

py::array clip_small(const py::array& v, const py::array* g, double pct) {
  const bool f64 = check_v_g(v, g);
  pydevis::check_percentile(pct);
  if (pct <= 0) return f64 ? copy_of<double>(v) : copy_of<float>(v);
  const Ints s = shape_of(v);
  auto run = [&](auto zero) {
    using T = decltype(zero);
    const T* gp = g ? cptr<T>(*g) : nullptr;
    return run_like<T>(v, [&](T* dst) {
      pydevis::cpu::clip_small<T>(cptr<T>(v), gp, dst, s[0], s[1], s[2] * s[3], pct);
    });
  };
  return f64 ? run(0.0) : run(0.0f);
}

py::array clamp_channels(const py::array& v, const py::array& lo, const py::array& hi) {
  const bool f64 = check_v_g(v, nullptr);
  const Ints s = shape_of(v);
  check_f64_vector(lo, "lo", s[1], s, pydevis::kPerChannel);
  check_f64_vector(hi, "hi", s[1], s, pydevis::kPerChannel);
  auto run = [&](auto zero) {
    using T = decltype(zero);
    return run_like<T>(v, [&](T* dst) {
      pydevis::cpu::clamp_channels<T>(cptr<T>(v), cptr<double>(lo), cptr<double>(hi), dst, s[0],
                                      s[1], s[2] * s[3]);
    });
  };
  return f64 ? run(0.0) : run(0.0f);
}

py::array ascent_step(const py::array& v, const py::array& g, const py::array& eta, double decay,
                      double blur_sigma, double norm_pct, double contrib_pct, const py::array& lo,
                      const py::array& hi) {
  const bool f64 = check_v_g(v, &g);
  const Ints s = shape_of(v);
  check_f64_vector(eta, "eta", s[0], s, pydevis::kPerImage);
  pydevis::check_blur_sigma(blur_sigma, "blur_sigma");
  pydevis::check_percentile(norm_pct, "norm_pct");
  pydevis::check_percentile(contrib_pct, "contrib_pct");
  check_f64_vector(lo, "lo", s[1], s, pydevis::kPerChannel);
  check_f64_vector(hi, "hi", s[1], s, pydevis::kPerChannel);
  const std::vector<double> w =
      blur_sigma > 0 ? pydevis::gaussian_weights(blur_sigma) : std::vector<double>();
  const pydevis::cpu::AscentStep a{cptr<double>(eta), decay, w.empty() ? nullptr : w.data(),
                                   (int64_t(w.size()) - 1) / 2, norm_pct, contrib_pct,
                                   cptr<double>(lo), cptr<double>(hi)};
  auto run = [&](auto zero) {
    using T = decltype(zero);
    return run_like<T>(v, [&](T* dst) {
      pydevis::cpu::ascent_step<T>(cptr<T>(v), cptr<T>(g), dst, s[0], s[1], s[2], s[3], a);
    });
  };
  return f64 ? run(0.0) : run(0.0f);
}

}  // namespace

// ---- pool_trace (a test hook of csrc/common/parallel.cpp) -------------------------------------
std::vector<int> pool_trace(int64_t n, int threads, int stall_ms, int item_us) {
  if (n < 1 || n > (1 << 20)) throw py::value_error("pool_trace: n must be in [1, 2^20]");
  if (threads < 1 || threads > 64) throw py::value_error("pool_trace: threads must be in [1, 64]");
  if (stall_ms < 0 || stall_ms > 10000)
    throw py::value_error("pool_trace: stall_ms must be in [0, 10000]");
  if (item_us < 0 || item_us > 100000)
    throw py::value_error("pool_trace: item_us must be in [0, 100000]");
  struct Ctx {
    std::vector<std::thread::id> who;
    std::thread::id caller;
    int stall_ms, item_us;
    std::atomic<bool> stalled{false};
  } ctx{std::vector<std::thread::id>(size_t(n)), std::this_thread::get_id(), stall_ms, item_us};
  {
    py::gil_scoped_release nogil;
    pydevis::parallel_run(
        n, threads,
        [](void* p, int64_t begin, int64_t end) {
          auto& c = *static_cast<Ctx*>(p);
          const auto me = std::this_thread::get_id();
          if (me != c.caller && c.stall_ms > 0 && !c.stalled.exchange(true))
            std::this_thread::sleep_for(std::chrono::milliseconds(c.stall_ms));
          for (int64_t i = begin; i < end; ++i) {
            const auto until =
                std::chrono::steady_clock::now() + std::chrono::microseconds(c.item_us);
            while (c.item_us > 0 && std::chrono::steady_clock::now() < until) {
            }
            c.who[size_t(i)] = me;
          }
        },
        &ctx);
  }
  std::vector<std::thread::id> seen{ctx.caller};
  std::vector<int> out(size_t(n), -1);
  for (size_t i = 0; i < size_t(n); ++i) {
    if (ctx.who[i] == std::thread::id()) continue;  // not run: -1
    auto it = std::find(seen.begin(), seen.end(), ctx.who[i]);
    if (it == seen.end()) it = seen.insert(seen.end(), ctx.who[i]);
    out[i] = int(it - seen.begin());
  }
  return out;
}

// ---- loop census (csrc/common/parallel.h; bench/scaling_census.py) --------------------------
// census_nest: a test hook. An outer parallel_for of `outer` items, each running an inner
// parallel_for of `inner` items busy item_us µs each; the outer loop is pooled when outer_pooled
// (it then runs the inner loops inside its tasks), else serial (each inner loop may pool).
void census_nest(int64_t outer, int64_t inner, int item_us, bool outer_pooled) {
  if (outer < 1 || outer > 64 || inner < 1 || inner > 4096)
    throw py::value_error("census_nest: outer must be in [1, 64], inner in [1, 4096]");
  if (item_us < 0 || item_us > 10000)
    throw py::value_error("census_nest: item_us must be in [0, 10000]");
  py::gil_scoped_release nogil;
  auto busy = [item_us] {
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(item_us);
    while (std::chrono::steady_clock::now() < until) {
    }
  };
  pydevis::parallel_for(outer, outer_pooled ? pydevis::kMinParallelWork : 1, [&](int64_t) {
    pydevis::parallel_for(inner, pydevis::kMinParallelWork, [&](int64_t) { busy(); });
  });
}

void census_start() { pydevis::census_start(); }

std::vector<std::tuple<int64_t, bool, double>> census_stop() {
  std::vector<std::tuple<int64_t, bool, double>> out;
  for (const auto& l : pydevis::census_stop()) out.emplace_back(l.items, l.pooled, l.ms);
  return out;
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "pydevis CPU kernels (C++, own thread pool, OpenBLAS); see docs/kernels.md";
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
  m.def("small_gemm_tn", &small_gemm_tn, py::arg("a"), py::arg("b"), py::arg("m"),
        "a[:, :m].T @ b for float32 a (k x lda), b (k x n), n <= 64: the conv backward's GEMM "
        "on narrow planes (its tests; the scalar loop where small_gemm_available() is False).");
  m.def("small_gemm_available", &pydevis::cpu::small_gemm_available,
        "Whether the conv backward uses small_gemm_tn here (x86-64 with AVX-512F).");
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
  // ascent kernels
  m.def("ascent_update", &ascent_update, py::arg("v"), py::arg("g"), py::arg("eta"),
        py::arg("decay"), "(v + eta[n] * g) * (1 - decay), computed in float64.");
  m.def("gaussian_blur", &gaussian_blur, py::arg("v"), py::arg("sigma"),
        "Separable Gaussian of each (n, c) plane, radius int(4*sigma + 0.5), reflect boundary.");
  m.def(
      "clip_small_norm", [](const py::array& v, double pct) { return clip_small(v, nullptr, pct); },
      py::arg("v"), py::arg("pct"),
      "Zero the pixels whose channel norm is below the pct-th percentile of their image.");
  m.def(
      "clip_small_contribution",
      [](const py::array& v, const py::array& g, double pct) { return clip_small(v, &g, pct); },
      py::arg("v"), py::arg("g"), py::arg("pct"),
      "Zero the pixels whose |sum_c g * -v| is below the pct-th percentile of their image.");
  m.def("clamp_channels", &clamp_channels, py::arg("v"), py::arg("lo"), py::arg("hi"),
        "Clip channel c of v to [lo[c], hi[c]] (NaN bounds propagate, as numpy's).");
  m.def("ascent_step", &ascent_step, py::arg("v"), py::arg("g"), py::arg("eta"), py::arg("decay"),
        py::arg("blur_sigma"), py::arg("norm_pct"), py::arg("contrib_pct"), py::arg("lo"),
        py::arg("hi"),
        "clamp_channels(clip_small_contribution(clip_small_norm(gaussian_blur(ascent_update(v, g, "
        "eta, decay), blur_sigma), norm_pct), g, contrib_pct), lo, hi) in one call, bit for bit.");
  m.def("park_workers", &pydevis::park_workers,
        "Make the kernels' idle pool workers stop spinning and sleep now (call before another "
        "thread pool, such as ONNX Runtime's, runs on the same cores); the next kernel wakes "
        "them.");
  m.def("spin_microseconds", &pydevis::spin_microseconds,
        "How long (µs) the pool's idle workers spin before they sleep (PYDEVIS_SPIN_US).");
  m.def("pool_trace", &pool_trace, py::arg("n"), py::arg("threads"), py::arg("stall_ms") = 0,
        py::arg("item_us") = 0,
        "Test hook of the thread pool: run a loop of n items (each busy item_us µs) on up to "
        "`threads` members and return, per item, which thread ran it (0: the caller, then 1, "
        "2... in order of first appearance, -1: none); with stall_ms > 0 the first chunk a "
        "worker takes sleeps that long first.");
  m.def("census_nest", &census_nest, py::arg("outer"), py::arg("inner"), py::arg("item_us"),
        py::arg("outer_pooled"),
        "Test hook of the loop census: a parallel loop of `outer` items, each running a loop "
        "of `inner` items busy item_us µs each; the outer loop pooled or serial.");
  m.def("census_start", &census_start,
        "Start the loop census (clearing it): from now on every parallel loop of the kernels "
        "records its item count, whether it ran on the pool and its wall time.");
  m.def("census_stop", &census_stop,
        "Stop the loop census and return its records, in order: (items, pooled, ms) per loop "
        "not inside a pooled loop's task; ms is the loop's wall time less that of the loops "
        "recorded inside it (a serial loop's inner loops), so each moment counts once.");
  m.attr("has_openmp") =
#ifdef _OPENMP
      true;
#else
      false;
#endif
}
