// pydevis._cuda: the CUDA backend of the backward and ascent kernels (docs/kernels.md).
//
// Every kernel function accepts, for each array argument, either a numpy array (copied to the
// device, result copied back and returned as a numpy array) or any object exposing
// __cuda_array_interface__ (cupy, numba.cuda device arrays, DeviceArray: used in place). When at
// least one array argument lives on the device, the result stays there and is returned as a
// DeviceArray (exposes __cuda_array_interface__ version 3, .to_host() gives numpy). Arguments
// are validated before any memory is touched, by the fronts shared with pydevis._C
// (common/front.h; ValueError naming the argument); CUDA failures raise RuntimeError; the GIL is
// released around transfers and compute.
//
// Files: arrays.* (argument parsing, DeviceArray), device_memory.* (caching pool), driver.h
// (the stateless call), bind_backward.cpp, bind_ascent.cpp (the kernels), workspace.cpp (an
// ascent kept on the device), blas.* (cuBLAS), the .cu files (the kernels themselves).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cuda_runtime_api.h>

#include <memory>
#include <optional>
#include <string>

#include "arrays.h"
#include "device_memory.h"

namespace pydevis::cuda {

void bind_backward(py::module_& m);
void bind_ascent(py::module_& m);
void bind_workspace(py::module_& m);

namespace {

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

// A new DeviceArray holding a copy of `src` (numpy or device array), on the current device.
std::unique_ptr<DeviceArray> to_device(const py::object& src) {
    const Arg a = parse(src, "src");
    int device = a.device;
    if (device < 0) PYDEVIS_CUDA_CHECK(cudaGetDevice(&device));
    void* ptr = nullptr;
    {
        py::gil_scoped_release nogil;
        DeviceGuard guard(device);
        use_caching_pool(device);
        if (a.nbytes()) {
            DeviceBuffer b(a.nbytes());
            ptr = b.release();
        }
    }
    auto out = std::make_unique<DeviceArray>(ptr, a.shape, a.dtype, device);
    out->copy_from(src);
    return out;
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
                            "(freed when it is collected) or a view of a workspace buffer. "
                            "Exposes __cuda_array_interface__ v3.")
        .def_property_readonly("__cuda_array_interface__", &DeviceArray::interface)
        .def_property_readonly("shape", &DeviceArray::shape)
        .def_property_readonly("dtype", &DeviceArray::dtype, "numpy dtype name, e.g. 'float32'")
        .def_property_readonly("ndim", [](const DeviceArray& a) { return a.dims().size(); })
        .def_property_readonly("size", &DeviceArray::size)
        .def_property_readonly("nbytes", &DeviceArray::nbytes)
        .def_property_readonly("device", &DeviceArray::device)
        .def_property_readonly("ptr", &DeviceArray::ptr)
        .def("to_host", &DeviceArray::to_host, "Copy to a new numpy array.")
        .def("copy_from", &DeviceArray::copy_from, arg("src"),
             "Overwrite with src (numpy or device array, same shape and dtype), in place.")
        .def("__repr__", &DeviceArray::repr);
    m.def("to_device", &to_device, arg("src"), "A new DeviceArray holding a copy of src.");

    // Same names and argument orders as pydevis._C (docs/kernels.md).
    bind_backward(m);
    bind_ascent(m);
    bind_workspace(m);

    m.def("device_count", &device_count,
          "Number of usable CUDA devices (0 when the driver or device is missing).");
    m.def("device_error", &device_error,
          "None when a CUDA device is usable, else why not (the cudaGetDeviceCount error).");
    m.def("device_name", &device_name, arg("device") = 0, "Name of a CUDA device.");
    m.def("runtime_version", &runtime_version, "CUDA runtime version, e.g. 13000.");
}
