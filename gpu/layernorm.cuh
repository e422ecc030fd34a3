// LayerNorm over the channel axis on the GPU (cpu/layernorm.h):
//   y = (x - mean) * rstd * w + b,  rstd = 1 / sqrt(var + 1e-5).
#pragma once
#include "common.cuh"

namespace gpu {

// One warp per row i of N = B*T rows: two-pass mean and variance, then the
// normalized, scaled, shifted row. Block: 8 warps = 8 rows.
__global__ void layernorm_forward_kernel(float* out,           // (N,C)
                                         float* mean,          // (N)
                                         float* rstd,          // (N)
                                         const float* inp,     // (N,C)
                                         const float* weight,  // (C)
                                         const float* bias,    // (C)
                                         int N, int C) {
    int lane = threadIdx.x % 32;
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= N) return;  // whole warps leave together
    const float* x = inp + (size_t)row * C;
    float m = 0.0f;
    for (int c = lane; c < C; c += 32) m += x[c];
    m = warp_sum(m) / C;
    float v = 0.0f;
    for (int c = lane; c < C; c += 32) v += (x[c] - m) * (x[c] - m);
    v = warp_sum(v) / C;
    float s = 1.0f / sqrtf(v + 1e-5f);
    float* o = out + (size_t)row * C;
    for (int c = lane; c < C; c += 32) o[c] = (x[c] - m) * s * weight[c] + bias[c];
    if (lane == 0) {
        mean[row] = m;
        rstd[row] = s;
    }
}

// dinp, one warp per row: with n = (x - mean) rstd and g = dout * w,
//   dx += rstd * (g - mean_c(g) - n * mean_c(g n)).
__global__ void layernorm_backward_dinp_kernel(float* dinp,          // (N,C)
                                               const float* dout,    // (N,C)
                                               const float* inp,     // (N,C)
                                               const float* weight,  // (C)
                                               const float* mean,    // (N)
                                               const float* rstd,    // (N)
                                               int N, int C) {
    int lane = threadIdx.x % 32;
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= N) return;
    const float* x = inp + (size_t)row * C;
    const float* d = dout + (size_t)row * C;
    float mu = mean[row], s = rstd[row];
    float g_mean = 0.0f, gn_mean = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float n = (x[c] - mu) * s;
        float g = d[c] * weight[c];
        g_mean += g;
        gn_mean += g * n;
    }
    g_mean = warp_sum(g_mean) / C;
    gn_mean = warp_sum(gn_mean) / C;
    float* dx = dinp + (size_t)row * C;
    for (int c = lane; c < C; c += 32) {
        float n = (x[c] - mu) * s;
        float g = d[c] * weight[c];
        dx[c] += s * (g - g_mean - n * gn_mean);
    }
}

// Partial column sums of the parameter gradients over the rows of chunk k
// (column_chunks in common.cuh), n = (x - mean) rstd:
//   partial[0, k, c] = sum_i dout[i,c] n[i,c];  partial[1, k, c] = sum_i dout[i,c]
// Block (32, 32) over 32 adjacent channels, rows strided by threadIdx.y,
// the 32 partial sums added in a fixed order. Grid (ceil(C / 32), chunks).
__global__ void layernorm_backward_params_kernel(float* partial,      // (2,chunks,C)
                                                 const float* dout,   // (N,C)
                                                 const float* inp,    // (N,C)
                                                 const float* mean,   // (N)
                                                 const float* rstd,   // (N)
                                                 int N, int C) {
    __shared__ float pw[32][33], pb[32][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    int per = (N + gridDim.y - 1) / gridDim.y, begin = blockIdx.y * per, end = min(N, begin + per);
    float dw = 0.0f, db = 0.0f;
    if (c < C)
        for (int i = begin + threadIdx.y; i < end; i += 32) {
            size_t k = (size_t)i * C + c;
            float n = (inp[k] - mean[i]) * rstd[i];
            dw += dout[k] * n;
            db += dout[k];
        }
    pw[threadIdx.y][threadIdx.x] = dw;
    pb[threadIdx.y][threadIdx.x] = db;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float sw = 0.0f, sb = 0.0f;
        for (int k = 0; k < 32; k++) {
            sw += pw[k][threadIdx.x];
            sb += pb[k][threadIdx.x];
        }
        partial[(size_t)blockIdx.y * C + c] = sw;
        partial[((size_t)gridDim.y + blockIdx.y) * C + c] = sb;
    }
}

inline void layernorm_forward(float* out,           // (B,T,C)
                              float* mean,          // (B,T)
                              float* rstd,          // (B,T) 1 / sqrt(var + eps)
                              const float* inp,     // (B,T,C)
                              const float* weight,  // (C)
                              const float* bias,    // (C)
                              int B, int T, int C) {
    int N = B * T;
    layernorm_forward_kernel<<<ceil_div(N, 8), 256>>>(out, mean, rstd, inp, weight, bias, N, C);
    CUDA_CHECK_LAUNCH();
}

inline void layernorm_backward(float* dinp,          // (B,T,C)
                               float* dweight,       // (C)
                               float* dbias,         // (C)
                               const float* dout,    // (B,T,C)
                               const float* inp,     // (B,T,C)
                               const float* weight,  // (C)
                               const float* mean,    // (B,T)
                               const float* rstd,    // (B,T)
                               int B, int T, int C) {
    int N = B * T;
    layernorm_backward_dinp_kernel<<<ceil_div(N, 8), 256>>>(dinp, dout, inp, weight, mean, rstd, N, C);
    CUDA_CHECK_LAUNCH();
    // dweight += sum_i dout n;  dbias += sum_i dout: partial sums per row chunk, then their sum
    int chunks = column_chunks(N, C);
    float* partial = column_scratch(2 * (size_t)chunks * C);
    layernorm_backward_params_kernel<<<dim3(ceil_div(C, 32), chunks), dim3(32, 32)>>>(partial, dout, inp, mean,
                                                                                     rstd, N, C);
    CUDA_CHECK_LAUNCH();
    column_sum_finish(dweight, partial, chunks, C);
    column_sum_finish(dbias, partial + (size_t)chunks * C, chunks, C);
}

}  // namespace gpu
