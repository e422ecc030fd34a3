// LayerNorm over the channel axis: y = (x - mean) * rstd * w + b, eps 1e-5.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "fused.h"

template <typename real>
void layernorm_forward(real* out,           // (B,T,C)
                       real* mean,          // (B,T)
                       real* rstd,          // (B,T) 1 / sqrt(var + eps)
                       const real* inp,     // (B,T,C)
                       const real* weight,  // (C)
                       const real* bias,    // (C)
                       int B, int T, int C) {
    const real eps = real(1e-5);
    #pragma omp parallel for
    for (int i = 0; i < B * T; i++) {
        const real* x = inp + (size_t)i * C;
        real m = 0;
        for (int c = 0; c < C; c++) m += x[c];
        m /= C;
        real v = 0;
        for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
        v /= C;
        real s = real(1) / std::sqrt(v + eps);
        real* o = out + (size_t)i * C;
        for (int c = 0; c < C; c++) o[c] = (x[c] - m) * s * weight[c] + bias[c];
        mean[i] = m;
        rstd[i] = s;
    }
}

// Float fast path of layernorm_backward: one pass over the rows computes dx
// and, into partial sums per chunk of 32 rows, dw and db (the reference's
// second loop walks the columns with a stride of C floats); the chunks'
// partial sums are added into dweight, dbias at the end in chunk order. The
// chunks are fixed by N, not by the threads, so the result is the same for
// any number of threads.
static inline void layernorm_backward_fast(float* dinp, float* dweight, float* dbias, const float* dout,
                                           const float* inp, const float* weight, const float* mean,
                                           const float* rstd, int N, int C) {
    const int rows = 32;
    const int chunks = (N + rows - 1) / rows;
    std::vector<float> part((size_t)chunks * 2 * C, 0.0f);  // per chunk: dw (C), db (C)
    #pragma omp parallel for schedule(static)
    for (int k = 0; k < chunks; k++) {
        float* pdw = part.data() + (size_t)k * 2 * C;
        float* pdb = pdw + C;
        for (int i = k * rows; i < std::min(N, (k + 1) * rows); i++) {
            const float* x = inp + (size_t)i * C;
            const float* d = dout + (size_t)i * C;
            float* dx = dinp + (size_t)i * C;
            const float m = mean[i], s = rstd[i];
            float g_mean = 0, gn_mean = 0;
            #pragma omp simd reduction(+ : g_mean, gn_mean)
            for (int c = 0; c < C; c++) {
                float n = (x[c] - m) * s;
                float g = d[c] * weight[c];
                g_mean += g;
                gn_mean += g * n;
                pdw[c] += d[c] * n;
                pdb[c] += d[c];
            }
            g_mean /= C;
            gn_mean /= C;
            #pragma omp simd
            for (int c = 0; c < C; c++) {
                float n = (x[c] - m) * s;
                dx[c] += s * (d[c] * weight[c] - g_mean - n * gn_mean);
            }
        }
    }
    for (int k = 0; k < chunks; k++)
        for (int c = 0; c < C; c++) {
            dweight[c] += part[(size_t)k * 2 * C + c];
            dbias[c] += part[(size_t)k * 2 * C + C + c];
        }
}

// With n = (x - mean) * rstd and g = dout * w:
//   dx = rstd * (g - mean_c(g) - n * mean_c(g * n)),  dw += dout * n,  db += dout.
template <typename real>
void layernorm_backward(real* dinp,          // (B,T,C)
                        real* dweight,       // (C)
                        real* dbias,         // (C)
                        const real* dout,    // (B,T,C)
                        const real* inp,     // (B,T,C)
                        const real* weight,  // (C)
                        const real* mean,    // (B,T)
                        const real* rstd,    // (B,T)
                        int B, int T, int C) {
    int N = B * T;
    if constexpr (std::is_same_v<real, float>) {
        if (use_fast<real>()) {
            layernorm_backward_fast(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
            return;
        }
    }
    #pragma omp parallel for
    for (int i = 0; i < N; i++) {
        const real* x = inp + (size_t)i * C;
        const real* d = dout + (size_t)i * C;
        real g_mean = 0, gn_mean = 0;
        for (int c = 0; c < C; c++) {
            real n = (x[c] - mean[i]) * rstd[i];
            real g = d[c] * weight[c];
            g_mean += g;
            gn_mean += g * n;
        }
        g_mean /= C;
        gn_mean /= C;
        real* dx = dinp + (size_t)i * C;
        for (int c = 0; c < C; c++) {
            real n = (x[c] - mean[i]) * rstd[i];
            real g = d[c] * weight[c];
            dx[c] += rstd[i] * (g - g_mean - n * gn_mean);
        }
    }
    // parameter gradients sum over rows: parallel over channels instead
    #pragma omp parallel for
    for (int c = 0; c < C; c++) {
        real dw = 0, db = 0;
        for (int i = 0; i < N; i++) {
            real n = (inp[(size_t)i * C + c] - mean[i]) * rstd[i];
            dw += dout[(size_t)i * C + c] * n;
            db += dout[(size_t)i * C + c];
        }
        dweight[c] += dw;
        dbias[c] += db;
    }
}
