// CUDA plumbing shared by every gpu/ header: error checks that throw through
// fail() (common/error.h) with file and line, the one cuBLAS handle, the TF32
// switch, launch helpers and device queries.
//
// All GPU work runs on the legacy default stream, so kernels, cuBLAS calls and
// cudaMemcpy are ordered without explicit synchronization.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
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

// cudaMalloc that names what it allocates: out of memory is an error giving
// the size, the free memory and the option that sets the size.
template <typename T>
void gpu_malloc(T** ptr, size_t count, const char* what, const char* hint = "") {
    size_t bytes = std::max<size_t>(count, 1) * sizeof(T);
    cudaError_t status = cudaMalloc((void**)ptr, bytes);
    if (status == cudaSuccess) return;
    (void)cudaGetLastError();
    *ptr = nullptr;
    size_t free_bytes = 0, total = 0;
    cudaMemGetInfo(&free_bytes, &total);
    fail(strf("GPU out of memory: %s needs %.2f GiB, %.2f of %.2f GiB are free (%s)%s%s", what, bytes / 1073741824.0,
              free_bytes / 1073741824.0, total / 1073741824.0, cudaGetErrorString(status), *hint ? "; " : "", hint));
}

// ceil(n / d) for grid sizes
inline unsigned int ceil_div(size_t n, size_t d) { return (unsigned int)((n + d - 1) / d); }

// Grid size for a grid-stride loop over n elements: enough blocks to fill the
// GPU, never more than the elements need.
inline unsigned int grid_for(size_t n, int block) {
    size_t blocks = (n + block - 1) / block;
    if (blocks > 65536) blocks = 65536;
    return (unsigned int)(blocks > 0 ? blocks : 1);
}

namespace gpu {

// Sum of v over the 32 lanes of a warp, returned to every lane.
__device__ inline float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

__device__ inline float warp_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

}  // namespace gpu

// Streaming multiprocessors of the current device (asked once).
inline int gpu_sm_count() {
    static const int sms = [] {
        int dev = 0, n = 0;
        CUDA_CHECK(cudaGetDevice(&dev));
        CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
        return n;
    }();
    return sms;
}

// ---- column sums of a (rows, C) matrix, deterministic and filling the GPU
// Bias and LayerNorm parameter gradients sum a tall matrix over its rows. One
// block per 32 columns gives only C/32 blocks (24 at C = 768, on 132 SMs), so
// the rows are also cut into `chunks` stretches: pass 1 writes one partial sum
// per (chunk, column), pass 2 adds the chunks' partials in order. Both passes
// use a fixed summation order, so results repeat bit for bit.

// Row chunks for a (rows, C) column sum: about 4 blocks per SM, each chunk at
// least 32 rows.
inline int column_chunks(size_t rows, int C) {
    size_t col_blocks = ceil_div(C, 32), want = ceil_div(4 * (size_t)gpu_sm_count(), col_blocks);
    size_t most = ceil_div(rows, 32);
    return (int)std::max<size_t>(1, std::min(want, most));
}

// x rounded to the nearest bf16 value, ties to even, NaN kept a NaN with its
// sign and a quiet bit: the bit arithmetic of common/bf16.h, so that both
// paths round every float alike (tests/test_gpu_layers.cu checks it).
__device__ inline float bf16_round_device(float x) {
    uint32_t u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return __uint_as_float(((u >> 16) | 0x0040u) << 16);
    u += 0x7fffu + ((u >> 16) & 1u);
    return __uint_as_float(u & 0xffff0000u);
}

// Device scratch for the partial sums, grown on demand and kept for the life
// of the program (cudaFree waits for work in flight on the default stream).
// The old buffer is gone before the new one is asked for, so the size is
// zeroed first: when the allocation fails (and throws), a later request of
// any size allocates again instead of being handed a null pointer.
inline float* column_scratch(size_t n) {
    static float* scratch = nullptr;
    static size_t size = 0;
    if (n > size) {
        if (scratch) CUDA_CHECK(cudaFree(scratch));
        scratch = nullptr;
        size = 0;
        gpu_malloc(&scratch, n, "column-sum scratch");
        size = n;
    }
    return scratch;
}

// out[c] += sum over k < chunks of partial[k*C + c], in order of k.
__global__ void column_sum_finish_kernel(float* out,            // (C)
                                         const float* partial,  // (chunks, C)
                                         int chunks, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float sum = 0.0f;
    for (int k = 0; k < chunks; k++) sum += partial[(size_t)k * C + c];
    out[c] += sum;
}

inline void column_sum_finish(float* out, const float* partial, int chunks, int C) {
    column_sum_finish_kernel<<<ceil_div(C, 256), 256>>>(out, partial, chunks, C);
    CUDA_CHECK_LAUNCH();
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

// Why this process cannot use a GPU, or "" when it can. Tells apart no
// driver, a driver older than the CUDA runtime this program was built with,
// no device, and any other error (with CUDA's own words). Asked once; never
// throws, and clears the CUDA error so later calls do not report it.
inline const std::string& gpu_unavailable_reason() {
    static const std::string reason = [] {
        int driver = 0, runtime = 0, count = 0;
        cudaDriverGetVersion(&driver);  // 0 when no driver is installed
        cudaRuntimeGetVersion(&runtime);
        cudaError_t status = cudaGetDeviceCount(&count);
        (void)cudaGetLastError();
        auto ver = [](int v) { return strf("%d.%d", v / 1000, v % 1000 / 10); };
        if (driver == 0) return std::string("no NVIDIA driver found (libcuda is not installed or not loadable)");
        if (status == cudaErrorInsufficientDriver || driver < runtime)
            return strf("the NVIDIA driver supports CUDA %s, older than the CUDA runtime %s this program was "
                        "built with: update the driver (cudaGetDeviceCount: %s)",
                        ver(driver).c_str(), ver(runtime).c_str(), cudaGetErrorString(status));
        if (status == cudaErrorNoDevice || (status == cudaSuccess && count == 0))
            return std::string("the NVIDIA driver found no CUDA device");
        if (status != cudaSuccess)
            return strf("cudaGetDeviceCount failed: %s (%s)", cudaGetErrorName(status), cudaGetErrorString(status));
        return std::string();
    }();
    return reason;
}

// True when a CUDA driver and at least one device are present.
inline bool gpu_available() { return gpu_unavailable_reason().empty(); }

// Devices the driver shows this process.
inline int gpu_device_count() {
    int count = 0;
    CUDA_CHECK(cudaGetDeviceCount(&count));
    return count;
}

// One GPU per rank: rank `local_rank` of the ranks on a node uses device
// local_rank (fewer devices than ranks is refused before: NCCL cannot put
// two ranks on one device).
inline void gpu_select_device(int local_rank) { CUDA_CHECK(cudaSetDevice(local_rank)); }

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

// Peak FLOP rate of the current device for fp32 matrix work, with how it was
// derived: SMs x lanes x 2 (an FMA is two FLOPs) x clock, all read from the
// device. fp32 CUDA-core lanes per SM by compute capability: 64 on sm_60,
// sm_70, sm_75 and sm_80; 128 on sm_61, sm_86, sm_87, sm_89, sm_90 and later.
// With tf32, the dense TF32 tensor-core rate instead: FLOPs per SM per clock
// 1024 on sm_80 (A100: 108 SMs x 1024 x 1.41 GHz = 156 TFLOP/s), 256 on
// sm_86/sm_89, 2048 on sm_90 (H100/H200); other chips: unknown, and the
// fp32 peak is used (said so in how).
inline double gpu_peak_flops(const std::string& precision, std::string* how) {
    int dev = 0, sms = 0, khz = 0, major = 0, minor = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
    int cc = major * 10 + minor;
    int lanes = (cc == 60 || cc == 70 || cc == 72 || cc == 75 || cc == 80) ? 64 : 128;
    // dense tensor-core FLOPs per SM per clock; bf16's are twice TF32's on these chips
    int tf32_per_clock = cc == 80 ? 1024 : (cc == 86 || cc == 87 || cc == 89) ? 256 : cc == 90 ? 2048 : 0;
    const bool bf16 = precision == "bf16", tensor = bf16 || precision == "tf32";
    int per_clock = bf16 ? 2 * tf32_per_clock : tf32_per_clock;
    double mhz = khz / 1e3;
    if (tensor && per_clock > 0) {
        double peak = (double)sms * per_clock * mhz * 1e6;
        if (how)
            *how = strf("%d SMs x %d %s FLOPs per clock x %.0f MHz = %.1f TFLOP/s (sm_%d, %s tensor cores, dense)", sms,
                        per_clock, bf16 ? "bf16" : "TF32", mhz, peak / 1e12, cc, bf16 ? "bf16" : "TF32");
        return peak;
    }
    double peak = (double)sms * lanes * 2.0 * mhz * 1e6;
    if (how)
        *how = strf("%d SMs x %d fp32 lanes x 2 x %.0f MHz = %.1f TFLOP/s (sm_%d, CUDA cores%s)", sms, lanes, mhz,
                    peak / 1e12, cc, tensor ? "; tensor-core rate unknown for this chip" : ", no tensor cores");
    return peak;
}
