// Optimizer: global gradient norm, clipping, AdamW (docs/design.md sections 4.2, 4.3).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "../common/schedule.h"  // clip_scale

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

// One AdamW step over a tensor, with decoupled weight decay, on the clipped
// gradient g = grad_scale * grads:
//   m = b1 m + (1-b1) g;   v = b2 v + (1-b2) g^2
//   p -= lr (m / (1-b1^t) / (sqrt(v / (1-b2^t)) + eps) + wd p)
// t is the 1-based step count used for bias correction. The loop computes the
// same update as
//   p -= (lr / c1) m / (sqrt(v) / sqrt(c2) + eps) + lr wd p,   c = 1 - b^t,
// the bias corrections folded into per-tensor constants: one division and one
// square root per element (the update is memory-bound once it has no more).
// The update consumes the gradients: it leaves them zero, ready for the next
// step's backward passes to add into. So the step reads and writes each of
// params, grads, m and v once, and no pass zeroes the gradients.
template <typename real>
void adamw_update(real* params,  // (n)
                  real* grads,   // (n) read, then zeroed
                  real* m,       // (n) first moment
                  real* v,       // (n) second moment
                  size_t n, float lr, float beta1, float beta2, float eps, float wd, int t, real grad_scale = 1) {
    real c1 = real(1) - std::pow(real(beta1), real(t));
    real c2 = real(1) - std::pow(real(beta2), real(t));
    real step = real(lr) / c1, inv_sqrt_c2 = real(1) / std::sqrt(c2), decay = real(lr) * real(wd);
    #pragma omp parallel for simd
    for (size_t i = 0; i < n; i++) {
        real g = grads[i] * grad_scale;
        grads[i] = 0;
        real mi = real(beta1) * m[i] + real(1 - beta1) * g;
        real vi = real(beta2) * v[i] + real(1 - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        params[i] -= step * mi / (std::sqrt(vi) * inv_sqrt_c2 + real(eps)) + decay * params[i];
    }
}
