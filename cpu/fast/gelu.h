// Fast float GELU (cpu/gelu.h has the formula), written with the sigmoid:
//   (1 + tanh(u)) / 2 = 1 / (1 + exp(-2u))  and  1 - tanh(u)^2 = 4 sg (1 - sg),
// so one fast_exp (exp.h) replaces libm's tanh and the loops vectorize.
// The layer functions are templated on real like the batched layers of this
// folder that call them (mot.h, token_choice.h), which the tests also run in
// double: in any type other than float they are the loops of cpu/gelu.h.
#pragma once
#include <cstddef>
#include <type_traits>

#include "../gelu.h"
#include "exp.h"

namespace fast {

// gelu(x) = x sg(2u), u = s (x + 0.044715 x^3), s = sqrt(2/pi)
static inline float gelu(float x) {
    const float s = 0.7978845608028654f;
    float u = s * (x + 0.044715f * x * x * x);
    return x / (1.0f + fast_exp(-2.0f * u));
}

// d gelu / dx = sg + 2 x sg (1 - sg) s (1 + 3 * 0.044715 x^2), sg = sg(2u)
static inline float gelu_grad(float x) {
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
        #pragma omp parallel for simd
        for (size_t i = 0; i < N; i++) out[i] = gelu(inp[i]);
    } else {
        ::gelu_forward(out, inp, N);
    }
}

template <typename real>
void gelu_backward(real* dinp,        // (N)
                   const real* inp,   // (N)
                   const real* dout,  // (N)
                   size_t N) {
    if constexpr (std::is_same_v<real, float>) {
        #pragma omp parallel for simd
        for (size_t i = 0; i < N; i++) dinp[i] += gelu_grad(inp[i]) * dout[i];
    } else {
        ::gelu_backward(dinp, inp, dout, N);
    }
}

}  // namespace fast
