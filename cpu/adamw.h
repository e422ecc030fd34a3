// Optimizer: global gradient norm, clipping, AdamW (DESIGN.md section 2).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

// Sum of squares of n gradients, accumulated in double. The sum runs over
// fixed chunks of 4096 and adds the chunk sums in order, so the result is the
// same for any number of threads: a resumed run reproduces the norm (and the
// clipping) to the last bit on any machine.
template <typename real>
double grad_norm_squared(const real* grads,  // (n)
                         size_t n) {
    const size_t chunk = 4096;
    size_t nchunks = (n + chunk - 1) / chunk;
    std::vector<double> partial(nchunks);
    #pragma omp parallel for
    for (size_t c = 0; c < nchunks; c++) {
        double sum = 0;
        size_t end = std::min(n, (c + 1) * chunk);
        #pragma omp simd reduction(+ : sum)
        for (size_t i = c * chunk; i < end; i++) sum += (double)grads[i] * (double)grads[i];
        partial[c] = sum;
    }
    double sum = 0;
    for (double p : partial) sum += p;
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
