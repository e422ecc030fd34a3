// Fast float causal self-attention (cpu/attention.h has the formula and the
// plain loops): the two T x T products of each head on the GEMM kernel, the
// softmax on the vectorized exp.
#pragma once
#include <cmath>
#include <cstddef>

#include "../../common/bf16.h"
#include "exp.h"
#include "sgemm.h"

namespace fast {

// Per (b, h), the scores and the mixing are sgemm() calls (sgemm.h) on the
// full T x T block, then the causal mask is applied: the softmax runs over
// t2 <= t only and writes 0 above the diagonal, so preatt and att hold the
// reference's values. Computing the masked half costs twice the model FLOPs
// of these two products and buys the GEMM kernel's speed. sgemm() inside the
// parallel loop runs single-threaded. bf16_probs rounds att and dpreatt as
// the plain loops do.
static inline void attention_forward(float* out,        // (B,T,C)
                                     float* preatt,     // (B,NH,T,T)
                                     float* att,        // (B,NH,T,T)
                                     const float* inp,  // (B,T,3C) q, k, v
                                     int B, int T, int C, int NH, bool bf16_probs = false) {
    const int hs = C / NH, C3 = 3 * C;
    const float scale = 1.0f / std::sqrt((float)hs);
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float* q = inp + (size_t)b * T * C3 + h * hs;
            float* pre = preatt + ((size_t)b * NH + h) * T * T;
            float* a = att + ((size_t)b * NH + h) * T * T;
            // pre (T,T) = scale * Q (T,hs) K^T (hs,T)
            sgemm(false, true, T, T, hs, scale, q, C3, q + C, C3, 0.0f, pre, T);
            for (int t = 0; t < T; t++) {
                float* pr = pre + (size_t)t * T;
                float* ar = a + (size_t)t * T;
                float maxv = -INFINITY;
                for (int t2 = 0; t2 <= t; t2++) maxv = pr[t2] > maxv ? pr[t2] : maxv;
                float sum = 0;
                #pragma omp simd reduction(+ : sum)
                for (int t2 = 0; t2 <= t; t2++) {
                    ar[t2] = fast_exp(pr[t2] - maxv);
                    sum += ar[t2];
                }
                float inv = 1.0f / sum;
                #pragma omp simd
                for (int t2 = 0; t2 <= t; t2++) ar[t2] *= inv;
                if (bf16_probs)
                    for (int t2 = 0; t2 <= t; t2++) ar[t2] = bf16_round(ar[t2]);
                for (int t2 = t + 1; t2 < T; t2++) pr[t2] = ar[t2] = 0;  // masked
            }
            // out (T,hs) = att (T,T) V (T,hs)
            sgemm(false, false, T, hs, T, 1.0f, a, T, q + 2 * C, C3, 0.0f, out + (size_t)b * T * C + h * hs, C);
        }
}

// The backward, per (b, h), with D = dout (T,hs):
//   datt = D V^T;  dV += att^T D;  dpre = softmax backward (0 above the diagonal);
//   dQ += scale dpre K;  dK += scale dpre^T Q.
static inline void attention_backward(float* dinp,        // (B,T,3C)
                                      float* dpreatt,     // (B,NH,T,T) scratch
                                      float* datt,        // (B,NH,T,T) scratch
                                      const float* dout,  // (B,T,C)
                                      const float* inp,   // (B,T,3C)
                                      const float* att,   // (B,NH,T,T)
                                      int B, int T, int C, int NH, bool bf16_probs = false) {
    const int hs = C / NH, C3 = 3 * C;
    const float scale = 1.0f / std::sqrt((float)hs);
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float* q = inp + (size_t)b * T * C3 + h * hs;
            float* dq = dinp + (size_t)b * T * C3 + h * hs;
            const float* d = dout + (size_t)b * T * C + h * hs;
            const float* a = att + ((size_t)b * NH + h) * T * T;
            float* da = datt + ((size_t)b * NH + h) * T * T;
            float* dpre = dpreatt + ((size_t)b * NH + h) * T * T;
            sgemm(false, true, T, T, hs, 1.0f, d, C, q + 2 * C, C3, 0.0f, da, T);
            sgemm(true, false, T, hs, T, 1.0f, a, T, d, C, 1.0f, dq + 2 * C, C3);
            for (int t = 0; t < T; t++) {
                const float* ar = a + (size_t)t * T;
                const float* dar = da + (size_t)t * T;
                float* dpr = dpre + (size_t)t * T;
                float adot = 0;
                #pragma omp simd reduction(+ : adot)
                for (int t2 = 0; t2 <= t; t2++) adot += ar[t2] * dar[t2];
                #pragma omp simd
                for (int t2 = 0; t2 <= t; t2++) dpr[t2] = ar[t2] * (dar[t2] - adot);
                if (bf16_probs)
                    for (int t2 = 0; t2 <= t; t2++) dpr[t2] = bf16_round(dpr[t2]);
                for (int t2 = t + 1; t2 < T; t2++) dpr[t2] = 0;
            }
            sgemm(false, false, T, hs, T, scale, dpre, T, q + C, C3, 1.0f, dq, C3);
            sgemm(true, false, T, hs, T, scale, dpre, T, q, C3, 1.0f, dq + C, C3);
        }
}

}  // namespace fast
