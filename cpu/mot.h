// Mixture of Tokens feed-forward layer (Antoniak et al., NeurIPS 2024;
// docs/design.md section 3.2), written as plain loops over the groups.
//
// Tokens are mixed across examples, never across positions, so the layer stays
// causal. With S = B/G, group (k, t) for k < S holds the G rows
// b = j*S + k (j = 0..G-1) at position t; its index g = k*T + t numbers the
// groups in (S,T) order.
//
// For one group, with inputs X (G, C), controller wc (E, C), experts
// w1 (E, f, C), w2 (E, C, f):
//   Z = X wc^T                  (G, E)  controller logits
//   M = softmax(Z / tau) over the G axis, separately for every expert
//   U = M^T X                   (E, C)  merge: one mixed token per expert
//   P[e] = U[e] w1[e]^T         (f)     expert pre-activation
//   A[e] = gelu(P[e]);  Y[e] = A[e] w2[e]^T   (C)
//   O = M Y                     (G, C)  emit: each token takes back its share
// Discrete MoT (evaluation only, docs/design.md section 3.2): M is one-hot over the
// group at the argmax of Z, per expert, for merge and emit alike.
//
// Every expert sees exactly one token per group: no capacity, no dropping,
// no load-balancing loss. Tensors U, P, A, Y are laid out (S, T, E, .), i.e.
// group-major, expert-minor. cpu/fast/mot.h computes the same with every
// product batched over the groups or the experts; training runs that
// (cpu/kernels.h).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>

#include "../common/layout.h"
#include "gelu.h"

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
    const int S = B / G;
    #pragma omp parallel for collapse(2)
    for (int k = 0; k < S; k++)
        for (int t = 0; t < T; t++) {
            const size_t g = (size_t)k * T + t;
            // member j of the group is row (j*S + k, t) of the (B,T) tensors
            auto row = [&](int j) { return ((size_t)j * S + k) * T + t; };
            real* ug = u + g * E * C;  // (E,C) this group's U, P, A, Y
            real* pg = p + g * E * f;  // (E,f)
            real* ag = a + g * E * f;  // (E,f)
            real* yg = y + g * E * C;  // (E,C)

            // Z = X wc^T
            for (int j = 0; j < G; j++)
                for (int e = 0; e < E; e++) {
                    real s = 0;
                    for (int c = 0; c < C; c++) s += inp[row(j) * C + c] * wc[(size_t)e * C + c];
                    z[row(j) * E + e] = s;
                }
            // M = softmax over the members j of Z / tau, for each expert
            for (int e = 0; e < E; e++) {
                real maxv = -INFINITY;
                for (int j = 0; j < G; j++) maxv = std::max(maxv, z[row(j) * E + e] / tau);
                real sum = 0;
                for (int j = 0; j < G; j++) {
                    m[row(j) * E + e] = std::exp(z[row(j) * E + e] / tau - maxv);
                    sum += m[row(j) * E + e];
                }
                for (int j = 0; j < G; j++) m[row(j) * E + e] /= sum;
                if (discrete) {  // one-hot at the argmax of Z over the group; ties: lowest j
                    int best = 0;
                    for (int j = 1; j < G; j++)
                        if (z[row(j) * E + e] > z[row(best) * E + e]) best = j;
                    for (int j = 0; j < G; j++) m[row(j) * E + e] = j == best ? real(1) : real(0);
                }
            }
            // merge: U = M^T X
            for (int e = 0; e < E; e++)
                for (int c = 0; c < C; c++) {
                    real s = 0;
                    for (int j = 0; j < G; j++) s += m[row(j) * E + e] * inp[row(j) * C + c];
                    ug[e * C + c] = s;
                }
            // experts: P[e] = U[e] w1[e]^T, A[e] = gelu(P[e]), Y[e] = A[e] w2[e]^T
            for (int e = 0; e < E; e++) {
                for (int i = 0; i < f; i++) {
                    real s = 0;
                    for (int c = 0; c < C; c++) s += ug[e * C + c] * w1[((size_t)e * f + i) * C + c];
                    pg[e * f + i] = s;
                    ag[e * f + i] = gelu(s);
                }
                for (int c = 0; c < C; c++) {
                    real s = 0;
                    for (int i = 0; i < f; i++) s += ag[e * f + i] * w2[((size_t)e * C + c) * f + i];
                    yg[e * C + c] = s;
                }
            }
            // emit: O = M Y
            for (int j = 0; j < G; j++)
                for (int c = 0; c < C; c++) {
                    real s = 0;
                    for (int e = 0; e < E; e++) s += m[row(j) * E + e] * yg[e * C + c];
                    out[row(j) * C + c] = s;
                }
        }
}

// Backward, per group, given dO (G, C):
//   dY = M^T dO                    dM  = dO Y^T
//   dA[e] = dY[e] w2[e]            dP[e] = dA[e] * gelu'(P[e])
//   dw2[e] += dY[e]^T A[e]         dw1[e] += dP[e]^T U[e]
//   dU[e] = dP[e] w1[e]
//   dM += X dU^T                   dX += M dU
//   dZ[:,e] = M[:,e] (dM[:,e] - sum_j M[j,e] dM[j,e]) / tau   (softmax over the group)
//   dwc += dZ^T X                  dX += dZ wc
// Merge and emit both read M, so both add into dM before the softmax backward.
// The loop over groups computes each group's own gradients (dinp rows and
// the scratch); the parameter gradients, which sum over all groups, follow
// in a second loop, parallel over experts.
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
    const int S = B / G;
    #pragma omp parallel for collapse(2)
    for (int k = 0; k < S; k++)
        for (int t = 0; t < T; t++) {
            const size_t g = (size_t)k * T + t;
            auto row = [&](int j) { return ((size_t)j * S + k) * T + t; };
            const real* pg = p + g * E * f;  // (E,f)
            const real* yg = y + g * E * C;  // (E,C)
            real* dyg = dy + g * E * C;      // (E,C)
            real* dag = da + g * E * f;      // (E,f)
            real* dpg = dp + g * E * f;      // (E,f)
            real* dug = du + g * E * C;      // (E,C)

            // emit backward: dY = M^T dO,  dM = dO Y^T
            for (int e = 0; e < E; e++)
                for (int c = 0; c < C; c++) {
                    real s = 0;
                    for (int j = 0; j < G; j++) s += m[row(j) * E + e] * dout[row(j) * C + c];
                    dyg[e * C + c] = s;
                }
            for (int j = 0; j < G; j++)
                for (int e = 0; e < E; e++) {
                    real s = 0;
                    for (int c = 0; c < C; c++) s += dout[row(j) * C + c] * yg[e * C + c];
                    dm[row(j) * E + e] = s;
                }
            // experts backward: dA[e] = dY[e] w2[e], dP[e] = dA[e] gelu'(P[e]), dU[e] = dP[e] w1[e]
            for (int e = 0; e < E; e++) {
                for (int i = 0; i < f; i++) {
                    real s = 0;
                    for (int c = 0; c < C; c++) s += dyg[e * C + c] * w2[((size_t)e * C + c) * f + i];
                    dag[e * f + i] = s;
                    dpg[e * f + i] = s * gelu_grad(pg[e * f + i]);
                }
                for (int c = 0; c < C; c++) {
                    real s = 0;
                    for (int i = 0; i < f; i++) s += dpg[e * f + i] * w1[((size_t)e * f + i) * C + c];
                    dug[e * C + c] = s;
                }
            }
            // merge backward: dM += X dU^T,  dX += M dU
            for (int j = 0; j < G; j++)
                for (int e = 0; e < E; e++) {
                    real s = 0;
                    for (int c = 0; c < C; c++) s += inp[row(j) * C + c] * dug[e * C + c];
                    dm[row(j) * E + e] += s;
                }
            for (int j = 0; j < G; j++)
                for (int c = 0; c < C; c++) {
                    real s = 0;
                    for (int e = 0; e < E; e++) s += m[row(j) * E + e] * dug[e * C + c];
                    dinp[row(j) * C + c] += s;
                }
            // softmax over the group: dZ[j,e] = M[j,e] (dM[j,e] - sum_j' M[j',e] dM[j',e]) / tau
            for (int e = 0; e < E; e++) {
                real dot = 0;
                for (int j = 0; j < G; j++) dot += m[row(j) * E + e] * dm[row(j) * E + e];
                for (int j = 0; j < G; j++)
                    dz[row(j) * E + e] = m[row(j) * E + e] * (dm[row(j) * E + e] - dot) / tau;
            }
            // controller backward: dX += dZ wc
            for (int j = 0; j < G; j++)
                for (int c = 0; c < C; c++) {
                    real s = 0;
                    for (int e = 0; e < E; e++) s += dz[row(j) * E + e] * wc[(size_t)e * C + c];
                    dinp[row(j) * C + c] += s;
                }
        }

    // parameter gradients: each sums over the S*T groups (dwc over the B*T rows)
    const size_t ST = (size_t)S * T, BT = (size_t)B * T;
    // dw2[e] += dY[e]^T A[e]   (C,f)
    #pragma omp parallel for collapse(2)
    for (int e = 0; e < E; e++)
        for (int c = 0; c < C; c++)
            for (int i = 0; i < f; i++) {
                real s = 0;
                for (size_t g = 0; g < ST; g++) s += dy[(g * E + e) * C + c] * a[(g * E + e) * f + i];
                dw2[((size_t)e * C + c) * f + i] += s;
            }
    // dw1[e] += dP[e]^T U[e]   (f,C)
    #pragma omp parallel for collapse(2)
    for (int e = 0; e < E; e++)
        for (int i = 0; i < f; i++)
            for (int c = 0; c < C; c++) {
                real s = 0;
                for (size_t g = 0; g < ST; g++) s += dp[(g * E + e) * f + i] * u[(g * E + e) * C + c];
                dw1[((size_t)e * f + i) * C + c] += s;
            }
    // dwc += dZ^T X            (E,C)
    #pragma omp parallel for collapse(2)
    for (int e = 0; e < E; e++)
        for (int c = 0; c < C; c++) {
            real s = 0;
            for (size_t r = 0; r < BT; r++) s += dz[r * E + e] * inp[r * C + c];
            dwc[(size_t)e * C + c] += s;
        }
}

// MOT as a block's feed-forward layer (common/ffn_kinds.h, MotFfn): the layer
// above, in the form of the kernel set Kernels (kernels.h), on the block's
// tensors.
// Under expert parallelism (c.expert_shards > 1) the layer is
// mot_ep_forward / mot_ep_backward of the kernel set, over mode.experts, or
// with the input-token exchange (c.expert_inputs) mot_ep_inputs_*.

template <typename Kernels, typename real>
void ffn_kind_forward(MotFfn, real* out, const real* inp, const LayerWeights<real>& w, LayerActs<real>& a, int B,
                      int T, const Config& c, const FfnMode& mode) {
    if (c.expert_shards > 1 && c.expert_inputs) {
        need_expert_exchange(c, mode, "MoT");
        Kernels::mot_ep_inputs_forward(out, a.z, a.m, a.u, a.p, a.a, a.y, a.xall, a.oall, inp, w.wc, w.w1, w.w2, B, T,
                                       c.C, c.E, c.mot.G, c.f, real(c.mot.tau), mode.mot_discrete, mode.experts);
        return;
    }
    if (c.expert_shards > 1) {
        need_expert_exchange(c, mode, "MoT");
        Kernels::mot_ep_forward(out, a.z, a.m, a.u, a.ul, a.p, a.a, a.yl, a.y, a.xbuf, inp, w.wc, w.w1, w.w2, B, T,
                                c.C, c.E, c.mot.G, c.f, real(c.mot.tau), mode.mot_discrete, mode.experts);
        return;
    }
    Kernels::mot_forward(out, a.z, a.m, a.u, a.p, a.a, a.y, inp, w.wc, w.w1, w.w2, B, T, c.C, c.E, c.mot.G, c.f,
                         real(c.mot.tau), mode.mot_discrete);
}

template <typename Kernels, typename real>
void ffn_kind_backward(MotFfn, real* dinp, LayerWeights<real>& dw, LayerActs<real>& da, const real* dout,
                       const real* inp, const LayerWeights<real>& w, const LayerActs<real>& a, int B, int T,
                       const Config& c, const FfnMode& mode) {
    if (c.expert_shards > 1 && c.expert_inputs) {
        need_expert_exchange(c, mode, "MoT");
        Kernels::mot_ep_inputs_backward(dinp, dw.wc, dw.w1, dw.w2, da.z, da.m, da.u, da.p, da.a, da.y, da.xall, da.oall,
                                        dout, a.xall, a.m, a.u, a.p, a.a, a.y, w.wc, w.w1, w.w2, B, T, c.C, c.E,
                                        c.mot.G, c.f, real(c.mot.tau), mode.experts);
        return;
    }
    if (c.expert_shards > 1) {
        need_expert_exchange(c, mode, "MoT");
        Kernels::mot_ep_backward(dinp, dw.wc, dw.w1, dw.w2, da.z, da.m, da.u, da.ul, da.p, da.a, da.yl, da.y, da.xbuf,
                                 dout, inp, a.m, a.ul, a.p, a.a, a.y, w.wc, w.w1, w.w2, B, T, c.C, c.E, c.mot.G, c.f,
                                 real(c.mot.tau), mode.experts);
        return;
    }
    Kernels::mot_backward(dinp, dw.wc, dw.w1, dw.w2, da.z, da.m, da.u, da.p, da.a, da.y, dout, inp, a.m, a.u, a.p,
                          a.a, a.y, w.wc, w.w1, w.w2, B, T, c.C, c.E, c.mot.G, c.f, real(c.mot.tau));
}
