// Optimizer on the GPU (cpu/adamw.h): global gradient norm, clipping, AdamW.
#pragma once
#include <cmath>

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

// grads[i] *= scale
__global__ void scale_kernel(float* grads,  // (n)
                             size_t n, float scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        grads[i] *= scale;
}

// Scales the gradients by clip / norm when norm > clip (clip <= 0: off).
inline void grad_clip(float* grads,  // (n)
                      size_t n, double norm, double clip) {
    if (clip <= 0 || norm <= clip) return;
    scale_kernel<<<grid_for(n, 256), 256>>>(grads, n, (float)(clip / norm));
    CUDA_CHECK_LAUNCH();
}

// One AdamW step per element (cpu/adamw.h; c1, c2 the bias corrections,
// omb1 = 1 - beta1 and omb2 = 1 - beta2 rounded to float as the CPU does):
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   p -= lr (m/c1 / (sqrt(v/c2) + eps) + wd p)
// computed as cpu/adamw.h does, with step = lr/c1, inv_sqrt_c2 = 1/sqrt(c2),
// decay = lr wd:  p -= step m / (sqrt(v) inv_sqrt_c2 + eps) + decay p
__global__ void adamw_kernel(float* params,       // (n)
                             const float* grads,  // (n)
                             float* m,            // (n)
                             float* v,            // (n)
                             size_t n, float beta1, float beta2, float omb1, float omb2,
                             float eps, float step, float inv_sqrt_c2, float decay) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float g = grads[i];
        float mi = beta1 * m[i] + omb1 * g;
        float vi = beta2 * v[i] + omb2 * g * g;
        m[i] = mi;
        v[i] = vi;
        float p = params[i];
        params[i] = p - (step * mi / (sqrtf(vi) * inv_sqrt_c2 + eps) + decay * p);
    }
}

// t is the 1-based step count used for bias correction.
inline void adamw_update(float* params,       // (n)
                         const float* grads,  // (n)
                         float* m,            // (n) first moment
                         float* v,            // (n) second moment
                         size_t n, float lr, float beta1, float beta2, float eps, float wd, int t) {
    float c1 = 1.0f - std::pow(beta1, (float)t);
    float c2 = 1.0f - std::pow(beta2, (float)t);
    float step = lr / c1, inv_sqrt_c2 = 1.0f / std::sqrt(c2), decay = lr * wd;
    adamw_kernel<<<grid_for(n, 256), 256>>>(params, grads, m, v, n, beta1, beta2, 1.0f - beta1, 1.0f - beta2,
                                            eps, step, inv_sqrt_c2, decay);
    CUDA_CHECK_LAUNCH();
}

}  // namespace gpu
