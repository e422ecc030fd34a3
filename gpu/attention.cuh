// Causal multi-head self-attention on the GPU (cpu/attention.h). For head h
// with hs = C/NH channels, q, k, v of token (b,t) sit in inp[b,t] at offsets
// 0, C, 2C plus h*hs. No permute: for a fixed head h the (T, hs) matrices Q,
// K, V of every batch row b are row-major with row stride 3C, one batch item
// T*3C apart, so each product is one strided-batched GEMM over b, and the
// host loops over the NH heads.
//   preatt = Q K^T / sqrt(hs)                     full (T,T), upper part zeroed
//   att    = causal softmax of each row of preatt  (0 where t2 > t)
//   out    = att V                                 written into out[b,t,h*hs:]
// With bf16_probs (--precision bf16) the softmax rounds att, and its
// backward dpreatt, to bf16 as the CPU does; then every operand of the
// products is a bf16 value (q, k, v and dout are bf16 tensors of the
// contract), and the products run on bf16 tensor cores through exact bf16
// copies (matmul.cuh, bf16_operand).
#pragma once
#include <cmath>
#include <type_traits>

#include "common.cuh"
#include "matmul.cuh"

namespace gpu {

// One warp per row (b,h,t) of the (B*NH*T, T) score matrix: softmax over
// t2 <= t; entries t2 > t of both preatt and att are set to 0.
__global__ void attention_softmax_kernel(float* att,     // (B,NH,T,T)
                                         float* preatt,  // (B,NH,T,T)
                                         int rows, int T, bool bf16_probs) {
    int lane = threadIdx.x % 32;
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= rows) return;
    int t = row % T;
    float* pre = preatt + (size_t)row * T;
    float* a = att + (size_t)row * T;
    float maxv = -INFINITY;
    for (int t2 = lane; t2 <= t; t2 += 32) maxv = fmaxf(maxv, pre[t2]);
    maxv = warp_max(maxv);
    float sum = 0.0f;
    for (int t2 = lane; t2 <= t; t2 += 32) {
        float e = expf(pre[t2] - maxv);
        a[t2] = e;
        sum += e;
    }
    sum = warp_sum(sum);
    float inv = 1.0f / sum;
    for (int t2 = lane; t2 < T; t2 += 32) {
        if (t2 <= t) {
            a[t2] *= inv;
            if (bf16_probs) a[t2] = bf16_round_device(a[t2]);
        } else {
            a[t2] = 0.0f;
            pre[t2] = 0.0f;
        }
    }
}

// One warp per row (b,h,t): dpreatt[t2] = att[t2] (datt[t2] - sum_t3 att[t3] datt[t3])
// for t2 <= t, and 0 for t2 > t (every entry is written).
__global__ void attention_softmax_backward_kernel(float* dpreatt,     // (B,NH,T,T)
                                                  const float* datt,  // (B,NH,T,T)
                                                  const float* att,   // (B,NH,T,T)
                                                  int rows, int T, bool bf16_probs) {
    int lane = threadIdx.x % 32;
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= rows) return;
    int t = row % T;
    const float* a = att + (size_t)row * T;
    const float* da = datt + (size_t)row * T;
    float* dpre = dpreatt + (size_t)row * T;
    float dot = 0.0f;
    for (int t2 = lane; t2 <= t; t2 += 32) dot += a[t2] * da[t2];
    dot = warp_sum(dot);
    for (int t2 = lane; t2 < T; t2 += 32) {
        float g = t2 <= t ? a[t2] * (da[t2] - dot) : 0.0f;
        dpre[t2] = bf16_probs ? bf16_round_device(g) : g;
    }
}

// The forward on the products' operand type Op: float, or __nv_bfloat16,
// the bf16 path (bf16_probs), whose operands are exact bf16 copies.
template <typename Op>
inline void attention_forward_on(float* out,        // (B,T,C)
                                 float* preatt,     // (B,NH,T,T)
                                 float* att,        // (B,NH,T,T)
                                 const float* inp,  // (B,T,3C) q, k, v
                                 int B, int T, int C, int NH) {
    constexpr bool bf16_probs = std::is_same_v<Op, __nv_bfloat16>;
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    long long C3 = 3LL * C, sx = (long long)T * 3 * C;  // row stride, batch stride in inp
    long long TT = (long long)T * T, sa = (long long)NH * T * T;  // per head, per batch row
    const Op* x = as_operand<Op>(0, inp, (size_t)B * T * 3 * C);
    for (int h = 0; h < NH; h++) {
        const Op* q = x + h * hs;
        const Op* k = x + C + h * hs;
        // preatt[b,h] (T,T) = scale * Q (T,hs) K^T (hs,T)
        gemm(false, true, T, T, hs, scale, q, C3, sx, k, C3, sx, 0.0f, preatt + h * TT, T, sa, B);
    }
    int rows = B * NH * T;
    attention_softmax_kernel<<<ceil_div(rows, 8), 256>>>(att, preatt, rows, T, bf16_probs);
    CUDA_CHECK_LAUNCH();
    const Op* a = as_operand<Op>(1, att, (size_t)B * NH * T * T);
    for (int h = 0; h < NH; h++) {
        const Op* v = x + 2 * C + h * hs;
        // out[b,:,h*hs:] (T,hs) = att[b,h] (T,T) V (T,hs)
        gemm(false, false, T, hs, T, 1.0f, a + h * TT, T, sa, v, C3, sx, 0.0f, out + h * hs, C, (long long)T * C, B);
    }
}

inline void attention_forward(float* out,        // (B,T,C)
                              float* preatt,     // (B,NH,T,T)
                              float* att,        // (B,NH,T,T)
                              const float* inp,  // (B,T,3C) q, k, v
                              int B, int T, int C, int NH, bool bf16_probs = false) {
    if (bf16_probs) attention_forward_on<__nv_bfloat16>(out, preatt, att, inp, B, T, C, NH);
    else attention_forward_on<float>(out, preatt, att, inp, B, T, C, NH);
}

// Backward, per head h, each product batched over b, on operands Op as above:
//   datt = dout_h V^T              dv += att^T dout_h
//   dpreatt = att (datt - rowsum(att datt))   (causal softmax backward)
//   dq += scale dpreatt K          dk += scale dpreatt^T Q
template <typename Op>
inline void attention_backward_on(float* dinp,        // (B,T,3C)
                                  float* dpreatt,     // (B,NH,T,T) scratch
                                  float* datt,        // (B,NH,T,T) scratch
                                  const float* dout,  // (B,T,C)
                                  const float* inp,   // (B,T,3C)
                                  const float* att,   // (B,NH,T,T)
                                  int B, int T, int C, int NH) {
    constexpr bool bf16_probs = std::is_same_v<Op, __nv_bfloat16>;
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    long long C3 = 3LL * C, sx = (long long)T * 3 * C;
    long long TT = (long long)T * T, sa = (long long)NH * T * T, so = (long long)T * C;
    const size_t n_att = (size_t)B * NH * T * T;
    const Op* x = as_operand<Op>(0, inp, (size_t)B * T * 3 * C);
    const Op* dy = as_operand<Op>(2, dout, (size_t)B * T * C);
    const Op* a = as_operand<Op>(1, att, n_att);
    for (int h = 0; h < NH; h++) {
        const Op* v = x + 2 * C + h * hs;
        const Op* d = dy + h * hs;
        // datt[b,h] (T,T) = dout_h (T,hs) V^T (hs,T)
        gemm(false, true, T, T, hs, 1.0f, d, C, so, v, C3, sx, 0.0f, datt + h * TT, T, sa, B);
        // dv (T,hs) += att^T (T,T) dout_h (T,hs)
        gemm(true, false, T, hs, T, 1.0f, a + h * TT, T, sa, d, C, so, 1.0f, dinp + 2 * C + h * hs, C3, sx, B);
    }
    int rows = B * NH * T;
    attention_softmax_backward_kernel<<<ceil_div(rows, 8), 256>>>(dpreatt, datt, att, rows, T, bf16_probs);
    CUDA_CHECK_LAUNCH();
    const Op* dpre = as_operand<Op>(1, dpreatt, n_att);  // slot 1 again: the products above are queued before it
    for (int h = 0; h < NH; h++) {
        const Op* q = x + h * hs;
        const Op* k = x + C + h * hs;
        // dq (T,hs) += scale * dpreatt (T,T) K (T,hs)
        gemm(false, false, T, hs, T, scale, dpre + h * TT, T, sa, k, C3, sx, 1.0f, dinp + h * hs, C3, sx, B);
        // dk (T,hs) += scale * dpreatt^T (T,T) Q (T,hs)
        gemm(true, false, T, hs, T, scale, dpre + h * TT, T, sa, q, C3, sx, 1.0f, dinp + C + h * hs, C3, sx, B);
    }
}

inline void attention_backward(float* dinp,        // (B,T,3C)
                               float* dpreatt,     // (B,NH,T,T) scratch
                               float* datt,        // (B,NH,T,T) scratch
                               const float* dout,  // (B,T,C)
                               const float* inp,   // (B,T,3C)
                               const float* att,   // (B,NH,T,T)
                               int B, int T, int C, int NH, bool bf16_probs = false) {
    if (bf16_probs) attention_backward_on<__nv_bfloat16>(dinp, dpreatt, datt, dout, inp, att, B, T, C, NH);
    else attention_backward_on<float>(dinp, dpreatt, datt, dout, inp, att, B, T, C, NH);
}

}  // namespace gpu
