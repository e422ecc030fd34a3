// The optimizer's schedule (docs/design.md sections 4.2, 4.4). Learning rate: linear
// warmup, then cosine decay from lr to lr * min_frac over the remaining
// steps; step counts from 0.
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

// The factor the gradients are scaled by to clip their global norm to clip
// (clip <= 0: off): clip / norm when the norm is above clip, else 1. AdamW
// applies it as it reads each gradient (cpu/adamw.h, gpu/adamw.cuh), so
// clipping costs no pass of its own.
inline float clip_scale(double norm, double clip) { return clip > 0 && norm > clip ? float(clip / norm) : 1.0f; }
