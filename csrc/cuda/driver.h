// The driver of the stateless kernel functions of pydevis._cuda: stage host inputs on the device,
// run the body, return numpy (every input on the host) or a DeviceArray (any input on the
// device). Memory comes from the device's caching pool (device_memory.h). For a loop that keeps
// its arrays on the device with no allocation or transfer per step, see workspace.cpp.
#pragma once

#include <cuda_runtime_api.h>

#include <memory>
#include <string>
#include <vector>

#include "arrays.h"
#include "device_memory.h"

namespace pydevis::cuda {

// body(device input pointers, device output pointer, stream) enqueues the work and returns an
// empty string, or a ValueError message (raised after the device work has finished).
template <typename F>
py::object run(const std::vector<const Arg*>& ins, const Ints& out_shape, DType out_dtype,
               F&& body) {
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
    // The fronts check the output shape against the argument it comes from; this is a backstop.
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
        use_caching_pool(device);
        const cudaStream_t stream = nullptr;  // legacy default stream
        sync_producers(ins);
        std::vector<DeviceBuffer> staged;
        staged.reserve(ins.size());
        std::vector<const void*> ptrs;
        for (const Arg* a : ins) {
            if (a->on_device) {
                ptrs.push_back(a->ptr);
                continue;
            }
            staged.emplace_back(a->nbytes(), stream);
            if (a->nbytes()) {
                PYDEVIS_CUDA_CHECK(cudaMemcpyAsync(staged.back().get(), a->ptr, a->nbytes(),
                                                   cudaMemcpyHostToDevice, stream));
            }
            ptrs.push_back(staged.back().get());
        }
        DeviceBuffer out(out_bytes, stream);
        error = body(ptrs, out.get(), stream);
        if (error.empty() && !device_out && out_bytes) {
            PYDEVIS_CUDA_CHECK(cudaMemcpyAsync(host_dst, out.get(), out_bytes,
                                               cudaMemcpyDeviceToHost, stream));
        }
        // A result must be complete when returned (its interface says no stream to wait on).
        PYDEVIS_CUDA_CHECK(cudaStreamSynchronize(stream));
        if (error.empty() && device_out) {
            device_result = std::make_unique<DeviceArray>(out.get(), out_shape, out_dtype, device);
            out.release();
        }
    }
    if (!error.empty()) bad_arg(error);
    if (device_out) return py::cast(std::move(device_result));
    return std::move(host_out);
}

// A run() body that returns a copy of the first input (sigma <= 0, pct <= 0).
inline auto copy_of_first(size_t nbytes) {
    return [nbytes](const std::vector<const void*>& in, void* out, cudaStream_t stream) {
        if (nbytes) {
            PYDEVIS_CUDA_CHECK(
                cudaMemcpyAsync(out, in[0], nbytes, cudaMemcpyDeviceToDevice, stream));
        }
        return std::string();
    };
}

}  // namespace pydevis::cuda
