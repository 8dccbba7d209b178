// Checks of numpy arguments for the pybind11 wrappers (see checks.h for the message style).
//
// Arguments arrive as py::array without conversion: a wrong dtype, a non-C-contiguous or misaligned
// array is an error naming the argument, never a silent copy.
#pragma once

#include <pybind11/numpy.h>

#include <cstdint>
#include <vector>

#include "checks.h"
#include "front.h"

namespace pydevis {

namespace py = pybind11;

inline std::vector<int64_t> shape_of(const py::array& a) {
  return std::vector<int64_t>(a.shape(), a.shape() + a.ndim());
}

// Rank (ndim < 0: any), size (at most kMaxSize elements), C-contiguity and alignment of an array
// argument.
inline void check_layout(const py::array& a, const char* name, int ndim) {
  check_rank(shape_of(a), name, ndim);
  checked_numel(shape_of(a), name);
  CHECK(a.flags() & py::array::c_style, name, ": array must be C-contiguous (shape ",
        shape_str(shape_of(a)), ")");
  CHECK(a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_, name, ": array must be aligned");
}

// True when a's dtype is exactly T in native byte order.
template <typename T>
bool has_dtype(const py::array& a) {
  return a.dtype().equal(py::dtype::of<T>());
}

inline std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// The float type of a (float32 or float64), checked: returns true for float64.
inline bool is_float64(const py::array& a, const char* name) {
  if (has_dtype<double>(a)) return true;
  CHECK(has_dtype<float>(a), name, ": dtype ", dtype_str(a), " is not float32/float64");
  return false;
}

// a has the same float dtype as the reference argument.
inline void check_same_dtype(const py::array& a, const char* name, const py::array& ref,
                             const char* ref_name) {
  CHECK(a.dtype().equal(ref.dtype()), name, ": dtype ", dtype_str(a), " differs from ", ref_name,
        " dtype ", dtype_str(ref));
}

}  // namespace pydevis
