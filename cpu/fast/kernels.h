// The fast kernel set (cpu/kernels.h has the plain one and how a model uses
// its set): for a call on float tensors, the fast form of this folder where
// the layer has one; in any other type, and for the two functions without a
// fast form, the plain loops of cpu/. Training builds GPT<float, FastKernels>
// (train/model.h).
#pragma once
#include <type_traits>

#include "../kernels.h"
#include "attention.h"
#include "crossentropy.h"
#include "expert_parallel.h"
#include "gelu.h"
#include "layernorm.h"
#include "matmul.h"
#include "mot.h"
#include "token_choice.h"

// true when a call is on float tensors: one of its arguments is a float*
template <typename... A>
inline constexpr bool on_float = (std::is_same_v<A, float*> || ...);

// Each function takes the arguments of the layer function of the same name.
struct FastKernels {
    template <typename... A> static void matmul_forward(A... a) {
        if constexpr (on_float<A...>) fast::matmul_forward(a...);
        else ::matmul_forward(a...);
    }
    template <typename... A> static void matmul_backward(A... a) {
        if constexpr (on_float<A...>) fast::matmul_backward(a...);
        else ::matmul_backward(a...);
    }
    // no fast form
    template <typename... A> static void layernorm_forward(A... a) { ::layernorm_forward(a...); }
    template <typename... A> static void layernorm_backward(A... a) {
        if constexpr (on_float<A...>) fast::layernorm_backward(a...);
        else ::layernorm_backward(a...);
    }
    template <typename... A> static void attention_forward(A... a) {
        if constexpr (on_float<A...>) fast::attention_forward(a...);
        else ::attention_forward(a...);
    }
    template <typename... A> static void attention_backward(A... a) {
        if constexpr (on_float<A...>) fast::attention_backward(a...);
        else ::attention_backward(a...);
    }
    template <typename... A> static void gelu_forward(A... a) {
        if constexpr (on_float<A...>) fast::gelu_forward(a...);
        else ::gelu_forward(a...);
    }
    template <typename... A> static void gelu_backward(A... a) {
        if constexpr (on_float<A...>) fast::gelu_backward(a...);
        else ::gelu_backward(a...);
    }
    template <typename... A> static void crossentropy_forward(A... a) {
        if constexpr (on_float<A...>) fast::crossentropy_forward(a...);
        else ::crossentropy_forward(a...);
    }
    // no fast form
    template <typename... A> static void crossentropy_backward(A... a) { ::crossentropy_backward(a...); }
    template <typename... A> static void mot_forward(A... a) {
        if constexpr (on_float<A...>) fast::mot_forward(a...);
        else ::mot_forward(a...);
    }
    template <typename... A> static void mot_backward(A... a) {
        if constexpr (on_float<A...>) fast::mot_backward(a...);
        else ::mot_backward(a...);
    }
    template <typename... A> static void mot_ep_forward(A... a) { fast::mot_ep_forward(a...); }
    template <typename... A> static void mot_ep_backward(A... a) { fast::mot_ep_backward(a...); }
    template <typename... A> static void mot_ep_inputs_forward(A... a) { fast::mot_ep_inputs_forward(a...); }
    template <typename... A> static void mot_ep_inputs_backward(A... a) { fast::mot_ep_inputs_backward(a...); }
    template <typename... A> static void token_choice_ep_forward(A... a) { fast::token_choice_ep_forward(a...); }
    template <typename... A> static void token_choice_ep_backward(A... a) { fast::token_choice_ep_backward(a...); }
    template <typename... A> static void token_choice_forward(A... a) {
        if constexpr (on_float<A...>) fast::token_choice_forward(a...);
        else ::token_choice_forward(a...);
    }
    template <typename... A> static void token_choice_backward(A... a) {
        if constexpr (on_float<A...>) fast::token_choice_backward(a...);
        else ::token_choice_backward(a...);
    }
    // no fast form
    template <typename... A> static void residual_forward(A... a) { ::residual_forward(a...); }
    template <typename... A> static void residual_backward(A... a) { ::residual_backward(a...); }
    template <typename... A> static void encoder_forward(A... a) { ::encoder_forward(a...); }
    template <typename... A> static void attention_decode_forward(A... a) { ::attention_decode_forward(a...); }
    template <typename real> static void round_bf16(real* x, size_t n) { bf16_round(x, n); }
};
