// The emulation of bf16 training (--precision bf16; README, "Precision" has
// the contract), one kernel set for both paths: Bf16Kernels<Inner> runs the
// layers of another set Inner in the model's own type and rounds to bf16
// (common/bf16.h, nearest even) every tensor that a bf16 run stores in bf16,
// right after the layer writes it, with Inner::round_bf16 (the CPU sets round
// on the host, gpu::Kernels with a kernel). The CPU's float model computing
// this way is the oracle the GPU's bf16 run is tested against: both round the
// same tensors at the same points, each product, sum and softmax in float
// from bf16 inputs, each stored result rounded once.
//
// Rounded here (the contract's bf16 tensors): the output of every matmul
// (after the bias), layernorm, gelu, attention, residual sum and the
// encoder; the logits; MoT's mixed tokens U, expert pre-activations P,
// activations A, expert outputs Y and layer output; token choice's gathered
// rows, expert P, A, Y and layer output; and the activation gradient each
// backward hands to the layer below (dinp). Rounded inside the attention
// layer (its bf16_probs): the probabilities, before they weigh the values,
// and the scores' gradient, before it reaches q and k. Left in float:
// layernorm's mean and rstd, attention's scores, MoT's controller
// logits Z and mixing weights M, the router's logits and gates, the losses
// and the probabilities of the cross-entropy, and every parameter gradient.
// The weights a pass reads are the float master weights rounded to bf16,
// once per forward (cpu/gpt.h and gpu/gpt.cuh, gpt_pass_weights).
//
// MoT and token choice run fused (one call each): their stored tensors are
// rounded when the call returns, so within the call a stage reads the
// previous stage's float result, not its rounded one. Their expert-parallel
// forms (--expert-parallel) round the same tensors, every member's copies of
// them, so N ranks compute what one process computes.
#pragma once
#include <cstddef>
#include <tuple>

#include "bf16.h"

// Arguments by position, as the layer functions take them.
template <size_t i, typename... A>
auto arg(A... a) {
    return std::get<i>(std::make_tuple(a...));
}

template <typename Inner>
struct Bf16Kernels {
    // x (n) rounded to bf16 in place, by the inner set (on its device); nothing for a null x
    template <typename real> static void round_out(real* x, size_t n) {
        if (x != nullptr) Inner::round_bf16(x, n);
    }
    // matmul_forward(out (B,T,OC), inp, weight, bias, B, T, C, OC)
    template <typename... A> static void matmul_forward(A... a) {
        Inner::matmul_forward(a...);
        round_out(arg<0>(a...), (size_t)arg<4>(a...) * arg<5>(a...) * arg<7>(a...));
    }
    // matmul_backward(dinp (B,T,C), dweight, dbias, dout, inp, weight, B, T, C, OC)
    template <typename... A> static void matmul_backward(A... a) {
        Inner::matmul_backward(a...);
        round_out(arg<0>(a...), (size_t)arg<6>(a...) * arg<7>(a...) * arg<8>(a...));
    }
    // layernorm_forward(out (B,T,C), mean, rstd, inp, weight, bias, B, T, C)
    template <typename... A> static void layernorm_forward(A... a) {
        Inner::layernorm_forward(a...);
        round_out(arg<0>(a...), (size_t)arg<6>(a...) * arg<7>(a...) * arg<8>(a...));
    }
    // layernorm_backward(dinp (B,T,C), dweight, dbias, dout, inp, weight, mean, rstd, B, T, C)
    template <typename... A> static void layernorm_backward(A... a) {
        Inner::layernorm_backward(a...);
        round_out(arg<0>(a...), (size_t)arg<8>(a...) * arg<9>(a...) * arg<10>(a...));
    }
    // attention_forward(out (B,T,C), preatt, att, inp, B, T, C, NH), the probabilities rounded inside
    template <typename... A> static void attention_forward(A... a) {
        Inner::attention_forward(a..., true);
        round_out(arg<0>(a...), (size_t)arg<4>(a...) * arg<5>(a...) * arg<6>(a...));
    }
    // attention_backward(dinp (B,T,3C), dpreatt, datt, dout, inp, att, B, T, C, NH), dpreatt rounded inside
    template <typename... A> static void attention_backward(A... a) {
        Inner::attention_backward(a..., true);
        round_out(arg<0>(a...), (size_t)arg<6>(a...) * arg<7>(a...) * 3 * arg<8>(a...));
    }
    // attention_decode_forward(out (B,C), kcache, vcache, qkv, pos, maxT, B, C, NH), as attention_forward
    template <typename... A> static void attention_decode_forward(A... a) {
        Inner::attention_decode_forward(a..., true);
        round_out(arg<0>(a...), (size_t)arg<6>(a...) * arg<7>(a...));
    }
    // gelu_forward(out (N), inp, N)
    template <typename... A> static void gelu_forward(A... a) {
        Inner::gelu_forward(a...);
        round_out(arg<0>(a...), (size_t)arg<2>(a...));
    }
    // gelu_backward(dinp (N), inp, dout, N)
    template <typename... A> static void gelu_backward(A... a) {
        Inner::gelu_backward(a...);
        round_out(arg<0>(a...), (size_t)arg<3>(a...));
    }
    // the loss and probabilities stay float: the softmax of the logits is float throughout
    template <typename... A> static void crossentropy_forward(A... a) { Inner::crossentropy_forward(a...); }
    // crossentropy_backward(dlogits (B,T,Vp), dlosses, probs, targets, B, T, V, Vp)
    template <typename... A> static void crossentropy_backward(A... a) {
        Inner::crossentropy_backward(a...);
        round_out(arg<0>(a...), (size_t)arg<4>(a...) * arg<5>(a...) * arg<7>(a...));
    }
    // residual_forward(out (N), inp1, inp2, N)
    template <typename... A> static void residual_forward(A... a) {
        Inner::residual_forward(a...);
        round_out(arg<0>(a...), (size_t)arg<3>(a...));
    }
    // residual_backward(dinp1 (N), dinp2 (N), dout, N): both add dout
    template <typename... A> static void residual_backward(A... a) {
        Inner::residual_backward(a...);
        round_out(arg<0>(a...), (size_t)arg<3>(a...));
        round_out(arg<1>(a...), (size_t)arg<3>(a...));
    }
    // encoder_forward(out (B,T,C), inp, wte, wpe, B, T, C)
    template <typename... A> static void encoder_forward(A... a) {
        Inner::encoder_forward(a...);
        round_out(arg<0>(a...), (size_t)arg<4>(a...) * arg<5>(a...) * arg<6>(a...));
    }
    // mot_forward(out (B,T,C), z, m, u (S,T,E,C), p (S,T,E,f), a, y (S,T,E,C), inp, wc, w1, w2,
    //             B, T, C, E, G, f, tau, discrete)
    template <typename... A> static void mot_forward(A... a) {
        Inner::mot_forward(a...);
        const size_t B = arg<11>(a...), T = arg<12>(a...), C = arg<13>(a...), E = arg<14>(a...), G = arg<15>(a...),
                     f = arg<16>(a...), ST = B / G * T;
        round_out(arg<3>(a...), ST * E * C);
        round_out(arg<4>(a...), ST * E * f);
        round_out(arg<5>(a...), ST * E * f);
        round_out(arg<6>(a...), ST * E * C);
        round_out(arg<0>(a...), B * T * C);
    }
    // Expert parallelism (cpu/fast/expert_parallel.h): the tensors mot_forward
    // rounds, in whichever copy a member keeps of them. Both copies of an
    // exchanged tensor are rounded (the sender's U and the owner's Ul, the
    // owner's Yl and the sender's Y), so that the owner's backward (reading
    // Ul, P, A) and the sender's (reading Y) see the values one process's
    // backward reads from its rounded U, P, A, Y. Within the call the stages
    // read float values, as in the fused mot_forward.
    // mot_ep_forward(out (B,T,C), z, m, u (S,T,E,C), ul (N*S*T,El,C), p (N*S*T,El,f), a, yl (N*S*T,El,C),
    //                y (S,T,E,C), buf, inp, wc, w1, w2, B, T, C, E, G, f, tau, discrete, x)
    template <typename... A> static void mot_ep_forward(A... a) {
        Inner::mot_ep_forward(a...);
        const size_t B = arg<14>(a...), T = arg<15>(a...), C = arg<16>(a...), E = arg<17>(a...), G = arg<18>(a...),
                     f = arg<19>(a...), ST = B / G * T;  // N*S*T*El = S*T*E
        round_out(arg<3>(a...), ST * E * C);
        round_out(arg<4>(a...), ST * E * C);
        round_out(arg<5>(a...), ST * E * f);
        round_out(arg<6>(a...), ST * E * f);
        round_out(arg<7>(a...), ST * E * C);
        round_out(arg<8>(a...), ST * E * C);
        round_out(arg<0>(a...), B * T * C);
    }
    // mot_ep_backward(dinp (B,T,C), ..., B at 23, T, C)
    template <typename... A> static void mot_ep_backward(A... a) {
        Inner::mot_ep_backward(a...);
        round_out(arg<0>(a...), (size_t)arg<23>(a...) * arg<24>(a...) * arg<25>(a...));
    }
    // The input-token exchange: the gathered inputs Xall are copies of bf16
    // inputs; the owners' partial outputs Oall are sums inside the layer
    // (float), their sum the layer output (rounded).
    // mot_ep_inputs_forward(out (B,T,C), z, m, u (N*S*T,El,C), p (N*S*T,El,f), a, y (N*S*T,El,C), xall, oall,
    //                       inp, wc, w1, w2, B, T, C, E, G, f, tau, discrete, x)
    template <typename... A> static void mot_ep_inputs_forward(A... a) {
        Inner::mot_ep_inputs_forward(a...);
        const size_t B = arg<13>(a...), T = arg<14>(a...), C = arg<15>(a...), E = arg<16>(a...), G = arg<17>(a...),
                     f = arg<18>(a...), ST = B / G * T;
        round_out(arg<3>(a...), ST * E * C);
        round_out(arg<4>(a...), ST * E * f);
        round_out(arg<5>(a...), ST * E * f);
        round_out(arg<6>(a...), ST * E * C);
        round_out(arg<0>(a...), B * T * C);
    }
    // mot_ep_inputs_backward(dinp (B,T,C), ..., B at 22, T, C): dinp after the sum over the owners
    template <typename... A> static void mot_ep_inputs_backward(A... a) {
        Inner::mot_ep_inputs_backward(a...);
        round_out(arg<0>(a...), (size_t)arg<22>(a...) * arg<23>(a...) * arg<24>(a...));
    }
    // token_choice_ep_forward(out (Nt,C), z, probs, route, slot, load, first, aux, xin (E,cap,C),
    //                         xl (N,El,cap,C), pre (N,El,cap,f), act, yl (N,El,cap,C), yout (E,cap,C),
    //                         inp, wc, w1, w2, Nt, C, E, f, k, cap, ...): both copies of the buffers, as for MoT
    template <typename... A> static void token_choice_ep_forward(A... a) {
        Inner::token_choice_ep_forward(a...);
        const size_t N = arg<18>(a...), C = arg<19>(a...), E = arg<20>(a...), f = arg<21>(a...), cap = arg<23>(a...);
        round_out(arg<8>(a...), E * cap * C);
        round_out(arg<9>(a...), E * cap * C);
        round_out(arg<10>(a...), E * cap * f);
        round_out(arg<11>(a...), E * cap * f);
        round_out(arg<12>(a...), E * cap * C);
        round_out(arg<13>(a...), E * cap * C);
        round_out(arg<0>(a...), N * C);
    }
    // token_choice_ep_backward(dinp (Nt,C), ..., Nt at 26, C at 27)
    template <typename... A> static void token_choice_ep_backward(A... a) {
        Inner::token_choice_ep_backward(a...);
        round_out(arg<0>(a...), (size_t)arg<26>(a...) * arg<27>(a...));
    }
    // mot_backward(dinp (B,T,C), ..., B at 20, T, C)
    template <typename... A> static void mot_backward(A... a) {
        Inner::mot_backward(a...);
        round_out(arg<0>(a...), (size_t)arg<20>(a...) * arg<21>(a...) * arg<22>(a...));
    }
    // token_choice_forward(out (N,C), z, probs, route, slot, load, first, aux, xin (E,cap,C), pre (E,cap,f),
    //                      act, yout (E,cap,C), inp, wc, w1, w2, N, C, E, f, k, cap, ...)
    template <typename... A> static void token_choice_forward(A... a) {
        Inner::token_choice_forward(a...);
        const size_t N = arg<16>(a...), C = arg<17>(a...), E = arg<18>(a...), f = arg<19>(a...), cap = arg<21>(a...);
        round_out(arg<8>(a...), E * cap * C);
        round_out(arg<9>(a...), E * cap * f);
        round_out(arg<10>(a...), E * cap * f);
        round_out(arg<11>(a...), E * cap * C);
        round_out(arg<0>(a...), N * C);
    }
    // token_choice_backward(dinp (N,C), ..., N at 24, C at 25)
    template <typename... A> static void token_choice_backward(A... a) {
        Inner::token_choice_backward(a...);
        round_out(arg<0>(a...), (size_t)arg<24>(a...) * arg<25>(a...));
    }
};
