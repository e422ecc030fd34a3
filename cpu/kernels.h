// Kernel sets: which form of each layer a model runs.
//
// Every layer function of this folder is plain loops templated on the scalar
// type: the reference a reader learns from and the oracle the tests run in
// double. Training runs in float, where the loops are too slow, on the fast
// forms of cpu/fast/, which compute the same formulas with other rounding
// (summation order; a polynomial exp, about one float ulp).
//
// The functions that put layers together (the FFN kinds of ffn.h, mot.h and
// token_choice.h, block.h, gpt.h) do not call those layers by name but
// through a kernel set, a template parameter: Kernels::matmul_forward(...)
// and so on. A model is built with its set, GPT<real, Kernels> (gpt.h), and
// passes it down. Two sets exist:
//   PlainKernels (here): the loops of this folder. The default, so the
//     reference reads and compiles without cpu/fast/.
//   FastKernels (cpu/fast/kernels.h): in float the fast forms, in any other
//     type the loops. Training builds GPT<float, FastKernels> (train/model.h).
// A set holds the layers that have a fast form, forward and backward, and
// the encoder's and residual's forward and attention's decoding step (a bf16
// run stores their outputs in bf16), and round_bf16, the rounding to bf16 on
// this path; the others (the encoder's backward, AdamW) are called by name. A
// third set, Bf16Kernels<Inner> (common/bf16_kernels.h, shared with the GPU
// path), runs another set's layers and rounds what they store to bf16
// (--precision bf16).
#pragma once
#include "../common/bf16.h"
#include "attention.h"
#include "crossentropy.h"
#include "encoder.h"
#include "gelu.h"
#include "layernorm.h"
#include "matmul.h"
#include "mot.h"
#include "residual.h"
#include "token_choice.h"

// Each function takes the arguments of the layer function of the same name.
struct PlainKernels {
    template <typename... A> static void matmul_forward(A... a) { ::matmul_forward(a...); }
    template <typename... A> static void matmul_backward(A... a) { ::matmul_backward(a...); }
    template <typename... A> static void layernorm_forward(A... a) { ::layernorm_forward(a...); }
    template <typename... A> static void layernorm_backward(A... a) { ::layernorm_backward(a...); }
    template <typename... A> static void attention_forward(A... a) { ::attention_forward(a...); }
    template <typename... A> static void attention_backward(A... a) { ::attention_backward(a...); }
    template <typename... A> static void attention_decode_forward(A... a) { ::attention_decode_forward(a...); }
    template <typename... A> static void gelu_forward(A... a) { ::gelu_forward(a...); }
    template <typename... A> static void gelu_backward(A... a) { ::gelu_backward(a...); }
    template <typename... A> static void crossentropy_forward(A... a) { ::crossentropy_forward(a...); }
    template <typename... A> static void crossentropy_backward(A... a) { ::crossentropy_backward(a...); }
    template <typename... A> static void mot_forward(A... a) { ::mot_forward(a...); }
    template <typename... A> static void mot_backward(A... a) { ::mot_backward(a...); }
    // expert parallelism has a fast form only (cpu/fast/expert_parallel.h), which training runs
    template <typename... A> static void mot_ep_forward(A...) { fail("expert parallelism runs on FastKernels"); }
    template <typename... A> static void mot_ep_backward(A...) { fail("expert parallelism runs on FastKernels"); }
    template <typename... A> static void mot_ep_inputs_forward(A...) { fail("expert parallelism runs on FastKernels"); }
    template <typename... A> static void mot_ep_inputs_backward(A...) { fail("expert parallelism runs on FastKernels"); }
    template <typename... A> static void token_choice_ep_forward(A...) {
        fail("expert parallelism runs on FastKernels");
    }
    template <typename... A> static void token_choice_ep_backward(A...) {
        fail("expert parallelism runs on FastKernels");
    }
    template <typename... A> static void token_choice_forward(A... a) { ::token_choice_forward(a...); }
    template <typename... A> static void token_choice_backward(A... a) { ::token_choice_backward(a...); }
    template <typename... A> static void residual_forward(A... a) { ::residual_forward(a...); }
    template <typename... A> static void residual_backward(A... a) { ::residual_backward(a...); }
    template <typename... A> static void encoder_forward(A... a) { ::encoder_forward(a...); }
    template <typename real> static void round_bf16(real* x, size_t n) { bf16_round(x, n); }
};
