// GELU, tanh approximation: gelu(x) = x/2 (1 + tanh(s (x + 0.044715 x^3))),
// s = sqrt(2/pi).
#pragma once
#include <cmath>
#include <cstddef>

template <typename real>
inline real gelu(real x) {
    const real s = real(0.7978845608028654);  // sqrt(2/pi)
    return real(0.5) * x * (real(1) + std::tanh(s * (x + real(0.044715) * x * x * x)));
}

// d gelu / dx = (1 + th)/2 + x/2 (1 - th^2) s (1 + 3 * 0.044715 x^2)
template <typename real>
inline real gelu_grad(real x) {
    const real s = real(0.7978845608028654);
    real th = std::tanh(s * (x + real(0.044715) * x * x * x));
    real dinner = s * (real(1) + real(3 * 0.044715) * x * x);
    return real(0.5) * (real(1) + th) + real(0.5) * x * (real(1) - th * th) * dinner;
}

template <typename real>
void gelu_forward(real* out,        // (N)
                  const real* inp,  // (N)
                  size_t N) {
    #pragma omp parallel for
    for (size_t i = 0; i < N; i++) out[i] = gelu(inp[i]);
}

template <typename real>
void gelu_backward(real* dinp,        // (N)
                   const real* inp,   // (N)
                   const real* dout,  // (N)
                   size_t N) {
    #pragma omp parallel for
    for (size_t i = 0; i < N; i++) dinp[i] += gelu_grad(inp[i]) * dout[i];
}
