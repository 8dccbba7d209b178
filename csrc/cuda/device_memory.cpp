// The caching stream-ordered pool of device_memory.h.
#include "device_memory.h"

#include <cstdint>
#include <mutex>
#include <set>

namespace pydevis::cuda {

void use_caching_pool(int device) {
    static std::mutex mu;
    static std::set<int> done;
    std::lock_guard<std::mutex> lock(mu);
    if (done.count(device)) return;
    cudaMemPool_t pool = nullptr;
    PYDEVIS_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
    uint64_t keep = UINT64_MAX;  // never give freed blocks back to the driver on a sync
    PYDEVIS_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    done.insert(device);
}

}  // namespace pydevis::cuda
