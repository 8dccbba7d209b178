// Array arguments and results of pydevis._cuda: numpy arrays (host) and objects exposing
// __cuda_array_interface__ (device) are parsed into Arg; results that stay on the device are
// DeviceArray objects (owning, or views of a workspace's buffers). Host code only.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/checks.h"

namespace pydevis::cuda {

namespace py = pybind11;
using Ints = std::vector<int64_t>;

enum class DType { f32, f64 };

const char* dtype_name(DType t);
inline size_t itemsize(DType t) { return t == DType::f32 ? 4 : 8; }
int64_t numel(const Ints& shape);
[[noreturn]] void bad_arg(const std::string& msg);

// A C-contiguous array in device memory: owning (freed, stream-ordered, when collected) or a
// view of memory another object owns (a workspace buffer; the binding keeps that owner alive).
class DeviceArray {
public:
    DeviceArray(void* ptr, Ints shape, DType dtype, int device, bool owns = true)
        : ptr_(ptr), shape_(std::move(shape)), dtype_(dtype), device_(device), owns_(owns) {}
    ~DeviceArray();
    DeviceArray(const DeviceArray&) = delete;
    DeviceArray& operator=(const DeviceArray&) = delete;

    py::tuple shape() const;
    const Ints& dims() const { return shape_; }
    DType kind() const { return dtype_; }
    std::string dtype() const { return dtype_name(dtype_); }
    int64_t size() const { return numel(shape_); }
    size_t nbytes() const { return static_cast<size_t>(size()) * itemsize(dtype_); }
    int device() const { return device_; }
    void* data() const { return ptr_; }
    uintptr_t ptr() const { return reinterpret_cast<uintptr_t>(ptr_); }
    py::dict interface() const;
    py::array to_host() const;
    // Overwrite the contents with `src` (numpy or device array of the same shape and dtype):
    // no allocation, one copy.
    void copy_from(const py::object& src);
    std::string repr() const;

private:
    void* ptr_;
    Ints shape_;
    DType dtype_;
    int device_;
    bool owns_;
};

// A parsed array argument.
struct Arg {
    std::string name;
    bool on_device = false;
    DType dtype = DType::f32;
    Ints shape;
    const void* ptr = nullptr;  // host pointer (numpy) or device pointer
    int device = -1;            // -1: host, or an empty device array
    intptr_t stream = 0;        // producer stream to synchronise with (0: none)
    py::object owner;           // keeps the memory alive during the call

    size_t nbytes() const { return static_cast<size_t>(numel(shape)) * itemsize(dtype); }
};

// A float32/float64 C-contiguous, aligned array argument: numpy, or __cuda_array_interface__.
Arg parse(const py::object& obj, const std::string& name);
void require_rank(const Arg& a, int rank);
void require_same_dtype(const Arg& a, const Arg& ref);
// A float64 (len,) argument (eta, lo, hi): `what` says what its entries are, `vshape` is v's.
Arg parse_f64_vector(const py::object& obj, const char* name, int64_t len, const char* what,
                     const Ints& vshape);
// Wait for the producer streams named by device arguments (__cuda_array_interface__ v3).
void sync_producers(const std::vector<const Arg*>& ins);

// Calls f(T{}) with T = float or double, as dtype t says.
template <typename F>
decltype(auto) by_dtype(DType t, F&& f) {
    if (t == DType::f64) return f(double{});
    return f(float{});
}

}  // namespace pydevis::cuda
