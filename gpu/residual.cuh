// Residual connection on the GPU: out = inp1 + inp2; the gradient flows to both.
#pragma once
#include "common.cuh"

namespace gpu {

// out[i] = inp1[i] + inp2[i]
__global__ void residual_forward_kernel(float* out,         // (N)
                                        const float* inp1,  // (N)
                                        const float* inp2,  // (N)
                                        size_t N) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < N; i += (size_t)gridDim.x * blockDim.x)
        out[i] = inp1[i] + inp2[i];
}

// dinp1[i] += dout[i];  dinp2[i] += dout[i]
__global__ void residual_backward_kernel(float* dinp1,        // (N)
                                         float* dinp2,        // (N)
                                         const float* dout,   // (N)
                                         size_t N) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < N; i += (size_t)gridDim.x * blockDim.x) {
        float d = dout[i];
        dinp1[i] += d;
        dinp2[i] += d;
    }
}

inline void residual_forward(float* out,         // (N)
                             const float* inp1,  // (N)
                             const float* inp2,  // (N)
                             size_t N) {
    residual_forward_kernel<<<grid_for(N, 256), 256>>>(out, inp1, inp2, N);
    CUDA_CHECK_LAUNCH();
}

inline void residual_backward(float* dinp1,       // (N)
                              float* dinp2,       // (N)
                              const float* dout,  // (N)
                              size_t N) {
    residual_backward_kernel<<<grid_for(N, 256), 256>>>(dinp1, dinp2, dout, N);
    CUDA_CHECK_LAUNCH();
}

}  // namespace gpu
