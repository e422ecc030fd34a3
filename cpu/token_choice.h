// TOKEN_CHOICE feed-forward layer (docs/design.md section 3.3): a Switch-style
// sparse mixture of experts, the paper's baseline and the target of
// transition tuning from MoT. Written as plain loops over the tokens.
//
// The same tensors as MOT: wc (E, C) read as the router, w1 (E, f, C),
// w2 (E, C, f); the threshold routers add a bias bc (E). Over the N = B*T
// tokens h_n of a micro-batch, the router (TcRouter, common/ffn_kinds.h) gives
// each token's gates g_n and its choices:
//   softmax:       z_n = h_n wc^T;  g_n = softmax(z_n) over the E experts;
//                  e_{n,r} = the expert with the r-th largest g_n (r = 1..k)
//   threshold:     z_n = h_n wc^T + bc;  g_n[e] = sigmoid(z_n[e] / tau_r);
//                  e_{n,r} = the expert with the r-th largest z_n, a choice
//                  only when z_n[e] >= 0 (expert e fires for the tokens whose
//                  logit clears its threshold -bc_e)
//   threshold-one: as threshold, gate 1
//   (ties: lower index). A threshold router imitates MoT at a low
//   temperature, where each expert takes about the one token of a group of G
//   with the largest logit for it: calibrated so that each expert fires for
//   1/G of the tokens (train/transition.h), it keeps most of what MoT computed.
//   cap = min(N, ceil(cf * k * N / E))  (common/ffn_kinds.h; decoding: N, nothing dropped)
//   dispatch in order r = 1..k, and within r n = 0..N-1: token n goes to
//     expert e_{n,r} if it holds fewer than cap tokens, else the choice is dropped
//   out_n = sum over the dispatched choices r of g_n[e] gelu(h_n w1[e]^T) w2[e]^T
//   aux = E * sum_e f_e P_e,  f_e = #{n : e_{n,1} = e} / N,  P_e = mean_n g_n[e]
//   (softmax router; a threshold router's aux is 0: its balance is set by bc)
// A dropped choice adds nothing: the token goes on through the residual. A
// choice a threshold router does not make has route -1 and slot -1.
//
// Each expert's tokens are gathered into rows of its buffer (E, cap, .): xin,
// pre-activations, gelu, outputs. Rows no token took stay zero.
// cpu/fast/token_choice.h computes the same with each product one batched
// GEMM over the experts, sharing the routing and the gate functions below;
// training runs that (cpu/kernels.h).
//
// Backward, with the routing held fixed (the choices are constants):
//   dyout[e,s] = g_n[e] dout_n               dg_n[e] += dout_n . yout[e,s]
//   dact = dyout w2[e];  dpre = dact * gelu'(pre)
//   dw2[e] += dyout^T act;  dw1[e] += dpre^T xin;  dxin = dpre w1[e]
//   dh_n += dxin[e,s]                         (for every dispatched (n, r) -> (e, s))
//   dg_n[e] += daux * E f_e / N               (softmax: aux through P_e only)
//   softmax:       dz_n = g_n * (dg_n - sum_e g_n[e] dg_n[e])
//   threshold:     dz_n = dg_n * g_n (1 - g_n) / tau_r
//   threshold-one: dz_n = 0
//   dwc += dz^T h;  dbc += sum_n dz_n;  dh += dz wc
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>

#include "../common/layout.h"
#include "gelu.h"
#include "matmul.h"

// From the router logits, the gates, the top-k choices, the dispatch with
// capacity, and the load-balancing loss: everything the forward decides
// before the experts run.
template <typename real>
void token_choice_route(real* probs,    // (N,E) gates
                        int* route,     // (N,k) expert of the r-th choice; -1 none
                        int* slot,      // (N,k) its row in the expert's buffer; -1 dropped or none
                        real* load,     // (E) tokens each expert took
                        real* first,    // (E) f_e: share of tokens whose first choice is e
                        real* aux,      // (1) load-balancing loss
                        const real* z,  // (N,E) router logits (threshold: shifted by bc)
                        int N, int E, int k, int cap, TcRouter rt) {
    const bool soft = rt.kind == ROUTER_SOFTMAX;
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const real* zn = z + (size_t)n * E;
        real* pn = probs + (size_t)n * E;
        if (soft) {
            real maxv = zn[0];
            for (int e = 1; e < E; e++) maxv = std::max(maxv, zn[e]);
            real sum = 0;
            for (int e = 0; e < E; e++) sum += (pn[e] = std::exp(zn[e] - maxv));
            for (int e = 0; e < E; e++) pn[e] /= sum;
        } else {
            for (int e = 0; e < E; e++)
                pn[e] = rt.kind == ROUTER_THRESHOLD ? real(1) / (real(1) + std::exp(-zn[e] / real(rt.tau)))
                                                    : real(zn[e] >= 0);
        }
        // the k largest gates (threshold: logits), in order; ties go to the lower index
        const real* key = soft ? pn : zn;
        for (int r = 0; r < k; r++) {
            int best = -1;
            for (int e = 0; e < E; e++) {
                bool taken = false;
                for (int q = 0; q < r; q++) taken |= route[(size_t)n * k + q] == e;
                if (!taken && (best < 0 || key[e] > key[best])) best = e;
            }
            if (!soft && zn[best] < 0) best = -1;  // below the threshold: no choice (nor any later)
            route[(size_t)n * k + r] = best;
        }
    }
    // dispatch: choice rank first, then token order, each expert up to cap tokens
    for (int e = 0; e < E; e++) load[e] = 0;
    for (int r = 0; r < k; r++)
        for (int n = 0; n < N; n++) {
            int e = route[(size_t)n * k + r];
            bool fits = e >= 0 && load[e] < cap;
            slot[(size_t)n * k + r] = fits ? (int)load[e] : -1;
            if (fits) load[e] += 1;
        }
    // aux = E sum_e f_e P_e, f_e over the first choices (dropped or not)
    real a = 0;
    for (int e = 0; e < E; e++) {
        real count = 0, mass = 0;
        for (int n = 0; n < N; n++) {
            count += route[(size_t)n * k] == e;
            mass += probs[(size_t)n * E + e];
        }
        first[e] = count / N;
        a += first[e] * (mass / N);
    }
    aux[0] = soft ? E * a : real(0);
}

// The gradient of the objective by the gates starts with the load-balancing
// term (softmax router: aux through P_e only; threshold: none).
template <typename real>
void token_choice_dgate_init(real* dprobs,       // (N,E)
                             const real* first,  // (E)
                             const real* daux,   // (1)
                             int N, int E, TcRouter rt) {
    for (int n = 0; n < N; n++)
        for (int e = 0; e < E; e++)
            dprobs[(size_t)n * E + e] = rt.kind == ROUTER_SOFTMAX ? daux[0] * E * first[e] / N : real(0);
}

// From the gates' gradient to the logits'.
template <typename real>
void token_choice_gate_backward(real* dz,             // (N,E)
                                const real* dprobs,   // (N,E)
                                const real* probs,    // (N,E)
                                int N, int E, TcRouter rt) {
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const real* pn = probs + (size_t)n * E;
        const real* dpn = dprobs + (size_t)n * E;
        real* dzn = dz + (size_t)n * E;
        if (rt.kind == ROUTER_SOFTMAX) {
            real dot = 0;
            for (int e = 0; e < E; e++) dot += pn[e] * dpn[e];
            for (int e = 0; e < E; e++) dzn[e] = pn[e] * (dpn[e] - dot);
        } else if (rt.kind == ROUTER_THRESHOLD) {
            for (int e = 0; e < E; e++) dzn[e] = dpn[e] * pn[e] * (1 - pn[e]) / real(rt.tau);
        } else {
            for (int e = 0; e < E; e++) dzn[e] = 0;
        }
    }
}

template <typename real>
void token_choice_forward(real* out,        // (N,C)
                          real* z,          // (N,E) router logits
                          real* probs,      // (N,E) gates
                          int* route,       // (N,k) expert of the r-th choice; -1 none
                          int* slot,        // (N,k) its row in the expert's buffer; -1 dropped or none
                          real* load,       // (E) tokens each expert took
                          real* first,      // (E) f_e: share of first choices
                          real* aux,        // (1) load-balancing loss
                          real* xin,        // (E,cap,C) each expert's tokens
                          real* pre,        // (E,cap,f)
                          real* act,        // (E,cap,f)
                          real* yout,       // (E,cap,C)
                          const real* inp,  // (N,C)
                          const real* wc,   // (E,C)
                          const real* w1,   // (E,f,C)
                          const real* w2,   // (E,C,f)
                          int N, int C, int E, int f, int k, int cap,
                          const real* bc = nullptr,  // (E) threshold routers
                          TcRouter rt = {}) {
    // the router's logits: z = inp wc^T (threshold routers: + bc)
    matmul_forward(z, inp, wc, rt.kind == ROUTER_SOFTMAX ? (const real*)nullptr : bc, N, 1, C, E);
    token_choice_route(probs, route, slot, load, first, aux, z, N, E, k, cap, rt);
    // gather each expert's tokens; rows no token took stay zero
    std::fill(xin, xin + (size_t)E * cap * C, real(0));
    for (int n = 0; n < N; n++)
        for (int r = 0; r < k; r++) {
            int s = slot[(size_t)n * k + r], e = route[(size_t)n * k + r];
            if (s < 0) continue;
            for (int c = 0; c < C; c++) xin[((size_t)e * cap + s) * C + c] = inp[(size_t)n * C + c];
        }
    // experts on their rows: pre = xin w1[e]^T, act = gelu(pre), yout = act w2[e]^T
    #pragma omp parallel for collapse(2)
    for (int e = 0; e < E; e++)
        for (int s = 0; s < cap; s++) {
            const real* x = xin + ((size_t)e * cap + s) * C;
            real* pr = pre + ((size_t)e * cap + s) * f;
            real* ac = act + ((size_t)e * cap + s) * f;
            real* yo = yout + ((size_t)e * cap + s) * C;
            for (int i = 0; i < f; i++) {
                real sum = 0;
                for (int c = 0; c < C; c++) sum += x[c] * w1[((size_t)e * f + i) * C + c];
                pr[i] = sum;
                ac[i] = gelu(sum);
            }
            for (int c = 0; c < C; c++) {
                real sum = 0;
                for (int i = 0; i < f; i++) sum += ac[i] * w2[((size_t)e * C + c) * f + i];
                yo[c] = sum;
            }
        }
    // combine: out_n = sum over the dispatched choices of g_n[e] yout[e,s]
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        real* o = out + (size_t)n * C;
        for (int c = 0; c < C; c++) o[c] = 0;
        for (int r = 0; r < k; r++) {
            int s = slot[(size_t)n * k + r], e = route[(size_t)n * k + r];
            if (s < 0) continue;
            real g = probs[(size_t)n * E + e];
            for (int c = 0; c < C; c++) o[c] += g * yout[((size_t)e * cap + s) * C + c];
        }
    }
}

template <typename real>
void token_choice_backward(real* dinp,         // (N,C)
                           real* dwc,          // (E,C)
                           real* dw1,          // (E,f,C)
                           real* dw2,          // (E,C,f)
                           real* dz,           // (N,E) scratch
                           real* dprobs,       // (N,E) scratch
                           real* dxin,         // (E,cap,C) scratch
                           real* dpre,         // (E,cap,f) scratch
                           real* dact,         // (E,cap,f) scratch
                           real* dyout,        // (E,cap,C) scratch
                           const real* daux,   // (1) gradient of the objective by aux
                           const real* dout,   // (N,C)
                           const real* inp,    // (N,C)
                           const real* probs,  // (N,E)
                           const int* route,   // (N,k)
                           const int* slot,    // (N,k)
                           const real* first,  // (E)
                           const real* xin,    // (E,cap,C)
                           const real* pre,    // (E,cap,f)
                           const real* act,    // (E,cap,f)
                           const real* yout,   // (E,cap,C)
                           const real* wc,     // (E,C)
                           const real* w1,     // (E,f,C)
                           const real* w2,     // (E,C,f)
                           int N, int C, int E, int f, int k, int cap,
                           real* dbc = nullptr,  // (E) threshold routers
                           TcRouter rt = {}) {
    token_choice_dgate_init(dprobs, first, daux, N, E, rt);
    // combine backward: dyout rows of the dispatched choices, dp from each
    std::fill(dyout, dyout + (size_t)E * cap * C, real(0));
    for (int n = 0; n < N; n++)
        for (int r = 0; r < k; r++) {
            int s = slot[(size_t)n * k + r], e = route[(size_t)n * k + r];
            if (s < 0) continue;
            real g = probs[(size_t)n * E + e], dot = 0;
            for (int c = 0; c < C; c++) {
                dyout[((size_t)e * cap + s) * C + c] = g * dout[(size_t)n * C + c];
                dot += dout[(size_t)n * C + c] * yout[((size_t)e * cap + s) * C + c];
            }
            dprobs[(size_t)n * E + e] += dot;
        }
    // experts backward, row by row; unused rows have dyout 0 and add nothing
    #pragma omp parallel for
    for (int e = 0; e < E; e++)
        for (int s = 0; s < cap; s++) {
            size_t row = (size_t)e * cap + s;
            for (int i = 0; i < f; i++) {
                real sum = 0;
                for (int c = 0; c < C; c++) sum += dyout[row * C + c] * w2[((size_t)e * C + c) * f + i];
                dact[row * f + i] = sum;
                dpre[row * f + i] = sum * gelu_grad(pre[row * f + i]);
            }
            for (int c = 0; c < C; c++) {
                real sum = 0;
                for (int i = 0; i < f; i++) sum += dpre[row * f + i] * w1[((size_t)e * f + i) * C + c];
                dxin[row * C + c] = sum;
            }
            for (int c = 0; c < C; c++)
                for (int i = 0; i < f; i++) {
                    dw2[((size_t)e * C + c) * f + i] += dyout[row * C + c] * act[row * f + i];
                    dw1[((size_t)e * f + i) * C + c] += dpre[row * f + i] * xin[row * C + c];
                }
        }
    // gather backward: each dispatched choice hands its row's gradient back
    for (int n = 0; n < N; n++)
        for (int r = 0; r < k; r++) {
            int s = slot[(size_t)n * k + r], e = route[(size_t)n * k + r];
            if (s < 0) continue;
            for (int c = 0; c < C; c++) dinp[(size_t)n * C + c] += dxin[((size_t)e * cap + s) * C + c];
        }
    // the gates, then the router
    token_choice_gate_backward(dz, dprobs, probs, N, E, rt);
    matmul_backward(dinp, dwc, rt.kind == ROUTER_SOFTMAX ? (real*)nullptr : dbc, dz, inp, wc, N, 1, C, E);
}

// Threshold routers held at a firing rate (--router-balance): instead of
// its gradient, each expert's bias follows a controller on the share of
// tokens it fires for. Over a step's tokens (all its micro-batches and
// ranks), fires[e] counts the tokens n with z_n[e] >= 0 (the shifted logit
// clears the threshold; counted before the top-k and the capacity, so the
// count says what the router asks for, not what the buffers could hold).
template <typename real>
void token_choice_count_fires(double* fires,  // (E) added to
                              const real* z,  // (N,E) router logits, shifted by bc
                              int N, int E) {
    for (int n = 0; n < N; n++)
        for (int e = 0; e < E; e++) fires[e] += z[(size_t)n * E + e] >= 0;
}

// The controller: r_e = fires[e] / tokens, bc_e -= eta (r_e - target). An
// expert firing too often raises its threshold (-bc_e), one firing too
// rarely lowers it; at the target bc stays.
template <typename real>
void router_balance_update(real* bc,             // (E) updated
                           const double* fires,  // (E) tokens each expert fired for
                           double tokens, double target, double eta, int E) {
    for (int e = 0; e < E; e++) bc[e] = real((double)bc[e] - eta * (fires[e] / tokens - target));
}

// TOKEN_CHOICE as a block's feed-forward layer (common/ffn_kinds.h,
// TokenChoiceFfn): the layer above, in the form of the kernel set Kernels
// (kernels.h), on the block's tensors. The gradient of the objective by this
// layer's aux loss arrives in da.aux.
// Under expert parallelism (c.expert_shards > 1) the layer is
// token_choice_ep_forward / token_choice_ep_backward of the kernel set, over
// mode.experts.

template <typename Kernels, typename real>
void ffn_kind_forward(TokenChoiceFfn, real* out, const real* inp, const LayerWeights<real>& w, LayerActs<real>& a,
                      int B, int T, const Config& c, const FfnMode& mode) {
    int N = B * T, cap = TokenChoiceFfn::capacity(c, N, mode.decoding);
    if (c.expert_shards > 1) {
        need_expert_exchange(c, mode, "token-choice");
        Kernels::token_choice_ep_forward(out, a.z, a.m, a.route, a.slot, a.load, a.first, a.aux, a.u, a.ul, a.p, a.a,
                                         a.yl, a.y, inp, w.wc, w.w1, w.w2, N, c.C, c.E, c.f, c.tc.topk, cap, w.bc,
                                         tc_router(c), mode.experts);
        return;
    }
    Kernels::token_choice_forward(out, a.z, a.m, a.route, a.slot, a.load, a.first, a.aux, a.u, a.p, a.a, a.y, inp,
                                  w.wc, w.w1, w.w2, N, c.C, c.E, c.f, c.tc.topk, cap, w.bc, tc_router(c));
}

template <typename Kernels, typename real>
void ffn_kind_backward(TokenChoiceFfn, real* dinp, LayerWeights<real>& dw, LayerActs<real>& da, const real* dout,
                       const real* inp, const LayerWeights<real>& w, const LayerActs<real>& a, int B, int T,
                       const Config& c, const FfnMode& mode) {
    int N = B * T, cap = TokenChoiceFfn::capacity(c, N, false);
    if (c.expert_shards > 1) {
        need_expert_exchange(c, mode, "token-choice");
        Kernels::token_choice_ep_backward(dinp, dw.wc, dw.w1, dw.w2, da.z, da.m, da.u, da.ul, da.p, da.a, da.yl, da.y,
                                          da.aux, dout, inp, a.m, a.route, a.slot, a.first, a.ul, a.p, a.a, a.y, w.wc,
                                          w.w1, w.w2, N, c.C, c.E, c.f, c.tc.topk, cap, dw.bc, tc_router(c),
                                          mode.experts);
        return;
    }
    Kernels::token_choice_backward(dinp, dw.wc, dw.w1, dw.w2, da.z, da.m, da.u, da.p, da.a, da.y, da.aux, dout, inp,
                                   a.m, a.route, a.slot, a.first, a.u, a.p, a.a, a.y, w.wc, w.w1, w.w2, N, c.C, c.E,
                                   c.f, c.tc.topk, cap, dw.bc, tc_router(c));
}
