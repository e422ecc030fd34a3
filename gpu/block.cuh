// One transformer block on the GPU (cpu/block.h), forward and backward:
//
//   res2 = x + attproj(attention(ln1(x)))
//   res3 = res2 + ffn(ln2(res2))         ffn: the block's kind (common/ffn_kinds.h)
//
// The feed-forward layer is found by its kind's tag: ffn_kind_forward(DenseFfn,
// ...) lives in ffn.cuh, (MotFfn, ...) in mot.cuh, (TokenChoiceFfn, ...) in
// token_choice.cuh, all listed in ffn_kinds.cuh. Layers are called through
// a kernel set K (kernels.cuh): Kernels, or bf16's. (The GPU path trains;
// generation runs on the CPU copy of the weights, so there is no decoding
// cache here.)
#pragma once
#include "../common/layout.h"
#include "ffn_kinds.cuh"
#include "kernels.cuh"

namespace gpu {

// Forward of one block of FFN kind `kind` on the (B,T) rows of inp; its
// output is la.res3.
template <typename K = Kernels>
inline void block_forward(LayerActs<float>& la,  // the block's activations, la.res3 (B,T,C) its output
                          const float* inp,      // (B,T,C)
                          const LayerWeights<float>& lw, int kind, int B, int T, const Config& c,
                          const FfnMode& mode = FfnMode()) {
    const int C = c.C;
    const size_t BTC = (size_t)B * T * C;
    K::layernorm_forward(la.ln1, la.ln1_mean, la.ln1_rstd, inp, lw.ln1w, lw.ln1b, B, T, C);
    K::matmul_forward(la.qkv, la.ln1, lw.qkvw, lw.qkvb, B, T, C, 3 * C);
    K::attention_forward(la.atty, la.preatt, la.att, la.qkv, B, T, C, c.NH);
    K::matmul_forward(la.attproj, la.atty, lw.attprojw, lw.attprojb, B, T, C, C);
    K::residual_forward(la.res2, inp, la.attproj, BTC);
    K::layernorm_forward(la.ln2, la.ln2_mean, la.ln2_rstd, la.res2, lw.ln2w, lw.ln2b, B, T, C);
    with_ffn_kind(kind, [&](auto k) { ffn_kind_forward<K>(k, la.ffn, la.ln2, lw, la, B, T, c, mode); });
    K::residual_forward(la.res3, la.res2, la.ffn, BTC);
}

// Backward of one block, given the gradient of its output in ld.res3.
// Parameter gradients accumulate (+=) into lg; dinp (B,T,C) += the gradient
// of the block's input.
template <typename K = Kernels>
inline void block_backward(float* dinp,              // (B,T,C)
                           LayerWeights<float>& lg,  // the block's parameter gradients
                           LayerActs<float>& ld,     // the block's activation gradients; ld.res3 given
                           const float* inp,         // (B,T,C) the block's input
                           const LayerWeights<float>& lw, const LayerActs<float>& la, int kind, int B, int T,
                           const Config& c, const FfnMode& mode = FfnMode()) {
    const int C = c.C;
    const size_t BTC = (size_t)B * T * C;
    K::residual_backward(ld.res2, ld.ffn, ld.res3, BTC);
    with_ffn_kind(kind,
                  [&](auto k) { ffn_kind_backward<K>(k, ld.ln2, lg, ld, ld.ffn, la.ln2, lw, la, B, T, c, mode); });
    K::layernorm_backward(ld.res2, lg.ln2w, lg.ln2b, ld.ln2, la.res2, lw.ln2w, la.ln2_mean, la.ln2_rstd, B, T, C);
    K::residual_backward(dinp, ld.attproj, ld.res2, BTC);
    K::matmul_backward(ld.atty, lg.attprojw, lg.attprojb, ld.attproj, la.atty, lw.attprojw, B, T, C, C);
    K::attention_backward(ld.qkv, ld.preatt, ld.att, ld.atty, la.qkv, la.att, B, T, C, c.NH);
    K::matmul_backward(ld.ln1, lg.qkvw, lg.qkvb, ld.qkv, la.ln1, lw.qkvw, B, T, C, 3 * C);
    K::layernorm_backward(dinp, lg.ln1w, lg.ln1b, ld.ln1, inp, lw.ln1w, la.ln1_mean, la.ln1_rstd, B, T, C);
}

}  // namespace gpu
