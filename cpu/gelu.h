// GELU, tanh approximation: gelu(x) = x/2 (1 + tanh(s (x + 0.044715 x^3))),
// s = sqrt(2/pi).
#pragma once
#include <cmath>
#include <cstddef>

#include "fused.h"

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

// Float fast path, the same function written with the sigmoid:
// (1 + tanh(u)) / 2 = 1 / (1 + exp(-2u)) and 1 - tanh(u)^2 = 4 sg (1 - sg),
// so one fast_exp (fused.h) replaces libm's tanh and the loops vectorize.
static inline float gelu_fast(float x) {
    const float s = 0.7978845608028654f;
    float u = s * (x + 0.044715f * x * x * x);
    return x / (1.0f + fast_exp(-2.0f * u));
}
static inline float gelu_grad_fast(float x) {
    const float s = 0.7978845608028654f;
    float u = s * (x + 0.044715f * x * x * x);
    float sg = 1.0f / (1.0f + fast_exp(-2.0f * u));
    float dinner = s * (1.0f + 3 * 0.044715f * x * x);
    return sg + 2.0f * x * sg * (1.0f - sg) * dinner;
}

template <typename real>
void gelu_forward(real* out,        // (N)
                  const real* inp,  // (N)
                  size_t N) {
    if constexpr (std::is_same_v<real, float>) {
        if (use_fast<real>()) {
            #pragma omp parallel for simd
            for (size_t i = 0; i < N; i++) out[i] = gelu_fast(inp[i]);
            return;
        }
    }
    #pragma omp parallel for
    for (size_t i = 0; i < N; i++) out[i] = gelu(inp[i]);
}

template <typename real>
void gelu_backward(real* dinp,        // (N)
                   const real* inp,   // (N)
                   const real* dout,  // (N)
                   size_t N) {
    if constexpr (std::is_same_v<real, float>) {
        if (use_fast<real>()) {
            #pragma omp parallel for simd
            for (size_t i = 0; i < N; i++) dinp[i] += gelu_grad_fast(inp[i]) * dout[i];
            return;
        }
    }
    #pragma omp parallel for
    for (size_t i = 0; i < N; i++) dinp[i] += gelu_grad(inp[i]) * dout[i];
}
