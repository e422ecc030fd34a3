// Matrix products. The linear layers and the tied LM head go through gemm().
// The GPU path makes the same calls to cuBLAS, so the two files read side by
// side. (The fast form, cpu/fast/matmul.h, runs the products on a blocked
// kernel and shares the bias functions below.)
#pragma once
#include <algorithm>
#include <cstddef>

// C = alpha * op(A) op(B) + beta * C for `batch` independent products, all
// row-major. op(A) is (M, K), op(B) is (K, N), C is (M, N); transA means A is
// stored (K, M), transB means B is stored (N, K). lda/ldb/ldc are row
// strides; strideA/B/C are the offsets between consecutive batch items.
// beta == 0 never reads C, so C may hold garbage.
template <typename real>
void gemm(bool transA, bool transB, int M, int N, int K, real alpha,
          const real* A, long long lda, long long strideA,
          const real* B, long long ldb, long long strideB, real beta,
          real* C, long long ldc, long long strideC, int batch) {
    #pragma omp parallel for collapse(2)
    for (int bi = 0; bi < batch; bi++) {
        for (int i = 0; i < M; i++) {
            const real* a = A + bi * strideA;
            const real* b = B + bi * strideB;
            real* c = C + bi * strideC + i * ldc;
            for (int j = 0; j < N; j++) {
                real acc = 0;
                for (int k = 0; k < K; k++) {
                    real aik = transA ? a[k * lda + i] : a[i * lda + k];
                    real bkj = transB ? b[j * ldb + k] : b[k * ldb + j];
                    acc += aik * bkj;
                }
                c[j] = alpha * acc + (beta == 0 ? real(0) : beta * c[j]);
            }
        }
    }
}

// One plain product, no batch.
template <typename real>
void gemm(bool transA, bool transB, int M, int N, int K, real alpha, const real* A, long long lda,
          const real* B, long long ldb, real beta, real* C, long long ldc) {
    gemm(transA, transB, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}

// The bias of the linear layer: out += bias on every row.
template <typename real>
void matmul_bias_forward(real* out,         // (BT,OC)
                         const real* bias,  // (OC)
                         int BT, int OC) {
    #pragma omp parallel for
    for (int i = 0; i < BT; i++)
        for (int o = 0; o < OC; o++) out[(size_t)i * OC + o] += bias[o];
}

// dbias += the column sums of dout: walked row by row (contiguous loads) in
// blocks of 64 columns, one block per thread; each column still sums its rows
// in order.
template <typename real>
void matmul_bias_backward(real* dbias,       // (OC)
                          const real* dout,  // (BT,OC)
                          int BT, int OC) {
    #pragma omp parallel for
    for (int o0 = 0; o0 < OC; o0 += 64) {
        int n = std::min(64, OC - o0);
        real sum[64] = {};
        for (int i = 0; i < BT; i++) {
            const real* row = dout + (size_t)i * OC + o0;
            #pragma omp simd
            for (int o = 0; o < n; o++) sum[o] += row[o];
        }
        for (int o = 0; o < n; o++) dbias[o0 + o] += sum[o];
    }
}

// Linear layer: out = inp weight^T + bias, weight stored (out, in).
template <typename real>
void matmul_forward(real* out,           // (B,T,OC)
                    const real* inp,     // (B,T,C)
                    const real* weight,  // (OC,C)
                    const real* bias,    // (OC) or nullptr
                    int B, int T, int C, int OC) {
    int BT = B * T;
    gemm(false, true, BT, OC, C, real(1), inp, C, weight, C, real(0), out, OC);
    if (bias != nullptr) matmul_bias_forward(out, bias, BT, OC);
}

// dinp += dout weight;  dweight += dout^T inp;  dbias += column sums of dout.
template <typename real>
void matmul_backward(real* dinp,          // (B,T,C)
                     real* dweight,       // (OC,C)
                     real* dbias,         // (OC) or nullptr
                     const real* dout,    // (B,T,OC)
                     const real* inp,     // (B,T,C)
                     const real* weight,  // (OC,C)
                     int B, int T, int C, int OC) {
    int BT = B * T;
    gemm(false, false, BT, C, OC, real(1), dout, OC, weight, C, real(1), dinp, C);
    gemm(true, false, OC, C, BT, real(1), dout, OC, inp, C, real(1), dweight, C);
    if (dbias != nullptr) matmul_bias_backward(dbias, dout, BT, OC);
}
