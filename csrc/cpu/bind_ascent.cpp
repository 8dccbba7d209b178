// pydevis._C: the ascent step and its parts (docs/kernels.md).
#include <cstring>
#include <vector>

#include "bind.h"
#include "common/front.h"
#include "common/gaussian.h"
#include "cpu/kernels.h"

namespace {

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

void bind_ascent(py::module_& m) {
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
}
