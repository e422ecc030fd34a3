// Expert-parallel Mixture of Tokens: the layer of mot.h in this folder with
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
#pragma once
#include <algorithm>
#include <cstddef>

#include "../../common/exchange.h"
#include "mot.h"

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
    mot_experts_backward(dul, dp, da, dw1, dw2, dyl, ul, p, a, w1, w2, N * ST, C, El, f);
    x->all_to_all(dul, buf, block);
    expert_blocks_unpack(du, buf, ST, E, N, C);
    mot_merge_backward(dinp, dm, du, inp, m, B, T, C, E, G);
    mot_controller_backward(dinp, dwc, dz, dm, m, inp, wc, B, T, C, E, G, tau);
}

}  // namespace fast
