// Token + position embedding: x[b,t] = wte[tok[b,t]] + wpe[t].
#pragma once
#include <cstddef>

template <typename real>
void encoder_forward(real* out,        // (B,T,C)
                     const int* inp,   // (B,T) token ids
                     const real* wte,  // (Vp,C)
                     const real* wpe,  // (maxT,C)
                     int B, int T, int C) {
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            real* o = out + ((size_t)b * T + t) * C;
            const real* te = wte + (size_t)inp[b * T + t] * C;
            const real* pe = wpe + (size_t)t * C;
            for (int i = 0; i < C; i++) o[i] = te[i] + pe[i];
        }
}

// Rows of wte are shared between positions, so the scatter runs serially over
// (b,t) and in parallel over channels: no two threads touch the same element.
template <typename real>
void encoder_backward(real* dwte,        // (Vp,C)
                      real* dwpe,        // (maxT,C)
                      const real* dout,  // (B,T,C)
                      const int* inp,    // (B,T)
                      int B, int T, int C) {
    #pragma omp parallel for
    for (int i = 0; i < C; i++)
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) {
                real d = dout[((size_t)b * T + t) * C + i];
                dwte[(size_t)inp[b * T + t] * C + i] += d;
                dwpe[(size_t)t * C + i] += d;
            }
}
