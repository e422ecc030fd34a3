// Optimizer: global gradient norm, clipping, AdamW (DESIGN.md section 2).
#pragma once
#include <cmath>
#include <cstddef>

// Sum of squares of n gradients, accumulated in double so that the norm of
// millions of float gradients does not depend on summation order much.
template <typename real>
double grad_norm_squared(const real* grads,  // (n)
                         size_t n) {
    double sum = 0;
    // simd: the double accumulation vectorizes (partial sums per lane)
    #pragma omp parallel for simd reduction(+ : sum)
    for (size_t i = 0; i < n; i++) sum += (double)grads[i] * (double)grads[i];
    return sum;
}

// Scales the gradients by clip / norm when norm > clip (clip <= 0: off).
template <typename real>
void grad_clip(real* grads,  // (n)
               size_t n, double norm, double clip) {
    if (clip <= 0 || norm <= clip) return;
    real scale = real(clip / norm);
    #pragma omp parallel for simd
    for (size_t i = 0; i < n; i++) grads[i] *= scale;
}

// One AdamW step over a tensor, with decoupled weight decay:
//   m = b1 m + (1-b1) g;   v = b2 v + (1-b2) g^2
//   p -= lr (m / (1-b1^t) / (sqrt(v / (1-b2^t)) + eps) + wd p)
// t is the 1-based step count used for bias correction.
template <typename real>
void adamw_update(real* params,       // (n)
                  const real* grads,  // (n)
                  real* m,            // (n) first moment
                  real* v,            // (n) second moment
                  size_t n, float lr, float beta1, float beta2, float eps, float wd, int t) {
    real c1 = real(1) - std::pow(real(beta1), real(t));
    real c2 = real(1) - std::pow(real(beta2), real(t));
    #pragma omp parallel for simd
    for (size_t i = 0; i < n; i++) {
        real g = grads[i];
        m[i] = real(beta1) * m[i] + real(1 - beta1) * g;
        v[i] = real(beta2) * v[i] + real(1 - beta2) * g * g;
        real mhat = m[i] / c1, vhat = v[i] / c2;
        params[i] -= real(lr) * (mhat / (std::sqrt(vhat) + real(eps)) + real(wd) * params[i]);
    }
}
