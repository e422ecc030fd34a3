// One transformer block (docs/design.md section 2), forward and backward, for
// training and for decoding:
//
//   res2 = x + attproj(attention(ln1(x)))
//   res3 = res2 + ffn(ln2(res2))         ffn: the block's kind (common/ffn_kinds.h)
//
// The feed-forward layer is found by its kind's tag: ffn_kind_forward(DenseFfn,
// ...) lives in ffn.h, (MotFfn, ...) in mot.h, (TokenChoiceFfn, ...) in
// token_choice.h, all listed in ffn_kinds.h. The layers of the kernel set
// Kernels (kernels.h), the residual sums among them, are called through it.
#pragma once
#include "../common/layout.h"
#include "attention.h"
#include "ffn_kinds.h"
#include "kernels.h"
#include "residual.h"

// While decoding, a block's attention reads the keys and values of earlier
// positions from its cache instead of recomputing them.
template <typename real>
struct KVCache {
    real* k;   // (B,maxT,C) keys of positions 0..pos
    real* v;   // (B,maxT,C) values
    int pos;   // the position being decoded
    int maxT;
};

// Forward of one block of FFN kind `kind` on the (B,T) rows of inp; its
// output is la.res3. Training passes no cache: causal attention over the T
// positions. Decoding passes T = 1, the block's cache, and a mode with
// decoding set (common/ffn_kinds.h, FfnMode).
template <typename Kernels = PlainKernels, typename real>
void block_forward(LayerActs<real>& la,       // the block's activations, la.res3 (B,T,C) its output
                   const real* inp,           // (B,T,C)
                   const LayerWeights<real>& lw, int kind, int B, int T, const Config& c,
                   const KVCache<real>* cache = nullptr, const FfnMode& mode = FfnMode()) {
    const int C = c.C;
    const size_t BTC = (size_t)B * T * C;
    Kernels::layernorm_forward(la.ln1, la.ln1_mean, la.ln1_rstd, inp, lw.ln1w, lw.ln1b, B, T, C);
    Kernels::matmul_forward(la.qkv, la.ln1, lw.qkvw, lw.qkvb, B, T, C, 3 * C);
    if (cache)
        Kernels::attention_decode_forward(la.atty, cache->k, cache->v, la.qkv, cache->pos, cache->maxT, B, C, c.NH);
    else
        Kernels::attention_forward(la.atty, la.preatt, la.att, la.qkv, B, T, C, c.NH);
    Kernels::matmul_forward(la.attproj, la.atty, lw.attprojw, lw.attprojb, B, T, C, C);
    Kernels::residual_forward(la.res2, inp, la.attproj, BTC);
    Kernels::layernorm_forward(la.ln2, la.ln2_mean, la.ln2_rstd, la.res2, lw.ln2w, lw.ln2b, B, T, C);
    with_ffn_kind(kind, [&](auto k) { ffn_kind_forward<Kernels>(k, la.ffn, la.ln2, lw, la, B, T, c, mode); });
    Kernels::residual_forward(la.res3, la.res2, la.ffn, BTC);
}

// Backward of one block, given the gradient of its output in ld.res3.
// Parameter gradients accumulate (+=) into lg; dinp (B,T,C) += the gradient
// of the block's input.
template <typename Kernels = PlainKernels, typename real>
void block_backward(real* dinp,              // (B,T,C)
                    LayerWeights<real>& lg,  // the block's parameter gradients
                    LayerActs<real>& ld,     // the block's activation gradients; ld.res3 given
                    const real* inp,         // (B,T,C) the block's input
                    const LayerWeights<real>& lw, const LayerActs<real>& la, int kind, int B, int T,
                    const Config& c, const FfnMode& mode = FfnMode()) {
    const int C = c.C;
    const size_t BTC = (size_t)B * T * C;
    Kernels::residual_backward(ld.res2, ld.ffn, ld.res3, BTC);
    with_ffn_kind(kind,
                  [&](auto k) { ffn_kind_backward<Kernels>(k, ld.ln2, lg, ld, ld.ffn, la.ln2, lw, la, B, T, c, mode); });
    Kernels::layernorm_backward(ld.res2, lg.ln2w, lg.ln2b, ld.ln2, la.res2, lw.ln2w, la.ln2_mean, la.ln2_rstd, B, T,
                                C);
    Kernels::residual_backward(dinp, ld.attproj, ld.res2, BTC);
    Kernels::matmul_backward(ld.atty, lg.attprojw, lg.attprojb, ld.attproj, la.atty, lw.attprojw, B, T, C, C);
    Kernels::attention_backward(ld.qkv, ld.preatt, ld.att, ld.atty, la.qkv, la.att, B, T, C, c.NH);
    Kernels::matmul_backward(ld.ln1, lg.qkvw, lg.qkvb, ld.qkv, la.ln1, lw.qkvw, B, T, C, 3 * C);
    Kernels::layernorm_backward(dinp, lg.ln1w, lg.ln1b, ld.ln1, inp, lw.ln1w, la.ln1_mean, la.ln1_rstd, B, T, C);
}
