// cpu/fast/sgemm_kernel.h: the inner parts of the fp32 GEMM of cpu/fast/sgemm.h
// (read that file first): a few floats of SIMD vector (AVX-512, AVX2 or plain
// arrays), the register micro-kernel that keeps an MR x NR tile of C in
// registers for a whole K block, and the packing of op(A) and op(B) into the
// panels it reads.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <cstring>
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

namespace fast {

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
// Tuning knobs (overridable with -D for experiments; the defaults were chosen
// with bench/bench_matmul.cpp, and bench/NOTES.md records what each gained):
//   SG_PREFETCH_C  prefetch the C tile at micro-kernel entry (hides the C miss
//                  behind the K loop; helps shapes with K <= 256)
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
#ifndef SG_KC
#define SG_KC 256
#endif
#ifndef SG_MC
#if defined(__AVX512F__)
#define SG_MC (SG_MR * 6)   // 84
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
// Never inlined: it needs 15 of AVX2's 16 vector registers for the whole K
// loop, and inlined into a large caller GCC spilled an accumulator to the
// stack inside that loop (38 instead of 83 GFLOP/s on one core). One call per
// MR x NR tile costs nothing beside its K-long loop.

template <int MRr, int NV>
__attribute__((noinline)) static void sg_kernel(int K, const float* a, const float* b, long ldbk,
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
#elif defined(__AVX2__) && defined(__FMA__)
// in-register transpose of 8 vectors r[0..7] (row i = r[i]) -> r[j] = column j
static inline void sg_transpose8(__m256 r[8]) {
    __m256 t[8], s[8];
    for (int i = 0; i < 8; i += 2) {  // interleave pairs of rows: 2x2 blocks
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {  // 4x4 blocks within each 128-bit lane
        s[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        s[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        s[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        s[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    // s[c] holds column c of rows 0..3 in its low 128-bit lane and column 4+c
    // of the same rows in its high lane; s[4+c] the same for rows 4..7: join
    // the lanes
    for (int c = 0; c < 4; c++) {
        r[c] = _mm256_permute2f128_ps(s[c], s[4 + c], 0x20);
        r[4 + c] = _mm256_permute2f128_ps(s[c], s[4 + c], 0x31);
    }
}

// rows src + r*ld (r < nrows, others read as zero), columns [0, kc) -> for each
// column k, 8 values to dst + k*dstride. Full 8-lane stores, in order of k: with
// dstride < 8 a column's upper lanes spill into the next column's slots, which
// its own store then overwrites; the last column spills 8 - dstride floats past
// the panel (sg_buf keeps that much slack).
static inline void sg_pack_transpose8(const float* src, long ld, int nrows, int kc,
                                      float* dst, int dstride) {
    for (int k = 0; k < kc; k += 8) {
        int kn = std::min(8, kc - k);
        __m256 r[8];
        for (int i = 0; i < 8; i++)
            r[i] = i >= nrows ? _mm256_setzero_ps()
                   : kn == 8  ? _mm256_loadu_ps(src + i * ld + k)
                              : sg_load_n(src + i * ld + k, kn);
        sg_transpose8(r);
        for (int c = 0; c < kn; c++) _mm256_storeu_ps(dst + (long)(k + c) * dstride, r[c]);
    }
}
#endif

// op(A)[ic:ic+mc, k0:k0+kc] -> MR-row panels: panel p at dst + p*MR*kc holds
// dst[k*SG_MR + i] = op(A)[ic + p*MR + i][k0 + k], rows past mc zero
static inline void sg_pack_a(bool transA, const float* A, int lda, int ic, int mc,
                             int k0, int kc, float* dst) {
    if (transA) {  // op(A)[i][k] = A[k*lda + i]: walk k-rows of A, mc contiguous
        // floats each, so every cache line / page of A is touched once per block.
        // A column is SG_MR <= SG_VL floats: one masked load (lanes past mr read
        // as zero) and one full store, whose lanes past SG_MR land in the next
        // column's slots, rewritten when k moves on; only the last column, after
        // which those slots are the next panel's first column, stores SG_MR
        // lanes (a masked store costs ~10x a plain one on some AVX2 cores).
        for (int k = 0; k < kc; k++) {
            const float* src = A + (long)(k0 + k) * lda + ic;
            for (int ir = 0; ir < mc; ir += SG_MR) {
                int mr = std::min(SG_MR, mc - ir);
                sg_v col = sg_load_n(src + ir, mr);
                float* d = dst + (long)ir * kc + k * SG_MR;
                if (k + 1 < kc) sg_store(d, col);
                else sg_store_n(d, col, SG_MR);
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
#elif defined(__AVX2__) && defined(__FMA__)
        sg_pack_transpose8(src, lda, mr, kc, d, SG_MR);
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
#elif defined(__AVX2__) && defined(__FMA__)
    for (int jh = 0; jh < SG_NR; jh += 8)
        sg_pack_transpose8(B + (long)(j0 + jh) * ldb + k0, ldb, std::max(0, std::min(8, nr - jh)), kc,
                           dst + jh, SG_NR);
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
            // + SG_VL: the last column of a transposed pack may spill a vector's tail
            p = (float*)std::aligned_alloc(64, (((want + SG_VL) * sizeof(float) + 63) / 64) * 64);
        }
        return p;
    }
    ~sg_buf() { std::free(p); }
};

}  // namespace fast
