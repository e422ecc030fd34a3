// Fast float softmax + cross-entropy forward (cpu/crossentropy.h has the
// formula): the exponentials on the vectorized exp (exp.h), and one divide
// per row, then multiplies that vectorize.
#pragma once
#include <cmath>
#include <cstddef>

#include "exp.h"

namespace fast {

static inline void crossentropy_forward(float* losses,        // (B,T) -log p[target]
                                        float* probs,         // (B,T,Vp)
                                        const float* logits,  // (B,T,Vp)
                                        const int* targets,   // (B,T)
                                        int B, int T, int V, int Vp) {
    #pragma omp parallel for
    for (int i = 0; i < B * T; i++) {
        const float* z = logits + (size_t)i * Vp;
        float* p = probs + (size_t)i * Vp;
        float maxv = -INFINITY;
        for (int v = 0; v < V; v++) maxv = z[v] > maxv ? z[v] : maxv;
        float sum = 0;
        #pragma omp simd reduction(+ : sum)
        for (int v = 0; v < V; v++) {
            p[v] = fast_exp(z[v] - maxv);
            sum += p[v];
        }
        float inv = 1.0f / sum;
        #pragma omp simd
        for (int v = 0; v < V; v++) p[v] *= inv;
        for (int v = V; v < Vp; v++) p[v] = 0;
        // log p[target] from the logits, exact even when p underflows
        losses[i] = std::log(sum) + maxv - z[targets[i]];
    }
}

}  // namespace fast
