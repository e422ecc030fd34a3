// TOKEN_CHOICE feed-forward layer on the GPU (cpu/token_choice.h has the
// math and the plain loops; cpu/fast/token_choice.h the batched form this
// mirrors). Routing is one thread per token (softmax and the top k); the
// dispatch, which must follow the order of docs/design.md section 3.3 (choice rank first, then
// token), is a prefix count per expert: one block per expert scans the
// choices in that order. Each expert's tokens are gathered into its rows,
// each product is one strided-batched cuBLAS call over the experts, and the
// results are combined back per token. Every sum runs in a fixed order and
// nothing adds into a float atomically, so the layer is deterministic.
#pragma once
#include <cmath>
#include <vector>

#include "../common/layout.h"
#include "gelu.cuh"
#include "matmul.cuh"

namespace gpu {

// Per token n: the gates (softmax over the E experts, or the threshold
// routers' sigmoid(z / tau) or 1 where z >= 0) and route[n, r] = the r-th
// largest gate (threshold: logit, and -1 once below 0, its slot -1 too; ties:
// lower index). One thread per token.
__global__ void tc_route_kernel(float* probs,     // (N,E)
                                int* route,       // (N,k)
                                int* slot,        // (N,k) -1 where there is no choice
                                const float* z,   // (N,E)
                                int N, int E, int k, TcRouter rt) {
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    const bool soft = rt.kind == ROUTER_SOFTMAX;
    const float* zn = z + (size_t)n * E;
    float* pn = probs + (size_t)n * E;
    if (soft) {
        float maxv = zn[0];
        for (int e = 1; e < E; e++) maxv = fmaxf(maxv, zn[e]);
        float sum = 0.0f;
        for (int e = 0; e < E; e++) sum += (pn[e] = expf(zn[e] - maxv));
        for (int e = 0; e < E; e++) pn[e] /= sum;
    } else {
        for (int e = 0; e < E; e++)
            pn[e] = rt.kind == ROUTER_THRESHOLD ? 1.0f / (1.0f + expf(-zn[e] / rt.tau)) : (float)(zn[e] >= 0.0f);
    }
    const float* key = soft ? pn : zn;
    for (int r = 0; r < k; r++) {
        int best = -1;
        for (int e = 0; e < E; e++) {
            bool taken = false;
            for (int q = 0; q < r; q++) taken |= route[(size_t)n * k + q] == e;
            if (!taken && (best < 0 || key[e] > key[best])) best = e;
        }
        if (!soft && zn[best] < 0.0f) best = -1;
        route[(size_t)n * k + r] = best;
        if (best < 0) slot[(size_t)n * k + r] = -1;  // the dispatch numbers only real choices
    }
}

// Block e: walks the N*k choices in dispatch order i = r*N + n, 1024 at a
// time, and numbers those of expert e with a block-wide prefix count:
// slot = that number while below cap, else -1 (dropped). load[e] = tokens taken.
__global__ void tc_dispatch_kernel(int* slot,           // (N,k)
                                   float* load,         // (E)
                                   const int* route,    // (N,k)
                                   int N, int k, int cap) {
    __shared__ int scan[1024];
    const int e = blockIdx.x, t = threadIdx.x;
    int base = 0;  // choices of expert e before this chunk
    for (long long start = 0; start < (long long)N * k; start += blockDim.x) {
        long long i = start + t;
        int n = (int)(i % N), r = (int)(i / N);
        bool mine = i < (long long)N * k && route[(size_t)n * k + r] == e;
        scan[t] = mine;
        __syncthreads();
        for (int off = 1; off < blockDim.x; off <<= 1) {  // inclusive scan
            int v = t >= off ? scan[t - off] : 0;
            __syncthreads();
            scan[t] += v;
            __syncthreads();
        }
        if (mine) {
            int pos = base + scan[t] - 1;
            slot[(size_t)n * k + r] = pos < cap ? pos : -1;
        }
        base += scan[blockDim.x - 1];
        __syncthreads();
    }
    if (t == 0) load[e] = (float)min(base, cap);
}

// first[e] = share of tokens whose first choice is e; aux = E sum_e first[e] P_e,
// P_e = mean over tokens of probs[:, e]. One block; thread e sums its column in
// token order, thread 0 adds the experts in order. The experts go in chunks of
// the block's width, so the shared memory is one chunk whatever E is.
constexpr int TC_AUX_THREADS = 256;
__global__ void tc_aux_kernel(float* first,        // (E)
                              float* aux,          // (1)
                              const float* probs,  // (N,E)
                              const int* route,    // (N,k)
                              int N, int E, int k, bool soft) {
    __shared__ float term[TC_AUX_THREADS];
    float a = 0.0f;  // thread 0's sum
    for (int e0 = 0; e0 < E; e0 += TC_AUX_THREADS) {
        int e = e0 + threadIdx.x;
        if (e < E) {
            float count = 0.0f, mass = 0.0f;
            for (int n = 0; n < N; n++) {
                count += route[(size_t)n * k] == e;
                mass += probs[(size_t)n * E + e];
            }
            first[e] = count / N;
            term[threadIdx.x] = first[e] * (mass / N);
        }
        __syncthreads();
        if (threadIdx.x == 0)
            for (int j = 0; j < TC_AUX_THREADS && e0 + j < E; j++) a += term[j];
        __syncthreads();
    }
    if (threadIdx.x == 0) aux[0] = soft ? E * a : 0.0f;  // a threshold router has no load-balancing loss
}

// xin[e, slot] = inp[n] for every dispatched choice (rows are distinct).
__global__ void tc_gather_kernel(float* xin,          // (E,cap,C)
                                 const float* inp,    // (N,C)
                                 const int* route,    // (N,k)
                                 const int* slot,     // (N,k)
                                 int N, int C, int k, int cap) {
    size_t total = (size_t)N * k * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t nr = i / C;
        int c = (int)(i % C), s = slot[nr];
        if (s < 0) continue;
        int e = route[nr];
        xin[((size_t)e * cap + s) * C + c] = inp[(nr / k) * C + c];
    }
}

// out[n, c] = sum over the dispatched choices r (in order) of p[n, e] yout[e, s, c].
__global__ void tc_combine_kernel(float* out,          // (N,C)
                                  const float* yout,   // (E,cap,C)
                                  const float* probs,  // (N,E)
                                  const int* route,    // (N,k)
                                  const int* slot,     // (N,k)
                                  int N, int C, int E, int k, int cap) {
    size_t total = (size_t)N * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t n = i / C;
        int c = (int)(i % C);
        float sum = 0.0f;
        for (int r = 0; r < k; r++) {
            int s = slot[n * k + r], e = route[n * k + r];
            if (s >= 0) sum += probs[n * E + e] * yout[((size_t)e * cap + s) * C + c];
        }
        out[i] = sum;
    }
}

// dprobs[n, e] = daux E first[e] / N: the load-balancing term (softmax
// router: aux through P_e only; threshold routers: 0).
__global__ void tc_dprobs_init_kernel(float* dprobs,       // (N,E)
                                      const float* first,  // (E)
                                      const float* daux,   // (1)
                                      int N, int E, bool soft) {
    size_t total = (size_t)N * E;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        dprobs[i] = soft ? daux[0] * E * first[i % E] / N : 0.0f;
}

// One warp per choice (n, r) that was dispatched to (e, s):
// dyout[e, s] = p[n, e] dout[n];  dprobs[n, e] += dout[n] . yout[e, s].
// The k choices of a token go to distinct experts: no two warps share a dprobs entry.
__global__ void tc_combine_backward_kernel(float* dyout,        // (E,cap,C)
                                           float* dprobs,       // (N,E)
                                           const float* dout,   // (N,C)
                                           const float* yout,   // (E,cap,C)
                                           const float* probs,  // (N,E)
                                           const int* route,    // (N,k)
                                           const int* slot,     // (N,k)
                                           int N, int C, int E, int k, int cap) {
    int lane = threadIdx.x % 32;
    size_t nr = blockIdx.x * (size_t)(blockDim.x / 32) + threadIdx.x / 32;
    if (nr >= (size_t)N * k) return;
    int s = slot[nr];
    if (s < 0) return;  // whole warps leave together
    size_t n = nr / k;
    int e = route[nr];
    float g = probs[n * E + e], dot = 0.0f;
    const float* d = dout + n * C;
    const float* y = yout + ((size_t)e * cap + s) * C;
    float* dy = dyout + ((size_t)e * cap + s) * C;
    for (int c = lane; c < C; c += 32) {
        dy[c] = g * d[c];
        dot += d[c] * y[c];
    }
    dot = warp_sum(dot);
    if (lane == 0) dprobs[n * E + e] += dot;
}

// dinp[n, c] += sum over the dispatched choices r (in order) of dxin[e, s, c].
__global__ void tc_scatter_backward_kernel(float* dinp,         // (N,C)
                                           const float* dxin,   // (E,cap,C)
                                           const int* route,    // (N,k)
                                           const int* slot,     // (N,k)
                                           int N, int C, int k, int cap) {
    size_t total = (size_t)N * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t n = i / C;
        int c = (int)(i % C);
        float sum = dinp[i];
        for (int r = 0; r < k; r++) {
            int s = slot[n * k + r], e = route[n * k + r];
            if (s >= 0) sum += dxin[((size_t)e * cap + s) * C + c];
        }
        dinp[i] = sum;
    }
}

// The gates backward: softmax dz = p * (dp - sum_e p dp); threshold
// dz = dp g (1 - g) / tau; threshold-one 0. One thread per token.
__global__ void tc_gate_backward_kernel(float* dz,            // (N,E)
                                        const float* dprobs,  // (N,E)
                                        const float* probs,   // (N,E)
                                        int N, int E, TcRouter rt) {
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    const float* pn = probs + (size_t)n * E;
    const float* dpn = dprobs + (size_t)n * E;
    float* dzn = dz + (size_t)n * E;
    if (rt.kind == ROUTER_SOFTMAX) {
        float dot = 0.0f;
        for (int e = 0; e < E; e++) dot += pn[e] * dpn[e];
        for (int e = 0; e < E; e++) dzn[e] = pn[e] * (dpn[e] - dot);
    } else if (rt.kind == ROUTER_THRESHOLD) {
        for (int e = 0; e < E; e++) dzn[e] = dpn[e] * pn[e] * (1.0f - pn[e]) / rt.tau;
    } else {
        for (int e = 0; e < E; e++) dzn[e] = 0.0f;
    }
}

// The parts of the layer (cpu/fast/token_choice.h), so that they read one
// by one and expert parallelism (expert_parallel.cuh) can run the experts
// apart from the rest. capC = cap*C and capf = cap*f: one expert's buffer.

// The router: z = inp wc^T (threshold routers: + bc), then the gates, the
// choices, the dispatch with capacity and the load-balancing loss.
inline void token_choice_router(float* z,          // (N,E)
                                float* probs,      // (N,E)
                                int* route,        // (N,k)
                                int* slot,         // (N,k)
                                float* load,       // (E)
                                float* first,      // (E)
                                float* aux,        // (1)
                                const float* inp,  // (N,C)
                                const float* wc,   // (E,C)
                                const float* bc,   // (E) threshold routers
                                int N, int C, int E, int k, int cap, TcRouter rt) {
    const bool soft = rt.kind == ROUTER_SOFTMAX;
    matmul_forward(z, inp, wc, soft ? nullptr : bc, N, 1, C, E);
    tc_route_kernel<<<ceil_div(N, 128), 128>>>(probs, route, slot, z, N, E, k, rt);
    CUDA_CHECK_LAUNCH();
    tc_dispatch_kernel<<<E, 1024>>>(slot, load, route, N, k, cap);
    CUDA_CHECK_LAUNCH();
    tc_aux_kernel<<<1, TC_AUX_THREADS>>>(first, aux, probs, route, N, E, k, soft);
    CUDA_CHECK_LAUNCH();
}

// Gather: each dispatched choice copies its token into its row of its
// expert's buffer; rows no token took are zero.
inline void token_choice_gather(float* xin,          // (E,cap,C)
                                const float* inp,    // (N,C)
                                const int* route,    // (N,k)
                                const int* slot,     // (N,k)
                                int N, int C, int E, int k, int cap) {
    CUDA_CHECK(cudaMemset(xin, 0, (size_t)E * cap * C * sizeof(float)));
    tc_gather_kernel<<<grid_for((size_t)N * k * C, 256), 256>>>(xin, inp, route, slot, N, C, k, cap);
    CUDA_CHECK_LAUNCH();
}

// Experts, batched over e: pre[e] (cap,f) = xin[e] (cap,C) w1[e]^T;
// yout[e] (cap,C) = gelu(pre[e]) w2[e]^T.
inline void token_choice_experts(float* pre,        // (E,cap,f)
                                 float* act,        // (E,cap,f)
                                 float* yout,       // (E,cap,C)
                                 const float* xin,  // (E,cap,C)
                                 const float* w1,   // (E,f,C)
                                 const float* w2,   // (E,C,f)
                                 int C, int E, int f, int cap) {
    const long long capC = (long long)cap * C, capf = (long long)cap * f;
    gemm(false, true, cap, f, C, 1.0f, xin, C, capC, w1, C, (long long)f * C, 0.0f, pre, f, capf, E);
    gelu_forward(act, pre, (size_t)E * capf);
    gemm(false, true, cap, C, f, 1.0f, act, f, capf, w2, f, (long long)C * f, 0.0f, yout, C, capC, E);
}

// Combine: out_n = sum over the dispatched choices of g_n[e] yout[e,s].
inline void token_choice_combine(float* out,          // (N,C)
                                 const float* yout,   // (E,cap,C)
                                 const float* probs,  // (N,E)
                                 const int* route,    // (N,k)
                                 const int* slot,     // (N,k)
                                 int N, int C, int E, int k, int cap) {
    tc_combine_kernel<<<grid_for((size_t)N * C, 256), 256>>>(out, yout, probs, route, slot, N, C, E, k, cap);
    CUDA_CHECK_LAUNCH();
}

inline void token_choice_forward(float* out,        // (N,C)
                                 float* z,          // (N,E) router logits
                                 float* probs,      // (N,E) gates
                                 int* route,        // (N,k) expert of the r-th choice; -1 none
                                 int* slot,         // (N,k) its row in the expert's buffer; -1 dropped or none
                                 float* load,       // (E) tokens each expert took
                                 float* first,      // (E) f_e: share of first choices
                                 float* aux,        // (1) load-balancing loss
                                 float* xin,        // (E,cap,C) each expert's tokens
                                 float* pre,        // (E,cap,f)
                                 float* act,        // (E,cap,f)
                                 float* yout,       // (E,cap,C)
                                 const float* inp,  // (N,C)
                                 const float* wc,   // (E,C)
                                 const float* w1,   // (E,f,C)
                                 const float* w2,   // (E,C,f)
                                 int N, int C, int E, int f, int k, int cap,
                                 const float* bc = nullptr,  // (E) threshold routers
                                 TcRouter rt = {}) {
    token_choice_router(z, probs, route, slot, load, first, aux, inp, wc, bc, N, C, E, k, cap, rt);
    token_choice_gather(xin, inp, route, slot, N, C, E, k, cap);
    token_choice_experts(pre, act, yout, xin, w1, w2, C, E, f, cap);
    token_choice_combine(out, yout, probs, route, slot, N, C, E, k, cap);
}

// The gates' gradient before the combine adds to it: the load-balancing
// loss's (softmax routers), zero otherwise.
inline void token_choice_dgate_init(float* dprobs,       // (N,E)
                                    const float* first,  // (E)
                                    const float* daux,   // (1)
                                    int N, int E, TcRouter rt) {
    tc_dprobs_init_kernel<<<grid_for((size_t)N * E, 256), 256>>>(dprobs, first, daux, N, E,
                                                                 rt.kind == ROUTER_SOFTMAX);
    CUDA_CHECK_LAUNCH();
}

// Combine backward: dyout holds g dout in the rows of the dispatched
// choices (zero elsewhere); each choice's gate gets dout . yout.
inline void token_choice_combine_backward(float* dyout,        // (E,cap,C) overwritten
                                          float* dprobs,       // (N,E)
                                          const float* dout,   // (N,C)
                                          const float* yout,   // (E,cap,C)
                                          const float* probs,  // (N,E)
                                          const int* route,    // (N,k)
                                          const int* slot,     // (N,k)
                                          int N, int C, int E, int k, int cap) {
    CUDA_CHECK(cudaMemset(dyout, 0, (size_t)E * cap * C * sizeof(float)));
    tc_combine_backward_kernel<<<ceil_div((size_t)N * k, 8), 256>>>(dyout, dprobs, dout, yout, probs, route, slot,
                                                                     N, C, E, k, cap);
    CUDA_CHECK_LAUNCH();
}

// Experts backward, batched over e: dxin overwritten, dw1, dw2 accumulate.
inline void token_choice_experts_backward(float* dxin,         // (E,cap,C)
                                          float* dpre,         // (E,cap,f) scratch
                                          float* dact,         // (E,cap,f) scratch
                                          float* dw1,          // (E,f,C)
                                          float* dw2,          // (E,C,f)
                                          const float* dyout,  // (E,cap,C)
                                          const float* xin,    // (E,cap,C)
                                          const float* pre,    // (E,cap,f)
                                          const float* act,    // (E,cap,f)
                                          const float* w1,     // (E,f,C)
                                          const float* w2,     // (E,C,f)
                                          int C, int E, int f, int cap) {
    const long long capC = (long long)cap * C, capf = (long long)cap * f;
    gemm(false, false, cap, f, C, 1.0f, dyout, C, capC, w2, f, (long long)C * f, 0.0f, dact, f, capf, E);
    gemm(true, false, C, f, cap, 1.0f, dyout, C, capC, act, f, capf, 1.0f, dw2, f, (long long)C * f, E);
    CUDA_CHECK(cudaMemset(dpre, 0, (size_t)E * capf * sizeof(float)));
    gelu_backward(dpre, pre, dact, (size_t)E * capf);
    gemm(true, false, f, C, cap, 1.0f, dpre, f, capf, xin, C, capC, 1.0f, dw1, C, (long long)f * C, E);
    gemm(false, false, cap, C, f, 1.0f, dpre, f, capf, w1, C, (long long)f * C, 0.0f, dxin, C, capC, E);
}

// Gather backward: each dispatched choice hands its row's gradient back.
inline void token_choice_gather_backward(float* dinp,        // (N,C)
                                         const float* dxin,  // (E,cap,C)
                                         const int* route,   // (N,k)
                                         const int* slot,    // (N,k)
                                         int N, int C, int k, int cap) {
    tc_scatter_backward_kernel<<<grid_for((size_t)N * C, 256), 256>>>(dinp, dxin, route, slot, N, C, k, cap);
    CUDA_CHECK_LAUNCH();
}

// The gates, then the router: dX += dz wc; dwc (and a threshold router's
// dbc) += from dz.
inline void token_choice_router_backward(float* dinp,          // (N,C)
                                         float* dwc,           // (E,C)
                                         float* dbc,           // (E) threshold routers
                                         float* dz,            // (N,E) overwritten
                                         const float* dprobs,  // (N,E)
                                         const float* probs,   // (N,E)
                                         const float* inp,     // (N,C)
                                         const float* wc,      // (E,C)
                                         int N, int C, int E, TcRouter rt) {
    tc_gate_backward_kernel<<<ceil_div(N, 128), 128>>>(dz, dprobs, probs, N, E, rt);
    CUDA_CHECK_LAUNCH();
    matmul_backward(dinp, dwc, rt.kind == ROUTER_SOFTMAX ? nullptr : dbc, dz, inp, wc, N, 1, C, E);
}

inline void token_choice_backward(float* dinp, float* dwc, float* dw1, float* dw2,  // (N,C), (E,C), (E,f,C), (E,C,f)
                                  float* dz, float* dprobs,                              // (N,E) scratch
                                  float* dxin, float* dpre, float* dact, float* dyout,   // (E,cap,.) scratch
                                  const float* daux,                                     // (1)
                                  const float* dout, const float* inp,                   // (N,C)
                                  const float* probs, const int* route, const int* slot,      // (N,E), (N,k), (N,k)
                                  const float* first,                                    // (E)
                                  const float* xin, const float* pre, const float* act, const float* yout,
                                  const float* wc, const float* w1, const float* w2, int N, int C, int E, int f,
                                  int k, int cap,
                                  float* dbc = nullptr,  // (E) threshold routers
                                  TcRouter rt = {}) {
    token_choice_dgate_init(dprobs, first, daux, N, E, rt);
    token_choice_combine_backward(dyout, dprobs, dout, yout, probs, route, slot, N, C, E, k, cap);
    token_choice_experts_backward(dxin, dpre, dact, dw1, dw2, dyout, xin, pre, act, w1, w2, C, E, f, cap);
    token_choice_gather_backward(dinp, dxin, route, slot, N, C, k, cap);
    token_choice_router_backward(dinp, dwc, dbc, dz, dprobs, probs, inp, wc, N, C, E, rt);
}

// Threshold routers held at a firing rate (cpu/token_choice.h,
// token_choice_count_fires): fires[e] = #{n : z_n[e] >= 0}. One thread per
// expert walks the tokens; neighbouring threads read neighbouring logits.
__global__ void tc_count_fires_kernel(unsigned long long* fires,  // (E)
                                      const float* z,              // (N,E)
                                      int N, int E) {
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= E) return;
    unsigned long long count = 0;
    for (int n = 0; n < N; n++) count += z[(size_t)n * E + e] >= 0.0f;
    fires[e] = count;
}

// Adds the counts to the host's fires (E); scratch: (E) device counters.
inline void token_choice_count_fires(double* fires, unsigned long long* scratch, const float* z, int N, int E) {
    tc_count_fires_kernel<<<ceil_div(E, 128), 128>>>(scratch, z, N, E);
    CUDA_CHECK_LAUNCH();
    std::vector<unsigned long long> host(E);
    CUDA_CHECK(cudaMemcpy(host.data(), scratch, E * sizeof(unsigned long long), cudaMemcpyDeviceToHost));
    for (int e = 0; e < E; e++) fires[e] += (double)host[e];
}

// TOKEN_CHOICE as a block's feed-forward layer (common/ffn_kinds.h, TokenChoiceFfn);
// under expert parallelism its experts are shared out (expert_parallel.cuh).
template <typename K>
inline void ffn_kind_forward(TokenChoiceFfn, float* out, const float* inp, const LayerWeights<float>& w,
                             LayerActs<float>& a, int B, int T, const Config& c, const FfnMode& mode) {
    int N = B * T, cap = TokenChoiceFfn::capacity(c, N, mode.decoding);
    if (c.expert_shards > 1) {
        need_expert_exchange(c, mode, "token-choice");
        K::token_choice_ep_forward(out, a.z, a.m, a.route, a.slot, a.load, a.first, a.aux, a.u, a.ul, a.p, a.a, a.yl,
                                   a.y, inp, w.wc, w.w1, w.w2, N, c.C, c.E, c.f, c.tc.topk, cap, w.bc, tc_router(c),
                                   mode.experts);
        return;
    }
    K::token_choice_forward(out, a.z, a.m, a.route, a.slot, a.load, a.first, a.aux, a.u, a.p, a.a, a.y, inp, w.wc,
                            w.w1, w.w2, N, c.C, c.E, c.f, c.tc.topk, cap, w.bc, tc_router(c));
}

template <typename K>
inline void ffn_kind_backward(TokenChoiceFfn, float* dinp, LayerWeights<float>& dw, LayerActs<float>& da,
                              const float* dout, const float* inp, const LayerWeights<float>& w,
                              const LayerActs<float>& a, int B, int T, const Config& c, const FfnMode& mode) {
    int N = B * T, cap = TokenChoiceFfn::capacity(c, N, false);
    if (c.expert_shards > 1) {
        need_expert_exchange(c, mode, "token-choice");
        K::token_choice_ep_backward(dinp, dw.wc, dw.w1, dw.w2, da.z, da.m, da.u, da.ul, da.p, da.a, da.yl, da.y,
                                    da.aux, dout, inp, a.m, a.route, a.slot, a.first, a.ul, a.p, a.a, a.y, w.wc, w.w1,
                                    w.w2, N, c.C, c.E, c.f, c.tc.topk, cap, dw.bc, tc_router(c), mode.experts);
        return;
    }
    K::token_choice_backward(dinp, dw.wc, dw.w1, dw.w2, da.z, da.m, da.u, da.p, da.a, da.y, da.aux, dout, inp, a.m,
                             a.route, a.slot, a.first, a.u, a.p, a.a, a.y, w.wc, w.w1, w.w2, N, c.C, c.E, c.f,
                             c.tc.topk, cap, dw.bc, tc_router(c));
}

}  // namespace gpu
