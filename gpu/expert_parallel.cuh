// Expert-parallel Mixture of Tokens and token choice on the GPU:
// cpu/fast/expert_parallel.h (which has the math and the block layout) with
// the parts of gpu/mot.cuh and gpu/token_choice.cuh.
// The exchange (common/exchange.h) moves device memory: NCCL between GPU
// ranks (train/device.h), device copies between the threads of a test.
// Included by gpu/mot.cuh, between the parts it runs on and the layer's
// ffn_kind functions that call it: include gpu/mot.cuh.
#pragma once
#include <cuda_runtime.h>

#include "../common/exchange.h"
#include "mot.cuh"
#include "token_choice.cuh"

namespace gpu {

// x (ST,E,D) to blocks (N,ST,El,D), or back (unpack): block r holds
// experts [r*El, (r+1)*El) of every group. One thread per value.
__global__ void expert_blocks_kernel(float* blocks,  // (N,ST,El,D)
                                     float* x,       // (ST,E,D)
                                     int ST, int E, int El, int D, bool unpack) {
    size_t n = (size_t)ST * E * D;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
        size_t d = idx % D, e = idx / D % E, g = idx / ((size_t)D * E);
        size_t r = e / El, j = e % El;
        size_t at = ((r * ST + g) * El + j) * D + d;
        if (unpack) x[idx] = blocks[at];
        else blocks[at] = x[idx];
    }
}

inline void expert_blocks_pack(float* blocks, const float* x, int ST, int E, int N, int D) {
    expert_blocks_kernel<<<grid_for((size_t)ST * E * D, 256), 256>>>(blocks, (float*)x, ST, E, E / N, D, false);
    CUDA_CHECK_LAUNCH();
}

inline void expert_blocks_unpack(float* x, const float* blocks, int ST, int E, int N, int D) {
    expert_blocks_kernel<<<grid_for((size_t)ST * E * D, 256), 256>>>((float*)blocks, x, ST, E, E / N, D, true);
    CUDA_CHECK_LAUNCH();
}

// The mixed-token exchange (cpu/fast/expert_parallel.h, mot_ep_forward).
inline void mot_ep_forward(float* out,        // (B,T,C)
                           float* z,          // (B,T,E)
                           float* m,          // (B,T,E)
                           float* u,          // (S,T,E,C)
                           float* ul,         // (N*S*T,El,C)
                           float* p,          // (N*S*T,El,f)
                           float* a,          // (N*S*T,El,f)
                           float* yl,         // (N*S*T,El,C)
                           float* y,          // (S,T,E,C)
                           float* buf,        // (S*T*E*C)
                           const float* inp,  // (B,T,C)
                           const float* wc,   // (E,C)
                           const float* w1,   // (El,f,C)
                           const float* w2,   // (El,C,f)
                           int B, int T, int C, int E, int G, int f, float tau, bool discrete, ExpertExchange* x) {
    const int ST = B / G * T, N = x->members, El = E / N;
    const size_t block = (size_t)ST * El * C * sizeof(float);
    mot_controller(z, m, inp, wc, B, T, C, E, G, tau, discrete);
    mot_merge(u, m, inp, B, T, C, E, G);
    expert_blocks_pack(buf, u, ST, E, N, C);
    x->all_to_all(buf, ul, block);
    mot_experts(p, a, yl, ul, w1, w2, N * ST, C, El, f);
    x->all_to_all(yl, buf, block);
    expert_blocks_unpack(y, buf, ST, E, N, C);
    mot_emit(out, m, y, B, T, C, E, G);
}

inline void mot_ep_backward(float* dinp,        // (B,T,C)
                            float* dwc,         // (E,C)
                            float* dw1,         // (El,f,C)
                            float* dw2,         // (El,C,f)
                            float* dz,          // (B,T,E) scratch
                            float* dm,          // (B,T,E) scratch
                            float* du,          // (S,T,E,C) scratch
                            float* dul,         // (N*S*T,El,C) scratch
                            float* dp,          // (N*S*T,El,f) scratch
                            float* da,          // (N*S*T,El,f) scratch
                            float* dyl,         // (N*S*T,El,C) scratch
                            float* dy,          // (S,T,E,C) scratch
                            float* buf,         // (S*T*E*C) scratch
                            const float* dout,  // (B,T,C)
                            const float* inp,   // (B,T,C)
                            const float* m,     // (B,T,E)
                            const float* ul,    // (N*S*T,El,C)
                            const float* p,     // (N*S*T,El,f)
                            const float* a,     // (N*S*T,El,f)
                            const float* y,     // (S,T,E,C)
                            const float* wc,    // (E,C)
                            const float* w1,    // (El,f,C)
                            const float* w2,    // (El,C,f)
                            int B, int T, int C, int E, int G, int f, float tau, ExpertExchange* x) {
    const int ST = B / G * T, N = x->members, El = E / N;
    const size_t block = (size_t)ST * El * C * sizeof(float);
    mot_emit_backward(dy, dm, dout, m, y, B, T, C, E, G);
    expert_blocks_pack(buf, dy, ST, E, N, C);
    x->all_to_all(buf, dyl, block);
    mot_experts_backward(dul, dp, da, dw1, dw2, dyl, ul, p, a, w1, w2, N * ST, C, El, f);
    x->all_to_all(dul, buf, block);
    expert_blocks_unpack(du, buf, ST, E, N, C);
    mot_merge_backward(dinp, dm, du, inp, m, B, T, C, E, G);
    mot_controller_backward(dinp, dwc, dz, dm, m, inp, wc, B, T, C, E, G, tau);
}

// The input-token exchange (cpu/fast/expert_parallel.h, mot_ep_inputs_forward).
inline void mot_ep_inputs_forward(float* out,        // (B,T,C)
                                  float* z,          // (N,B,T,El)
                                  float* m,          // (N,B,T,El)
                                  float* u,          // (N*S*T,El,C)
                                  float* p,          // (N*S*T,El,f)
                                  float* a,          // (N*S*T,El,f)
                                  float* y,          // (N*S*T,El,C)
                                  float* xall,       // (N,B,T,C)
                                  float* oall,       // (N,B,T,C)
                                  const float* inp,  // (B,T,C)
                                  const float* wc,   // (E,C)
                                  const float* w1,   // (El,f,C)
                                  const float* w2,   // (El,C,f)
                                  int B, int T, int C, int E, int G, int f, float tau, bool discrete,
                                  ExpertExchange* x) {
    const int N = x->members, El = E / N, ST = B / G * T;
    const size_t BTC = (size_t)B * T * C, BTE = (size_t)B * T * El, UC = (size_t)ST * El * C;
    const float* wci = wc + (size_t)x->index * El * C;
    x->all_gather(inp, xall, BTC * sizeof(float));
    for (int s = 0; s < N; s++) {
        mot_controller(z + s * BTE, m + s * BTE, xall + s * BTC, wci, B, T, C, El, G, tau, discrete);
        mot_merge(u + s * UC, m + s * BTE, xall + s * BTC, B, T, C, El, G);
    }
    mot_experts(p, a, y, u, w1, w2, N * ST, C, El, f);
    for (int s = 0; s < N; s++) mot_emit(oall + s * BTC, m + s * BTE, y + s * UC, B, T, C, El, G);
    CUDA_CHECK(cudaMemset(out, 0, BTC * sizeof(float)));
    x->reduce_scatter_add(oall, out, BTC);
}

inline void mot_ep_inputs_backward(float* dinp,        // (B,T,C)
                                   float* dwc,         // (E,C)
                                   float* dw1,         // (El,f,C)
                                   float* dw2,         // (El,C,f)
                                   float* dz,          // (N,B,T,El) scratch
                                   float* dm,          // (N,B,T,El) scratch
                                   float* du,          // (N*S*T,El,C) scratch
                                   float* dp,          // (N*S*T,El,f) scratch
                                   float* da,          // (N*S*T,El,f) scratch
                                   float* dy,          // (N*S*T,El,C) scratch
                                   float* dxall,       // (N,B,T,C) scratch
                                   float* doall,       // (N,B,T,C) scratch
                                   const float* dout,  // (B,T,C)
                                   const float* xall,  // (N,B,T,C)
                                   const float* m,     // (N,B,T,El)
                                   const float* u,     // (N*S*T,El,C)
                                   const float* p,     // (N*S*T,El,f)
                                   const float* a,     // (N*S*T,El,f)
                                   const float* y,     // (N*S*T,El,C)
                                   const float* wc,    // (E,C)
                                   const float* w1,    // (El,f,C)
                                   const float* w2,    // (El,C,f)
                                   int B, int T, int C, int E, int G, int f, float tau, ExpertExchange* x) {
    const int N = x->members, El = E / N, ST = B / G * T;
    const size_t BTC = (size_t)B * T * C, BTE = (size_t)B * T * El, UC = (size_t)ST * El * C;
    const size_t wi = (size_t)x->index * El * C;
    x->all_gather(dout, doall, BTC * sizeof(float));
    for (int s = 0; s < N; s++)
        mot_emit_backward(dy + s * UC, dm + s * BTE, doall + s * BTC, m + s * BTE, y + s * UC, B, T, C, El, G);
    mot_experts_backward(du, dp, da, dw1, dw2, dy, u, p, a, w1, w2, N * ST, C, El, f);
    CUDA_CHECK(cudaMemset(dxall, 0, N * BTC * sizeof(float)));
    for (int s = 0; s < N; s++) {
        mot_merge_backward(dxall + s * BTC, dm + s * BTE, du + s * UC, xall + s * BTC, m + s * BTE, B, T, C, El, G);
        mot_controller_backward(dxall + s * BTC, dwc + wi, dz + s * BTE, dm + s * BTE, m + s * BTE, xall + s * BTC,
                                wc + wi, B, T, C, El, G, tau);
    }
    x->reduce_scatter_add(dxall, dinp, BTC);
}

// Token choice's exchange (cpu/fast/expert_parallel.h, token_choice_ep_forward):
// each member routes its own Nt tokens into (E,cap,C) buffers, whose
// experts [r*El, (r+1)*El) are block r, sent to member r; the owner runs its
// El experts on the N blocks it received and sends the outputs back.
inline void token_choice_ep_forward(float* out,        // (Nt,C)
                                    float* z,          // (Nt,E) router logits
                                    float* probs,      // (Nt,E) gates
                                    int* route,        // (Nt,k) expert of the r-th choice; -1 none
                                    int* slot,         // (Nt,k) its row in the expert's buffer; -1 dropped or none
                                    float* load,       // (E) tokens each expert took, of this member's
                                    float* first,      // (E) f_e: share of first choices
                                    float* aux,        // (1) load-balancing loss of this member's tokens
                                    float* xin,        // (E,cap,C) this member's buffers, every expert
                                    float* xl,         // (N,El,cap,C) the buffers of this member's experts
                                    float* pre,        // (N,El,cap,f)
                                    float* act,        // (N,El,cap,f)
                                    float* yl,         // (N,El,cap,C) this member's experts' outputs
                                    float* yout,       // (E,cap,C) the outputs for this member's buffers
                                    const float* inp,  // (Nt,C)
                                    const float* wc,   // (E,C)
                                    const float* w1,   // (El,f,C) this member's experts
                                    const float* w2,   // (El,C,f)
                                    int Nt, int C, int E, int f, int k, int cap, const float* bc,  // bc (E)
                                    TcRouter rt, ExpertExchange* x) {
    const int N = x->members, El = E / N;
    const size_t block = (size_t)El * cap * C * sizeof(float), bC = (size_t)El * cap * C, bf = (size_t)El * cap * f;
    token_choice_router(z, probs, route, slot, load, first, aux, inp, wc, bc, Nt, C, E, k, cap, rt);
    token_choice_gather(xin, inp, route, slot, Nt, C, E, k, cap);
    x->all_to_all(xin, xl, block);
    for (int s = 0; s < N; s++)
        token_choice_experts(pre + s * bf, act + s * bf, yl + s * bC, xl + s * bC, w1, w2, C, El, f, cap);
    x->all_to_all(yl, yout, block);
    token_choice_combine(out, yout, probs, route, slot, Nt, C, E, k, cap);
}

// Backward; the scratch tensors are overwritten, the gradients of wc, bc,
// w1 and w2 (this member's experts) accumulate.
inline void token_choice_ep_backward(float* dinp,          // (Nt,C)
                                     float* dwc,           // (E,C)
                                     float* dw1,           // (El,f,C)
                                     float* dw2,           // (El,C,f)
                                     float* dz,            // (Nt,E) scratch
                                     float* dprobs,        // (Nt,E) scratch
                                     float* dxin,          // (E,cap,C) scratch
                                     float* dxl,           // (N,El,cap,C) scratch
                                     float* dpre,          // (N,El,cap,f) scratch
                                     float* dact,          // (N,El,cap,f) scratch
                                     float* dyl,           // (N,El,cap,C) scratch
                                     float* dyout,         // (E,cap,C) scratch
                                     const float* daux,    // (1)
                                     const float* dout,    // (Nt,C)
                                     const float* inp,     // (Nt,C)
                                     const float* probs,   // (Nt,E)
                                     const int* route,     // (Nt,k)
                                     const int* slot,      // (Nt,k)
                                     const float* first,   // (E)
                                     const float* xl,      // (N,El,cap,C)
                                     const float* pre,     // (N,El,cap,f)
                                     const float* act,     // (N,El,cap,f)
                                     const float* yout,    // (E,cap,C)
                                     const float* wc,      // (E,C)
                                     const float* w1,      // (El,f,C)
                                     const float* w2,      // (El,C,f)
                                     int Nt, int C, int E, int f, int k, int cap, float* dbc,  // dbc (E)
                                     TcRouter rt, ExpertExchange* x) {
    const int N = x->members, El = E / N;
    const size_t block = (size_t)El * cap * C * sizeof(float), bC = (size_t)El * cap * C, bf = (size_t)El * cap * f;
    token_choice_dgate_init(dprobs, first, daux, Nt, E, rt);
    token_choice_combine_backward(dyout, dprobs, dout, yout, probs, route, slot, Nt, C, E, k, cap);
    x->all_to_all(dyout, dyl, block);
    for (int s = 0; s < N; s++)  // dw1, dw2 accumulate over the N blocks
        token_choice_experts_backward(dxl + s * bC, dpre + s * bf, dact + s * bf, dw1, dw2, dyl + s * bC, xl + s * bC,
                                      pre + s * bf, act + s * bf, w1, w2, C, El, f, cap);
    x->all_to_all(dxl, dxin, block);
    token_choice_gather_backward(dinp, dxin, route, slot, Nt, C, k, cap);
    token_choice_router_backward(dinp, dwc, dbc, dz, dprobs, probs, inp, wc, Nt, C, E, rt);
}

}  // namespace gpu
