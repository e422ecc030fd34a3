// Kernel sets on the GPU, as on the CPU (cpu/kernels.h): the functions that
// put layers together (the dense FFN of ffn.cuh, each kind's
// ffn_kind_forward / ffn_kind_backward, block.cuh, gpt.cuh) call the layers
// through a set, a template parameter, so that one composition serves fp32
// and bf16:
//   Kernels: the layer functions of this folder, fp32 (TF32 under --tf32).
//   Bf16Kernels<Bf16OperandKernels> (common/bf16_kernels.h): --precision
//     bf16, the contract the CPU emulates, with the same code: every tensor a
//     bf16 run stores is rounded to bf16 when its layer has written it.
//     Bf16OperandKernels is Kernels with the linear layer's products on bf16
//     tensor cores (matmul.cuh, matmul_forward_bf16): under bf16 each operand
//     of those products is a bf16 value (the rounded weights, the rounded
//     activations, the rounded gradients handed between layers), so its bf16
//     copy is exact and the products and their fp32 sums are fp32 GEMM's up
//     to the order of summation. The other products (attention's, which read float
//     probabilities; MoT's and token choice's, whose stages read float
//     results within the fused call) stay fp32.
// The tensors stay float in memory, each holding bf16 values where the
// contract says bf16 (README, "Precision").
#pragma once
#include <cstdint>

#include "attention.cuh"
#include "common.cuh"
#include "crossentropy.cuh"
#include "encoder.cuh"
#include "gelu.cuh"
#include "layernorm.cuh"
#include "matmul.cuh"
#include "mot.cuh"
#include "residual.cuh"
#include "token_choice.cuh"

namespace gpu {

__global__ void bf16_round_kernel(float* out,        // (n)
                                  const float* inp,  // (n); may be out
                                  size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = bf16_round_device(inp[i]);
}

// out (n) = inp (n) rounded to bf16; out may be inp.
inline void bf16_round_copy(float* out, const float* inp, size_t n) {
    if (n == 0) return;
    bf16_round_kernel<<<grid_for(n, 256), 256>>>(out, inp, n);
    CUDA_CHECK_LAUNCH();
}

// Each function takes the arguments of the layer function of the same name.
struct Kernels {
    template <typename... A> static void matmul_forward(A... a) { gpu::matmul_forward(a...); }
    template <typename... A> static void matmul_backward(A... a) { gpu::matmul_backward(a...); }
    template <typename... A> static void layernorm_forward(A... a) { gpu::layernorm_forward(a...); }
    template <typename... A> static void layernorm_backward(A... a) { gpu::layernorm_backward(a...); }
    template <typename... A> static void attention_forward(A... a) { gpu::attention_forward(a...); }
    template <typename... A> static void attention_backward(A... a) { gpu::attention_backward(a...); }
    template <typename... A> static void gelu_forward(A... a) { gpu::gelu_forward(a...); }
    template <typename... A> static void gelu_backward(A... a) { gpu::gelu_backward(a...); }
    template <typename... A> static void crossentropy_forward(A... a) { gpu::crossentropy_forward(a...); }
    template <typename... A> static void crossentropy_backward(A... a) { gpu::crossentropy_backward(a...); }
    template <typename... A> static void mot_forward(A... a) { gpu::mot_forward(a...); }
    template <typename... A> static void mot_backward(A... a) { gpu::mot_backward(a...); }
    template <typename... A> static void mot_ep_forward(A... a) { gpu::mot_ep_forward(a...); }
    template <typename... A> static void mot_ep_backward(A... a) { gpu::mot_ep_backward(a...); }
    template <typename... A> static void mot_ep_inputs_forward(A... a) { gpu::mot_ep_inputs_forward(a...); }
    template <typename... A> static void mot_ep_inputs_backward(A... a) { gpu::mot_ep_inputs_backward(a...); }
    template <typename... A> static void token_choice_forward(A... a) { gpu::token_choice_forward(a...); }
    template <typename... A> static void token_choice_backward(A... a) { gpu::token_choice_backward(a...); }
    template <typename... A> static void token_choice_ep_forward(A... a) { gpu::token_choice_ep_forward(a...); }
    template <typename... A> static void token_choice_ep_backward(A... a) { gpu::token_choice_ep_backward(a...); }
    template <typename... A> static void residual_forward(A... a) { gpu::residual_forward(a...); }
    template <typename... A> static void residual_backward(A... a) { gpu::residual_backward(a...); }
    template <typename... A> static void encoder_forward(A... a) { gpu::encoder_forward(a...); }
    static void round_bf16(float* x, size_t n) { bf16_round_copy(x, x, n); }
};

// Kernels with the linear layer on bf16 tensor cores, for bf16 operands only (see the top).
struct Bf16OperandKernels : Kernels {
    template <typename... A> static void matmul_forward(A... a) { gpu::matmul_forward_bf16(a...); }
    template <typename... A> static void matmul_backward(A... a) { gpu::matmul_backward_bf16(a...); }
};

}  // namespace gpu
