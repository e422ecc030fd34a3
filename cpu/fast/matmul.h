// Fast gemm() and linear layer (cpu/matmul.h has the plain loops): the same
// arguments, the products on the blocked kernel of sgemm.h, the bias by the
// functions of cpu/matmul.h.
//
// Templated on real like the batched layers of this folder that call them
// (mot.h, token_choice.h), which the tests also run in double against the
// plain loops: in float the products run on sgemm, in any other type on the
// plain loops of cpu/matmul.h.
#pragma once
#include <type_traits>

#include "../matmul.h"
#include "sgemm.h"

namespace fast {

// gemm() of cpu/matmul.h: `batch` products C = alpha op(A) op(B) + beta C
template <typename real>
void gemm(bool transA, bool transB, int M, int N, int K, real alpha,
          const real* A, long long lda, long long strideA,
          const real* B, long long ldb, long long strideB, real beta,
          real* C, long long ldc, long long strideC, int batch) {
    if constexpr (std::is_same_v<real, float>)  // sgemm takes the leading dimensions as int
        sgemm_strided_batched(transA, transB, M, N, K, alpha, A, (int)lda, strideA, B, (int)ldb, strideB, beta, C,
                              (int)ldc, strideC, batch);
    else
        ::gemm(transA, transB, M, N, K, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC, batch);
}

// One plain product, no batch.
template <typename real>
void gemm(bool transA, bool transB, int M, int N, int K, real alpha, const real* A, long long lda,
          const real* B, long long ldb, real beta, real* C, long long ldc) {
    gemm(transA, transB, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
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
    if (bias != nullptr) ::matmul_bias_forward(out, bias, BT, OC);
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
    if (dbias != nullptr) ::matmul_bias_backward(dbias, dout, BT, OC);
}

}  // namespace fast
