// Causal multi-head self-attention over the packed q, k, v of each token.
// For head h with hs = C/NH channels:  q, k, v = inp[b,t, {0,C,2C} + h*hs : +hs]
//   preatt[t,t2] = q_t . k_t2 / sqrt(hs)           for t2 <= t (causal)
//   att[t,:]     = softmax over t2 <= t of preatt[t,:]   (0 where t2 > t)
//   out[b,t,h*hs:(h+1)*hs] = sum_t2 att[t,t2] v_t2
// With bf16_probs (--precision bf16, README "Precision") the probabilities
// att are rounded to bf16 before they weigh v, and the scores' gradient
// dpreatt before it reaches dq and dk: they are operands of products that a
// GPU runs on bf16 tensor cores.
#pragma once
#include <cmath>
#include <cstddef>
#include <vector>

#include "../common/bf16.h"

template <typename real>
void attention_forward(real* out,        // (B,T,C)
                       real* preatt,     // (B,NH,T,T)
                       real* att,        // (B,NH,T,T)
                       const real* inp,  // (B,T,3C) q, k, v
                       int B, int T, int C, int NH, bool bf16_probs = false) {
    int hs = C / NH;
    real scale = real(1) / std::sqrt(real(hs));
    #pragma omp parallel for collapse(3)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const real* q = inp + ((size_t)b * T + t) * 3 * C + h * hs;
                real* pre = preatt + (((size_t)b * NH + h) * T + t) * T;
                real* a = att + (((size_t)b * NH + h) * T + t) * T;
                real maxv = -INFINITY;
                for (int t2 = 0; t2 <= t; t2++) {
                    const real* k = inp + ((size_t)b * T + t2) * 3 * C + C + h * hs;
                    real dot = 0;
                    for (int i = 0; i < hs; i++) dot += q[i] * k[i];
                    pre[t2] = dot * scale;
                    if (pre[t2] > maxv) maxv = pre[t2];
                }
                real sum = 0;
                for (int t2 = 0; t2 <= t; t2++) {
                    a[t2] = std::exp(pre[t2] - maxv);
                    sum += a[t2];
                }
                for (int t2 = 0; t2 <= t; t2++) a[t2] = bf16_probs ? bf16_rounded(a[t2] / sum) : a[t2] / sum;
                for (int t2 = t + 1; t2 < T; t2++) pre[t2] = a[t2] = 0;  // masked
                real* o = out + ((size_t)b * T + t) * C + h * hs;
                for (int i = 0; i < hs; i++) o[i] = 0;
                for (int t2 = 0; t2 <= t; t2++) {
                    const real* v = inp + ((size_t)b * T + t2) * 3 * C + 2 * C + h * hs;
                    for (int i = 0; i < hs; i++) o[i] += a[t2] * v[i];
                }
            }
}

// Backward, per (b, h), walking t in order since every t writes dk, dv of
// earlier positions:
//   datt[t,t2]   = dout_t . v_t2            dv_t2 += att[t,t2] dout_t
//   dpreatt[t,t2] = att[t,t2] (datt[t,t2] - sum_t3 att[t,t3] datt[t,t3])
//   dq_t += dpreatt[t,t2] k_t2 / sqrt(hs)    dk_t2 += dpreatt[t,t2] q_t / sqrt(hs)
template <typename real>
void attention_backward(real* dinp,        // (B,T,3C)
                        real* dpreatt,     // (B,NH,T,T) scratch
                        real* datt,        // (B,NH,T,T) scratch
                        const real* dout,  // (B,T,C)
                        const real* inp,   // (B,T,3C)
                        const real* att,   // (B,NH,T,T)
                        int B, int T, int C, int NH, bool bf16_probs = false) {
    int hs = C / NH;
    real scale = real(1) / std::sqrt(real(hs));
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                size_t row = (((size_t)b * NH + h) * T + t) * T;
                const real* a = att + row;
                real* da = datt + row;
                real* dpre = dpreatt + row;
                const real* q = inp + ((size_t)b * T + t) * 3 * C + h * hs;
                real* dq = dinp + ((size_t)b * T + t) * 3 * C + h * hs;
                const real* d = dout + ((size_t)b * T + t) * C + h * hs;
                for (int t2 = 0; t2 <= t; t2++) {
                    const real* v = inp + ((size_t)b * T + t2) * 3 * C + 2 * C + h * hs;
                    real* dv = dinp + ((size_t)b * T + t2) * 3 * C + 2 * C + h * hs;
                    real dot = 0;
                    for (int i = 0; i < hs; i++) {
                        dot += d[i] * v[i];
                        dv[i] += a[t2] * d[i];
                    }
                    da[t2] = dot;
                }
                real adot = 0;
                for (int t2 = 0; t2 <= t; t2++) adot += a[t2] * da[t2];
                for (int t2 = 0; t2 <= t; t2++) {
                    dpre[t2] = a[t2] * (da[t2] - adot);
                    if (bf16_probs) dpre[t2] = bf16_rounded(dpre[t2]);
                }
                for (int t2 = 0; t2 <= t; t2++) {
                    const real* k = inp + ((size_t)b * T + t2) * 3 * C + C + h * hs;
                    real* dk = dinp + ((size_t)b * T + t2) * 3 * C + C + h * hs;
                    for (int i = 0; i < hs; i++) {
                        dq[i] += dpre[t2] * k[i] * scale;
                        dk[i] += dpre[t2] * q[i] * scale;
                    }
                }
            }
}

// Generation with a KV cache: one new position `pos` for each of B sequences.
// The new token's k and v are appended to the caches, then its query attends
// over positions 0..pos, so a token costs O(pos) instead of a whole forward
// pass over the prefix. Same arithmetic as attention_forward's row t = pos.
template <typename real>
void attention_decode_forward(real* out,        // (B,C)
                              real* kcache,     // (B,maxT,C) keys of positions 0..pos
                              real* vcache,     // (B,maxT,C) values
                              const real* qkv,  // (B,3C) this position's q, k, v
                              int pos, int maxT, int B, int C, int NH, bool bf16_probs = false) {
    int hs = C / NH;
    real scale = real(1) / std::sqrt(real(hs));
    for (int b = 0; b < B; b++) {
        real* kc = kcache + (size_t)b * maxT * C;
        real* vc = vcache + (size_t)b * maxT * C;
        for (int i = 0; i < C; i++) {
            kc[(size_t)pos * C + i] = qkv[(size_t)b * 3 * C + C + i];
            vc[(size_t)pos * C + i] = qkv[(size_t)b * 3 * C + 2 * C + i];
        }
    }
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const real* q = qkv + (size_t)b * 3 * C + h * hs;
            const real* kc = kcache + (size_t)b * maxT * C + h * hs;
            const real* vc = vcache + (size_t)b * maxT * C + h * hs;
            std::vector<real> a(pos + 1);
            real maxv = -INFINITY;
            for (int t2 = 0; t2 <= pos; t2++) {
                real dot = 0;
                for (int i = 0; i < hs; i++) dot += q[i] * kc[(size_t)t2 * C + i];
                a[t2] = dot * scale;
                if (a[t2] > maxv) maxv = a[t2];
            }
            real sum = 0;
            for (int t2 = 0; t2 <= pos; t2++) {
                a[t2] = std::exp(a[t2] - maxv);
                sum += a[t2];
            }
            real* o = out + (size_t)b * C + h * hs;
            for (int i = 0; i < hs; i++) o[i] = 0;
            for (int t2 = 0; t2 <= pos; t2++) {
                real p = bf16_probs ? bf16_rounded(a[t2] / sum) : a[t2] / sum;
                for (int i = 0; i < hs; i++) o[i] += p * vc[(size_t)t2 * C + i];
            }
        }
}
