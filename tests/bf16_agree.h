// How closely two runs of the bf16 contract (common/bf16_kernels.h) must
// agree when their float arithmetic differs only in rounding (the order of
// a sum, an exp one ulp off): the GPU's bf16 against the CPU's emulation
// (tests/test_gpu_layers.cu, tests/test_gpu_model.cu), and on the CPU the
// plain loops against the fast forms, the same kind of pair, which
// tests/test_bf16.cpp holds to these bounds where no GPU is needed.
//
// Why not the fp32 tolerance alone: both sides round each stored result to
// bf16 once. Results that differ in float by about 1e-7 of their size round
// to the same bf16 value, unless a rounding boundary lies between them; then
// they land on neighbouring bf16 values, 2^-8 to 2^-7 of their size apart.
// The chance of that is about the float difference over the bf16 spacing,
// near 1e-4 per element. So a bf16 tensor passes when every element is a
// bf16 value, each is within the fp32 tolerance of the tensor's scale or on
// a neighbouring bf16 value, and at most BF16_STEP_SHARE of them are on a
// neighbour (measured on the CPU pair: 0 of 47360 logits beyond 1e-4 of the
// scale, at the model tests' shapes).
//
// A whole model carries each such step on through the layers above it. Its
// loss must agree within BF16_LOSS_TOL (relative) and its gradients, as one
// vector, within BF16_GRAD_L2 (relative L2 norm). Measured on the CPU pair
// at the model tests' shapes, init and batch (tests/test_bf16.cpp prints
// them): loss at most 8e-9, gradients at most 3.3e-4 (dense 3.3e-4, MoT
// 2.8e-4, mixed 1.2e-5, token choice 3.1e-4). The bounds leave room for a
// GPU whose float results differ from the CPU's by 10x the CPU pair's (ten
// times the steps: about 3x the L2 difference), and stay far below what
// bf16 itself moves (its gradients differ from fp32's by several percent:
// tests/test_bf16.cpp).
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "common/bf16.h"
#include "tests/close.h"

static const double BF16_STEP_SHARE = 0.01;
static const double BF16_LOSS_TOL = 1e-5;
static const double BF16_GRAD_L2 = 3e-3;

// Whether a and b are the same bf16 value or neighbours (bf16 bit patterns one apart, same sign).
inline bool bf16_neighbours(float a, float b) {
    int ia = bf16_from_float(a), ib = bf16_from_float(b);
    if ((ia & 0x8000) != (ib & 0x8000)) return a == 0 && b == 0;
    return std::abs(ia - ib) <= 1;
}

// got (n) against want (n), both bf16 tensors of the contract (see the top);
// tol is the fp32 tolerance, relative to the largest |want|.
inline void check_bf16_tensor(const std::vector<float>& got, const std::vector<float>& want, double tol,
                              const std::string& what) {
    REQUIRE_MESSAGE(got.size() == want.size(), what << ": " << got.size() << " elements, want " << want.size());
    double scale = 0;
    for (float w : want) scale = std::max(scale, (double)std::fabs(w));
    size_t not_bf16 = 0, steps = 0, apart = 0, first_apart = got.size();
    for (size_t i = 0; i < got.size(); i++) {
        if (!std::isfinite(got[i]) || !is_bf16(got[i])) not_bf16++;
        if (std::fabs((double)got[i] - want[i]) <= tol * scale) continue;
        if (bf16_neighbours(got[i], want[i])) steps++;
        else if (apart++ == 0) first_apart = i;
    }
    CHECK_MESSAGE(not_bf16 == 0, what << ": " << not_bf16 << " of " << got.size() << " elements are not finite bf16 values");
    CHECK_MESSAGE(apart == 0, what << ": " << apart << " elements differ by more than one bf16 step, the first at "
                                   << first_apart << ": "
                                   << (first_apart < got.size() ? got[first_apart] : 0.0f) << " vs "
                                   << (first_apart < got.size() ? want[first_apart] : 0.0f));
    CHECK_MESSAGE(steps <= BF16_STEP_SHARE * got.size(),
                  what << ": " << steps << " of " << got.size() << " elements one bf16 step apart (at most "
                       << BF16_STEP_SHARE * 100 << "%)");
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
