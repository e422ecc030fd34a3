// Softmax over the first V logits fused with the cross-entropy loss, on the
// GPU (cpu/crossentropy.h). Logits V..Vp-1 exist only because wte is padded:
// they get probability 0 and no gradient.
#pragma once
#include <cmath>

#include "common.cuh"

namespace gpu {

// Reduces v over a block of blockDim.x threads (a multiple of 32, <= 1024);
// every thread gets the result. shared must hold 32 floats; op is max or sum.
template <bool IS_MAX>
__device__ inline float block_reduce(float v, float* shared) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    for (int offset = 16; offset > 0; offset >>= 1) {
        float o = __shfl_xor_sync(0xffffffffu, v, offset);
        v = IS_MAX ? fmaxf(v, o) : v + o;
    }
    __syncthreads();  // shared may still be read by a previous reduction
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < warps ? shared[lane] : (IS_MAX ? -INFINITY : 0.0f);
    for (int offset = 16; offset > 0; offset >>= 1) {
        float o = __shfl_xor_sync(0xffffffffu, v, offset);
        v = IS_MAX ? fmaxf(v, o) : v + o;
    }
    return v;
}

// One block per row i = (b,t): max, sum of exp, probabilities, loss.
//   probs[i,v] = exp(z_v - max) / sum  for v < V, 0 for V <= v < Vp
//   losses[i]  = log(sum) + max - z[target]
__global__ void crossentropy_forward_kernel(float* losses,        // (B,T)
                                            float* probs,         // (B,T,Vp)
                                            const float* logits,  // (B,T,Vp)
                                            const int* targets,   // (B,T)
                                            int V, int Vp) {
    __shared__ float shared[32];
    size_t i = blockIdx.x;
    const float* z = logits + i * Vp;
    float* p = probs + i * Vp;
    float maxv = -INFINITY;
    for (int v = threadIdx.x; v < V; v += blockDim.x) maxv = fmaxf(maxv, z[v]);
    maxv = block_reduce<true>(maxv, shared);
    float sum = 0.0f;
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        float e = expf(z[v] - maxv);
        p[v] = e;
        sum += e;
    }
    sum = block_reduce<false>(sum, shared);
    float inv = 1.0f / sum;
    for (int v = threadIdx.x; v < Vp; v += blockDim.x) p[v] = v < V ? p[v] * inv : 0.0f;
    if (threadIdx.x == 0) losses[i] = logf(sum) + maxv - z[targets[i]];
}

// dlogits[i,v] += (probs[i,v] - [v == target]) * dlosses[i] for v < V.
// One block per row; the padded logits are not touched.
__global__ void crossentropy_backward_kernel(float* dlogits,        // (B,T,Vp)
                                             const float* dlosses,  // (B,T)
                                             const float* probs,    // (B,T,Vp)
                                             const int* targets,    // (B,T)
                                             int V, int Vp) {
    size_t i = blockIdx.x;
    float* dz = dlogits + i * Vp;
    const float* p = probs + i * Vp;
    float dl = dlosses[i];
    int target = targets[i];
    for (int v = threadIdx.x; v < V; v += blockDim.x)
        dz[v] += (p[v] - (v == target ? 1.0f : 0.0f)) * dl;
}

// dlogits[i,v] += w (onehot(target)[v] - teacher[i,v]) dlosses[i] for v < V:
// the distillation part of the gradient (cpu/crossentropy.h,
// distill_backward). One block per row.
__global__ void distill_backward_kernel(float* dlogits,        // (B,T,Vp)
                                        const float* dlosses,  // (B,T)
                                        const float* teacher,  // (B,T,Vp)
                                        const int* targets,    // (B,T)
                                        float w, int V, int Vp) {
    size_t i = blockIdx.x;
    float* dz = dlogits + i * Vp;
    const float* q = teacher + i * Vp;
    float dl = dlosses[i];
    int target = targets[i];
    for (int v = threadIdx.x; v < V; v += blockDim.x) dz[v] += w * ((v == target ? 1.0f : 0.0f) - q[v]) * dl;
}

// targets is a device pointer (B,T).
inline void crossentropy_forward(float* losses,        // (B,T) -log p[target]
                                 float* probs,         // (B,T,Vp)
                                 const float* logits,  // (B,T,Vp)
                                 const int* targets,   // (B,T) device
                                 int B, int T, int V, int Vp) {
    crossentropy_forward_kernel<<<B * T, 512>>>(losses, probs, logits, targets, V, Vp);
    CUDA_CHECK_LAUNCH();
}

inline void crossentropy_backward(float* dlogits,        // (B,T,Vp)
                                  const float* dlosses,  // (B,T)
                                  const float* probs,    // (B,T,Vp)
                                  const int* targets,    // (B,T) device
                                  int B, int T, int V, int Vp) {
    crossentropy_backward_kernel<<<B * T, 512>>>(dlogits, dlosses, probs, targets, V, Vp);
    CUDA_CHECK_LAUNCH();
}

inline void distill_backward(float* dlogits,        // (B,T,Vp)
                             const float* dlosses,  // (B,T)
                             const float* teacher,  // (B,T,Vp) device, the teacher's probabilities
                             const int* targets,    // (B,T) device
                             float w, int B, int T, int V, int Vp) {
    distill_backward_kernel<<<B * T, 512>>>(dlogits, dlosses, teacher, targets, w, V, Vp);
    CUDA_CHECK_LAUNCH();
}

}  // namespace gpu
