// cpu/sgemm.h: fp32 GEMM for the CPU path, header-only, no BLAS dependency.
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
#pragma once

#include <algorithm>
#include <cstdlib>
#include <cstring>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

// ----------------------------------------------------------------------------
// vector abstraction: sg_v holds SG_VL floats

#if defined(__AVX512F__)
// 32 zmm registers: 14x2 accumulators + 2 B vectors + 1 broadcast = 31
#define SG_VL 16
#define SG_MR 14
typedef __m512 sg_v;
static inline sg_v sg_zero() { return _mm512_setzero_ps(); }
static inline sg_v sg_set1(float x) { return _mm512_set1_ps(x); }
static inline sg_v sg_load(const float* p) { return _mm512_loadu_ps(p); }
static inline void sg_store(float* p, sg_v v) { _mm512_storeu_ps(p, v); }
static inline sg_v sg_fma(sg_v a, sg_v b, sg_v c) { return _mm512_fmadd_ps(a, b, c); }
static inline sg_v sg_mul(sg_v a, sg_v b) { return _mm512_mul_ps(a, b); }
// first n (1..16) lanes; the others read as 0 / are not written
static inline sg_v sg_load_n(const float* p, int n) {
    return _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p);
}
static inline void sg_store_n(float* p, sg_v v, int n) {
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), v);
}
#elif defined(__AVX2__) && defined(__FMA__)
// 16 ymm registers: 6x2 accumulators + 2 B vectors + 1 broadcast = 15
#define SG_VL 8
#define SG_MR 6
typedef __m256 sg_v;
static inline sg_v sg_zero() { return _mm256_setzero_ps(); }
static inline sg_v sg_set1(float x) { return _mm256_set1_ps(x); }
static inline sg_v sg_load(const float* p) { return _mm256_loadu_ps(p); }
static inline void sg_store(float* p, sg_v v) { _mm256_storeu_ps(p, v); }
static inline sg_v sg_fma(sg_v a, sg_v b, sg_v c) { return _mm256_fmadd_ps(a, b, c); }
static inline sg_v sg_mul(sg_v a, sg_v b) { return _mm256_mul_ps(a, b); }
static inline __m256i sg_mask_n(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline sg_v sg_load_n(const float* p, int n) { return _mm256_maskload_ps(p, sg_mask_n(n)); }
static inline void sg_store_n(float* p, sg_v v, int n) { _mm256_maskstore_ps(p, sg_mask_n(n), v); }
#else
// portable fallback: plain arrays, the compiler vectorizes what it can
#define SG_VL 8
#define SG_MR 4
struct sg_v { float x[SG_VL]; };
static inline sg_v sg_zero() { sg_v r; for (int l = 0; l < SG_VL; l++) r.x[l] = 0.0f; return r; }
static inline sg_v sg_set1(float x) { sg_v r; for (int l = 0; l < SG_VL; l++) r.x[l] = x; return r; }
static inline sg_v sg_load(const float* p) { sg_v r; for (int l = 0; l < SG_VL; l++) r.x[l] = p[l]; return r; }
static inline void sg_store(float* p, sg_v v) { for (int l = 0; l < SG_VL; l++) p[l] = v.x[l]; }
static inline sg_v sg_fma(sg_v a, sg_v b, sg_v c) { for (int l = 0; l < SG_VL; l++) c.x[l] += a.x[l] * b.x[l]; return c; }
static inline sg_v sg_mul(sg_v a, sg_v b) { for (int l = 0; l < SG_VL; l++) a.x[l] *= b.x[l]; return a; }
static inline sg_v sg_load_n(const float* p, int n) { sg_v r = sg_zero(); for (int l = 0; l < n; l++) r.x[l] = p[l]; return r; }
static inline void sg_store_n(float* p, sg_v v, int n) { for (int l = 0; l < n; l++) p[l] = v.x[l]; }
#endif

#define SG_NR (2 * SG_VL)  // micro-tile width: two vectors
static_assert(SG_MR <= SG_VL, "a packed A column (SG_MR floats) is moved as one masked vector");
// Tuning knobs (overridable with -D for experiments; defaults measured on the
// 2-core Sapphire Rapids VM against OpenBLAS, see bench/bench_matmul.cpp):
//   SG_PREFETCH_C  prefetch the C tile at micro-kernel entry (hides the C miss
//                  behind the K loop; +3..20% on shapes with K <= 256)
//   SG_DIRECT_B    read op(B) = B in place, unpacked, when K*ldb floats fit in
//                  L1 (attention P V, controller backward); larger B is packed
#ifndef SG_PREFETCH_C
#define SG_PREFETCH_C 1
#endif
#ifndef SG_DIRECT_B
#define SG_DIRECT_B 8192
#endif
// cache blocking (floats). KC x NR B micro-panel = 32 KB of the 48 KB L1d at
// KC=256 (AVX-512); MC x KC A block = 84 KB (L2 is 2 MB); KC x NC B block = 1 MB.
// KC 128/192/384, NC 512/2048 and MC 56/112/168 measured no better or worse.
#ifndef SG_KC
#define SG_KC 256
#endif
#ifndef SG_MC
#if defined(__AVX512F__)
#define SG_MC (SG_MR * 6)   // 84: +15% on the 2048x4096 LM head vs 168, neutral elsewhere
#else
#define SG_MC (SG_MR * 12)
#endif
#endif
#ifndef SG_NC
#define SG_NC 1024
#endif

// ----------------------------------------------------------------------------
// micro-kernel: C[0:MRr, 0:n] = alpha * sum_k a[k*SG_MR + i] * b[k*ldbk + j] + beta * C
// a: packed A panel (K x SG_MR, rows >= MRr unused); b: K rows of >= NV*SG_VL
// floats, ldbk apart (SG_NR when packed, ldb when read in place).
// n (1..NV*SG_VL) is the number of valid columns of C.

template <int MRr, int NV>
static inline void sg_kernel(int K, const float* a, const float* b, long ldbk,
                             float* C, long ldc, int n, float alpha, float beta) {
    // start pulling the C tile in now; it is read/written only after the K loop
    for (int i = 0; i < MRr && SG_PREFETCH_C; i++) {
        __builtin_prefetch(C + i * ldc, 1, 3);
        __builtin_prefetch(C + i * ldc + NV * SG_VL - 1, 1, 3);
    }
    sg_v acc[MRr][NV];
    for (int i = 0; i < MRr; i++)
        for (int v = 0; v < NV; v++) acc[i][v] = sg_zero();
    for (int k = 0; k < K; k++) {
        sg_v bv[NV];
        for (int v = 0; v < NV; v++) bv[v] = sg_load(b + v * SG_VL);
        for (int i = 0; i < MRr; i++) {
            sg_v av = sg_set1(a[i]);
            for (int v = 0; v < NV; v++) acc[i][v] = sg_fma(av, bv[v], acc[i][v]);
        }
        a += SG_MR;
        b += ldbk;
    }
    sg_v va = sg_set1(alpha), vb = sg_set1(beta);
    if (n == NV * SG_VL) {
        for (int i = 0; i < MRr; i++)
            for (int v = 0; v < NV; v++) {
                float* c = C + i * ldc + v * SG_VL;
                sg_v r = sg_mul(acc[i][v], va);
                if (beta != 0.0f) r = sg_fma(vb, sg_load(c), r);
                sg_store(c, r);
            }
    } else {
        for (int i = 0; i < MRr; i++)
            for (int v = 0; v < NV; v++) {
                int nv = std::min(SG_VL, n - v * SG_VL);
                if (nv <= 0) break;
                float* c = C + i * ldc + v * SG_VL;
                sg_v r = sg_mul(acc[i][v], va);
                if (beta != 0.0f) r = sg_fma(vb, sg_load_n(c, nv), r);
                sg_store_n(c, r, nv);
            }
    }
}

// pick the instantiation for an edge tile of mr rows (1..SG_MR) and n columns
template <int MRr>
static inline void sg_kernel_mr(int mr, int K, const float* a, const float* b, long ldbk,
                                float* C, long ldc, int n, float alpha, float beta) {
    if constexpr (MRr > 1) {
        if (mr < MRr) {
            sg_kernel_mr<MRr - 1>(mr, K, a, b, ldbk, C, ldc, n, alpha, beta);
            return;
        }
    }
    if (n > SG_VL) sg_kernel<MRr, 2>(K, a, b, ldbk, C, ldc, n, alpha, beta);
    else           sg_kernel<MRr, 1>(K, a, b, ldbk, C, ldc, n, alpha, beta);
}

// ----------------------------------------------------------------------------
// packing
//
// Two of the four packing cases are plain copies (op(A) = A^T: a k-row of A is
// contiguous along i; op(B) = B: a k-row of B is contiguous along j). The other
// two (op(A) = A, op(B) = B^T) are transposes: the source is contiguous along k
// but the panel wants k-major. With AVX-512 they go through 16x16 register
// transposes (~4 shuffles per vector) instead of one scalar store per element.

#if defined(__AVX512F__)
// GCC 12 flags its own _mm512_undefined_ps() inside the shuffle intrinsics as
// "maybe uninitialized" once inlined here: a known false positive
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
// in-register transpose of 16 vectors r[0..15] (row i = r[i]) -> r[j] = column j
static inline void sg_transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {  // interleave pairs of rows: 2x2 blocks
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {  // 4x4 blocks within each 128-bit lane
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    }
    // now r[4q + c] holds, in 128-bit lane L, column (4L + c) of rows 4q..4q+3;
    // two rounds of 128-bit lane shuffles gather the four row-quads of a column
    for (int c = 0; c < 4; c++) {
        t[c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88);        // lanes 0,2 of each
        t[4 + c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xDD);    // lanes 1,3
        t[8 + c] = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88);
        t[12 + c] = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xDD);
    }
    for (int c = 0; c < 4; c++) {
        r[c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0x88);        // column c
        r[8 + c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0xDD);    // column 8 + c
        r[4 + c] = _mm512_shuffle_f32x4(t[4 + c], t[12 + c], 0x88); // column 4 + c
        r[12 + c] = _mm512_shuffle_f32x4(t[4 + c], t[12 + c], 0xDD); // column 12 + c
    }
}

// rows src + r*ld (r < nrows, others read as zero), columns [0, kc) -> for each
// column k, the nrows-or-more values go to dst + k*dstride (nstore lanes written)
static inline void sg_pack_transpose16(const float* src, long ld, int nrows, int kc,
                                       float* dst, int dstride, int nstore) {
    __mmask16 smask = (__mmask16)((1u << nstore) - 1);
    for (int k = 0; k < kc; k += 16) {
        int kn = std::min(16, kc - k);
        __mmask16 lmask = (__mmask16)((1u << kn) - 1);
        __m512 r[16];
        for (int i = 0; i < 16; i++)
            r[i] = i < nrows ? _mm512_maskz_loadu_ps(lmask, src + i * ld + k) : _mm512_setzero_ps();
        sg_transpose16(r);
        for (int c = 0; c < kn; c++) _mm512_mask_storeu_ps(dst + (long)(k + c) * dstride, smask, r[c]);
    }
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

// op(A)[ic:ic+mc, k0:k0+kc] -> MR-row panels: panel p at dst + p*MR*kc holds
// dst[k*SG_MR + i] = op(A)[ic + p*MR + i][k0 + k], rows past mc zero
static inline void sg_pack_a(bool transA, const float* A, int lda, int ic, int mc,
                             int k0, int kc, float* dst) {
    if (transA) {  // op(A)[i][k] = A[k*lda + i]: walk k-rows of A, mc contiguous
        // floats each, so every cache line / page of A is touched once per block
        for (int k = 0; k < kc; k++) {
            const float* src = A + (long)(k0 + k) * lda + ic;
            for (int ir = 0; ir < mc; ir += SG_MR) {
                int mr = std::min(SG_MR, mc - ir);  // SG_MR <= SG_VL: one masked vector
                sg_store_n(dst + (long)ir * kc + k * SG_MR, sg_load_n(src + ir, mr), SG_MR);
            }
        }
        return;
    }
    // op(A)[i][k] = A[i*lda + k]: transpose MR rows at a time
    for (int ir = 0; ir < mc; ir += SG_MR) {
        int mr = std::min(SG_MR, mc - ir);
        const float* src = A + (long)(ic + ir) * lda + k0;
        float* d = dst + (long)ir * kc;
#if defined(__AVX512F__)
        sg_pack_transpose16(src, lda, mr, kc, d, SG_MR, SG_MR);
#else
        if (mr < SG_MR) std::memset(d, 0, sizeof(float) * kc * SG_MR);
        for (int i = 0; i < mr; i++)
            for (int k = 0; k < kc; k++) d[k * SG_MR + i] = src[(long)i * lda + k];
#endif
    }
}

// op(B)[k0:k0+kc, j0:j0+nr] -> dst[k*SG_NR + j], columns nr..SG_NR-1 zero
static inline void sg_pack_b(bool transB, const float* B, int ldb, int k0, int kc,
                             int j0, int nr, float* dst) {
    if (!transB) {  // op(B)[k][j] = B[k*ldb + j]: rows are contiguous
        for (int k = 0; k < kc; k++) {
            const float* src = B + (long)(k0 + k) * ldb + j0;
            float* d = dst + k * SG_NR;
            for (int v = 0; v < SG_NR; v += SG_VL) {
                int n = std::min(SG_VL, nr - v);
                sg_store(d + v, n >= SG_VL ? sg_load(src + v) : n > 0 ? sg_load_n(src + v, n) : sg_zero());
            }
        }
        return;
    }
    // op(B)[k][j] = B[j*ldb + k]: transpose 16 stored rows (j) at a time
#if defined(__AVX512F__)
    for (int jh = 0; jh < SG_NR; jh += 16)
        sg_pack_transpose16(B + (long)(j0 + jh) * ldb + k0, ldb, std::max(0, std::min(16, nr - jh)),
                            kc, dst + jh, SG_NR, 16);
#else
    if (nr < SG_NR) std::memset(dst, 0, sizeof(float) * kc * SG_NR);
    for (int j = 0; j < nr; j++) {
        const float* src = B + (long)(j0 + j) * ldb + k0;
        for (int k = 0; k < kc; k++) dst[k * SG_NR + j] = src[k];
    }
#endif
}

// per-thread packing scratch, grown on demand, 64-byte aligned
struct sg_buf {
    float* p = nullptr;
    size_t n = 0;
    float* get(size_t want) {
        if (want > n) {
            std::free(p);
            n = want;
            p = (float*)std::aligned_alloc(64, ((want * sizeof(float) + 63) / 64) * 64);
        }
        return p;
    }
    ~sg_buf() { std::free(p); }
};

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
