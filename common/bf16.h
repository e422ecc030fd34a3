// bfloat16: the high 16 bits of a float32 (sign, the 8 exponent bits, 7
// mantissa bits), so every bf16 value is a float and the float range is
// kept; only precision is lost (8 significant bits).
//
// Two uses: models written in bf16 (common/safetensors.h), and the CPU's
// emulation of bf16 training (common/bf16_kernels.h), which rounds a float to
// the nearest bf16 value at every point where a bf16 run stores one
// (README, "Precision"). Both round alike: to nearest, ties to even, the
// rounding of a GPU's float -> bf16 conversion (__float2bfloat16_rn).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

// float32 -> bfloat16 bits, rounded to nearest, ties to even; a NaN stays a
// NaN (its sign and a quiet bit kept, so that rounding can never turn it
// into an infinity). Finite values from the largest bf16 plus half an ulp
// upward round to infinity, as the tie rule says.
inline uint16_t bf16_from_float(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);  // a carry out of the low half rounds up; a tie goes to the even half
    return (uint16_t)(u >> 16);
}

inline float bf16_to_float(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float x;
    std::memcpy(&x, &u, 4);
    return x;
}

// x rounded to the nearest bf16 value, as a float.
inline float bf16_round(float x) { return bf16_to_float(bf16_from_float(x)); }

// x rounded to bf16 in any scalar type, through float as below.
template <typename real>
inline real bf16_rounded(real x) {
    return real(bf16_round(float(x)));
}

// Rounds x (n) in place, each element as bf16_round(float) does. In any other
// scalar type (the double models of the tests) each element goes through
// float first: a value off a float can round twice, so only float runs are
// an exact emulation.
template <typename real>
void bf16_round(real* x, size_t n) {
    #pragma omp parallel for simd
    for (size_t i = 0; i < n; i++) x[i] = real(bf16_round(float(x[i])));
}

// true when x is a bf16 value: its low 16 bits are zero.
inline bool is_bf16(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    return (u & 0xffffu) == 0;
}
