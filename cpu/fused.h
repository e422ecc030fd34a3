// Fast float kernels for the CPU training path, and the switch that turns
// them off. The templated layer functions of this folder are the reference:
// simple loops, run as written for double (the gradient tests) and for float
// while layers_use_reference() is set. For float they otherwise dispatch to
// the code here or to a faster variant next to the reference, the same
// pattern as gemm() in matmul.h. Each fast variant computes the same
// formula; differences are rounding (and the polynomial exp below, relative
// error ~2e-7, about one float ulp).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "matmul.h"

// true: float runs the reference loops too (tests, bench --reference)
inline bool& layers_use_reference() {
    static bool use_reference = false;
    return use_reference;
}

// true when real is float and the fast kernels are on
template <typename real>
inline bool use_fast() {
    if constexpr (std::is_same_v<real, float>)
        return !layers_use_reference();
    else
        return false;
}

// exp(x) for float in a form GCC vectorizes (no libm call): x = n ln2 + r,
// |r| <= ln2/2, exp(r) by a degree-6 polynomial, 2^n from the exponent bits.
// Inputs are clamped to [-87.3, 88.3]: far below, about 1e-38 instead of 0
// (harmless in a softmax or a sigmoid); far above, about 2e38 instead of inf.
// NaN goes through the clamp as -87.3 (every comparison with NaN is false), so
// the integer arithmetic below stays defined, and comes back out as NaN.
static inline float fast_exp(float x_in) {
    float x = x_in > -87.3f ? x_in : -87.3f;  // (std::fmin does not vectorize)
    x = x < 88.3f ? x : 88.3f;
    float n = std::nearbyint(x * 1.44269504088896341f);
    float r = std::fma(n, -0.693359375f, x);       // ln2 split in two parts, so
    r = std::fma(n, 2.12194440e-4f, r);             // r = x - n ln2 stays exact
    float p = 1.0f / 720;
    p = std::fma(p, r, 1.0f / 120);
    p = std::fma(p, r, 1.0f / 24);
    p = std::fma(p, r, 1.0f / 6);
    p = std::fma(p, r, 0.5f);
    p = std::fma(p, r, 1.0f);
    p = std::fma(p, r, 1.0f);
    int32_t bits = ((int32_t)n + 127) << 23;  // n in -126..128 after the clamp
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return x_in == x_in ? p * scale : x_in;  // NaN in, NaN out
}
