// What the files of pydevis._C's bindings share (module.cpp, bind_conv.cpp, bind_backward.cpp,
// bind_ascent.cpp, bind_pool.cpp): the array helpers, and the functions that add each file's
// functions to the module.
//
// Each wrapper checks rank, dtype, contiguity, shape agreement and index ranges first (a failure is
// a ValueError naming the argument), allocates a new output array, then releases the GIL for the
// kernel. Arrays are taken as they are: nothing is converted or copied on the way in.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <vector>

#include "common/checks.h"
#include "common/numpy_checks.h"

namespace py = pybind11;
using pydevis::shape_of;
using pydevis::shape_str;
using Ints = std::vector<int64_t>;

template <typename T>
py::array_t<T> new_array(const Ints& shape) {
  return py::array_t<T>(std::vector<py::ssize_t>(shape.begin(), shape.end()));
}

template <typename T>
const T* cptr(const py::array& a) {
  return static_cast<const T*>(a.data());
}

void bind_conv(py::module_& m);      // bind_conv.cpp: the conv backward, Winograd, its GEMM
void bind_backward(py::module_& m);  // bind_backward.cpp: the other backward kernels
void bind_ascent(py::module_& m);    // bind_ascent.cpp: the ascent step and its parts
void bind_pool(py::module_& m);      // bind_pool.cpp: the thread pool's controls and test hooks
