// LayerNorm over the channel axis: y = (x - mean) * rstd * w + b, eps 1e-5.
#pragma once
#include <cmath>
#include <cstddef>

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
