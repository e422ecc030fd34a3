// Optimizer on the GPU (cpu/adamw.h): global gradient norm, clipping, AdamW.
#pragma once
#include <algorithm>
#include <cmath>
#include <vector>

#include "../common/layout.h"  // param_specs

#include "../common/schedule.h"  // clip_scale
#include "common.cuh"

namespace gpu {

constexpr int NORM_BLOCKS = 1024;  // partial sums of the norm reduction
constexpr int NORM_THREADS = 256;

// partial[blockIdx.x] = sum over this block's grid-stride share of grads[i]^2,
// accumulated in double (as the CPU path does). Grid: NORM_BLOCKS blocks of
// NORM_THREADS threads; the shared-memory tree gives a fixed summation order.
__global__ void grad_norm_partial_kernel(double* partial,     // (NORM_BLOCKS)
                                         const float* grads,  // (n)
                                         size_t n) {
    __shared__ double s[NORM_THREADS];
    double sum = 0.0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        sum += (double)grads[i] * (double)grads[i];
    s[threadIdx.x] = sum;
    __syncthreads();
    for (int half = NORM_THREADS / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) s[threadIdx.x] += s[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[blockIdx.x] = s[0];
}

// partial[NORM_BLOCKS] = sum of partial[0..NORM_BLOCKS); one block of NORM_THREADS.
__global__ void grad_norm_final_kernel(double* partial) {  // (NORM_BLOCKS + 1)
    __shared__ double s[NORM_THREADS];
    double sum = 0.0;
    for (int i = threadIdx.x; i < NORM_BLOCKS; i += NORM_THREADS) sum += partial[i];
    s[threadIdx.x] = sum;
    __syncthreads();
    for (int half = NORM_THREADS / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) s[threadIdx.x] += s[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[NORM_BLOCKS] = s[0];
}

// Device scratch for the norm: NORM_BLOCKS + 1 doubles, allocated on first
// use and kept for the life of the program.
inline double* grad_norm_scratch() {
    static double* scratch = nullptr;
    if (scratch == nullptr) CUDA_CHECK(cudaMalloc(&scratch, (NORM_BLOCKS + 1) * sizeof(double)));
    return scratch;
}

// Sum of squares of n device gradients, in double; returns to the host (syncs).
inline double grad_norm_squared(const float* grads,  // (n)
                                size_t n) {
    double* scratch = grad_norm_scratch();
    grad_norm_partial_kernel<<<NORM_BLOCKS, NORM_THREADS>>>(scratch, grads, n);
    CUDA_CHECK_LAUNCH();
    grad_norm_final_kernel<<<1, NORM_THREADS>>>(scratch);
    CUDA_CHECK_LAUNCH();
    double result = 0.0;
    CUDA_CHECK(cudaMemcpy(&result, scratch + NORM_BLOCKS, sizeof(double), cudaMemcpyDeviceToHost));
    return result;
}

// One AdamW step per element (cpu/adamw.h; c1, c2 the bias corrections,
// omb1 = 1 - beta1 and omb2 = 1 - beta2 rounded to float as the CPU does), on
// the clipped gradient g = grad_scale * grads, which it then zeroes:
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   p -= lr (m/c1 / (sqrt(v/c2) + eps) + wd p)
// computed as cpu/adamw.h does, with step = lr/c1, inv_sqrt_c2 = 1/sqrt(c2),
// decay = lr wd:  p -= step m / (sqrt(v) inv_sqrt_c2 + eps) + decay p
__device__ inline void adamw_element(float* params, float* grads, float* m, float* v, size_t i, float beta1,
                                     float beta2, float omb1, float omb2, float eps, float step, float inv_sqrt_c2,
                                     float decay, float grad_scale) {
    float g = grads[i] * grad_scale;
    grads[i] = 0.0f;
    float mi = beta1 * m[i] + omb1 * g;
    float vi = beta2 * v[i] + omb2 * g * g;
    m[i] = mi;
    v[i] = vi;
    float p = params[i];
    params[i] = p - (step * mi / (sqrtf(vi) * inv_sqrt_c2 + eps) + decay * p);
}

__global__ void adamw_kernel(float* params,  // (n)
                             float* grads,   // (n) read, then zeroed
                             float* m,       // (n)
                             float* v,       // (n)
                             size_t n, float beta1, float beta2, float omb1, float omb2, float eps, float step,
                             float inv_sqrt_c2, float decay, float grad_scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        adamw_element(params, grads, m, v, i, beta1, beta2, omb1, omb2, eps, step, inv_sqrt_c2, decay, grad_scale);
}

// The constants of one AdamW step (cpu/adamw.h): the bias corrections folded in.
struct AdamwConstants {
    float beta1, beta2, omb1, omb2, eps, step, inv_sqrt_c2, lr_wd;
};

inline AdamwConstants adamw_constants(float lr, float beta1, float beta2, float eps, float wd, int t) {
    float c1 = 1.0f - std::pow(beta1, (float)t);
    float c2 = 1.0f - std::pow(beta2, (float)t);
    return {beta1, beta2, 1.0f - beta1, 1.0f - beta2, eps, lr / c1, 1.0f / std::sqrt(c2), lr * wd};
}

// t is the 1-based step count used for bias correction; grads are zero afterwards.
inline void adamw_update(float* params,  // (n)
                         float* grads,   // (n) read, then zeroed
                         float* m,       // (n) first moment
                         float* v,       // (n) second moment
                         size_t n, float lr, float beta1, float beta2, float eps, float wd, int t,
                         float grad_scale = 1.0f) {
    AdamwConstants k = adamw_constants(lr, beta1, beta2, eps, wd, t);
    adamw_kernel<<<grid_for(n, 256), 256>>>(params, grads, m, v, n, k.beta1, k.beta2, k.omb1, k.omb2, k.eps, k.step,
                                            k.inv_sqrt_c2, k.lr_wd, grad_scale);
    CUDA_CHECK_LAUNCH();
}

// Every tensor of the model in one launch: a chunk is up to ADAMW_CHUNK
// consecutive elements of one tensor, with whether weight decay applies to
// it; block b updates chunk b. The moments of a chunk start at
// moment_offset: the chunk's own offset when m and v cover every parameter,
// elsewhere when they cover one rank's share (ZeRO-1, train/parallel.h).
constexpr int ADAMW_CHUNK = 1 << 16;
struct AdamwChunk {
    size_t offset;         // into params and grads
    size_t moment_offset;  // into m and v
    int n;
    int decay;  // 1: the tensor has weight decay (2 or more dimensions)
};

// The chunks of the parameters [lo, lo + n) of a model, their moments from
// moment_base on; lo = 0, n = num_params, moment_base = 0 for all of them.
inline std::vector<AdamwChunk> adamw_chunk_table(const Config& cfg, size_t lo, size_t n, size_t moment_base) {
    std::vector<AdamwChunk> chunks;
    for (const TensorSpec& t : param_specs(cfg)) {
        size_t a = std::max(lo, t.offset), b = std::min(lo + n, t.offset + t.numel);
        for (size_t off = a; off < b; off += ADAMW_CHUNK)
            chunks.push_back({off, moment_base + (off - lo), (int)std::min<size_t>(ADAMW_CHUNK, b - off),
                              t.ndim >= 2 ? 1 : 0});
    }
    return chunks;
}

__global__ void adamw_chunks_kernel(float* params, float* grads,  // (num_params) each
                                    float* m, float* v,            // moments, as the chunks index them
                                    const AdamwChunk* chunks, float beta1, float beta2, float omb1, float omb2,
                                    float eps, float step, float inv_sqrt_c2, float lr_wd, float grad_scale) {
    AdamwChunk ch = chunks[blockIdx.x];
    float decay = ch.decay ? lr_wd : 0.0f;
    for (int i = threadIdx.x; i < ch.n; i += blockDim.x)
        adamw_element(params + ch.offset, grads + ch.offset, m + ch.moment_offset, v + ch.moment_offset, i, beta1,
                      beta2, omb1, omb2, eps, step, inv_sqrt_c2, decay, grad_scale);
}

inline void adamw_update_chunks(float* params, float* grads, float* m, float* v, const AdamwChunk* chunks,
                                int n_chunks, float lr, float beta1, float beta2, float eps, float wd, int t,
                                float grad_scale) {
    if (n_chunks == 0) return;
    AdamwConstants k = adamw_constants(lr, beta1, beta2, eps, wd, t);
    adamw_chunks_kernel<<<n_chunks, 256>>>(params, grads, m, v, chunks, k.beta1, k.beta2, k.omb1, k.omb2, k.eps,
                                           k.step, k.inv_sqrt_c2, k.lr_wd, grad_scale);
    CUDA_CHECK_LAUNCH();
}

}  // namespace gpu
