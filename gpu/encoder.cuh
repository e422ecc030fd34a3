// Token + position embedding on the GPU: x[b,t] = wte[tok[b,t]] + wpe[t].
#pragma once
#include "common.cuh"

namespace gpu {

// out[b,t,i] = wte[inp[b,t], i] + wpe[t, i]; one thread per output element.
__global__ void encoder_forward_kernel(float* out,        // (B,T,C)
                                       const int* inp,    // (B,T)
                                       const float* wte,  // (Vp,C)
                                       const float* wpe,  // (maxT,C)
                                       int B, int T, int C) {
    size_t n = (size_t)B * T * C;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
        size_t bt = idx / C;
        int i = (int)(idx % C);
        int t = (int)(bt % T);
        out[idx] = wte[(size_t)inp[bt] * C + i] + wpe[(size_t)t * C + i];
    }
}

// dwte[inp[b,t], i] += dout[b,t,i]: rows of wte repeat across (b,t), so the
// scatter uses atomicAdd (summation order, hence the last bits, may vary).
__global__ void encoder_backward_wte_kernel(float* dwte,        // (Vp,C)
                                            const float* dout,  // (B,T,C)
                                            const int* inp,     // (B,T)
                                            int B, int T, int C) {
    size_t n = (size_t)B * T * C;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
        size_t bt = idx / C;
        int i = (int)(idx % C);
        atomicAdd(&dwte[(size_t)inp[bt] * C + i], dout[idx]);
    }
}

// dwpe[t, i] += sum over b of dout[b,t,i]; one thread per (t, i), deterministic.
__global__ void encoder_backward_wpe_kernel(float* dwpe,        // (maxT,C)
                                            const float* dout,  // (B,T,C)
                                            int B, int T, int C) {
    size_t n = (size_t)T * C;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
        float sum = 0.0f;
        for (int b = 0; b < B; b++) sum += dout[(size_t)b * T * C + idx];
        dwpe[idx] += sum;  // idx = t*C + i
    }
}

// inp is a device pointer (B,T).
inline void encoder_forward(float* out,        // (B,T,C)
                            const int* inp,    // (B,T) token ids, device
                            const float* wte,  // (Vp,C)
                            const float* wpe,  // (maxT,C)
                            int B, int T, int C) {
    size_t n = (size_t)B * T * C;
    encoder_forward_kernel<<<grid_for(n, 256), 256>>>(out, inp, wte, wpe, B, T, C);
    CUDA_CHECK_LAUNCH();
}

inline void encoder_backward(float* dwte,        // (Vp,C)
                             float* dwpe,        // (maxT,C)
                             const float* dout,  // (B,T,C)
                             const int* inp,     // (B,T) token ids, device
                             int B, int T, int C) {
    size_t n = (size_t)B * T * C;
    encoder_backward_wte_kernel<<<grid_for(n, 256), 256>>>(dwte, dout, inp, B, T, C);
    CUDA_CHECK_LAUNCH();
    encoder_backward_wpe_kernel<<<grid_for((size_t)T * C, 256), 256>>>(dwpe, dout, B, T, C);
    CUDA_CHECK_LAUNCH();
}

}  // namespace gpu
