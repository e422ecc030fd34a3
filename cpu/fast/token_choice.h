// Fast TOKEN_CHOICE layer (cpu/token_choice.h has the math and the plain
// loops): the routing is the same (token_choice_route); each expert's
// products over its gathered rows are one strided-batched GEMM over the E
// experts, each expert's buffer (cap, .) one batch item.
//
// Templated on real so the tests run it in double against the plain loops.
// Its products and its gelu are the fast ones of matmul.h and gelu.h of this
// folder: in float the blocked GEMM and the vectorized gelu, in any other type
// the loops of cpu/. Training runs it in float (FastKernels, kernels.h).
#pragma once
#include <algorithm>
#include <cstddef>

#include "../../common/layout.h"
#include "../token_choice.h"
#include "gelu.h"
#include "matmul.h"

namespace fast {

// The parts of the layer, so that they read one by one and expert
// parallelism (expert_parallel.h) can run the experts apart from the rest.
// capC = cap*C and capf = cap*f: one expert's buffer.

// The router: z = inp wc^T (threshold routers: + bc), then the gates, the
// choices and the dispatch with capacity (token_choice.h).
template <typename real>
void token_choice_router(real* z,            // (N,E)
                         real* probs,        // (N,E)
                         int* route,         // (N,k)
                         int* slot,          // (N,k)
                         real* load,         // (E)
                         real* first,        // (E)
                         real* aux,          // (1)
                         const real* inp,    // (N,C)
                         const real* wc,     // (E,C)
                         const real* bc,     // (E) threshold routers
                         int N, int C, int E, int k, int cap, TcRouter rt) {
    matmul_forward(z, inp, wc, rt.kind == ROUTER_SOFTMAX ? (const real*)nullptr : bc, N, 1, C, E);
    ::token_choice_route(probs, route, slot, load, first, aux, z, N, E, k, cap, rt);
}

// Gather: each dispatched choice copies its token into its row of its
// expert's buffer (rows are distinct); rows no token took are zero.
template <typename real>
void token_choice_gather(real* xin,          // (E,cap,C)
                         const real* inp,    // (N,C)
                         const int* route,   // (N,k)
                         const int* slot,    // (N,k)
                         int N, int C, int E, int k, int cap) {
    const size_t capC = (size_t)cap * C;
    std::fill(xin, xin + (size_t)E * capC, real(0));
    #pragma omp parallel for
    for (int n = 0; n < N; n++)
        for (int r = 0; r < k; r++) {
            int s = slot[(size_t)n * k + r], e = route[(size_t)n * k + r];
            if (s >= 0) std::copy(inp + (size_t)n * C, inp + (size_t)(n + 1) * C, xin + e * capC + (size_t)s * C);
        }
}

// Experts, batched over e: pre[e] (cap,f) = xin[e] (cap,C) w1[e]^T;
// yout[e] (cap,C) = gelu(pre[e]) w2[e]^T.
template <typename real>
void token_choice_experts(real* pre,        // (E,cap,f)
                          real* act,        // (E,cap,f)
                          real* yout,       // (E,cap,C)
                          const real* xin,  // (E,cap,C)
                          const real* w1,   // (E,f,C)
                          const real* w2,   // (E,C,f)
                          int C, int E, int f, int cap) {
    const long long capC = (long long)cap * C, capf = (long long)cap * f;
    gemm(false, true, cap, f, C, real(1), xin, C, capC, w1, C, (long long)f * C, real(0), pre, f, capf, E);
    gelu_forward(act, pre, (size_t)E * capf);
    gemm(false, true, cap, C, f, real(1), act, f, capf, w2, f, (long long)C * f, real(0), yout, C, capC, E);
}

// Combine: out_n = sum over the dispatched choices of g_n[e] yout[e,s].
template <typename real>
void token_choice_combine(real* out,          // (N,C)
                          const real* yout,   // (E,cap,C)
                          const real* probs,  // (N,E)
                          const int* route,   // (N,k)
                          const int* slot,    // (N,k)
                          int N, int C, int E, int k, int cap) {
    const size_t capC = (size_t)cap * C;
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        real* o = out + (size_t)n * C;
        std::fill(o, o + C, real(0));
        for (int r = 0; r < k; r++) {
            int s = slot[(size_t)n * k + r], e = route[(size_t)n * k + r];
            if (s < 0) continue;
            real g = probs[(size_t)n * E + e];
            const real* y = yout + e * capC + (size_t)s * C;
            for (int c = 0; c < C; c++) o[c] += g * y[c];
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
    token_choice_router(z, probs, route, slot, load, first, aux, inp, wc, bc, N, C, E, k, cap, rt);
    token_choice_gather(xin, inp, route, slot, N, C, E, k, cap);
    double taken = 0;
    for (int e = 0; e < E; e++) taken += load[e];
    if (taken * 4 < (double)E * cap) {
        // mostly empty buffers (decoding one token per sequence: cap = N; a threshold router's few
        // experts per token): each expert's products over its taken rows only, the rest zero, as
        // the batched products of zero rows would give
        const long long capC = (long long)cap * C, capf = (long long)cap * f;
        std::fill(pre, pre + (size_t)E * capf, real(0));
        std::fill(act, act + (size_t)E * capf, real(0));
        std::fill(yout, yout + (size_t)E * capC, real(0));
        for (int e = 0; e < E; e++) {
            int rows = (int)load[e];
            if (rows == 0) continue;
            gemm(false, true, rows, f, C, real(1), xin + e * capC, C, w1 + (size_t)e * f * C, C, real(0),
                 pre + e * capf, f);
            gelu_forward(act + e * capf, pre + e * capf, (size_t)rows * f);
            gemm(false, true, rows, C, f, real(1), act + e * capf, f, w2 + (size_t)e * C * f, f, real(0),
                 yout + e * capC, C);
        }
    } else {
        token_choice_experts(pre, act, yout, xin, w1, w2, C, E, f, cap);
    }
    token_choice_combine(out, yout, probs, route, slot, N, C, E, k, cap);
}

// Combine backward: dyout holds g dout in the rows of the dispatched
// choices (zero elsewhere); each choice's gate gets dout . yout.
template <typename real>
void token_choice_combine_backward(real* dyout,        // (E,cap,C) overwritten
                                   real* dprobs,       // (N,E)
                                   const real* dout,   // (N,C)
                                   const real* yout,   // (E,cap,C)
                                   const real* probs,  // (N,E)
                                   const int* route,   // (N,k)
                                   const int* slot,    // (N,k)
                                   int N, int C, int E, int k, int cap) {
    const size_t capC = (size_t)cap * C;
    std::fill(dyout, dyout + (size_t)E * capC, real(0));
    #pragma omp parallel for
    for (int n = 0; n < N; n++)
        for (int r = 0; r < k; r++) {
            int s = slot[(size_t)n * k + r], e = route[(size_t)n * k + r];
            if (s < 0) continue;
            real g = probs[(size_t)n * E + e], dot = 0;
            const real* d = dout + (size_t)n * C;
            const real* y = yout + e * capC + (size_t)s * C;
            real* dy = dyout + e * capC + (size_t)s * C;
            for (int c = 0; c < C; c++) {
                dy[c] = g * d[c];
                dot += d[c] * y[c];
            }
            dprobs[(size_t)n * E + e] += dot;
        }
}

// Experts backward, batched over e: dxin overwritten, dw1, dw2 accumulate.
template <typename real>
void token_choice_experts_backward(real* dxin,         // (E,cap,C)
                                   real* dpre,         // (E,cap,f) scratch
                                   real* dact,         // (E,cap,f) scratch
                                   real* dw1,          // (E,f,C)
                                   real* dw2,          // (E,C,f)
                                   const real* dyout,  // (E,cap,C)
                                   const real* xin,    // (E,cap,C)
                                   const real* pre,    // (E,cap,f)
                                   const real* act,    // (E,cap,f)
                                   const real* w1,     // (E,f,C)
                                   const real* w2,     // (E,C,f)
                                   int C, int E, int f, int cap) {
    const long long capC = (long long)cap * C, capf = (long long)cap * f;
    gemm(false, false, cap, f, C, real(1), dyout, C, capC, w2, f, (long long)C * f, real(0), dact, f, capf, E);
    gemm(true, false, C, f, cap, real(1), dyout, C, capC, act, f, capf, real(1), dw2, f, (long long)C * f, E);
    std::fill(dpre, dpre + (size_t)E * capf, real(0));
    gelu_backward(dpre, pre, dact, (size_t)E * capf);
    gemm(true, false, f, C, cap, real(1), dpre, f, capf, xin, C, capC, real(1), dw1, C, (long long)f * C, E);
    gemm(false, false, cap, C, f, real(1), dpre, f, capf, w1, C, (long long)f * C, real(0), dxin, C, capC, E);
}

// Gather backward: each dispatched choice hands its row's gradient back.
template <typename real>
void token_choice_gather_backward(real* dinp,         // (N,C)
                                  const real* dxin,   // (E,cap,C)
                                  const int* route,   // (N,k)
                                  const int* slot,    // (N,k)
                                  int N, int C, int k, int cap) {
    const size_t capC = (size_t)cap * C;
    #pragma omp parallel for
    for (int n = 0; n < N; n++)
        for (int r = 0; r < k; r++) {
            int s = slot[(size_t)n * k + r], e = route[(size_t)n * k + r];
            if (s < 0) continue;
            const real* dx = dxin + e * capC + (size_t)s * C;
            real* di = dinp + (size_t)n * C;
            for (int c = 0; c < C; c++) di[c] += dx[c];
        }
}

// The gates, then the router: dX += dz wc; dwc (and a threshold router's
// dbc) += from dz.
template <typename real>
void token_choice_router_backward(real* dinp,          // (N,C)
                                  real* dwc,           // (E,C)
                                  real* dbc,           // (E) threshold routers
                                  real* dz,            // (N,E) overwritten
                                  const real* dprobs,  // (N,E)
                                  const real* probs,   // (N,E)
                                  const real* inp,     // (N,C)
                                  const real* wc,      // (E,C)
                                  int N, int C, int E, TcRouter rt) {
    ::token_choice_gate_backward(dz, dprobs, probs, N, E, rt);
    matmul_backward(dinp, dwc, rt.kind == ROUTER_SOFTMAX ? (real*)nullptr : dbc, dz, inp, wc, N, 1, C, E);
}

template <typename real>
void token_choice_backward(real* dinp, real* dwc, real* dw1, real* dw2,     // (N,C), (E,C), (E,f,C), (E,C,f)
                           real* dz, real* dprobs,                          // (N,E) scratch
                           real* dxin, real* dpre, real* dact, real* dyout,  // (E,cap,.) scratch
                           const real* daux,                                // (1)
                           const real* dout, const real* inp,               // (N,C)
                           const real* probs, const int* route, const int* slot,    // (N,E), (N,k), (N,k)
                           const real* first,                               // (E)
                           const real* xin, const real* pre, const real* act, const real* yout,  // (E,cap,.)
                           const real* wc, const real* w1, const real* w2, int N, int C, int E, int f, int k,
                           int cap, real* dbc = nullptr, TcRouter rt = {}) {  // dbc (E): threshold routers
    ::token_choice_dgate_init(dprobs, first, daux, N, E, rt);
    token_choice_combine_backward(dyout, dprobs, dout, yout, probs, route, slot, N, C, E, k, cap);
    token_choice_experts_backward(dxin, dpre, dact, dw1, dw2, dyout, xin, pre, act, w1, w2, C, E, f, cap);
    token_choice_gather_backward(dinp, dxin, route, slot, N, C, k, cap);
    token_choice_router_backward(dinp, dwc, dbc, dz, dprobs, probs, inp, wc, N, C, E, rt);
}

}  // namespace fast
