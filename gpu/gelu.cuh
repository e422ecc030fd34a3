// GELU on the GPU, tanh approximation (cpu/gelu.h):
//   gelu(x) = x/2 (1 + tanh(s (x + 0.044715 x^3))), s = sqrt(2/pi).
#pragma once
#include "common.cuh"

namespace gpu {

__device__ inline float gelu_dev(float x) {
    const float s = 0.7978845608028654f;  // sqrt(2/pi)
    return 0.5f * x * (1.0f + tanhf(s * (x + 0.044715f * x * x * x)));
}

// d gelu / dx = (1 + th)/2 + x/2 (1 - th^2) s (1 + 3 * 0.044715 x^2)
__device__ inline float gelu_grad_dev(float x) {
    const float s = 0.7978845608028654f;
    float th = tanhf(s * (x + 0.044715f * x * x * x));
    float dinner = s * (1.0f + (float)(3 * 0.044715) * x * x);
    return 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * dinner;
}

// out[i] = gelu(inp[i])
__global__ void gelu_forward_kernel(float* out,        // (N)
                                    const float* inp,  // (N)
                                    size_t N) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < N; i += (size_t)gridDim.x * blockDim.x)
        out[i] = gelu_dev(inp[i]);
}

// dinp[i] += gelu'(inp[i]) * dout[i]
__global__ void gelu_backward_kernel(float* dinp,        // (N)
                                     const float* inp,   // (N)
                                     const float* dout,  // (N)
                                     size_t N) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < N; i += (size_t)gridDim.x * blockDim.x)
        dinp[i] += gelu_grad_dev(inp[i]) * dout[i];
}

inline void gelu_forward(float* out,        // (N)
                         const float* inp,  // (N)
                         size_t N) {
    gelu_forward_kernel<<<grid_for(N, 256), 256>>>(out, inp, N);
    CUDA_CHECK_LAUNCH();
}

inline void gelu_backward(float* dinp,        // (N)
                          const float* inp,   // (N)
                          const float* dout,  // (N)
                          size_t N) {
    gelu_backward_kernel<<<grid_for(N, 256), 256>>>(dinp, inp, dout, N);
    CUDA_CHECK_LAUNCH();
}

}  // namespace gpu
