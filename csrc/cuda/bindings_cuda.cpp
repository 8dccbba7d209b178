// pydevis._cuda: the CUDA backend of the backward and ascent kernels (docs/kernels.md).
//
// Every kernel function accepts, for each array argument, either a numpy array (copied to the
// device, result copied back and returned as a numpy array) or any object exposing
// __cuda_array_interface__ (cupy, numba.cuda device arrays: used in place). When at least one
// array argument lives on the device, the result stays there and is returned as a DeviceArray
// (owns its memory, exposes __cuda_array_interface__ version 3, .to_host() gives numpy).
// Arguments are validated before any memory is touched (ValueError naming the argument); CUDA
// failures raise RuntimeError; the GIL is released around transfers and compute.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cuda_runtime_api.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "common/checks.h"
#include "cuda_check.h"
#include "kernels.h"

namespace py = pybind11;

namespace pydevis::cuda {
namespace {

// ---------------------------------------------------------------------------------------------
// Small helpers

enum class DType { f32, f64, i64 };

const char* dtype_name(DType t) {
    switch (t) {
        case DType::f32: return "float32";
        case DType::f64: return "float64";
        default: return "int64";
    }
}

const char* typestr(DType t) {
    switch (t) {
        case DType::f32: return "<f4";
        case DType::f64: return "<f8";
        default: return "<i8";
    }
}

size_t itemsize(DType t) { return t == DType::f32 ? 4 : 8; }

int64_t numel(const std::vector<int64_t>& shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

using ::pydevis::check_all_in_range;
using ::pydevis::check_int_range;
using ::pydevis::checked_numel;
using ::pydevis::shape_str;
using Ints = std::vector<int64_t>;

[[noreturn]] void bad_arg(const std::string& msg) { throw std::invalid_argument(msg); }

// Sets the current device for the scope; restores the previous one after.
class DeviceGuard {
public:
    explicit DeviceGuard(int device) {
        PYDEVIS_CUDA_CHECK(cudaGetDevice(&prev_));
        if (prev_ != device) {
            PYDEVIS_CUDA_CHECK(cudaSetDevice(device));
        } else {
            prev_ = -1;
        }
    }
    ~DeviceGuard() {
        if (prev_ >= 0) cudaSetDevice(prev_);
    }
    DeviceGuard(const DeviceGuard&) = delete;
    DeviceGuard& operator=(const DeviceGuard&) = delete;

private:
    int prev_ = -1;
};

// Owning cudaMalloc buffer (current device); nullptr for zero bytes.
class DeviceBuffer {
public:
    DeviceBuffer() = default;
    explicit DeviceBuffer(size_t nbytes) {
        if (nbytes) PYDEVIS_CUDA_CHECK(cudaMalloc(&ptr_, nbytes));
    }
    ~DeviceBuffer() {
        if (ptr_) cudaFree(ptr_);
    }
    DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)) {}
    DeviceBuffer& operator=(DeviceBuffer&&) = delete;
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;

    void* get() const { return ptr_; }
    void* release() { return std::exchange(ptr_, nullptr); }

private:
    void* ptr_ = nullptr;
};

// ---------------------------------------------------------------------------------------------
// DeviceArray: the result of a kernel called with device inputs.

class DeviceArray {
public:
    DeviceArray(void* ptr, std::vector<int64_t> shape, DType dtype, int device)
        : ptr_(ptr), shape_(std::move(shape)), dtype_(dtype), device_(device) {}
    ~DeviceArray() {
        if (!ptr_) return;
        int prev = -1;
        const bool switch_device = cudaGetDevice(&prev) == cudaSuccess && prev != device_ &&
                                   cudaSetDevice(device_) == cudaSuccess;
        cudaFree(ptr_);  // never throw from a destructor
        if (switch_device) cudaSetDevice(prev);
    }
    DeviceArray(const DeviceArray&) = delete;
    DeviceArray& operator=(const DeviceArray&) = delete;

    py::tuple shape() const {
        py::tuple t(shape_.size());
        for (size_t i = 0; i < shape_.size(); ++i) t[i] = py::int_(shape_[i]);
        return t;
    }
    std::string dtype() const { return dtype_name(dtype_); }
    int64_t size() const { return numel(shape_); }
    size_t nbytes() const { return static_cast<size_t>(size()) * itemsize(dtype_); }
    int device() const { return device_; }
    uintptr_t ptr() const { return reinterpret_cast<uintptr_t>(ptr_); }

    py::dict interface() const {
        py::dict d;
        d["shape"] = shape();
        d["typestr"] = typestr(dtype_);
        d["data"] = py::make_tuple(py::int_(ptr()), false);
        d["version"] = 3;
        d["strides"] = py::none();  // C-contiguous
        d["stream"] = py::none();   // the producing stream was synchronised before returning
        return d;
    }

    py::array to_host() const {
        py::array out(py::dtype(dtype_name(dtype_)), shape_);
        const size_t n = nbytes();
        if (n) {
            void* dst = out.mutable_data();
            py::gil_scoped_release nogil;
            DeviceGuard guard(device_);
            PYDEVIS_CUDA_CHECK(cudaMemcpy(dst, ptr_, n, cudaMemcpyDeviceToHost));
        }
        return out;
    }

    std::string repr() const {
        return "DeviceArray(shape=" + shape_str(shape_) + ", dtype=" + dtype_name(dtype_) +
               ", device=" + std::to_string(device_) + ")";
    }

private:
    void* ptr_;
    std::vector<int64_t> shape_;
    DType dtype_;
    int device_;
};

// ---------------------------------------------------------------------------------------------
// Array arguments: numpy (host) or __cuda_array_interface__ (device).

struct Arg {
    std::string name;
    bool on_device = false;
    DType dtype = DType::f32;
    std::vector<int64_t> shape;
    const void* ptr = nullptr;  // host pointer (numpy) or device pointer
    int device = -1;            // -1: host, or an empty device array
    intptr_t stream = 0;        // producer stream to synchronise with (0: none)
    py::object owner;           // keeps the memory alive during the call

    size_t nbytes() const { return static_cast<size_t>(numel(shape)) * itemsize(dtype); }
};

enum class Want { floating, index };

std::string want_str(Want want) { return want == Want::index ? "int64" : "float32/float64"; }

std::optional<DType> dtype_from_typestr(const std::string& ts) {
    if (ts.size() != 3 || (ts[0] != '<' && ts[0] != '=' && ts[0] != '|')) return std::nullopt;
    const std::string body = ts.substr(1);
    if (body == "f4") return DType::f32;
    if (body == "f8") return DType::f64;
    if (body == "i8") return DType::i64;
    return std::nullopt;
}

// numpy's name for an array-interface typestr ("<i4" -> "int32"), else the typestr itself.
std::string numpy_dtype_name(const std::string& ts) {
    try {
        return py::str(py::dtype(ts)).cast<std::string>();
    } catch (const std::exception&) {
        PyErr_Clear();
        return ts;
    }
}

void check_kind(const Arg& a, Want want, const std::string& shown) {
    const bool ok = want == Want::index ? a.dtype == DType::i64 : a.dtype != DType::i64;
    if (!ok) bad_arg(a.name + ": dtype " + shown + " is not " + want_str(want));
}

// Strides (bytes) are acceptable when they are those of a C-contiguous array (size-1 dims free).
bool c_contiguous(const std::vector<int64_t>& shape, const std::vector<int64_t>& strides,
                  size_t item) {
    if (numel(shape) == 0) return true;
    int64_t expected = static_cast<int64_t>(item);
    for (size_t i = shape.size(); i-- > 0;) {
        if (shape[i] != 1 && strides[i] != expected) return false;
        expected *= shape[i];
    }
    return true;
}

Arg parse_numpy(const py::array& arr, const std::string& name, Want want) {
    Arg a;
    a.name = name;
    const py::dtype dt = arr.dtype();
    const char kind = dt.kind();
    const auto size = dt.itemsize();
    const char order = dt.byteorder();
    const std::string shown = py::str(dt).cast<std::string>();  // e.g. "int32", ">f4"
    const bool native = order == '=' || order == '|' || order == '<';
    if (native && kind == 'f' && size == 4) {
        a.dtype = DType::f32;
    } else if (native && kind == 'f' && size == 8) {
        a.dtype = DType::f64;
    } else if (native && kind == 'i' && size == 8) {
        a.dtype = DType::i64;
    } else {
        bad_arg(name + ": dtype " + shown + " is not " + want_str(want));
    }
    check_kind(a, want, shown);
    for (py::ssize_t i = 0; i < arr.ndim(); ++i) a.shape.push_back(arr.shape(i));
    checked_numel(a.shape, name);
    if (!(arr.flags() & py::array::c_style)) {
        bad_arg(name + ": array must be C-contiguous (shape " + shape_str(a.shape) + ")");
    }
    if (!(arr.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_)) {
        bad_arg(name + ": array must be aligned");
    }
    a.ptr = arr.data();
    a.owner = arr;
    return a;
}

// A tuple of ints of an array interface (shape, strides), else a ValueError naming the argument.
Ints interface_ints(const py::handle& value, const std::string& name, const char* key) {
    Ints out;
    try {
        for (const py::handle v : py::tuple(py::reinterpret_borrow<py::object>(value))) {
            out.push_back(v.cast<int64_t>());
        }
    } catch (const std::exception&) {
        PyErr_Clear();
        bad_arg(name + ": __cuda_array_interface__ " + key + " is not a tuple of ints");
    }
    return out;
}

Arg parse_cai(const py::object& obj, const std::string& name, Want want) {
    Arg a;
    a.name = name;
    a.on_device = true;
    const py::object iface = obj.attr("__cuda_array_interface__");
    if (!py::isinstance<py::dict>(iface)) {
        bad_arg(name + ": __cuda_array_interface__ is not a dict");
    }
    const py::dict d = iface.cast<py::dict>();
    for (const char* key : {"shape", "typestr", "data"}) {
        if (!d.contains(key)) bad_arg(name + ": __cuda_array_interface__ has no '" + key + "'");
    }
    const std::string ts = py::str(d["typestr"]).cast<std::string>();
    const std::string shown = numpy_dtype_name(ts);
    const auto dt = dtype_from_typestr(ts);
    if (!dt) bad_arg(name + ": dtype " + shown + " is not " + want_str(want));
    a.dtype = *dt;
    check_kind(a, want, shown);
    a.shape = interface_ints(d["shape"], name, "shape");
    checked_numel(a.shape, name);
    if (d.contains("strides") && !d["strides"].is_none()) {
        const Ints strides = interface_ints(d["strides"], name, "strides");
        if (strides.size() != a.shape.size() ||
            !c_contiguous(a.shape, strides, itemsize(a.dtype))) {
            bad_arg(name + ": array must be C-contiguous (shape " + shape_str(a.shape) +
                    ", strides " + shape_str(strides) + ")");
        }
    }
    if (d.contains("mask") && !d["mask"].is_none()) {
        bad_arg(name + ": masked device arrays are not supported");
    }
    uintptr_t address = 0;
    try {
        const py::tuple data(d["data"]);
        if (data.size() < 1) throw std::invalid_argument("empty");
        address = data[0].cast<uintptr_t>();
    } catch (const std::exception&) {
        PyErr_Clear();
        bad_arg(name + ": __cuda_array_interface__ data is not (ptr, readonly)");
    }
    a.ptr = reinterpret_cast<const void*>(address);
    if (address % itemsize(a.dtype) != 0) bad_arg(name + ": array must be aligned");
    if (d.contains("stream") && !d["stream"].is_none()) {
        try {
            a.stream = d["stream"].cast<intptr_t>();  // 0 is disallowed by v3: taken as "none"
        } catch (const std::exception&) {
            PyErr_Clear();
            bad_arg(name + ": __cuda_array_interface__ stream is not an int");
        }
    }
    if (a.ptr != nullptr) {
        cudaPointerAttributes attr{};
        const cudaError_t err = cudaPointerGetAttributes(&attr, a.ptr);
        if (err != cudaSuccess) {
            cudaGetLastError();  // clear the (non-sticky) error
            if (err != cudaErrorInvalidValue) PYDEVIS_CUDA_CHECK(err);
            bad_arg(name + ": __cuda_array_interface__ pointer is not device memory (" +
                    cudaGetErrorString(err) + ")");
        }
        if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged) {
            bad_arg(name + ": __cuda_array_interface__ pointer is not device memory");
        }
        a.device = attr.device;
    } else if (numel(a.shape) != 0) {
        bad_arg(name + ": __cuda_array_interface__ has a null pointer");
    }
    a.owner = obj;
    return a;
}

Arg parse(const py::object& obj, const std::string& name, Want want) {
    if (py::isinstance<py::array>(obj)) return parse_numpy(obj.cast<py::array>(), name, want);
    if (py::hasattr(obj, "__cuda_array_interface__")) return parse_cai(obj, name, want);
    bad_arg(name + ": expected a numpy array or an object with __cuda_array_interface__, got " +
            py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
}

void require_rank(const Arg& a, size_t rank) {
    if (a.shape.size() != rank) {
        bad_arg(a.name + ": expected a " + std::to_string(rank) + "-D array, got shape " +
                shape_str(a.shape));
    }
}

void require_same_dtype(const Arg& a, const Arg& ref) {
    if (a.dtype != ref.dtype) {
        bad_arg(a.name + ": dtype " + dtype_name(a.dtype) + " differs from " + ref.name +
                " dtype " + dtype_name(ref.dtype));
    }
}

// ---------------------------------------------------------------------------------------------
// The common driver: stage host inputs on the device, run `body`, return numpy or DeviceArray.
//
// body(device input pointers, device output pointer, stream) enqueues the work and returns an
// empty string, or a ValueError message (raised after the device work has finished).

template <typename F>
py::object run(const std::vector<const Arg*>& ins, const std::vector<int64_t>& out_shape,
               DType out_dtype, F&& body) {
    bool device_out = false;
    int device = -1;
    const Arg* first = nullptr;
    for (const Arg* a : ins) {
        if (!a->on_device) continue;
        device_out = true;
        if (a->device < 0) continue;  // empty device array: no pointer, no device
        if (first == nullptr) {
            first = a;
            device = a->device;
        } else if (a->device != device) {
            bad_arg(a->name + ": on CUDA device " + std::to_string(a->device) + " but " +
                    first->name + " is on device " + std::to_string(device));
        }
    }
    // The callers check the output shape against the argument it comes from; this is a backstop.
    const size_t out_bytes =
        static_cast<size_t>(checked_numel(out_shape, "output")) * itemsize(out_dtype);
    if (device < 0) PYDEVIS_CUDA_CHECK(cudaGetDevice(&device));

    py::array host_out;
    void* host_dst = nullptr;
    if (!device_out) {
        host_out = py::array(py::dtype(dtype_name(out_dtype)), out_shape);
        host_dst = host_out.mutable_data();
    }
    std::unique_ptr<DeviceArray> device_result;
    std::string error;
    {
        py::gil_scoped_release nogil;
        DeviceGuard guard(device);
        const cudaStream_t stream = nullptr;  // legacy default stream
        for (const Arg* a : ins) {
            if (!a->on_device || a->stream == 0 || a->stream == 1) continue;  // 1: legacy default
            const cudaStream_t s = a->stream == 2 ? cudaStreamPerThread
                                                 : reinterpret_cast<cudaStream_t>(a->stream);
            PYDEVIS_CUDA_CHECK(cudaStreamSynchronize(s));
        }
        std::vector<DeviceBuffer> staged;
        staged.reserve(ins.size());
        std::vector<const void*> ptrs;
        for (const Arg* a : ins) {
            if (a->on_device) {
                ptrs.push_back(a->ptr);
                continue;
            }
            staged.emplace_back(a->nbytes());
            if (a->nbytes()) {
                PYDEVIS_CUDA_CHECK(cudaMemcpyAsync(staged.back().get(), a->ptr, a->nbytes(),
                                                   cudaMemcpyHostToDevice, stream));
            }
            ptrs.push_back(staged.back().get());
        }
        DeviceBuffer out(out_bytes);
        error = body(ptrs, out.get(), stream);
        PYDEVIS_CUDA_CHECK(cudaStreamSynchronize(stream));
        if (error.empty()) {
            if (device_out) {
                device_result = std::make_unique<DeviceArray>(out.get(), out_shape, out_dtype,
                                                              device);
                out.release();
            } else if (out_bytes) {
                PYDEVIS_CUDA_CHECK(cudaMemcpy(host_dst, out.get(), out_bytes,
                                              cudaMemcpyDeviceToHost));
            }
        }
    }
    if (!error.empty()) bad_arg(error);
    if (device_out) return py::cast(std::move(device_result));
    return std::move(host_out);
}

// Calls f(T{}) with T = float or double, as dtype t says.
template <typename F>
decltype(auto) by_dtype(DType t, F&& f) {
    if (t == DType::f64) return f(double{});
    return f(float{});
}

// ---------------------------------------------------------------------------------------------
// The seven backward kernels

py::object conv2d_backward_data_py(const py::object& grad_out, const py::object& weight,
                                   const Ints& in_hw, const Ints& strides, const Ints& pads,
                                   const Ints& dilations, int64_t group) {
    const Arg g = parse(grad_out, "grad_out", Want::floating);
    require_rank(g, 4);
    const Arg w = parse(weight, "weight", Want::floating);
    require_rank(w, 4);
    require_same_dtype(w, g);
    check_window(in_hw, 2, "in_hw", strides, pads, &dilations);
    check_int_range(group, 1, "group");
    const Ints& gs = g.shape;
    const Ints& ws = w.shape;
    CHECK(ws[0] == gs[1], "weight: shape ", shape_str(ws), " has ", ws[0],
          " output channels but grad_out ", shape_str(gs), " has ", gs[1]);
    CHECK(ws[0] % group == 0, "group: ", group, " does not divide the ", ws[0],
          " output channels");
    CHECK(ws[1] >= 1 && ws[2] >= 1 && ws[3] >= 1, "weight: empty kernel, shape ", shape_str(ws));

    ConvShape s{};
    s.N = gs[0];
    s.M = gs[1];
    s.Ho = gs[2];
    s.Wo = gs[3];
    s.C = ws[1] * group;
    s.kH = ws[2];
    s.kW = ws[3];
    s.group = group;
    s.H = in_hw[0];
    s.W = in_hw[1];
    s.sh = strides[0];
    s.sw = strides[1];
    s.pt = pads[0];
    s.pl = pads[1];
    s.dh = dilations[0];
    s.dw = dilations[1];
    checked_numel({s.N, s.C, s.H, s.W}, "in_hw", "output shape");
    const int64_t ekh = s.dh * (s.kH - 1) + 1, ekw = s.dw * (s.kW - 1) + 1;
    const int64_t ph = s.H + pads[0] + pads[2], pw = s.W + pads[1] + pads[3];
    CHECK(ph >= ekh && pw >= ekw, "weight: dilated kernel ", ekh, "x", ekw,
          " is larger than the padded input ", ph, "x", pw);
    const int64_t Ho = (ph - ekh) / s.sh + 1, Wo = (pw - ekw) / s.sw + 1;
    CHECK(s.Ho == Ho && s.Wo == Wo, "grad_out: shape ", shape_str(gs),
          " does not match the Conv output ", Ho, "x", Wo, " of input ", s.H, "x", s.W,
          " with these kernel, strides, pads, dilations");
    const DType dt = g.dtype;
    return run({&g, &w}, {s.N, s.C, s.H, s.W}, dt,
               [s, dt](const std::vector<const void*>& in, void* out, cudaStream_t stream) {
                   by_dtype(dt, [&](auto zero) {
                       using T = decltype(zero);
                       conv2d_backward_data<T>(static_cast<const T*>(in[0]),
                                               static_cast<const T*>(in[1]), static_cast<T*>(out),
                                               s, stream);
                   });
                   return std::string();
               });
}

py::object max_pool2d_backward_py(const py::object& grad_out, const py::object& x,
                                  const Ints& kernel_shape, const Ints& strides, const Ints& pads,
                                  const Ints& dilations) {
    const Arg g = parse(grad_out, "grad_out", Want::floating);
    require_rank(g, 4);
    const Arg xx = parse(x, "x", Want::floating);
    require_rank(xx, 4);
    require_same_dtype(xx, g);
    check_window(kernel_shape, 2, "kernel_shape", strides, pads, &dilations);
    const Ints& gs = g.shape;
    const Ints& xs = xx.shape;
    CHECK(xs[0] == gs[0] && xs[1] == gs[1], "x: shape ", shape_str(xs),
          " does not match N, C of grad_out ", shape_str(gs));
    CHECK(kernel_shape[0] * kernel_shape[1] <= INT_MAX, "kernel_shape: ",
          shape_str(kernel_shape), " has more than 2^31 - 1 taps");
    MaxPoolShape s{};
    s.N = xs[0];
    s.C = xs[1];
    s.H = xs[2];
    s.W = xs[3];
    s.Ho = gs[2];
    s.Wo = gs[3];
    s.kh = kernel_shape[0];
    s.kw = kernel_shape[1];
    s.sh = strides[0];
    s.sw = strides[1];
    s.pt = pads[0];
    s.pl = pads[1];
    s.dh = dilations[0];
    s.dw = dilations[1];
    // ceil_mode may add one window per axis to the floor-mode output size, never more; every
    // window must start inside the padded input.
    const int64_t ekh = s.dh * (s.kh - 1) + 1, ekw = s.dw * (s.kw - 1) + 1;
    const int64_t ph = s.H + pads[0] + pads[2], pw = s.W + pads[1] + pads[3];
    CHECK(ph >= ekh && pw >= ekw, "kernel_shape: dilated kernel ", ekh, "x", ekw,
          " is larger than the padded input ", ph, "x", pw);
    const int64_t Ho = (ph - ekh + s.sh - 1) / s.sh + 1;
    const int64_t Wo = (pw - ekw + s.sw - 1) / s.sw + 1;
    CHECK(s.Ho <= Ho && s.Wo <= Wo, "grad_out: shape ", shape_str(gs),
          " is larger than the MaxPool output (at most ", Ho, "x", Wo, ")");
    const int64_t out_total = numel(gs);
    const DType dt = g.dtype;
    return run({&g, &xx}, xs, dt,
               [=](const std::vector<const void*>& in, void* out, cudaStream_t stream) {
                   DeviceBuffer switches(static_cast<size_t>(out_total) * sizeof(int32_t));
                   by_dtype(dt, [&](auto zero) {
                       using T = decltype(zero);
                       max_pool2d_backward<T>(static_cast<const T*>(in[0]),
                                              static_cast<const T*>(in[1]), static_cast<T*>(out),
                                              static_cast<int32_t*>(switches.get()), s, stream);
                   });
                   PYDEVIS_CUDA_CHECK(cudaStreamSynchronize(stream));  // before freeing switches
                   return std::string();
               });
}

py::object rectifier_backward_py(const py::object& grad_out, const py::object& out_arr, int mode,
                                 double lo, double hi) {
    const Arg g = parse(grad_out, "grad_out", Want::floating);
    const Arg y = parse(out_arr, "out", Want::floating);
    require_same_dtype(y, g);
    CHECK(y.shape == g.shape, "out: shape ", shape_str(y.shape), " != grad_out shape ",
          shape_str(g.shape));
    CHECK(mode >= 0 && mode <= 2,
          "mode: expected 0 (gradient), 1 (deconvnet) or 2 (guided), got ", mode);
    const int64_t n = numel(g.shape);
    const DType dt = g.dtype;
    return run({&g, &y}, g.shape, dt,
               [=](const std::vector<const void*>& in, void* out, cudaStream_t stream) {
                   by_dtype(dt, [&](auto zero) {
                       using T = decltype(zero);
                       rectifier_backward<T>(static_cast<const T*>(in[0]),
                                             static_cast<const T*>(in[1]), static_cast<T*>(out),
                                             n, mode, lo, hi, stream);
                   });
                   return std::string();
               });
}

py::object lrn_backward_py(const py::object& grad_out, const py::object& x, int64_t size,
                           double alpha, double beta, double bias) {
    const Arg g = parse(grad_out, "grad_out", Want::floating);
    require_rank(g, 4);
    const Arg xx = parse(x, "x", Want::floating);
    require_rank(xx, 4);
    require_same_dtype(xx, g);
    CHECK(xx.shape == g.shape, "x: shape ", shape_str(xx.shape), " != grad_out shape ",
          shape_str(g.shape));
    ::pydevis::check_lrn_params(size, alpha, beta, bias);
    const int64_t N = g.shape[0], C = g.shape[1], HW = g.shape[2] * g.shape[3];
    const DType dt = g.dtype;
    return run({&g, &xx}, g.shape, dt,
               [=](const std::vector<const void*>& in, void* out, cudaStream_t stream) {
                   DeviceBuffer scratch(static_cast<size_t>(N * C * HW) * itemsize(dt));
                   by_dtype(dt, [&](auto zero) {
                       using T = decltype(zero);
                       lrn_backward<T>(static_cast<const T*>(in[0]), static_cast<const T*>(in[1]),
                                       static_cast<T*>(out), static_cast<T*>(scratch.get()), N,
                                       C, HW, size, alpha, beta, bias, stream);
                   });
                   PYDEVIS_CUDA_CHECK(cudaStreamSynchronize(stream));  // before freeing scratch
                   return std::string();
               });
}

py::object avg_pool2d_backward_py(const py::object& grad_out, const Ints& in_shape,
                                  const Ints& kernel_shape, const Ints& strides, const Ints& pads,
                                  bool count_include_pad) {
    const Arg g = parse(grad_out, "grad_out", Want::floating);
    require_rank(g, 4);
    CHECK_LEN(in_shape, 4, "in_shape");
    check_all_in_range(in_shape, 0, "in_shape");
    check_window(kernel_shape, 2, "kernel_shape", strides, pads);
    const Ints& gs = g.shape;
    CHECK(in_shape[0] == gs[0] && in_shape[1] == gs[1], "in_shape: ", shape_str(in_shape),
          " does not match N, C of grad_out ", shape_str(gs));
    checked_numel(in_shape, "in_shape", "output shape");
    AvgPoolShape s{};
    s.N = in_shape[0];
    s.C = in_shape[1];
    s.H = in_shape[2];
    s.W = in_shape[3];
    s.Ho = gs[2];
    s.Wo = gs[3];
    s.kh = kernel_shape[0];
    s.kw = kernel_shape[1];
    s.sh = strides[0];
    s.sw = strides[1];
    s.pt = pads[0];
    s.pl = pads[1];
    s.pb = pads[2];
    s.pr = pads[3];
    s.count_include_pad = count_include_pad;
    const int64_t ph = s.H + s.pt + s.pb, pw = s.W + s.pl + s.pr;
    CHECK(ph >= s.kh && pw >= s.kw, "kernel_shape: ", s.kh, "x", s.kw,
          " is larger than the padded input ", ph, "x", pw);
    // ceil_mode may add one window per axis to the floor-mode output size, never more.
    const int64_t Ho = (ph - s.kh + s.sh - 1) / s.sh + 1;
    const int64_t Wo = (pw - s.kw + s.sw - 1) / s.sw + 1;
    CHECK(s.Ho <= Ho && s.Wo <= Wo, "grad_out: shape ", shape_str(gs),
          " is larger than the AveragePool output (at most ", Ho, "x", Wo, ")");
    const DType dt = g.dtype;
    return run({&g}, in_shape, dt,
               [=](const std::vector<const void*>& in, void* out, cudaStream_t stream) {
                   by_dtype(dt, [&](auto zero) {
                       using T = decltype(zero);
                       avg_pool2d_backward<T>(static_cast<const T*>(in[0]), static_cast<T*>(out),
                                              s, stream);
                   });
                   return std::string();
               });
}

py::object global_avg_pool_backward_py(const py::object& grad_out, const Ints& in_shape) {
    const Arg g = parse(grad_out, "grad_out", Want::floating);
    require_rank(g, 4);
    CHECK_LEN(in_shape, 4, "in_shape");
    check_all_in_range(in_shape, 1, "in_shape");
    const Ints& gs = g.shape;
    CHECK(gs[0] == in_shape[0] && gs[1] == in_shape[1] && gs[2] == 1 && gs[3] == 1,
          "grad_out: shape ", shape_str(gs), " is not (N, C, 1, 1) of in_shape ",
          shape_str(in_shape));
    checked_numel(in_shape, "in_shape", "output shape");
    const int64_t planes = in_shape[0] * in_shape[1];
    const int64_t HW = in_shape[2] * in_shape[3];
    const DType dt = g.dtype;
    return run({&g}, in_shape, dt,
               [=](const std::vector<const void*>& in, void* out, cudaStream_t stream) {
                   by_dtype(dt, [&](auto zero) {
                       using T = decltype(zero);
                       global_avg_pool_backward<T>(static_cast<const T*>(in[0]),
                                                   static_cast<T*>(out), planes, HW, stream);
                   });
                   return std::string();
               });
}

// ---------------------------------------------------------------------------------------------
// The five ascent kernels (docs/kernels.md, "Ascent kernels")

// A float64 vector of `len` entries (eta, lo, hi); `what` says what its entries are.
Arg parse_f64_vector(const py::object& obj, const std::string& name, int64_t len,
                     const std::string& what) {
    Arg a = parse(obj, name, Want::floating);
    require_rank(a, 1);
    if (a.dtype != DType::f64) bad_arg(name + ": dtype " + dtype_name(a.dtype) + " is not float64");
    CHECK(a.shape[0] == len, name, ": shape ", shape_str(a.shape), " is not (", len, ",): ", what);
    return a;
}

// A run() body that returns a copy of the first input (sigma <= 0, pct <= 0).
auto copy_of_first(size_t nbytes) {
    return [nbytes](const std::vector<const void*>& in, void* out, cudaStream_t stream) {
        if (nbytes) {
            PYDEVIS_CUDA_CHECK(
                cudaMemcpyAsync(out, in[0], nbytes, cudaMemcpyDeviceToDevice, stream));
        }
        return std::string();
    };
}

py::object ascent_update_py(const py::object& v_arr, const py::object& g_arr,
                            const py::object& eta_arr, double decay) {
    const Arg v = parse(v_arr, "v", Want::floating);
    require_rank(v, 4);
    const Arg g = parse(g_arr, "g", Want::floating);
    require_same_dtype(g, v);
    const Ints& vs = v.shape;
    CHECK(g.shape == vs, "g: shape ", shape_str(g.shape), " != v shape ", shape_str(vs));
    const Arg eta = parse_f64_vector(eta_arr, "eta", vs[0],
                                     "one step size per image of v " + shape_str(vs));
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
    const Arg v = parse(v_arr, "v", Want::floating);
    require_rank(v, 4);
    ::pydevis::check_blur_sigma(sigma);
    const Ints& vs = v.shape;
    const DType dt = v.dtype;
    if (sigma <= 0) return run({&v}, vs, dt, copy_of_first(v.nbytes()));
    // Weights as the reference computes them: exp(-k² / (2 sigma²)) for k in [-r, r], sum 1.
    const int64_t r = static_cast<int64_t>(4.0 * sigma + 0.5);
    std::vector<double> w(static_cast<size_t>(2 * r + 1));
    double sum = 0.0;
    for (int64_t k = -r; k <= r; ++k) {
        const double kd = static_cast<double>(k);
        w[static_cast<size_t>(k + r)] = std::exp(-kd * kd / (2.0 * sigma * sigma));
        sum += w[static_cast<size_t>(k + r)];
    }
    for (double& x : w) x /= sum;
    const int64_t planes = vs[0] * vs[1], H = vs[2], W = vs[3];
    return run({&v}, vs, dt,
               [=, w = std::move(w)](const std::vector<const void*>& in, void* out,
                                     cudaStream_t stream) {
                   const size_t w_bytes = w.size() * sizeof(double);
                   DeviceBuffer weights(w_bytes);
                   PYDEVIS_CUDA_CHECK(cudaMemcpyAsync(weights.get(), w.data(), w_bytes,
                                                      cudaMemcpyHostToDevice, stream));
                   DeviceBuffer tmp(static_cast<size_t>(planes * H * W) * sizeof(double));
                   by_dtype(dt, [&](auto zero) {
                       using T = decltype(zero);
                       gaussian_blur<T>(static_cast<const T*>(in[0]), static_cast<T*>(out),
                                        static_cast<double*>(tmp.get()),
                                        static_cast<const double*>(weights.get()), r, planes, H,
                                        W, stream);
                   });
                   PYDEVIS_CUDA_CHECK(cudaStreamSynchronize(stream));  // before freeing buffers
                   return std::string();
               });
}

// clip_small_norm (g == nullptr) and clip_small_contribution, once v (and g) are parsed.
py::object clip_small_py(const Arg& v, const Arg* g, double pct) {
    CHECK(pct <= 100, "pct: must be <= 100 (a percentile), got ", pct);  // NaN fails too
    const Ints& vs = v.shape;
    const DType dt = v.dtype;
    std::vector<const Arg*> ins{&v};
    if (g != nullptr) ins.push_back(g);
    if (pct <= 0) return run(ins, vs, dt, copy_of_first(v.nbytes()));
    const int64_t N = vs[0], C = vs[1], HW = vs[2] * vs[3];
    const bool contribution = g != nullptr;
    return run(ins, vs, dt,
               [=](const std::vector<const void*>& in, void* out, cudaStream_t stream) {
                   DeviceBuffer scratch(static_cast<size_t>(clip_small_scratch(N, HW)) *
                                        sizeof(double));
                   by_dtype(dt, [&](auto zero) {
                       using T = decltype(zero);
                       clip_small<T>(static_cast<const T*>(in[0]),
                                     contribution ? static_cast<const T*>(in[1]) : nullptr,
                                     static_cast<T*>(out), static_cast<double*>(scratch.get()),
                                     N, C, HW, pct, stream);
                   });
                   PYDEVIS_CUDA_CHECK(cudaStreamSynchronize(stream));  // before freeing scratch
                   return std::string();
               });
}

py::object clip_small_norm_py(const py::object& v_arr, double pct) {
    const Arg v = parse(v_arr, "v", Want::floating);
    require_rank(v, 4);
    return clip_small_py(v, nullptr, pct);
}

py::object clip_small_contribution_py(const py::object& v_arr, const py::object& g_arr,
                                      double pct) {
    const Arg v = parse(v_arr, "v", Want::floating);
    require_rank(v, 4);
    const Arg g = parse(g_arr, "g", Want::floating);
    require_same_dtype(g, v);
    CHECK(g.shape == v.shape, "g: shape ", shape_str(g.shape), " != v shape ",
          shape_str(v.shape));
    return clip_small_py(v, &g, pct);
}

py::object clamp_channels_py(const py::object& v_arr, const py::object& lo_arr,
                             const py::object& hi_arr) {
    const Arg v = parse(v_arr, "v", Want::floating);
    require_rank(v, 4);
    const Ints& vs = v.shape;
    const std::string what = "one bound per channel of v " + shape_str(vs);
    const Arg lo = parse_f64_vector(lo_arr, "lo", vs[1], what);
    const Arg hi = parse_f64_vector(hi_arr, "hi", vs[1], what);
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

// ---------------------------------------------------------------------------------------------
// Device queries

int device_count() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

std::optional<std::string> device_error() {
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        cudaGetLastError();
        return std::string("cudaGetDeviceCount: ") + cudaGetErrorString(err) + " (" +
               cudaGetErrorName(err) + ")";
    }
    if (n == 0) return std::string("cudaGetDeviceCount: 0 devices");
    return std::nullopt;
}

std::string device_name(int device) {
    const int n = device_count();
    if (device < 0 || device >= n) {
        bad_arg("device: " + std::to_string(device) + " is not in [0, " + std::to_string(n) +
                ")");
    }
    cudaDeviceProp prop{};
    PYDEVIS_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    return prop.name;
}

int runtime_version() {
    int v = 0;
    PYDEVIS_CUDA_CHECK(cudaRuntimeGetVersion(&v));
    return v;
}

}  // namespace
}  // namespace pydevis::cuda

PYBIND11_MODULE(_cuda, m) {
    using namespace pydevis::cuda;
    using py::arg;
    m.doc() =
        "CUDA backend of the pydevis backward and ascent kernels (docs/kernels.md). Array "
        "arguments are numpy arrays (result: numpy) or objects with __cuda_array_interface__ "
        "(result: DeviceArray).";

    py::class_<DeviceArray>(m, "DeviceArray",
                            "A C-contiguous array in CUDA device memory, owned by this object "
                            "(freed when it is collected). Exposes __cuda_array_interface__ v3.")
        .def_property_readonly("__cuda_array_interface__", &DeviceArray::interface)
        .def_property_readonly("shape", &DeviceArray::shape)
        .def_property_readonly("dtype", &DeviceArray::dtype, "numpy dtype name, e.g. 'float32'")
        .def_property_readonly("ndim", [](const DeviceArray& a) { return a.shape().size(); })
        .def_property_readonly("size", &DeviceArray::size)
        .def_property_readonly("nbytes", &DeviceArray::nbytes)
        .def_property_readonly("device", &DeviceArray::device)
        .def_property_readonly("ptr", &DeviceArray::ptr)
        .def("to_host", &DeviceArray::to_host, "Copy to a new numpy array.")
        .def("__repr__", &DeviceArray::repr);

    // Same names and argument orders as pydevis._C (docs/kernels.md).
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

    m.def("device_count", &device_count,
          "Number of usable CUDA devices (0 when the driver or device is missing).");
    m.def("device_error", &device_error,
          "None when a CUDA device is usable, else why not (the cudaGetDeviceCount error).");
    m.def("device_name", &device_name, arg("device") = 0, "Name of a CUDA device.");
    m.def("runtime_version", &runtime_version, "CUDA runtime version, e.g. 13000.");
}
