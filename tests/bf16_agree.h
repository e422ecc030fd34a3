// How closely two runs of the bf16 contract (common/bf16_kernels.h) must
// agree when their float arithmetic differs only in rounding (the order of
// a sum, an exp one ulp off): the GPU's bf16 against the CPU's emulation
// (tests/test_gpu_layers.cu, tests/test_gpu_model.cu), and on the CPU the
// plain loops against the fast forms, the same kind of pair, which
// tests/test_bf16.cpp holds to these bounds where no GPU is needed.
//
// Why not the fp32 tolerance: both sides round each stored result to bf16.
// Float results that differ in their last bits round to the same bf16 value
// unless a rounding boundary lies between them; then they land a bf16 step
// apart (2^-8 to 2^-7 of their size), and every layer above carries that
// step on, MoT's mixing to the whole group. So a bf16 tensor of the two runs
// agrees (check_bf16_tensor) when every element is a bf16 value, every
// element is within BF16_SCALE_TOL of the tensor's scale (its largest
// |value|), and at most BF16_DIFF_SHARE of the elements differ by more than
// the fp32 tolerance. The share is what tells a right bf16 run from a wrong
// one: measured at the model tests' shapes and init, the plain/fast pair's
// logits differ nowhere in the -O3 build and in 2.1% of the elements (worst
// 1.7e-3 of the scale) in CI's -O1 sanitizer build, for the mixed model
// whose MoT layers spread a step over their groups; bf16 against fp32
// differs in 88-90% of them (tests/test_bf16.cpp checks that this bound
// fails there).
//
// The loss within BF16_LOSS_TOL (relative) and the gradients within
// BF16_GRAD_L2 (relative L2 norm, as one vector) are sanity bounds only: at
// these shapes and init bf16 itself moves the loss by 1e-6 to 1e-5 and the
// gradients by 5e-3 to 6e-3 from fp32, while the plain/fast pair measured
// at most 1.2e-6 and 1.3e-3 (-O1; 8e-9 and 3.3e-4 at -O3).
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "common/bf16.h"
#include "tests/close.h"

// A float's bit pattern, and the float of a bit pattern.
inline uint32_t bits_of_float(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    return u;
}
inline float float_of_bits(uint32_t u) {
    float x;
    std::memcpy(&x, &u, 4);
    return x;
}

static const double BF16_SCALE_TOL = 1e-2;
static const double BF16_DIFF_SHARE = 0.10;
static const double BF16_LOSS_TOL = 1e-5;
static const double BF16_GRAD_L2 = 3e-3;

// How got (n) stands to want (n), both bf16 tensors of the contract; tol is
// the fp32 tolerance, relative to the largest |want| (the scale).
struct Bf16Agreement {
    size_t n = 0, not_bf16 = 0, differ = 0;  // differ: beyond the fp32 tolerance
    double worst = 0;                        // the largest |got - want|, over the scale
};
inline Bf16Agreement bf16_agreement(const std::vector<float>& got, const std::vector<float>& want, double tol) {
    Bf16Agreement a;
    a.n = std::min(got.size(), want.size());
    double scale = 0;
    for (float w : want) scale = std::max(scale, (double)std::fabs(w));
    for (size_t i = 0; i < a.n; i++) {
        if (!std::isfinite(got[i]) || !is_bf16(got[i])) a.not_bf16++;
        double d = std::fabs((double)got[i] - want[i]);
        if (!(d <= tol * scale)) a.differ++;
        a.worst = std::max(a.worst, scale > 0 ? d / scale : d);
    }
    return a;
}

// got against want (see the top), with the counts in the messages.
inline void check_bf16_tensor(const std::vector<float>& got, const std::vector<float>& want, double tol,
                              const std::string& what) {
    REQUIRE_MESSAGE(got.size() == want.size(), what << ": " << got.size() << " elements, want " << want.size());
    Bf16Agreement a = bf16_agreement(got, want, tol);
    CHECK_MESSAGE(a.not_bf16 == 0, what << ": " << a.not_bf16 << " of " << a.n << " elements are not finite bf16 values");
    CHECK_MESSAGE(a.worst <= BF16_SCALE_TOL, what << ": an element " << a.worst << " of the scale away");
    CHECK_MESSAGE(a.differ <= BF16_DIFF_SHARE * a.n, what << ": " << a.differ << " of " << a.n
                                                          << " elements differ beyond the fp32 tolerance (at most "
                                                          << BF16_DIFF_SHARE * 100 << "%)");
}

// |got - want| / |want| in the L2 norm, over every element.
inline double relative_l2(const std::vector<float>& got, const std::vector<float>& want) {
    double d = 0, w = 0;
    for (size_t i = 0; i < want.size(); i++) {
        d += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
        w += (double)want[i] * want[i];
    }
    return std::sqrt(d / w);
}
