// Matrix products on the GPU: the same gemm() as cpu/matmul.h, row-major, on
// cuBLAS (column-major). A row-major (M,N) matrix with row stride ld is the
// column-major (N,M) matrix with leading dimension ld, so
//     row-major   C = op(A) op(B)
//     column-major C^T = op(B)^T op(A)^T
// and the call swaps the operands and M <-> N; the op flags stay as they are.
#pragma once
#include <cuda_bf16.h>

#include "common.cuh"

namespace gpu {

// C = alpha * op(A) op(B) + beta * C for `batch` independent products, all
// row-major (see cpu/matmul.h for the argument convention). Device pointers.
// beta == 0 never reads C.
inline void gemm(bool transA, bool transB, int M, int N, int K, float alpha,
                 const float* A, long long lda, long long strideA,
                 const float* B, long long ldb, long long strideB, float beta,
                 float* C, long long ldc, long long strideC, int batch) {
    cublasOperation_t opA = transA ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t opB = transB ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CHECK(cublasSgemmStridedBatched(gpu_cublas(), opB, opA, N, M, K, &alpha,
                                           B, (int)ldb, strideB, A, (int)lda, strideA, &beta,
                                           C, (int)ldc, strideC, batch));
}

// One plain product, no batch.
inline void gemm(bool transA, bool transB, int M, int N, int K, float alpha, const float* A, long long lda,
                 const float* B, long long ldb, float beta, float* C, long long ldc) {
    gemm(transA, transB, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}

// --- Products on bf16 tensor cores, for operands that are bf16 values ---
// Under --precision bf16 every operand of the linear layer's products is a
// bf16 value held in a float (the rounded weights, activations and the
// gradients handed between layers; kernels.cuh), so its copy as
// __nv_bfloat16 is exact, and cuBLAS's bf16 GEMM with fp32 accumulation
// gives the fp32 GEMM's products and sums up to the order of summation.
// The copies live in scratch grown on demand (as column_scratch), one
// buffer per operand slot; attention's products (attention.cuh) use the same
// slots.

__global__ void to_bf16_kernel(__nv_bfloat16* out,  // (n)
                               const float* inp,    // (n)
                               size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = __float2bfloat16_rn(inp[i]);
}

// inp (n floats) as bf16 in scratch buffer `slot` (0..2), valid until the next call for that slot.
inline const __nv_bfloat16* bf16_operand(int slot, const float* inp, size_t n) {
    static __nv_bfloat16* scratch[3] = {nullptr, nullptr, nullptr};
    static size_t size[3] = {0, 0, 0};
    if (n > size[slot]) {
        if (scratch[slot]) CUDA_CHECK(cudaFree(scratch[slot]));
        scratch[slot] = nullptr;
        size[slot] = 0;  // (as column_scratch: a failed allocation leaves no stale size)
        gpu_malloc(&scratch[slot], n, "bf16 copy of a product's operand");
        size[slot] = n;
    }
    if (n > 0) {
        to_bf16_kernel<<<grid_for(n, 256), 256>>>(scratch[slot], inp, n);
        CUDA_CHECK_LAUNCH();
    }
    return scratch[slot];
}

// x (n floats) as a product's operand of type Op: x itself for float, its
// exact bf16 copy in scratch `slot` for __nv_bfloat16.
template <typename Op>
inline const Op* as_operand(int slot, const float* x, size_t n);
template <>
inline const float* as_operand<float>(int, const float* x, size_t) {
    return x;
}
template <>
inline const __nv_bfloat16* as_operand<__nv_bfloat16>(int slot, const float* x, size_t n) {
    return bf16_operand(slot, x, n);
}

// gemm() (above) on bf16 operands: C (float) = alpha op(A) op(B) + beta C
// for `batch` products, accumulated in fp32.
inline void gemm(bool transA, bool transB, int M, int N, int K, float alpha,
                 const __nv_bfloat16* A, long long lda, long long strideA,
                 const __nv_bfloat16* B, long long ldb, long long strideB, float beta,
                 float* C, long long ldc, long long strideC, int batch) {
    cublasOperation_t opA = transA ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t opB = transB ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(gpu_cublas(), opB, opA, N, M, K, &alpha, B, CUDA_R_16BF, (int)ldb, strideB,
                                            A, CUDA_R_16BF, (int)lda, strideA, &beta, C, CUDA_R_32F, (int)ldc, strideC,
                                            batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}
inline void gemm(bool transA, bool transB, int M, int N, int K, float alpha, const __nv_bfloat16* A, long long lda,
                 const __nv_bfloat16* B, long long ldb, float beta, float* C, long long ldc) {
    gemm(transA, transB, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}

// out[i, o] += bias[o] for every row i of a (rows, OC) matrix.
__global__ void add_bias_kernel(float* out,         // (rows,OC)
                                const float* bias,  // (OC)
                                size_t rows, int OC) {
    size_t n = rows * OC;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] += bias[i % OC];
}

// partial[k, o] = sum over the rows i of chunk k of dout[i, o] (see
// column_chunks). Block (32, 32): threadIdx.x picks one of 32 adjacent
// columns (coalesced), threadIdx.y strides over the chunk's rows; the 32
// partial sums of a column are added in shared memory in a fixed order.
// Grid (ceil(OC / 32), chunks).
__global__ void bias_backward_partial_kernel(float* partial,     // (chunks,OC)
                                             const float* dout,  // (rows,OC)
                                             size_t rows, int OC) {
    __shared__ float part[32][33];
    int o = blockIdx.x * 32 + threadIdx.x;
    size_t per = (rows + gridDim.y - 1) / gridDim.y, begin = blockIdx.y * per;
    size_t end = begin + per < rows ? begin + per : rows;
    float sum = 0.0f;
    if (o < OC)
        for (size_t i = begin + threadIdx.y; i < end; i += 32) sum += dout[i * OC + o];
    part[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && o < OC) {
        float total = 0.0f;
        for (int k = 0; k < 32; k++) total += part[k][threadIdx.x];
        partial[(size_t)blockIdx.y * OC + o] = total;
    }
}

// dbias[o] += sum over rows i of dout[i, o]; two passes, deterministic.
inline void bias_backward(float* dbias,       // (OC)
                          const float* dout,  // (rows,OC)
                          size_t rows, int OC) {
    int chunks = column_chunks(rows, OC);
    float* partial = column_scratch((size_t)chunks * OC);
    bias_backward_partial_kernel<<<dim3(ceil_div(OC, 32), chunks), dim3(32, 32)>>>(partial, dout, rows, OC);
    CUDA_CHECK_LAUNCH();
    column_sum_finish(dbias, partial, chunks, OC);
}

// Linear layer: out = inp weight^T + bias, weight stored (out, in), its
// product on operands Op: float, or the __nv_bfloat16 copies of bf16 values.
template <typename Op>
inline void linear_forward(float* out,        // (BT,OC)
                           const Op* inp,     // (BT,C)
                           const Op* weight,  // (OC,C)
                           const float* bias,  // (OC) or nullptr
                           int BT, int C, int OC) {
    gemm(false, true, BT, OC, C, 1.0f, inp, C, weight, C, 0.0f, out, OC);
    if (bias == nullptr) return;
    size_t n = (size_t)BT * OC;
    add_bias_kernel<<<grid_for(n, 256), 256>>>(out, bias, (size_t)BT, OC);
    CUDA_CHECK_LAUNCH();
}

// dinp += dout weight;  dweight += dout^T inp;  dbias += column sums of dout
// (dout_op: dout as the products' operand).
template <typename Op>
inline void linear_backward(float* dinp,         // (BT,C)
                            float* dweight,      // (OC,C)
                            float* dbias,        // (OC) or nullptr
                            const float* dout,   // (BT,OC)
                            const Op* dout_op,   // (BT,OC)
                            const Op* inp,       // (BT,C)
                            const Op* weight,    // (OC,C)
                            int BT, int C, int OC) {
    gemm(false, false, BT, C, OC, 1.0f, dout_op, OC, weight, C, 1.0f, dinp, C);
    gemm(true, false, OC, C, BT, 1.0f, dout_op, OC, inp, C, 1.0f, dweight, C);
    if (dbias == nullptr) return;
    bias_backward(dbias, dout, (size_t)BT, OC);
}

inline void matmul_forward(float* out,           // (B,T,OC)
                           const float* inp,     // (B,T,C)
                           const float* weight,  // (OC,C)
                           const float* bias,    // (OC) or nullptr
                           int B, int T, int C, int OC) {
    linear_forward(out, inp, weight, bias, B * T, C, OC);
}

inline void matmul_backward(float* dinp,          // (B,T,C)
                            float* dweight,       // (OC,C)
                            float* dbias,         // (OC) or nullptr
                            const float* dout,    // (B,T,OC)
                            const float* inp,     // (B,T,C)
                            const float* weight,  // (OC,C)
                            int B, int T, int C, int OC) {
    linear_backward(dinp, dweight, dbias, dout, dout, inp, weight, B * T, C, OC);
}

// The same on bf16 tensor cores; every operand (inp, weight, and dout in
// the backward) holds bf16 values.
inline void matmul_forward_bf16(float* out,           // (B,T,OC)
                                const float* inp,     // (B,T,C)
                                const float* weight,  // (OC,C)
                                const float* bias,    // (OC) or nullptr
                                int B, int T, int C, int OC) {
    size_t BT = (size_t)B * T;
    linear_forward(out, bf16_operand(0, inp, BT * C), bf16_operand(1, weight, (size_t)OC * C), bias, B * T, C, OC);
}

inline void matmul_backward_bf16(float* dinp,          // (B,T,C)
                                 float* dweight,       // (OC,C)
                                 float* dbias,         // (OC) or nullptr
                                 const float* dout,    // (B,T,OC)
                                 const float* inp,     // (B,T,C)
                                 const float* weight,  // (OC,C)
                                 int B, int T, int C, int OC) {
    size_t BT = (size_t)B * T;
    linear_backward(dinp, dweight, dbias, dout, bf16_operand(0, dout, BT * OC), bf16_operand(2, inp, BT * C),
                    bf16_operand(1, weight, (size_t)OC * C), B * T, C, OC);
}

}  // namespace gpu
