// Fast float LayerNorm backward (cpu/layernorm.h has the formula).
#pragma once
#include <algorithm>
#include <cstddef>
#include <vector>

namespace fast {

// One pass over the rows computes dx and, into partial sums per chunk of 32
// rows, dw and db (the reference's second loop walks the columns with a
// stride of C floats); the chunks' partial sums are added into dweight, dbias
// at the end in chunk order. The chunks are fixed by B*T, not by the threads,
// so the result is the same for any number of threads.
static inline void layernorm_backward(float* dinp,          // (B,T,C)
                                      float* dweight,       // (C)
                                      float* dbias,         // (C)
                                      const float* dout,    // (B,T,C)
                                      const float* inp,     // (B,T,C)
                                      const float* weight,  // (C)
                                      const float* mean,    // (B,T)
                                      const float* rstd,    // (B,T)
                                      int B, int T, int C) {
    const int N = B * T;
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

}  // namespace fast
