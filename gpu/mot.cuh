// Mixture of Tokens feed-forward layer on the GPU (cpu/mot.h, docs/design.md
// section 3.2). The same strided-batched products as cpu/fast/mot.h, each one
// cublasSgemmStridedBatched call: per-group products batch over the ST = S*T
// groups (group g = k*T + t holds rows b = j*S + k, j < G, at position t; its
// member j sits j*ST*C floats after its first row, which is g*C floats into
// the (B,T,C) tensor), per-expert products batch over the E experts. No host
// loop over groups or experts.
//
// For one group, X (G,C) its inputs:
//   Z = X wc^T (G,E);  M = softmax over the G axis of Z / tau, per expert
//   U = M^T X (E,C);   P[e] = U[e] w1[e]^T;  A = gelu(P);  Y[e] = A[e] w2[e]^T
//   O = M Y (G,C)
#pragma once
#include <cmath>

#include "../common/layout.h"
#include "gelu.cuh"
#include "matmul.cuh"

namespace gpu {

// One thread per (group g, expert e), ST*E threads: softmax over the G group
// members j of z[j*ST*E + g*E + e] / tau, written to m at the same places;
// discrete: one-hot at the argmax of z over the group instead (ties: lowest j).
__global__ void mot_softmax_kernel(float* m,        // (B,T,E)
                                   const float* z,  // (B,T,E)
                                   int ST, int E, int G, float tau, bool discrete) {
    size_t n = (size_t)ST * E;
    size_t mj = n;  // stride between group members in (B,T,E)
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
        const float* zg = z + idx;  // idx = g*E + e
        float* mg = m + idx;
        float maxv = -INFINITY;
        for (int j = 0; j < G; j++) maxv = fmaxf(maxv, zg[j * mj] / tau);
        float sum = 0.0f;
        for (int j = 0; j < G; j++) {
            float e = expf(zg[j * mj] / tau - maxv);
            mg[j * mj] = e;
            sum += e;
        }
        for (int j = 0; j < G; j++) mg[j * mj] /= sum;
        if (discrete) {
            int best = 0;
            for (int j = 1; j < G; j++)
                if (zg[j * mj] > zg[best * mj]) best = j;
            for (int j = 0; j < G; j++) mg[j * mj] = j == best ? 1.0f : 0.0f;
        }
    }
}

// Softmax backward over the group, one thread per (g, e):
//   dz[j] = m[j] (dm[j] - sum_j' m[j'] dm[j']) / tau
__global__ void mot_softmax_backward_kernel(float* dz,        // (B,T,E)
                                            const float* dm,  // (B,T,E)
                                            const float* m,   // (B,T,E)
                                            int ST, int E, int G, float tau) {
    size_t n = (size_t)ST * E;
    size_t mj = n;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
        float dot = 0.0f;
        for (int j = 0; j < G; j++) dot += m[idx + j * mj] * dm[idx + j * mj];
        for (int j = 0; j < G; j++)
            dz[idx + j * mj] = m[idx + j * mj] * (dm[idx + j * mj] - dot) / tau;
    }
}

// dp[i] = da[i] * gelu'(p[i])  (overwrites dp)
__global__ void mot_gelu_backward_kernel(float* dp,        // (S,T,E,f)
                                         const float* da,  // (S,T,E,f)
                                         const float* p,   // (S,T,E,f)
                                         size_t N) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < N; i += (size_t)gridDim.x * blockDim.x)
        dp[i] = da[i] * gelu_grad_dev(p[i]);
}

// The parts of the layer, as in cpu/fast/mot.h, so that expert parallelism
// (gpu/expert_parallel.cuh) can run the experts apart from the rest. ST =
// S*T groups; group member j of group g sits j*ST rows after its first row.

// Controller: Z = X wc^T for all B*T rows at once; M = softmax over the
// group of Z / tau (discrete: one-hot at the argmax).
inline void mot_controller(float* z,          // (B,T,E)
                           float* m,          // (B,T,E)
                           const float* inp,  // (B,T,C)
                           const float* wc,   // (E,C)
                           int B, int T, int C, int E, int G, float tau, bool discrete) {
    const int ST = B / G * T;
    matmul_forward(z, inp, wc, nullptr, B, T, C, E);
    mot_softmax_kernel<<<grid_for((size_t)ST * E, 256), 256>>>(m, z, ST, E, G, tau, discrete);
    CUDA_CHECK_LAUNCH();
}

// Merge, batched over groups: U (E,C) = M^T (E,G) X (G,C).
inline void mot_merge(float* u,          // (S,T,E,C)
                      const float* m,    // (B,T,E)
                      const float* inp,  // (B,T,C)
                      int B, int T, int C, int E, int G) {
    const int ST = B / G * T;
    gemm(true, false, E, C, G, 1.0f, m, (long long)ST * E, E, inp, (long long)ST * C, C, 0.0f, u, C,
         (long long)E * C, ST);
}

// Experts, batched over e, each over all ST groups: P[:,e] (ST,f) = U[:,e]
// (ST,C) w1[e]^T (C,f); A = gelu(P); Y[:,e] (ST,C) = A[:,e] (ST,f) w2[e]^T (f,C).
inline void mot_experts(float* p,         // (S,T,E,f)
                        float* a,         // (S,T,E,f)
                        float* y,         // (S,T,E,C)
                        const float* u,   // (S,T,E,C)
                        const float* w1,  // (E,f,C)
                        const float* w2,  // (E,C,f)
                        int ST, int C, int E, int f) {
    gemm(false, true, ST, f, C, 1.0f, u, (long long)E * C, C, w1, C, (long long)f * C, 0.0f, p, (long long)E * f, f,
         E);
    gelu_forward(a, p, (size_t)ST * E * f);
    gemm(false, true, ST, C, f, 1.0f, a, (long long)E * f, f, w2, f, (long long)C * f, 0.0f, y, (long long)E * C, C,
         E);
}

// Emit, batched over groups: O (G,C) = M (G,E) Y (E,C).
inline void mot_emit(float* out,       // (B,T,C)
                     const float* m,   // (B,T,E)
                     const float* y,   // (S,T,E,C)
                     int B, int T, int C, int E, int G) {
    const int ST = B / G * T;
    gemm(false, false, G, C, E, 1.0f, m, (long long)ST * E, E, y, C, (long long)E * C, 0.0f, out, (long long)ST * C,
         C, ST);
}

inline void mot_forward(float* out,        // (B,T,C)
                        float* z,          // (B,T,E) controller logits
                        float* m,          // (B,T,E) mixing weights
                        float* u,          // (S,T,E,C) mixed tokens
                        float* p,          // (S,T,E,f)
                        float* a,          // (S,T,E,f)
                        float* y,          // (S,T,E,C)
                        const float* inp,  // (B,T,C)
                        const float* wc,   // (E,C)
                        const float* w1,   // (E,f,C)
                        const float* w2,   // (E,C,f)
                        int B, int T, int C, int E, int G, int f, float tau, bool discrete = false) {
    mot_controller(z, m, inp, wc, B, T, C, E, G, tau, discrete);
    mot_merge(u, m, inp, B, T, C, E, G);
    mot_experts(p, a, y, u, w1, w2, B / G * T, C, E, f);
    mot_emit(out, m, y, B, T, C, E, G);
}

// Emit backward, batched over groups: dY (E,C) = M^T (E,G) dO (G,C);
// dM (G,E) = dO (G,C) Y^T (C,E).
inline void mot_emit_backward(float* dy,          // (S,T,E,C) overwritten
                              float* dm,          // (B,T,E) overwritten
                              const float* dout,  // (B,T,C)
                              const float* m,     // (B,T,E)
                              const float* y,     // (S,T,E,C)
                              int B, int T, int C, int E, int G) {
    const int ST = B / G * T;
    const long long xj = (long long)ST * C, mj = (long long)ST * E, EC = (long long)E * C;
    gemm(true, false, E, C, G, 1.0f, m, mj, E, dout, xj, C, 0.0f, dy, C, EC, ST);
    gemm(false, true, G, E, C, 1.0f, dout, xj, C, y, C, EC, 0.0f, dm, mj, E, ST);
}

// Experts backward, batched over experts, each over all ST groups:
//   dA[:,e] = dY[:,e] w2[e];  dw2[e] += dY[:,e]^T A[:,e];  dP = dA * gelu'(P)
//   dw1[e] += dP[:,e]^T U[:,e];  dU[:,e] = dP[:,e] w1[e]
inline void mot_experts_backward(float* du,         // (S,T,E,C) overwritten
                                 float* dp,         // (S,T,E,f) overwritten
                                 float* da,         // (S,T,E,f) overwritten
                                 float* dw1,        // (E,f,C)
                                 float* dw2,        // (E,C,f)
                                 const float* dy,   // (S,T,E,C)
                                 const float* u,    // (S,T,E,C)
                                 const float* p,    // (S,T,E,f)
                                 const float* a,    // (S,T,E,f)
                                 const float* w1,   // (E,f,C)
                                 const float* w2,   // (E,C,f)
                                 int ST, int C, int E, int f) {
    const long long EC = (long long)E * C, Ef = (long long)E * f;
    gemm(false, false, ST, f, C, 1.0f, dy, EC, C, w2, f, (long long)C * f, 0.0f, da, Ef, f, E);
    gemm(true, false, C, f, ST, 1.0f, dy, EC, C, a, Ef, f, 1.0f, dw2, f, (long long)C * f, E);
    size_t nf = (size_t)ST * E * f;
    mot_gelu_backward_kernel<<<grid_for(nf, 256), 256>>>(dp, da, p, nf);
    CUDA_CHECK_LAUNCH();
    gemm(true, false, f, C, ST, 1.0f, dp, Ef, f, u, EC, C, 1.0f, dw1, C, (long long)f * C, E);
    gemm(false, false, ST, C, f, 1.0f, dp, Ef, f, w1, C, (long long)f * C, 0.0f, du, EC, C, E);
}

// Merge backward, batched over groups: dM (G,E) += X (G,C) dU^T (C,E);
// dX (G,C) += M (G,E) dU (E,C).
inline void mot_merge_backward(float* dinp,        // (B,T,C)
                               float* dm,          // (B,T,E)
                               const float* du,    // (S,T,E,C)
                               const float* inp,   // (B,T,C)
                               const float* m,     // (B,T,E)
                               int B, int T, int C, int E, int G) {
    const int ST = B / G * T;
    const long long xj = (long long)ST * C, mj = (long long)ST * E, EC = (long long)E * C;
    gemm(false, true, G, E, C, 1.0f, inp, xj, C, du, C, EC, 1.0f, dm, mj, E, ST);
    gemm(false, false, G, C, E, 1.0f, m, mj, E, du, C, EC, 1.0f, dinp, xj, C, ST);
}

// Softmax over the group, then the controller: dX += dZ wc;  dwc += dZ^T X.
inline void mot_controller_backward(float* dinp,        // (B,T,C)
                                    float* dwc,         // (E,C)
                                    float* dz,          // (B,T,E) overwritten
                                    const float* dm,    // (B,T,E)
                                    const float* m,     // (B,T,E)
                                    const float* inp,   // (B,T,C)
                                    const float* wc,    // (E,C)
                                    int B, int T, int C, int E, int G, float tau) {
    const int ST = B / G * T;
    mot_softmax_backward_kernel<<<grid_for((size_t)ST * E, 256), 256>>>(dz, dm, m, ST, E, G, tau);
    CUDA_CHECK_LAUNCH();
    matmul_backward(dinp, dwc, nullptr, dz, inp, wc, B, T, C, E);
}

// Backward, per group, given dO (G,C) (see cpu/mot.h):
//   dY = M^T dO;  dM = dO Y^T;  dA[e] = dY[e] w2[e];  dP = dA * gelu'(P)
//   dw2[e] += dY[e]^T A[e];  dw1[e] += dP[e]^T U[e];  dU[e] = dP[e] w1[e]
//   dM += X dU^T;  dX += M dU;  dZ = softmax backward over the group / tau
//   dwc += dZ^T X;  dX += dZ wc
inline void mot_backward(float* dinp,        // (B,T,C)
                         float* dwc,         // (E,C)
                         float* dw1,         // (E,f,C)
                         float* dw2,         // (E,C,f)
                         float* dz,          // (B,T,E) scratch
                         float* dm,          // (B,T,E) scratch
                         float* du,          // (S,T,E,C) scratch
                         float* dp,          // (S,T,E,f) scratch
                         float* da,          // (S,T,E,f) scratch
                         float* dy,          // (S,T,E,C) scratch
                         const float* dout,  // (B,T,C)
                         const float* inp,   // (B,T,C)
                         const float* m,     // (B,T,E)
                         const float* u,     // (S,T,E,C)
                         const float* p,     // (S,T,E,f)
                         const float* a,     // (S,T,E,f)
                         const float* y,     // (S,T,E,C)
                         const float* wc,    // (E,C)
                         const float* w1,    // (E,f,C)
                         const float* w2,    // (E,C,f)
                         int B, int T, int C, int E, int G, int f, float tau) {
    mot_emit_backward(dy, dm, dout, m, y, B, T, C, E, G);
    mot_experts_backward(du, dp, da, dw1, dw2, dy, u, p, a, w1, w2, B / G * T, C, E, f);
    mot_merge_backward(dinp, dm, du, inp, m, B, T, C, E, G);
    mot_controller_backward(dinp, dwc, dz, dm, m, inp, wc, B, T, C, E, G, tau);
}

}  // namespace gpu

// the expert-parallel layer, on the parts above
#include "expert_parallel.cuh"

namespace gpu {

// MOT as a block's feed-forward layer (common/ffn_kinds.h, MotFfn); under expert
// parallelism (c.expert_shards > 1) the layers of gpu/expert_parallel.cuh
// over mode.experts (cpu/mot.h checks that they match).
template <typename K>
inline void ffn_kind_forward(MotFfn, float* out, const float* inp, const LayerWeights<float>& w, LayerActs<float>& a,
                             int B, int T, const Config& c, const FfnMode& mode) {
    if (c.expert_shards > 1) {
        need_expert_exchange(c, mode, "MoT");
        if (c.expert_inputs)
            K::mot_ep_inputs_forward(out, a.z, a.m, a.u, a.p, a.a, a.y, a.xall, a.oall, inp, w.wc, w.w1, w.w2, B, T, c.C,
                                  c.E, c.mot.G, c.f, c.mot.tau, mode.mot_discrete, mode.experts);
        else
            K::mot_ep_forward(out, a.z, a.m, a.u, a.ul, a.p, a.a, a.yl, a.y, a.xbuf, inp, w.wc, w.w1, w.w2, B, T, c.C, c.E,
                           c.mot.G, c.f, c.mot.tau, mode.mot_discrete, mode.experts);
        return;
    }
    K::mot_forward(out, a.z, a.m, a.u, a.p, a.a, a.y, inp, w.wc, w.w1, w.w2, B, T, c.C, c.E, c.mot.G, c.f, c.mot.tau,
                mode.mot_discrete);
}

template <typename K>
inline void ffn_kind_backward(MotFfn, float* dinp, LayerWeights<float>& dw, LayerActs<float>& da, const float* dout,
                              const float* inp, const LayerWeights<float>& w, const LayerActs<float>& a, int B, int T,
                              const Config& c, const FfnMode& mode) {
    if (c.expert_shards > 1) {
        need_expert_exchange(c, mode, "MoT");
        if (c.expert_inputs)
            K::mot_ep_inputs_backward(dinp, dw.wc, dw.w1, dw.w2, da.z, da.m, da.u, da.p, da.a, da.y, da.xall, da.oall,
                                      dout, a.xall, a.m, a.u, a.p, a.a, a.y, w.wc, w.w1, w.w2, B, T, c.C, c.E, c.mot.G,
                                      c.f, c.mot.tau, mode.experts);
        else
            K::mot_ep_backward(dinp, dw.wc, dw.w1, dw.w2, da.z, da.m, da.u, da.ul, da.p, da.a, da.yl, da.y, da.xbuf,
                               dout, inp, a.m, a.ul, a.p, a.a, a.y, w.wc, w.w1, w.w2, B, T, c.C, c.E, c.mot.G, c.f,
                               c.mot.tau, mode.experts);
        return;
    }
    K::mot_backward(dinp, dw.wc, dw.w1, dw.w2, da.z, da.m, da.u, da.p, da.a, da.y, dout, inp, a.m, a.u, a.p, a.a, a.y,
                 w.wc, w.w1, w.w2, B, T, c.C, c.E, c.mot.G, c.f, c.mot.tau);
}

}  // namespace gpu
