// Fast Mixture-of-Tokens layer (cpu/mot.h has the math and the per-group
// loops): the same computation with every product batched.
//
// With S = B/G, group (k, t) holds rows b = j*S + k (j = 0..G-1) at position
// t. Its inputs X (G, C) sit S*T*C floats apart in the (B,T,C) tensor, and
// the group's index g = k*T + t is also its offset in units of C. That
// strided layout makes every per-group product one strided-batched GEMM over
// all S*T groups (batch stride C, leading dimension S*T*C), and every
// per-expert product one strided-batched GEMM over the E experts, each over
// all groups. Tensors U, P, A, Y are laid out (S, T, E, .), group-major,
// expert-minor, as in cpu/mot.h.
//
// Templated on real so the tests run it in double against the per-group
// loops. Its products and its gelu are the fast ones of matmul.h and gelu.h
// of this folder: in float the blocked GEMM and the vectorized gelu, in any
// other type the loops of cpu/. Training runs it in float (FastKernels,
// kernels.h).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <type_traits>
#include <vector>

#include "exp.h"
#include "gelu.h"
#include "matmul.h"

namespace fast {

// The parts of the layer, each batched, so that they read one by one (and
// bench/bench_mot.cpp can time them one by one). ST = S*T groups; group
// member j of group g sits j*ST rows after the group's first row.

// Controller and mixing weights: Z = X wc^T for all rows; M = softmax over
// the group members of Z / tau (discrete: one-hot at the argmax of Z). The
// softmax runs group by group with the E experts innermost, so every loop
// reads and writes E contiguous values and vectorizes (in float with the
// polynomial exp of fast/exp.h).
template <typename real>
void mot_controller(real* z,          // (B,T,E)
                    real* m,          // (B,T,E)
                    const real* inp,  // (B,T,C)
                    const real* wc,   // (E,C)
                    int B, int T, int C, int E, int G, real tau, bool discrete) {
    const int ST = B / G * T;
    const size_t mj = (size_t)ST * E;  // stride between group members in (B,T,E)
    const real inv_tau = real(1) / tau;
    matmul_forward(z, inp, wc, (const real*)nullptr, B, T, C, E);
    #pragma omp parallel
    {
        std::vector<real> maxv(E), sum(E);
        #pragma omp for
        for (int g = 0; g < ST; g++) {
            const real* zg = z + (size_t)g * E;  // member j: zg + j*mj
            real* mg = m + (size_t)g * E;
            std::copy(zg, zg + E, maxv.begin());
            for (int j = 1; j < G; j++)
                for (int e = 0; e < E; e++) maxv[e] = std::max(maxv[e], zg[j * mj + e]);
            std::fill(sum.begin(), sum.end(), real(0));
            for (int j = 0; j < G; j++) {
                const real* zj = zg + j * mj;
                real* mjp = mg + j * mj;
                #pragma omp simd
                for (int e = 0; e < E; e++) {
                    real x = (zj[e] - maxv[e]) * inv_tau;
                    real v;
                    if constexpr (std::is_same_v<real, float>) v = fast::fast_exp(x);
                    else v = std::exp(x);
                    mjp[e] = v;
                    sum[e] += v;
                }
            }
            for (int e = 0; e < E; e++) sum[e] = real(1) / sum[e];
            for (int j = 0; j < G; j++)
                for (int e = 0; e < E; e++) mg[j * mj + e] *= sum[e];
            if (discrete)  // one-hot at the argmax of Z over the group; ties: lowest j
                for (int e = 0; e < E; e++) {
                    int best = 0;
                    for (int j = 1; j < G; j++)
                        if (zg[j * mj + e] > zg[best * mj + e]) best = j;
                    for (int j = 0; j < G; j++) mg[j * mj + e] = j == best ? real(1) : real(0);
                }
        }
    }
}

// Merge, per group: U (E,C) = M^T (E,G) X (G,C).
template <typename real>
void mot_merge(real* u,          // (S,T,E,C)
               const real* m,    // (B,T,E)
               const real* inp,  // (B,T,C)
               int B, int T, int C, int E, int G) {
    const int ST = B / G * T;
    gemm(true, false, E, C, G, real(1), m, (long long)ST * E, E, inp, (long long)ST * C, C, real(0), u, C,
         (long long)E * C, ST);
}

// Experts, per expert e over all groups: P[:,e] (ST,f) = U[:,e] (ST,C) w1[e]^T;
// A = gelu(P); Y[:,e] (ST,C) = A[:,e] (ST,f) w2[e]^T.
template <typename real>
void mot_experts(real* p,         // (S,T,E,f)
                 real* a,         // (S,T,E,f)
                 real* y,         // (S,T,E,C)
                 const real* u,   // (S,T,E,C)
                 const real* w1,  // (E,f,C)
                 const real* w2,  // (E,C,f)
                 int ST, int C, int E, int f) {
    gemm(false, true, ST, f, C, real(1), u, (long long)E * C, C, w1, C, (long long)f * C, real(0), p,
         (long long)E * f, f, E);
    gelu_forward(a, p, (size_t)ST * E * f);
    gemm(false, true, ST, C, f, real(1), a, (long long)E * f, f, w2, f, (long long)C * f, real(0), y,
         (long long)E * C, C, E);
}

// Emit, per group: O (G,C) = M (G,E) Y (E,C).
template <typename real>
void mot_emit(real* out,       // (B,T,C)
              const real* m,   // (B,T,E)
              const real* y,   // (S,T,E,C)
              int B, int T, int C, int E, int G) {
    const int ST = B / G * T;
    gemm(false, false, G, C, E, real(1), m, (long long)ST * E, E, y, C, (long long)E * C, real(0), out,
         (long long)ST * C, C, ST);
}

template <typename real>
void mot_forward(real* out,        // (B,T,C)
                 real* z,          // (B,T,E) controller logits
                 real* m,          // (B,T,E) mixing weights
                 real* u,          // (S,T,E,C) mixed tokens
                 real* p,          // (S,T,E,f)
                 real* a,          // (S,T,E,f)
                 real* y,          // (S,T,E,C)
                 const real* inp,  // (B,T,C)
                 const real* wc,   // (E,C)
                 const real* w1,   // (E,f,C)
                 const real* w2,   // (E,C,f)
                 int B, int T, int C, int E, int G, int f, real tau, bool discrete = false) {
    mot_controller(z, m, inp, wc, B, T, C, E, G, tau, discrete);
    mot_merge(u, m, inp, B, T, C, E, G);
    mot_experts(p, a, y, u, w1, w2, B / G * T, C, E, f);
    mot_emit(out, m, y, B, T, C, E, G);
}

// Emit backward: dY (E,C) = M^T (E,G) dO (G,C);  dM (G,E) = dO (G,C) Y^T (C,E).
template <typename real>
void mot_emit_backward(real* dy,          // (S,T,E,C) overwritten
                       real* dm,          // (B,T,E) overwritten
                       const real* dout,  // (B,T,C)
                       const real* m,     // (B,T,E)
                       const real* y,     // (S,T,E,C)
                       int B, int T, int C, int E, int G) {
    const int ST = B / G * T;
    const long long xj = (long long)ST * C, mj = (long long)ST * E, EC = (long long)E * C;
    gemm(true, false, E, C, G, real(1), m, mj, E, dout, xj, C, real(0), dy, C, EC, ST);
    gemm(false, true, G, E, C, real(1), dout, xj, C, y, C, EC, real(0), dm, mj, E, ST);
}

// Experts backward, batched over experts e, each over all ST groups:
//   dA[:,e] = dY[:,e] w2[e];  dw2[e] += dY[:,e]^T A[:,e];  dP = dA * gelu'(P)
//   dw1[e] += dP[:,e]^T U[:,e];  dU[:,e] = dP[:,e] w1[e]
template <typename real>
void mot_experts_backward(real* du,         // (S,T,E,C) overwritten
                          real* dp,         // (S,T,E,f) overwritten
                          real* da,         // (S,T,E,f) overwritten
                          real* dw1,        // (E,f,C)
                          real* dw2,        // (E,C,f)
                          const real* dy,   // (S,T,E,C)
                          const real* u,    // (S,T,E,C)
                          const real* p,    // (S,T,E,f)
                          const real* a,    // (S,T,E,f)
                          const real* w1,   // (E,f,C)
                          const real* w2,   // (E,C,f)
                          int ST, int C, int E, int f) {
    const long long EC = (long long)E * C, Ef = (long long)E * f;
    gemm(false, false, ST, f, C, real(1), dy, EC, C, w2, f, (long long)C * f, real(0), da, Ef, f, E);
    gemm(true, false, C, f, ST, real(1), dy, EC, C, a, Ef, f, real(1), dw2, f, (long long)C * f, E);
    // dP = dA * gelu'(P); in float with the vectorized gelu' of fast/gelu.h
    if constexpr (std::is_same_v<real, float>) {
        #pragma omp parallel for simd
        for (size_t i = 0; i < (size_t)ST * E * f; i++) dp[i] = da[i] * fast::gelu_grad(p[i]);
    } else {
        #pragma omp parallel for
        for (size_t i = 0; i < (size_t)ST * E * f; i++) dp[i] = da[i] * ::gelu_grad(p[i]);
    }
    gemm(true, false, f, C, ST, real(1), dp, Ef, f, u, EC, C, real(1), dw1, C, (long long)f * C, E);
    gemm(false, false, ST, C, f, real(1), dp, Ef, f, w1, C, (long long)f * C, real(0), du, EC, C, E);
}

// Merge backward, per group: dM (G,E) += X (G,C) dU^T (C,E);  dX (G,C) += M (G,E) dU (E,C).
template <typename real>
void mot_merge_backward(real* dinp,        // (B,T,C)
                        real* dm,          // (B,T,E)
                        const real* du,    // (S,T,E,C)
                        const real* inp,   // (B,T,C)
                        const real* m,     // (B,T,E)
                        int B, int T, int C, int E, int G) {
    const int ST = B / G * T;
    const long long xj = (long long)ST * C, mj = (long long)ST * E, EC = (long long)E * C;
    gemm(false, true, G, E, C, real(1), inp, xj, C, du, C, EC, real(1), dm, mj, E, ST);
    gemm(false, false, G, C, E, real(1), m, mj, E, du, C, EC, real(1), dinp, xj, C, ST);
}

// Softmax over the group, then the controller:
//   dZ[j,e] = M[j,e] (dM[j,e] - sum_j' M[j',e] dM[j',e]) / tau;  dX += dZ wc;  dwc += dZ^T X
template <typename real>
void mot_controller_backward(real* dinp,        // (B,T,C)
                             real* dwc,         // (E,C)
                             real* dz,          // (B,T,E) overwritten
                             const real* dm,    // (B,T,E)
                             const real* m,     // (B,T,E)
                             const real* inp,   // (B,T,C)
                             const real* wc,    // (E,C)
                             int B, int T, int C, int E, int G, real tau) {
    const int ST = B / G * T;
    const size_t mj = (size_t)ST * E;
    const real inv_tau = real(1) / tau;
    #pragma omp parallel
    {
        std::vector<real> dot(E);
        #pragma omp for
        for (int g = 0; g < ST; g++) {
            const size_t base = (size_t)g * E;
            std::fill(dot.begin(), dot.end(), real(0));
            for (int j = 0; j < G; j++)
                #pragma omp simd
                for (int e = 0; e < E; e++) dot[e] += m[base + j * mj + e] * dm[base + j * mj + e];
            for (int j = 0; j < G; j++)
                #pragma omp simd
                for (int e = 0; e < E; e++) {
                    size_t i = base + j * mj + e;
                    dz[i] = m[i] * (dm[i] - dot[e]) * inv_tau;
                }
        }
    }
    matmul_backward(dinp, dwc, (real*)nullptr, dz, inp, wc, B, T, C, E);
}

// Backward: the per-group products of cpu/mot.h's backward, each batched the
// same way as the forward's. Merge and emit both add into dM before the
// softmax backward.
template <typename real>
void mot_backward(real* dinp,        // (B,T,C)
                  real* dwc,         // (E,C)
                  real* dw1,         // (E,f,C)
                  real* dw2,         // (E,C,f)
                  real* dz,          // (B,T,E) scratch
                  real* dm,          // (B,T,E) scratch
                  real* du,          // (S,T,E,C) scratch
                  real* dp,          // (S,T,E,f) scratch
                  real* da,          // (S,T,E,f) scratch
                  real* dy,          // (S,T,E,C) scratch
                  const real* dout,  // (B,T,C)
                  const real* inp,   // (B,T,C)
                  const real* m,     // (B,T,E)
                  const real* u,     // (S,T,E,C)
                  const real* p,     // (S,T,E,f)
                  const real* a,     // (S,T,E,f)
                  const real* y,     // (S,T,E,C)
                  const real* wc,    // (E,C)
                  const real* w1,    // (E,f,C)
                  const real* w2,    // (E,C,f)
                  int B, int T, int C, int E, int G, int f, real tau) {
    mot_emit_backward(dy, dm, dout, m, y, B, T, C, E, G);
    mot_experts_backward(du, dp, da, dw1, dw2, dy, u, p, a, w1, w2, B / G * T, C, E, f);
    mot_merge_backward(dinp, dm, du, inp, m, B, T, C, E, G);
    mot_controller_backward(dinp, dwc, dz, dm, m, inp, wc, B, T, C, E, G, tau);
}

}  // namespace fast
