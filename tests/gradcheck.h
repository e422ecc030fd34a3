// tests/gradcheck.h: finite-difference gradient checks shared by the test suites.
//
// gradcheck(loss, x, n, analytic) perturbs x[i] in place, evaluates the scalar
// loss() (which must read x), and compares analytic[i] to the numerical
// derivative, element by element.
//
// Derivative: the five-point central stencil
//     n_i = (8 (L(x+h) - L(x-h)) - (L(x+2h) - L(x-2h))) / (12 h)
// Its truncation error is h^4 |L^(5)| / 30, i.e. ~1e-16 relative at h = 1e-4
// for the smooth O(1)-scaled functions tested here (a plain two-point central
// difference at h = 1e-6 has ~1e-12 truncation but ~1e-10 rounding error,
// too close to the 1e-6 relative bar for small entries). Its rounding error is
// about 1.5 * err(L) / h, where err(L) ~ a few eps * sum|terms of L| ~ 1e-15
// for the losses used here, so ~1e-11 absolute at h = 1e-4.
//
// Error measure: rel_i = |a_i - n_i| / max(|a_i|, |n_i|, floor).
// For entries whose gradient is larger than `floor` this is the relative error.
// For entries where both are below `floor` (true zeros: padded logits, masked
// attention, unused embedding rows; or tiny gradients) it becomes an absolute
// check |a - n| < tol * floor. The default floor 1e-4 gives, at tol = 1e-6, an
// absolute tolerance of 1e-10: ~10x above the finite-difference rounding noise
// above, so a correct gradient cannot fail, while any real bug in an entry of
// size >= 1e-4 shows up as a relative error of order 1. A floor like 1e-8 would
// demand 1e-14 absolute accuracy, which finite differences in double cannot give.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

struct GradCheckResult {
    double worst = 0;      // max over i of rel_i (see above)
    size_t worst_i = 0;    // where it occurs
    double worst_a = 0, worst_n = 0;  // analytic and numerical values there
    double max_abs_grad = 0;          // max |analytic|: guards against all-zero checks
    size_t n = 0;
};

template <typename F>
GradCheckResult gradcheck(F&& loss, double* x, size_t n, const double* analytic, double h = 1e-4,
                          double floor = 1e-4) {
    GradCheckResult r;
    r.n = n;
    for (size_t i = 0; i < n; i++) {
        const double x0 = x[i];
        x[i] = x0 + h;      double lp1 = loss();
        x[i] = x0 - h;      double lm1 = loss();
        x[i] = x0 + 2 * h;  double lp2 = loss();
        x[i] = x0 - 2 * h;  double lm2 = loss();
        x[i] = x0;
        double num = (8 * (lp1 - lm1) - (lp2 - lm2)) / (12 * h);
        double a = analytic[i];
        double rel = std::fabs(a - num) / std::max({std::fabs(a), std::fabs(num), floor});
        if (!(rel <= r.worst) && !(r.worst != r.worst)) {  // also records NaN
            r.worst = rel;
            r.worst_i = i;
            r.worst_a = a;
            r.worst_n = num;
        }
        r.max_abs_grad = std::max(r.max_abs_grad, std::fabs(a));
    }
    loss();  // leave the forward state as it was at x
    return r;
}

// -DGRADCHECK_VERBOSE prints every check's worst error (to see the margins).
#ifdef GRADCHECK_VERBOSE
#include <cstdio>
#define GRADCHECK_LOG(name, r)                                                                \
    std::printf("  %-10s n=%5zu worst %.2e (a %.3e n %.3e) max|g| %.2e\n", std::string(name).c_str(), \
                (r).n, (r).worst, (r).worst_a, (r).worst_n, (r).max_abs_grad)
#else
#define GRADCHECK_LOG(name, r) ((void)0)
#endif

// doctest wrapper: the check fails when any element is off by more than tol,
// and also when the analytic gradient is identically zero (a check that a
// no-op backward would pass is no check).
#define CHECK_GRAD(name, loss, xvec, gvec)                                                  \
    do {                                                                                    \
        GradCheckResult r_ = gradcheck(loss, (xvec).data(), (xvec).size(), (gvec).data());  \
        INFO("gradient of " << (name) << ": worst rel err " << r_.worst << " at [" << r_.worst_i \
             << "] analytic " << r_.worst_a << " numeric " << r_.worst_n << " (n=" << r_.n << ")"); \
        GRADCHECK_LOG(name, r_);                                                            \
        CHECK(r_.worst < 1e-6);                                                             \
        CHECK(r_.max_abs_grad > 1e-3);                                                      \
    } while (0)

// ---------------------------------------------------------------- test helpers

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); i++) s += a[i] * b[i];
    return s;
}

// The tests use tiny tensors: OpenMP fork/join would dominate their run time on
// shared cores. Each suite calls this once; set MOT_TEST_THREADS to override.
inline void set_test_threads() {
#ifdef _OPENMP
    const char* env = std::getenv("MOT_TEST_THREADS");
    omp_set_num_threads(env ? std::max(1, std::atoi(env)) : 1);
#endif
}

// Runs before main() in every suite that includes this header.
inline const bool mot_test_threads_set = (set_test_threads(), true);
