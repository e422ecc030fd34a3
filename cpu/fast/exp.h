// exp(x) for float in a form GCC vectorizes, used by the fast softmaxes
// (attention, cross-entropy) and the fast GELU: libm's expf and tanhf are
// calls the loops around them cannot vectorize. Relative error ~2e-7, about
// one float ulp (tests/test_fast.cpp).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace fast {

// x = n ln2 + r, |r| <= ln2/2, exp(r) by a degree-6 polynomial, 2^n from the
// exponent bits. Inputs are clamped to [-87.3, 88.3]: far below, about 1e-38
// instead of 0 (harmless in a softmax or a sigmoid); far above, about 2e38
// instead of inf. NaN goes through the clamp as -87.3 (every comparison with
// NaN is false), so the integer arithmetic below stays defined, and comes
// back out as NaN.
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

}  // namespace fast
