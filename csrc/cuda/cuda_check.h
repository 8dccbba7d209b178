// Error checking for the CUDA runtime calls of pydevis._cuda (host code only).
#pragma once

#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

namespace pydevis::cuda {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* expr, const char* file,
                                          int line) {
    throw std::runtime_error(std::string("CUDA error: ") + cudaGetErrorString(err) + " (" +
                             cudaGetErrorName(err) + ") in " + expr + " at " + file + ":" +
                             std::to_string(line));
}

}  // namespace pydevis::cuda

// Evaluate a CUDA runtime call once; throw std::runtime_error (RuntimeError in Python) on failure.
#define PYDEVIS_CUDA_CHECK(expr)                                                         \
    do {                                                                                 \
        const cudaError_t pydevis_err_ = (expr);                                         \
        if (pydevis_err_ != cudaSuccess) {                                               \
            ::pydevis::cuda::throw_cuda_error(pydevis_err_, #expr, __FILE__, __LINE__);  \
        }                                                                                \
    } while (0)
