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
// loops; its products go through gemm() and gelu_forward() of cpu/, which in
// float run the fast kernels (cpu/select.h). Training calls it through
// mot_forward / mot_backward in float only.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <type_traits>

#include "../gelu.h"
#include "../matmul.h"
#include "gelu.h"

namespace fast {

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
    const int ST = B / G * T;           // number of groups
    const long long xj = (long long)ST * C;  // stride between group members in (B,T,C)
    const long long mj = (long long)ST * E;  // ... and in (B,T,E)

    // Z = X wc^T for all rows at once
    ::matmul_forward(z, inp, wc, (const real*)nullptr, B, T, C, E);

    // M = softmax over the group members j of Z / tau, per group g and expert e
    #pragma omp parallel for collapse(2)
    for (int g = 0; g < ST; g++)
        for (int e = 0; e < E; e++) {
            const real* zg = z + (size_t)g * E + e;
            real* mg = m + (size_t)g * E + e;
            real maxv = -INFINITY;
            for (int j = 0; j < G; j++) maxv = std::max(maxv, zg[j * mj] / tau);
            real sum = 0;
            for (int j = 0; j < G; j++) {
                mg[j * mj] = std::exp(zg[j * mj] / tau - maxv);
                sum += mg[j * mj];
            }
            for (int j = 0; j < G; j++) mg[j * mj] /= sum;
            if (discrete) {  // one-hot at the argmax of Z over the group; ties: lowest j
                int best = 0;
                for (int j = 1; j < G; j++)
                    if (zg[j * mj] > zg[best * mj]) best = j;
                for (int j = 0; j < G; j++) mg[j * mj] = j == best ? real(1) : real(0);
            }
        }

    // merge, per group: U (E,C) = M^T (E,G) X (G,C)
    ::gemm(true, false, E, C, G, real(1), m, mj, E, inp, xj, C, real(0), u, C, (long long)E * C, ST);

    // experts, per expert e over all groups: P[:,e] (ST,f) = U[:,e] (ST,C) w1[e]^T (C,f)
    ::gemm(false, true, ST, f, C, real(1), u, (long long)E * C, C, w1, C, (long long)f * C,
           real(0), p, (long long)E * f, f, E);
    ::gelu_forward(a, p, (size_t)ST * E * f);
    // Y[:,e] (ST,C) = A[:,e] (ST,f) w2[e]^T (f,C)
    ::gemm(false, true, ST, C, f, real(1), a, (long long)E * f, f, w2, f, (long long)C * f,
           real(0), y, (long long)E * C, C, E);

    // emit, per group: O (G,C) = M (G,E) Y (E,C)
    ::gemm(false, false, G, C, E, real(1), m, mj, E, y, C, (long long)E * C, real(0), out, xj, C, ST);
}

// Backward: the per-group products of cpu/mot.h's backward, each batched the
// same way as the forward's.
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
    const int ST = B / G * T;
    const long long xj = (long long)ST * C, mj = (long long)ST * E;
    const long long EC = (long long)E * C, Ef = (long long)E * f;

    // emit backward: dY (E,C) = M^T (E,G) dO (G,C);  dM (G,E) = dO (G,C) Y^T (C,E)
    ::gemm(true, false, E, C, G, real(1), m, mj, E, dout, xj, C, real(0), dy, C, EC, ST);
    ::gemm(false, true, G, E, C, real(1), dout, xj, C, y, C, EC, real(0), dm, mj, E, ST);

    // experts backward, batched over experts e, each over all ST groups
    // dA[:,e] (ST,f) = dY[:,e] (ST,C) w2[e] (C,f)
    ::gemm(false, false, ST, f, C, real(1), dy, EC, C, w2, f, (long long)C * f, real(0), da, Ef, f, E);
    // dw2[e] (C,f) += dY[:,e]^T (C,ST) A[:,e] (ST,f)
    ::gemm(true, false, C, f, ST, real(1), dy, EC, C, a, Ef, f, real(1), dw2, f, (long long)C * f, E);
    // dP = dA * gelu'(P); in float with the vectorized gelu' of fast/gelu.h
    if constexpr (std::is_same_v<real, float>) {
        #pragma omp parallel for simd
        for (size_t i = 0; i < (size_t)ST * E * f; i++) dp[i] = da[i] * fast::gelu_grad(p[i]);
    } else {
        #pragma omp parallel for
        for (size_t i = 0; i < (size_t)ST * E * f; i++) dp[i] = da[i] * ::gelu_grad(p[i]);
    }
    // dw1[e] (f,C) += dP[:,e]^T (f,ST) U[:,e] (ST,C)
    ::gemm(true, false, f, C, ST, real(1), dp, Ef, f, u, EC, C, real(1), dw1, C, (long long)f * C, E);
    // dU[:,e] (ST,C) = dP[:,e] (ST,f) w1[e] (f,C)
    ::gemm(false, false, ST, C, f, real(1), dp, Ef, f, w1, C, (long long)f * C, real(0), du, EC, C, E);

    // merge backward, per group: dM (G,E) += X (G,C) dU^T (C,E);  dX (G,C) += M (G,E) dU (E,C)
    ::gemm(false, true, G, E, C, real(1), inp, xj, C, du, C, EC, real(1), dm, mj, E, ST);
    ::gemm(false, false, G, C, E, real(1), m, mj, E, du, C, EC, real(1), dinp, xj, C, ST);

    // softmax over the group: dZ[j,e] = M[j,e] (dM[j,e] - sum_j' M[j',e] dM[j',e]) / tau
    #pragma omp parallel for collapse(2)
    for (int g = 0; g < ST; g++)
        for (int e = 0; e < E; e++) {
            size_t base = (size_t)g * E + e;
            real dot = 0;
            for (int j = 0; j < G; j++) dot += m[base + j * mj] * dm[base + j * mj];
            for (int j = 0; j < G; j++)
                dz[base + j * mj] = m[base + j * mj] * (dm[base + j * mj] - dot) / tau;
        }

    // controller backward: dX += dZ wc;  dwc += dZ^T X
    ::matmul_backward(dinp, dwc, (real*)nullptr, dz, inp, wc, B, T, C, E);
}

}  // namespace fast
