// Residual connection: out = inp1 + inp2; the gradient flows to both.
#pragma once
#include <cstddef>

template <typename real>
void residual_forward(real* out,         // (N)
                      const real* inp1,  // (N)
                      const real* inp2,  // (N)
                      size_t N) {
    #pragma omp parallel for
    for (size_t i = 0; i < N; i++) out[i] = inp1[i] + inp2[i];
}

template <typename real>
void residual_backward(real* dinp1,       // (N)
                       real* dinp2,       // (N)
                       const real* dout,  // (N)
                       size_t N) {
    #pragma omp parallel for
    for (size_t i = 0; i < N; i++) {
        dinp1[i] += dout[i];
        dinp2[i] += dout[i];
    }
}
