// Device memory of pydevis._cuda: the current-device guard and the owning buffer.
//
// Buffers come from the device's stream-ordered memory pool (cudaMallocAsync / cudaFreeAsync)
// whose release threshold is raised once per device (use_caching_pool): freed blocks stay in
// the pool, so the scratch and outputs of a call are served again from it at the next call
// instead of by cudaMalloc and cudaFree (which synchronise the device). Host code only.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <utility>

#include "cuda_check.h"

namespace pydevis::cuda {

// Keep freed memory in `device`'s default pool (idempotent, cheap after the first call).
void use_caching_pool(int device);

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

// Owning stream-ordered allocation on the current device (nullptr for zero bytes); freed on
// `stream` when destroyed, so it may be dropped before the work that uses it has finished.
class DeviceBuffer {
public:
    DeviceBuffer() = default;
    explicit DeviceBuffer(size_t nbytes, cudaStream_t stream = nullptr) : stream_(stream) {
        if (nbytes) PYDEVIS_CUDA_CHECK(cudaMallocAsync(&ptr_, nbytes, stream));
        bytes_ = nbytes;
    }
    ~DeviceBuffer() {
        if (ptr_) cudaFreeAsync(ptr_, stream_);
    }
    DeviceBuffer(DeviceBuffer&& o) noexcept
        : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(o.bytes_), stream_(o.stream_) {}
    DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
        std::swap(ptr_, o.ptr_);
        std::swap(bytes_, o.bytes_);
        std::swap(stream_, o.stream_);
        return *this;
    }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;

    void* get() const { return ptr_; }
    size_t bytes() const { return bytes_; }
    void* release() { return std::exchange(ptr_, nullptr); }
    template <typename T>
    T* as() const { return static_cast<T*>(ptr_); }

private:
    void* ptr_ = nullptr;
    size_t bytes_ = 0;
    cudaStream_t stream_ = nullptr;
};

}  // namespace pydevis::cuda
