// Expert-parallel layers: Mixture of Tokens first, token choice below.
// Mixture of Tokens: the layer of mot.h in this folder with
// its experts spread over the N members of an expert group
// (common/exchange.h; README, "Expert parallelism"). Member i holds the
// El = E/N experts [i*El, (i+1)*El) of w1 and w2; the controller wc is on
// every member. Each member mixes its own groups for all E experts as one
// process does; expert e's mixed tokens travel to e's owner, which runs its
// El experts on the mixed tokens of every member at once (N*ST groups), and
// the outputs travel back:
//
//   controller, merge     U (ST,E,C) for all E experts, on every member
//   pack, all-to-all      U's experts [r*El, (r+1)*El) go to member r, which
//                         receives Ul (N,ST,El,C): member s's groups in block s
//   experts               Yl (N*ST,El,C) = this member's experts on Ul
//   all-to-all, unpack    Y (ST,E,C), what one process running every expert
//                         would have computed for this member's groups
//   emit                  O (B,T,C)
//
// Every block of the exchange has the same size, ST*El*C values: each group
// sends exactly one mixed token to every expert, so nothing is dropped and
// no member waits for a larger share. The backward pass mirrors the forward:
// dY travels to the owners, dU comes back. The owner's dw1, dw2 sum over the
// mixed tokens of all N members; dwc, like every replicated parameter's
// gradient, holds this member's groups only.
//
// Ul and Yl are group-major, expert-minor like U and Y, with N*ST groups, so
// the experts run as mot_experts of mot.h with ST' = N*ST and E' = El.
// Below the MoT layer, the same with the input-token exchange.
#pragma once
#include <algorithm>
#include <cstddef>

#include "../../common/exchange.h"
#include "mot.h"
#include "token_choice.h"

namespace fast {

// x (ST,E,D) to blocks (N,ST,El,D): block r holds experts [r*El, (r+1)*El)
// of every group.
template <typename real>
void expert_blocks_pack(real* blocks,   // (N,ST,El,D)
                        const real* x,  // (ST,E,D)
                        int ST, int E, int N, int D) {
    const size_t El = E / N, run = El * D;
    #pragma omp parallel for collapse(2)
    for (int r = 0; r < N; r++)
        for (int g = 0; g < ST; g++) {
            const real* from = x + ((size_t)g * E + r * El) * D;
            std::copy(from, from + run, blocks + ((size_t)r * ST + g) * run);
        }
}

// The inverse: blocks (N,ST,El,D) back to x (ST,E,D).
template <typename real>
void expert_blocks_unpack(real* x,             // (ST,E,D)
                          const real* blocks,  // (N,ST,El,D)
                          int ST, int E, int N, int D) {
    const size_t El = E / N, run = El * D;
    #pragma omp parallel for collapse(2)
    for (int r = 0; r < N; r++)
        for (int g = 0; g < ST; g++) {
            const real* from = blocks + ((size_t)r * ST + g) * run;
            std::copy(from, from + run, x + ((size_t)g * E + r * El) * D);
        }
}

// The owner's experts backward on the N members' blocks of ST groups, one
// block after the other: each expert's dw1, dw2 then sum the members' groups
// in member order, as one process accumulates the members' micro-batches
// (rank r's is micro-batch a*R + r), rather than in one product over all
// N*ST groups, whose order of summation differs. The same float sums make
// the bf16 emulation round the updated weights as one process does.
template <typename real>
void mot_experts_backward_blocks(real* du,         // (N*S*T,El,C) overwritten
                                 real* dp,         // (N*S*T,El,f) overwritten
                                 real* da,         // (N*S*T,El,f) overwritten
                                 real* dw1,        // (El,f,C)
                                 real* dw2,        // (El,C,f)
                                 const real* dy,   // (N*S*T,El,C)
                                 const real* u,    // (N*S*T,El,C)
                                 const real* p,    // (N*S*T,El,f)
                                 const real* a,    // (N*S*T,El,f)
                                 const real* w1,   // (El,f,C)
                                 const real* w2,   // (El,C,f)
                                 int N, int ST, int C, int El, int f) {
    const size_t UC = (size_t)ST * El * C, Uf = (size_t)ST * El * f;
    for (int s = 0; s < N; s++)
        mot_experts_backward(du + s * UC, dp + s * Uf, da + s * Uf, dw1, dw2, dy + s * UC, u + s * UC, p + s * Uf,
                             a + s * Uf, w1, w2, ST, C, El, f);
}

template <typename real>
void mot_ep_forward(real* out,        // (B,T,C)
                    real* z,          // (B,T,E) controller logits
                    real* m,          // (B,T,E) mixing weights
                    real* u,          // (S,T,E,C) this member's mixed tokens, every expert
                    real* ul,         // (N*S*T,El,C) the mixed tokens of this member's experts, from every member
                    real* p,          // (N*S*T,El,f)
                    real* a,          // (N*S*T,El,f)
                    real* yl,         // (N*S*T,El,C) this member's experts' outputs
                    real* y,          // (S,T,E,C) the outputs for this member's groups, every expert
                    real* buf,        // (S*T*E*C) scratch for the exchange
                    const real* inp,  // (B,T,C)
                    const real* wc,   // (E,C)
                    const real* w1,   // (El,f,C) this member's experts
                    const real* w2,   // (El,C,f)
                    int B, int T, int C, int E, int G, int f, real tau, bool discrete, ExpertExchange* x) {
    const int ST = B / G * T, N = x->members, El = E / N;
    const size_t block = (size_t)ST * El * C * sizeof(real);
    mot_controller(z, m, inp, wc, B, T, C, E, G, tau, discrete);
    mot_merge(u, m, inp, B, T, C, E, G);
    expert_blocks_pack(buf, u, ST, E, N, C);
    x->all_to_all(buf, ul, block);
    mot_experts(p, a, yl, ul, w1, w2, N * ST, C, El, f);
    x->all_to_all(yl, buf, block);
    expert_blocks_unpack(y, buf, ST, E, N, C);
    mot_emit(out, m, y, B, T, C, E, G);
}

// Backward; the scratch tensors are overwritten, the gradients of wc, w1
// (this member's experts) and w2 accumulate.
template <typename real>
void mot_ep_backward(real* dinp,        // (B,T,C)
                     real* dwc,         // (E,C)
                     real* dw1,         // (El,f,C)
                     real* dw2,         // (El,C,f)
                     real* dz,          // (B,T,E) scratch
                     real* dm,          // (B,T,E) scratch
                     real* du,          // (S,T,E,C) scratch
                     real* dul,         // (N*S*T,El,C) scratch
                     real* dp,          // (N*S*T,El,f) scratch
                     real* da,          // (N*S*T,El,f) scratch
                     real* dyl,         // (N*S*T,El,C) scratch
                     real* dy,          // (S,T,E,C) scratch
                     real* buf,         // (S*T*E*C) scratch
                     const real* dout,  // (B,T,C)
                     const real* inp,   // (B,T,C)
                     const real* m,     // (B,T,E)
                     const real* ul,    // (N*S*T,El,C)
                     const real* p,     // (N*S*T,El,f)
                     const real* a,     // (N*S*T,El,f)
                     const real* y,     // (S,T,E,C)
                     const real* wc,    // (E,C)
                     const real* w1,    // (El,f,C)
                     const real* w2,    // (El,C,f)
                     int B, int T, int C, int E, int G, int f, real tau, ExpertExchange* x) {
    const int ST = B / G * T, N = x->members, El = E / N;
    const size_t block = (size_t)ST * El * C * sizeof(real);
    mot_emit_backward(dy, dm, dout, m, y, B, T, C, E, G);
    expert_blocks_pack(buf, dy, ST, E, N, C);
    x->all_to_all(buf, dyl, block);
    mot_experts_backward_blocks(dul, dp, da, dw1, dw2, dyl, ul, p, a, w1, w2, N, ST, C, El, f);
    x->all_to_all(dul, buf, block);
    expert_blocks_unpack(du, buf, ST, E, N, C);
    mot_merge_backward(dinp, dm, du, inp, m, B, T, C, E, G);
    mot_controller_backward(dinp, dwc, dz, dm, m, inp, wc, B, T, C, E, G, tau);
}

// The input-token exchange: instead of the mixed tokens, every member
// gathers the group's inputs X and mixes for its own experts (the
// controller's softmax runs over a group, separately for every expert, so
// an owner needs only its experts' rows of wc); each owner's part of every
// member's output, O = sum over its experts e of M[:,e] Y[e], goes back summed:
//
//   all-gather            Xall (N,B,T,C): member s's inputs in block s
//   per member s          Z, M (B,T,El) with wc's rows [i*El, (i+1)*El);
//                         U (ST,El,C) = M^T X, this member's experts only
//   experts               Y (N*ST,El,C) on the stacked U of all members
//   per member s          Oall[s] (B,T,C) = M Y over this member's experts
//   reduce-scatter        O = the sum over owners of Oall[this member]
//
// Per layer and micro-batch 2(N-1) blocks of B*T*C against 2(N-1)/N blocks
// of S*T*E*C for the mixed tokens: fewer values whenever N*G < E. The
// backward gathers dO, runs the parts' backward per member and returns
// dX summed over the owners. Each owner's wc gradient holds its experts'
// rows over the whole group (the other rows zero), so summed over all ranks
// like every replicated gradient it is one process's.
template <typename real>
void mot_ep_inputs_forward(real* out,        // (B,T,C)
                           real* z,          // (N,B,T,El)
                           real* m,          // (N,B,T,El)
                           real* u,          // (N*S*T,El,C) this member's experts' mixed tokens, every member's groups
                           real* p,          // (N*S*T,El,f)
                           real* a,          // (N*S*T,El,f)
                           real* y,          // (N*S*T,El,C)
                           real* xall,       // (N,B,T,C)
                           real* oall,       // (N,B,T,C)
                           const real* inp,  // (B,T,C)
                           const real* wc,   // (E,C) all experts' rows
                           const real* w1,   // (El,f,C) this member's experts
                           const real* w2,   // (El,C,f)
                           int B, int T, int C, int E, int G, int f, real tau, bool discrete, ExpertExchange* x) {
    const int N = x->members, El = E / N, ST = B / G * T;
    const size_t BTC = (size_t)B * T * C, BTE = (size_t)B * T * El, UC = (size_t)ST * El * C;
    const real* wci = wc + (size_t)x->index * El * C;
    x->all_gather(inp, xall, BTC * sizeof(real));
    for (int s = 0; s < N; s++) {
        mot_controller(z + s * BTE, m + s * BTE, xall + s * BTC, wci, B, T, C, El, G, tau, discrete);
        mot_merge(u + s * UC, m + s * BTE, xall + s * BTC, B, T, C, El, G);
    }
    mot_experts(p, a, y, u, w1, w2, N * ST, C, El, f);
    for (int s = 0; s < N; s++) mot_emit(oall + s * BTC, m + s * BTE, y + s * UC, B, T, C, El, G);
    std::fill(out, out + BTC, real(0));
    x->reduce_scatter_add(oall, out, BTC);
}

template <typename real>
void mot_ep_inputs_backward(real* dinp,        // (B,T,C)
                            real* dwc,         // (E,C) this member's experts' rows
                            real* dw1,         // (El,f,C)
                            real* dw2,         // (El,C,f)
                            real* dz,          // (N,B,T,El) scratch
                            real* dm,          // (N,B,T,El) scratch
                            real* du,          // (N*S*T,El,C) scratch
                            real* dp,          // (N*S*T,El,f) scratch
                            real* da,          // (N*S*T,El,f) scratch
                            real* dy,          // (N*S*T,El,C) scratch
                            real* dxall,       // (N,B,T,C) scratch
                            real* doall,       // (N,B,T,C) scratch
                            const real* dout,  // (B,T,C)
                            const real* xall,  // (N,B,T,C)
                            const real* m,     // (N,B,T,El)
                            const real* u,     // (N*S*T,El,C)
                            const real* p,     // (N*S*T,El,f)
                            const real* a,     // (N*S*T,El,f)
                            const real* y,     // (N*S*T,El,C)
                            const real* wc,    // (E,C)
                            const real* w1,    // (El,f,C)
                            const real* w2,    // (El,C,f)
                            int B, int T, int C, int E, int G, int f, real tau, ExpertExchange* x) {
    const int N = x->members, El = E / N, ST = B / G * T;
    const size_t BTC = (size_t)B * T * C, BTE = (size_t)B * T * El, UC = (size_t)ST * El * C;
    const size_t wi = (size_t)x->index * El * C;
    x->all_gather(dout, doall, BTC * sizeof(real));
    for (int s = 0; s < N; s++)
        mot_emit_backward(dy + s * UC, dm + s * BTE, doall + s * BTC, m + s * BTE, y + s * UC, B, T, C, El, G);
    mot_experts_backward_blocks(du, dp, da, dw1, dw2, dy, u, p, a, w1, w2, N, ST, C, El, f);
    std::fill(dxall, dxall + N * BTC, real(0));
    for (int s = 0; s < N; s++) {
        mot_merge_backward(dxall + s * BTC, dm + s * BTE, du + s * UC, xall + s * BTC, m + s * BTE, B, T, C, El, G);
        mot_controller_backward(dxall + s * BTC, dwc + wi, dz + s * BTE, dm + s * BTE, m + s * BTE, xall + s * BTC,
                                wc + wi, B, T, C, El, G, tau);
    }
    x->reduce_scatter_add(dxall, dinp, BTC);
}

// Expert-parallel TOKEN_CHOICE: the layer of token_choice.h in this folder
// with its experts spread over the N members of an expert group as above
// (w1, w2: this member's El experts; the router wc and its bias bc on every
// member). Each member routes its own tokens over all E experts exactly as
// one process does (the capacity cap, the dispatch order, the aux loss and
// the loads are its own micro-batch's), so its buffers (E,cap,C) are the ones
// one process fills. They are expert-major: the experts [r*El, (r+1)*El) of
// member r are the contiguous block (El,cap,C), and the exchange sends the
// buffers as they are, every block El*cap*C values, the capacity's padding
// rows included:
//
//   router, gather        xin (E,cap,C) for all E experts, on every member
//   all-to-all            member r receives xl (N,El,cap,C): member s's
//                         buffers of r's experts in block s
//   experts               yl (N,El,cap,C) = this member's experts on xl,
//                         one batched GEMM over its El experts per block
//   all-to-all            yout (E,cap,C), what one process running every
//                         expert would have computed for this member's tokens
//   combine               out (N,C)
//
// The backward pass mirrors it: dyout travels to the owners, dxin comes
// back. The owner's dw1, dw2 sum over the rows of all N members; dwc and dbc,
// like every replicated parameter's gradient, hold this member's tokens only.
// Nt is this member's tokens (B*T; token_choice.h calls it N), N the
// members of the group.

template <typename real>
void token_choice_ep_forward(real* out,        // (Nt,C)
                             real* z,          // (Nt,E) router logits
                             real* probs,      // (Nt,E) gates
                             int* route,       // (Nt,k) expert of the r-th choice; -1 none
                             int* slot,        // (Nt,k) its row in the expert's buffer; -1 dropped or none
                             real* load,       // (E) tokens each expert took, of this member's
                             real* first,      // (E) f_e: share of first choices
                             real* aux,        // (1) load-balancing loss of this member's tokens
                             real* xin,        // (E,cap,C) this member's buffers, every expert
                             real* xl,         // (N,El,cap,C) the buffers of this member's experts, from every member
                             real* pre,        // (N,El,cap,f)
                             real* act,        // (N,El,cap,f)
                             real* yl,         // (N,El,cap,C) this member's experts' outputs
                             real* yout,       // (E,cap,C) the outputs for this member's buffers, every expert
                             const real* inp,  // (Nt,C)
                             const real* wc,   // (E,C)
                             const real* w1,   // (El,f,C) this member's experts
                             const real* w2,   // (El,C,f)
                             int Nt, int C, int E, int f, int k, int cap, const real* bc,  // bc (E): threshold routers
                             TcRouter rt, ExpertExchange* x) {
    const int N = x->members, El = E / N;
    const size_t block = (size_t)El * cap * C * sizeof(real), bC = (size_t)El * cap * C, bf = (size_t)El * cap * f;
    token_choice_router(z, probs, route, slot, load, first, aux, inp, wc, bc, Nt, C, E, k, cap, rt);
    token_choice_gather(xin, inp, route, slot, Nt, C, E, k, cap);
    x->all_to_all(xin, xl, block);
    // this member's El experts on the N blocks it received: block s (El,cap,.)
    // one batched product over the El experts, as one process's over the E;
    // rows no token took are zero and stay zero through the experts
    for (int s = 0; s < N; s++)
        token_choice_experts(pre + s * bf, act + s * bf, yl + s * bC, xl + s * bC, w1, w2, C, El, f, cap);
    x->all_to_all(yl, yout, block);
    token_choice_combine(out, yout, probs, route, slot, Nt, C, E, k, cap);
}

// Backward; the scratch tensors are overwritten, the gradients of wc, bc,
// w1 and w2 (this member's experts) accumulate.
template <typename real>
void token_choice_ep_backward(real* dinp,           // (Nt,C)
                              real* dwc,            // (E,C)
                              real* dw1,            // (El,f,C)
                              real* dw2,            // (El,C,f)
                              real* dz,             // (Nt,E) scratch
                              real* dprobs,         // (Nt,E) scratch
                              real* dxin,           // (E,cap,C) scratch
                              real* dxl,            // (N,El,cap,C) scratch
                              real* dpre,           // (N,El,cap,f) scratch
                              real* dact,           // (N,El,cap,f) scratch
                              real* dyl,            // (N,El,cap,C) scratch
                              real* dyout,          // (E,cap,C) scratch
                              const real* daux,     // (1)
                              const real* dout,     // (Nt,C)
                              const real* inp,      // (Nt,C)
                              const real* probs,    // (Nt,E)
                              const int* route,     // (Nt,k)
                              const int* slot,      // (Nt,k)
                              const real* first,    // (E)
                              const real* xl,       // (N,El,cap,C)
                              const real* pre,      // (N,El,cap,f)
                              const real* act,      // (N,El,cap,f)
                              const real* yout,     // (E,cap,C)
                              const real* wc,       // (E,C)
                              const real* w1,       // (El,f,C)
                              const real* w2,       // (El,C,f)
                              int Nt, int C, int E, int f, int k, int cap, real* dbc,  // dbc (E): threshold routers
                              TcRouter rt, ExpertExchange* x) {
    const int N = x->members, El = E / N;
    const size_t block = (size_t)El * cap * C * sizeof(real), bC = (size_t)El * cap * C, bf = (size_t)El * cap * f;
    ::token_choice_dgate_init(dprobs, first, daux, Nt, E, rt);
    token_choice_combine_backward(dyout, dprobs, dout, yout, probs, route, slot, Nt, C, E, k, cap);
    x->all_to_all(dyout, dyl, block);
    // dw1, dw2 accumulate over the N blocks
    for (int s = 0; s < N; s++)
        token_choice_experts_backward(dxl + s * bC, dpre + s * bf, dact + s * bf, dw1, dw2, dyl + s * bC, xl + s * bC,
                                      pre + s * bf, act + s * bf, w1, w2, C, El, f, cap);
    x->all_to_all(dxl, dxin, block);
    token_choice_gather_backward(dinp, dxin, route, slot, Nt, C, k, cap);
    token_choice_router_backward(dinp, dwc, dbc, dz, dprobs, probs, inp, wc, Nt, C, E, rt);
}

}  // namespace fast
