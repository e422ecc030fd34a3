// CUDA plumbing shared by every gpu/ header: error checks that throw through
// fail() (common/error.h) with file and line, the one cuBLAS handle, the TF32
// switch, launch helpers and device queries.
//
// All GPU work runs on the legacy default stream, so kernels, cuBLAS calls and
// cudaMemcpy are ordered without explicit synchronization.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdlib>
#include <string>

#include "../common/error.h"

inline void gpu_check_cuda(cudaError_t status, const char* what, const char* file, int line) {
    if (status != cudaSuccess)
        fail(strf("CUDA error at %s:%d: %s (%s)", file, line, cudaGetErrorString(status), what));
}
// CUDA_CHECK(cudaMalloc(...)); CUBLAS_CHECK(cublasSgemm(...)); -- throw on failure.
#define CUDA_CHECK(call) gpu_check_cuda((call), #call, __FILE__, __LINE__)

// MOT_CUDA_SYNC=1 in the environment: wait for every kernel right after its
// launch, so a fault inside it (an illegal address, say) is reported at that
// kernel's file and line instead of at some later, unrelated CUDA call.
// Slow; for finding which kernel fails.
inline bool gpu_sync_after_launch() {
    static const bool on = [] {
        const char* v = std::getenv("MOT_CUDA_SYNC");
        return v != nullptr && *v != '\0' && std::string(v) != "0";
    }();
    return on;
}

// After every kernel launch: reports bad launch configurations at their line
// (and, under MOT_CUDA_SYNC, faults during the kernel's run).
inline void gpu_check_launch(const char* file, int line) {
    gpu_check_cuda(cudaGetLastError(), "kernel launch", file, line);
    if (gpu_sync_after_launch()) gpu_check_cuda(cudaDeviceSynchronize(), "kernel run (MOT_CUDA_SYNC)", file, line);
}
#define CUDA_CHECK_LAUNCH() gpu_check_launch(__FILE__, __LINE__)

inline void gpu_check_cublas(cublasStatus_t status, const char* what, const char* file, int line) {
    if (status != CUBLAS_STATUS_SUCCESS)
        fail(strf("cuBLAS error at %s:%d: %s (%s)", file, line, cublasGetStatusString(status), what));
    if (gpu_sync_after_launch()) gpu_check_cuda(cudaDeviceSynchronize(), what, file, line);
}
#define CUBLAS_CHECK(call) gpu_check_cublas((call), #call, __FILE__, __LINE__)

// ceil(n / d) for grid sizes
inline unsigned int ceil_div(size_t n, size_t d) { return (unsigned int)((n + d - 1) / d); }

// Grid size for a grid-stride loop over n elements: enough blocks to fill the
// GPU, never more than the elements need.
inline unsigned int grid_for(size_t n, int block) {
    size_t blocks = (n + block - 1) / block;
    if (blocks > 65536) blocks = 65536;
    return (unsigned int)(blocks > 0 ? blocks : 1);
}

// cuBLAS state: created on first use, kept for the life of the program.
struct GpuBlasState {
    cublasHandle_t handle = nullptr;
    bool tf32 = false;
};

inline GpuBlasState& gpu_blas_state() {
    static GpuBlasState state;
    return state;
}

// The process-wide cuBLAS handle (TF32 off unless gpu_set_tf32(true)).
inline cublasHandle_t gpu_cublas() {
    GpuBlasState& s = gpu_blas_state();
    if (s.handle == nullptr) {
        CUBLAS_CHECK(cublasCreate(&s.handle));
        CUBLAS_CHECK(cublasSetMathMode(s.handle, s.tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    }
    return s.handle;
}

// --tf32: let cuBLAS use TF32 tensor cores for fp32 GEMMs (10-bit mantissa
// inputs, fp32 accumulation). Off by default: fp32 GEMMs are exact fp32.
inline void gpu_set_tf32(bool on) {
    GpuBlasState& s = gpu_blas_state();
    s.tf32 = on;
    if (s.handle != nullptr)
        CUBLAS_CHECK(cublasSetMathMode(s.handle, on ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
}

inline bool gpu_tf32() { return gpu_blas_state().tf32; }

// True when a CUDA driver and at least one device are present. Never throws:
// on a machine without a GPU it returns false and clears the CUDA error.
inline bool gpu_available() {
    int count = 0;
    cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) {
        (void)cudaGetLastError();  // clear it so later CUDA calls do not report it
        return false;
    }
    return count > 0;
}

// Name of the current device, e.g. "NVIDIA H200".
inline std::string gpu_device_name() {
    int dev = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
    return std::string(prop.name);
}

// Free and total device memory in bytes.
inline size_t gpu_free_memory(size_t* total = nullptr) {
    size_t free_bytes = 0, total_bytes = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    if (total) *total = total_bytes;
    return free_bytes;
}
