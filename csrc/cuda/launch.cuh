// Launch-configuration helpers shared by the .cu files of pydevis._cuda (device code).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <initializer_list>

#include "cuda_check.h"

namespace pydevis::cuda::detail {

constexpr int kThreads = 256;
// Grid-stride loops cover the rest; this many blocks saturate any current GPU.
constexpr int64_t kMaxBlocks = int64_t{1} << 16;

inline unsigned int blocks_for(int64_t n) {
    const int64_t b = (n + kThreads - 1) / kThreads;
    return static_cast<unsigned int>(std::clamp<int64_t>(b, 1, kMaxBlocks));
}

// True when 32-bit index arithmetic is safe: every extent (and a grid-stride step past it) fits.
inline bool fits_int32(std::initializer_list<int64_t> extents) {
    const int64_t limit = INT_MAX - kThreads * kMaxBlocks;
    for (int64_t e : extents) {
        if (e < 0 || e > limit) return false;
    }
    return true;
}

// Grid-stride loop index start and step, in the index type I.
template <typename I>
__device__ __forceinline__ I global_thread() {
    return static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x);
}

template <typename I>
__device__ __forceinline__ I grid_stride() {
    return static_cast<I>(blockDim.x) * static_cast<I>(gridDim.x);
}

__device__ __forceinline__ float pow_(float a, float b) { return powf(a, b); }
__device__ __forceinline__ double pow_(double a, double b) { return pow(a, b); }

}  // namespace pydevis::cuda::detail

// Check the launch that just happened (configuration errors; execution errors surface on sync).
#define PYDEVIS_CUDA_CHECK_LAUNCH() PYDEVIS_CUDA_CHECK(cudaGetLastError())
