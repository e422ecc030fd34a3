// Softmax over the first V logits fused with the cross-entropy loss. Logits
// V..Vp-1 exist only because wte is padded; they get probability 0 and no
// gradient.
#pragma once
#include <cmath>
#include <cstddef>

template <typename real>
void crossentropy_forward(real* losses,        // (B,T) -log p[target]
                          real* probs,         // (B,T,Vp)
                          const real* logits,  // (B,T,Vp)
                          const int* targets,  // (B,T)
                          int B, int T, int V, int Vp) {
    #pragma omp parallel for
    for (int i = 0; i < B * T; i++) {
        const real* z = logits + (size_t)i * Vp;
        real* p = probs + (size_t)i * Vp;
        real maxv = -INFINITY;
        for (int v = 0; v < V; v++) maxv = z[v] > maxv ? z[v] : maxv;
        real sum = 0;
        for (int v = 0; v < V; v++) {
            p[v] = std::exp(z[v] - maxv);
            sum += p[v];
        }
        for (int v = 0; v < V; v++) p[v] /= sum;
        for (int v = V; v < Vp; v++) p[v] = 0;
        // log p[target] from the logits, exact even when p underflows
        losses[i] = std::log(sum) + maxv - z[targets[i]];
    }
}

// dlogits += (probs - onehot(target)) * dloss for the first V logits.
template <typename real>
void crossentropy_backward(real* dlogits,       // (B,T,Vp)
                           const real* dlosses, // (B,T)
                           const real* probs,   // (B,T,Vp)
                           const int* targets,  // (B,T)
                           int B, int T, int V, int Vp) {
    #pragma omp parallel for
    for (int i = 0; i < B * T; i++) {
        real* dz = dlogits + (size_t)i * Vp;
        const real* p = probs + (size_t)i * Vp;
        for (int v = 0; v < V; v++) dz[v] += (p[v] - (v == targets[i] ? real(1) : real(0))) * dlosses[i];
    }
}

// Distillation from a teacher (--distill): the objective per token is
// (1 - w) CE(target) + w KL(teacher || p), whose gradient in the logits is
// p - (1 - w) onehot(target) - w teacher. crossentropy_backward adds the
// p - onehot(target) part; this adds the rest, w (onehot(target) - teacher),
// for the first V logits. Called before crossentropy_backward, so that a
// kernel set rounding that call's output (bf16) rounds the sum once.
template <typename real>
void distill_backward(real* dlogits,        // (B,T,Vp)
                      const real* dlosses,  // (B,T)
                      const real* teacher,  // (B,T,Vp) the teacher's probabilities
                      const int* targets,   // (B,T)
                      real w, int B, int T, int V, int Vp) {
    #pragma omp parallel for
    for (int i = 0; i < B * T; i++) {
        real* dz = dlogits + (size_t)i * Vp;
        const real* q = teacher + (size_t)i * Vp;
        for (int v = 0; v < V; v++) dz[v] += w * ((v == targets[i] ? real(1) : real(0)) - q[v]) * dlosses[i];
    }
}
