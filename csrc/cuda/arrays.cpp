// Array arguments (numpy or __cuda_array_interface__) and DeviceArray results of pydevis._cuda.
#include "arrays.h"

#include <cuda_runtime_api.h>

#include <optional>
#include <stdexcept>

#include "common/front.h"
#include "device_memory.h"

namespace pydevis::cuda {

const char* dtype_name(DType t) { return t == DType::f32 ? "float32" : "float64"; }

int64_t numel(const Ints& shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

void bad_arg(const std::string& msg) { throw std::invalid_argument(msg); }

// ---- DeviceArray -------------------------------------------------------------------------------
DeviceArray::~DeviceArray() {
    if (!ptr_ || !owns_) return;
    int prev = -1;
    const bool switch_device = cudaGetDevice(&prev) == cudaSuccess && prev != device_ &&
                               cudaSetDevice(device_) == cudaSuccess;
    cudaFreeAsync(ptr_, nullptr);  // never throw from a destructor
    if (switch_device) cudaSetDevice(prev);
}

py::tuple DeviceArray::shape() const {
    py::tuple t(shape_.size());
    for (size_t i = 0; i < shape_.size(); ++i) t[i] = py::int_(shape_[i]);
    return t;
}

py::dict DeviceArray::interface() const {
    py::dict d;
    d["shape"] = shape();
    d["typestr"] = dtype_ == DType::f32 ? "<f4" : "<f8";
    d["data"] = py::make_tuple(py::int_(ptr()), false);
    d["version"] = 3;
    d["strides"] = py::none();  // C-contiguous
    d["stream"] = py::none();   // the producing stream was synchronised before returning
    return d;
}

py::array DeviceArray::to_host() const {
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

void DeviceArray::copy_from(const py::object& src) {
    const Arg a = parse(src, "src");
    if (a.dtype != dtype_ || a.shape != shape_) {
        bad_arg("src: " + std::string(dtype_name(a.dtype)) + " " + shape_str(a.shape) +
                " is not " + dtype_name(dtype_) + " " + shape_str(shape_));
    }
    if (!nbytes()) return;
    sync_producers({&a});
    py::gil_scoped_release nogil;
    DeviceGuard guard(device_);
    PYDEVIS_CUDA_CHECK(cudaMemcpy(ptr_, a.ptr, nbytes(), cudaMemcpyDefault));
}

std::string DeviceArray::repr() const {
    return "DeviceArray(shape=" + shape_str(shape_) + ", dtype=" + dtype_name(dtype_) +
           ", device=" + std::to_string(device_) + (owns_ ? ")" : ", view)");
}

// ---- parsing -----------------------------------------------------------------------------------
namespace {

constexpr const char* kWant = "float32/float64";

std::optional<DType> dtype_from_typestr(const std::string& ts) {
    if (ts.size() != 3 || (ts[0] != '<' && ts[0] != '=' && ts[0] != '|')) return std::nullopt;
    const std::string body = ts.substr(1);
    if (body == "f4") return DType::f32;
    if (body == "f8") return DType::f64;
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

// Strides (bytes) are acceptable when they are those of a C-contiguous array (size-1 dims free).
bool c_contiguous(const Ints& shape, const Ints& strides, size_t item) {
    if (numel(shape) == 0) return true;
    int64_t expected = static_cast<int64_t>(item);
    for (size_t i = shape.size(); i-- > 0;) {
        if (shape[i] != 1 && strides[i] != expected) return false;
        expected *= shape[i];
    }
    return true;
}

Arg parse_numpy(const py::array& arr, const std::string& name) {
    Arg a;
    a.name = name;
    const py::dtype dt = arr.dtype();
    const char order = dt.byteorder();
    const std::string shown = py::str(dt).cast<std::string>();  // e.g. "int32", ">f4"
    const bool native = order == '=' || order == '|' || order == '<';
    if (native && dt.kind() == 'f' && dt.itemsize() == 4) {
        a.dtype = DType::f32;
    } else if (native && dt.kind() == 'f' && dt.itemsize() == 8) {
        a.dtype = DType::f64;
    } else {
        bad_arg(name + ": dtype " + shown + " is not " + kWant);
    }
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

// The device of a CUDA pointer, else a ValueError (host memory, garbage).
int pointer_device(const void* ptr, const std::string& name) {
    cudaPointerAttributes attr{};
    const cudaError_t err = cudaPointerGetAttributes(&attr, ptr);
    if (err != cudaSuccess) {
        cudaGetLastError();  // clear the (non-sticky) error
        if (err != cudaErrorInvalidValue) PYDEVIS_CUDA_CHECK(err);
        bad_arg(name + ": __cuda_array_interface__ pointer is not device memory (" +
                cudaGetErrorString(err) + ")");
    }
    if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged) {
        bad_arg(name + ": __cuda_array_interface__ pointer is not device memory");
    }
    return attr.device;
}

void parse_cai_data(const py::dict& d, Arg& a) {
    const std::string& name = a.name;
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
        a.device = pointer_device(a.ptr, name);
    } else if (numel(a.shape) != 0) {
        bad_arg(name + ": __cuda_array_interface__ has a null pointer");
    }
}

Arg parse_cai(const py::object& obj, const std::string& name) {
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
    const auto dt = dtype_from_typestr(ts);
    if (!dt) bad_arg(name + ": dtype " + numpy_dtype_name(ts) + " is not " + kWant);
    a.dtype = *dt;
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
    parse_cai_data(d, a);
    a.owner = obj;
    return a;
}

}  // namespace

Arg parse(const py::object& obj, const std::string& name) {
    if (py::isinstance<py::array>(obj)) return parse_numpy(obj.cast<py::array>(), name);
    if (py::hasattr(obj, "__cuda_array_interface__")) return parse_cai(obj, name);
    bad_arg(name + ": expected a numpy array or an object with __cuda_array_interface__, got " +
            py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
}

void require_rank(const Arg& a, int rank) { check_rank(a.shape, a.name.c_str(), rank); }

void require_same_dtype(const Arg& a, const Arg& ref) {
    if (a.dtype != ref.dtype) {
        bad_arg(a.name + ": dtype " + dtype_name(a.dtype) + " differs from " + ref.name +
                " dtype " + dtype_name(ref.dtype));
    }
}

Arg parse_f64_vector(const py::object& obj, const char* name, int64_t len, const char* what,
                     const Ints& vshape) {
    Arg a = parse(obj, name);
    require_rank(a, 1);
    if (a.dtype != DType::f64) bad_arg(std::string(name) + ": dtype " + dtype_name(a.dtype) +
                                       " is not float64");
    f64_vector_front(a.shape, name, len, what, vshape);
    return a;
}

void sync_producers(const std::vector<const Arg*>& ins) {
    for (const Arg* a : ins) {
        if (!a->on_device || a->stream == 0 || a->stream == 1) continue;  // 1: legacy default
        const cudaStream_t s = a->stream == 2 ? cudaStreamPerThread
                                              : reinterpret_cast<cudaStream_t>(a->stream);
        PYDEVIS_CUDA_CHECK(cudaStreamSynchronize(s));
    }
}

}  // namespace pydevis::cuda
