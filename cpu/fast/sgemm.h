// cpu/fast/sgemm.h: fp32 GEMM for the CPU path, header-only, no BLAS dependency.
//
//   C (M,N) = alpha * op(A) (M,K) * op(B) (K,N) + beta * C        all row-major
//   op(A) = A (M,K), lda >= K        or A^T where A is stored (K,M), lda >= M
//   op(B) = B (K,N), ldb >= N        or B^T where B is stored (N,K), ldb >= K
//   beta == 0 never reads C (C may hold garbage / NaN); beta == 1 is "+=".
//
// Uses in training (weights stored (OC, C), y = x W^T):
//   forward  out  = inp W^T     sgemm(false, true,  BT, OC, C,  ...)
//   backward dinp = dout W      sgemm(false, false, BT, C,  OC, ...)
//   backward dW  += dout^T inp  sgemm(true,  false, OC, C,  BT, ..., beta=1)
//
// Blocking scheme (Goto / BLIS):
//   for jc over N in steps of NC                   columns of C and op(B)
//     for pc over K in steps of KC                 one rank-KC update of C
//       pack op(B)[pc:pc+KC, jc:jc+NC] into NR-wide panels   (KC x NC, ~L2/L3)
//       for ic over M in steps of MC
//         pack op(A)[ic:ic+MC, pc:pc+KC] into MR-tall panels  (MC x KC, ~L2)
//         for jr over the NC block in steps of NR     B micro-panel KC x NR: L1
//           for ir over the MC block in steps of MR   A micro-panel streams from L2
//             micro-kernel: an MR x NR tile of C lives in registers for all KC
//                           steps; per k: NR/VL vector loads of B, MR broadcasts
//                           of A, MR*NR/VL FMAs.
// Packed layouts: A panel  a[k*MR + i]  (MR values of column k contiguous),
//                 B panel  b[k*NR + j]  (NR values of row k contiguous).
// Edges (M % MR, N % NR, any K) are handled with zero-padded panels, an MR-row
// count chosen at compile time per edge height, and masked loads/stores of C.
// When op(B) is plain row-major and either A is tiny (few MR panels) or all of B
// fits in L1, B is not packed: the kernel reads rows of B in place (packing
// would cost about as much as the math it saves).
//
// Threads: one product is cut into a pm x pn grid of C blocks, one per thread,
// each running the loop above with its own (thread_local) packing buffers.
// Batched products run one product per thread when the batch is large enough.
// Inside an existing omp parallel region everything runs single-threaded.
//
// The SIMD vectors, the micro-kernel and the packing live in sgemm_kernel.h;
// this file holds the blocking loops, the threading and the entry points.
// matmul.h calls them with the arguments of gemm() of cpu/matmul.h.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <cstring>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "sgemm_kernel.h"

namespace fast {

// ----------------------------------------------------------------------------
// one thread computes the block C[m0:m1, n0:n1] (full K)

static inline void sg_block(bool transA, bool transB, int m0, int m1, int n0, int n1, int K,
                            float alpha, const float* A, int lda, const float* B, int ldb,
                            float beta, float* C, int ldc) {
    static thread_local sg_buf bufA, bufB;
    float* pa = bufA.get((size_t)SG_MC * SG_KC);
    float* pb = bufB.get((size_t)SG_KC * SG_NC);
    // skip packing B when op(B) is row-major and either only a couple of A panels
    // reuse it, or all of B (K rows of ldb floats) is small enough to stay in L1
    bool direct_b = !transB && ((m1 - m0) <= 2 * SG_MR || (long)K * ldb <= SG_DIRECT_B);
    for (int jc = n0; jc < n1; jc += SG_NC) {
        int nc = std::min(SG_NC, n1 - jc);
        for (int pc = 0; pc < K; pc += SG_KC) {
            int kc = std::min(SG_KC, K - pc);
            float beta_p = pc == 0 ? beta : 1.0f;  // later K blocks accumulate
            for (int jr = 0; jr < nc; jr += SG_NR) {
                int nr = std::min(SG_NR, nc - jr);
                if (!direct_b || nr < SG_NR)  // partial panels always packed (no overread)
                    sg_pack_b(transB, B, ldb, pc, kc, jc + jr, nr, pb + (long)jr * kc);
            }
            for (int ic = m0; ic < m1; ic += SG_MC) {
                int mc = std::min(SG_MC, m1 - ic);
                sg_pack_a(transA, A, lda, ic, mc, pc, kc, pa);
                for (int jr = 0; jr < nc; jr += SG_NR) {
                    int nr = std::min(SG_NR, nc - jr);
                    const float* b = pb + (long)jr * kc;
                    long ldbk = SG_NR;
                    if (direct_b && nr == SG_NR) { b = B + (long)pc * ldb + jc + jr; ldbk = ldb; }
                    for (int ir = 0; ir < mc; ir += SG_MR) {
                        int mr = std::min(SG_MR, mc - ir);
                        sg_kernel_mr<SG_MR>(mr, kc, pa + (long)ir * kc, b, ldbk,
                                            C + (long)(ic + ir) * ldc + jc + jr, ldc, nr,
                                            alpha, beta_p);
                    }
                }
            }
        }
    }
}

// C = beta * C (K == 0 or alpha == 0); beta == 0 writes zeros without reading
static inline void sg_scale(int M, int N, float beta, float* C, int ldc) {
    for (int i = 0; i < M; i++) {
        float* c = C + (long)i * ldc;
        if (beta == 0.0f) std::memset(c, 0, sizeof(float) * N);
        else if (beta != 1.0f) for (int j = 0; j < N; j++) c[j] *= beta;
    }
}

static inline int sg_max_threads() {
#ifdef _OPENMP
    return omp_in_parallel() ? 1 : omp_get_max_threads();
#else
    return 1;
#endif
}

// one product on up to nthreads threads: C is cut into pm x pn blocks
static inline void sg_gemm_threads(bool transA, bool transB, int M, int N, int K, float alpha,
                                   const float* A, int lda, const float* B, int ldb,
                                   float beta, float* C, int ldc, int nthreads) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) { sg_scale(M, N, beta, C, ldc); return; }
    // below ~2 MFLOP the fork/join costs more than it saves
    if ((double)M * N * K < 1e6) nthreads = 1;
    // more threads than MR x NR tiles is pointless
    long tiles = (long)((M + SG_MR - 1) / SG_MR) * ((N + SG_NR - 1) / SG_NR);
    if (nthreads > tiles) nthreads = (int)tiles;
    if (nthreads <= 1) {
        sg_block(transA, transB, 0, M, 0, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    // choose the grid whose blocks have the smallest half-perimeter (packing and
    // re-reading work is ~ (rows + cols) * K per block); blocks are rounded to tiles
    int pm = 1, pn = nthreads;
    double best = 1e300;
    for (int d = 1; d <= nthreads; d++) {
        if (nthreads % d) continue;
        int bm = (M + d - 1) / d, bn = (N + nthreads / d - 1) / (nthreads / d);
        double cost = (double)bm + bn;
        if (cost < best) { best = cost; pm = d; pn = nthreads / d; }
    }
    int bm = ((M + pm - 1) / pm + SG_MR - 1) / SG_MR * SG_MR;
    int bn = ((N + pn - 1) / pn + SG_NR - 1) / SG_NR * SG_NR;
#ifdef _OPENMP
#pragma omp parallel for num_threads(nthreads) schedule(static)
#endif
    for (int t = 0; t < pm * pn; t++) {
        int m0 = (t / pn) * bm, n0 = (t % pn) * bn;
        int m1 = std::min(M, m0 + bm), n1 = std::min(N, n0 + bn);
        if (m0 < m1 && n0 < n1)
            sg_block(transA, transB, m0, m1, n0, n1, K, alpha, A, lda, B, ldb, beta, C, ldc);
    }
}

// ----------------------------------------------------------------------------
// public API

static inline void sgemm(bool transA, bool transB, int M, int N, int K, float alpha,
                         const float* A, int lda, const float* B, int ldb, float beta,
                         float* C, int ldc) {
    sg_gemm_threads(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc,
                    sg_max_threads());
}

// batch of products: A_b = A + b*strideA etc. The MoT layer calls this with
// interleaved layouts, e.g. experts: E products (S*T, f, C), lda = E*C, strideA = C.
static inline void sgemm_strided_batched(bool transA, bool transB, int M, int N, int K,
                                         float alpha, const float* A, int lda, long long strideA,
                                         const float* B, int ldb, long long strideB, float beta,
                                         float* C, int ldc, long long strideC, int batch) {
    int nt = sg_max_threads();
    double flops = (double)M * N * K;
    // one product per thread when there are enough products to balance and each
    // is small enough that splitting it would cost more in packing/sync
    bool over_batch = nt > 1 && batch >= nt && (batch >= 4 * nt || flops < 8e6);
    if (over_batch) {
#ifdef _OPENMP
#pragma omp parallel for num_threads(nt) schedule(static)
#endif
        for (int b = 0; b < batch; b++)
            sg_gemm_threads(transA, transB, M, N, K, alpha, A + b * strideA, lda,
                            B + b * strideB, ldb, beta, C + b * strideC, ldc, 1);
    } else {
        for (int b = 0; b < batch; b++)
            sg_gemm_threads(transA, transB, M, N, K, alpha, A + b * strideA, lda,
                            B + b * strideB, ldb, beta, C + b * strideC, ldc, nt);
    }
}

}  // namespace fast
