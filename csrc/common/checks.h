// Argument checks shared by the C++ and CUDA wrappers.
//
// Every wrapper validates its arguments with these checks *before* touching memory. A failed check
// throws std::invalid_argument with a one-line message that names the argument; pybind11 maps it to
// ValueError.
#pragma once

#include <cmath>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace pydevis {

// Builds a message from any streamable pieces: concat("x: ", 3, " != ", 4).
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

inline std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << '(';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << (s.size() == 1 ? ",)" : ")");
  return os.str();
}

}  // namespace pydevis

// CHECK(cond, pieces...): throw std::invalid_argument(concat(pieces...)) unless cond holds.
#define PYDEVIS_CHECK(cond, ...)                                      \
  do {                                                                \
    if (!(cond)) throw std::invalid_argument(::pydevis::concat(__VA_ARGS__)); \
  } while (0)

#ifndef CHECK
#define CHECK(cond, ...) PYDEVIS_CHECK(cond, __VA_ARGS__)
#endif

// CHECK_LEN(vec, n, name): a tuple argument has exactly n entries.
#define CHECK_LEN(vec, n, name)                                                          \
  PYDEVIS_CHECK((vec).size() == static_cast<size_t>(n), name, ": expected ", (n),        \
                " integers, got ", (vec).size())

namespace pydevis {

// The largest array dimension, element count and integer parameter (stride, pad, kernel size,
// group, LRN size...) any kernel accepts: 2^31 - 1 (an 8 GiB float32 array). With every value
// below it, no index expression of the kernels (a product of two of them, a sum of a few)
// overflows int64, and a huge but well-formed request is a ValueError, never an allocation
// that ends in a MemoryError or an out-of-memory kill.
constexpr int64_t kMaxSize = 2147483647;

// Element count of an array shape, checked: every dimension in [0, kMaxSize] and the product of
// the non-zero dimensions (numpy's rule) at most kMaxSize, computed without overflow. The
// message names the argument and, with `what`, which shape ("shape", "output shape").
inline int64_t checked_numel(const std::vector<int64_t>& shape, const std::string& name,
                             const char* what = "shape") {
  int64_t n = 1;
  bool empty = false;
  for (int64_t d : shape) {
    PYDEVIS_CHECK(d >= 0, name, ": ", what, " ", shape_str(shape), " has a negative dimension");
    PYDEVIS_CHECK(d <= kMaxSize, name, ": ", what, " ", shape_str(shape),
                  " has a dimension above ", kMaxSize, " (2^31 - 1)");
    PYDEVIS_CHECK(d == 0 || n <= kMaxSize / d, name, ": ", what, " ", shape_str(shape),
                  " has more than ", kMaxSize, " (2^31 - 1) elements");
    if (d == 0) {
      empty = true;
    } else {
      n *= d;
    }
  }
  return empty ? 0 : n;
}

// An integer argument in [lo, kMaxSize].
inline void check_int_range(int64_t v, int64_t lo, const char* name) {
  PYDEVIS_CHECK(v >= lo, name, ": must be >= ", lo, ", got ", v);
  PYDEVIS_CHECK(v <= kMaxSize, name, ": must be <= ", kMaxSize, " (2^31 - 1), got ", v);
}

// Every entry of an integer tuple argument in [lo, kMaxSize].
inline void check_all_in_range(const std::vector<int64_t>& v, int64_t lo, const char* name) {
  for (int64_t x : v) {
    PYDEVIS_CHECK(x >= lo, name, ": every entry must be >= ", lo, ", got ", shape_str(v));
    PYDEVIS_CHECK(x <= kMaxSize, name, ": every entry must be <= ", kMaxSize, " (2^31 - 1), got ",
                  shape_str(v));
  }
}

// The window of a conv or pool: `first` (kernel_shape or in_hw) with `n_first` entries >= 1,
// strides (2, >= 1), pads (4, >= 0) and, unless null, dilations (2, >= 1).
inline void check_window(const std::vector<int64_t>& first, size_t n_first, const char* first_name,
                         const std::vector<int64_t>& strides, const std::vector<int64_t>& pads,
                         const std::vector<int64_t>* dilations = nullptr) {
  CHECK_LEN(first, n_first, first_name);
  CHECK_LEN(strides, 2, "strides");
  CHECK_LEN(pads, 4, "pads");
  check_all_in_range(first, 1, first_name);
  check_all_in_range(strides, 1, "strides");
  check_all_in_range(pads, 0, "pads");
  if (dilations) {
    CHECK_LEN(*dilations, 2, "dilations");
    check_all_in_range(*dilations, 1, "dilations");
  }
}

// ONNX LRN attributes: size in [1, kMaxSize]; alpha >= 0 and bias > 0, so that the base
// bias + alpha/size * sum(x²) of s^-beta is positive whatever x; all three floats finite.
inline void check_lrn_params(int64_t size, double alpha, double beta, double bias) {
  check_int_range(size, 1, "size");
  PYDEVIS_CHECK(std::isfinite(alpha) && alpha >= 0, "alpha: must be finite and >= 0, got ",
                alpha);
  PYDEVIS_CHECK(std::isfinite(beta), "beta: must be finite, got ", beta);
  PYDEVIS_CHECK(std::isfinite(bias) && bias > 0,
                "bias: must be finite and > 0 (the base of s^-beta), got ", bias);
}

// The largest Gaussian blur radius int(4 * sigma + 0.5): its 2r + 1 weights are allocated, and
// each pixel costs 2r + 1 multiply-adds per pass.
constexpr int64_t kMaxBlurRadius = 65536;

inline void check_blur_sigma(double sigma, const char* name = "sigma") {
  PYDEVIS_CHECK(std::isfinite(sigma), name, ": must be finite, got ", sigma);
  PYDEVIS_CHECK(4.0 * sigma + 0.5 < double(kMaxBlurRadius + 1), name, ": ", sigma,
                " is too large (blur radius int(4 * sigma + 0.5) above ", kMaxBlurRadius, ")");
}

// A percentile of the clips: at most 100 (<= 0 means no clip); NaN fails too.
inline void check_percentile(double pct, const char* name = "pct") {
  PYDEVIS_CHECK(pct <= 100, name, ": must be <= 100 (a percentile), got ", pct);
}

}  // namespace pydevis
