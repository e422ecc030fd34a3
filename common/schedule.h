// Learning-rate schedule (DESIGN.md section 2): linear warmup, then cosine
// decay from lr to lr * min_frac over the remaining steps. step counts from 0.
#pragma once
#include <cmath>

inline float lr_at(int step, int total_steps, float lr, int warmup, float min_frac) {
    if (step < warmup) return lr * float(step + 1) / float(warmup);
    if (total_steps <= warmup) return lr;
    double progress = double(step - warmup) / double(total_steps - warmup);
    if (progress > 1) progress = 1;
    double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));  // 1 -> 0
    return float(lr * (min_frac + (1.0 - min_frac) * cosine));
}
