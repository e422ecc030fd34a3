// The whole model on the CPU: GPT-2 blocks whose FFN is DENSE or MOT per layer
// (DESIGN.md section 2), built from the layer functions of this folder.
//
//   x = wte[tok] + wpe[pos]
//   for each layer: x = x + attn(ln1(x));  x = x + ffn(ln2(x))
//   logits = lnf(x) wte^T;  loss = mean cross-entropy over the first V logits
#pragma once
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "../common/activations.h"
#include "../common/config.h"
#include "../common/rng.h"
#include "../common/sampler.h"
#include "adamw.h"
#include "attention.h"
#include "crossentropy.h"
#include "encoder.h"
#include "fused.h"
#include "ffn.h"
#include "layernorm.h"
#include "matmul.h"
#include "mot.h"
#include "profile.h"
#include "residual.h"

template <typename real>
struct GPT {
    Config cfg;
    std::vector<real> params_memory;  // (num_params) every weight, checkpoint order
    std::vector<real> grads_memory;   // (num_params) same layout
    std::vector<real> m_memory, v_memory;  // (num_params) AdamW moments
    Weights<real> params, grads;           // named views into the blocks above
    int B = 0, T = 0;                      // the shape the activations are carved for
    std::vector<real> acts_memory, grad_acts_memory;
    Acts<real> acts, grad_acts;
    std::vector<int> inputs, targets;  // (B,T) the batch of the last forward
    bool has_targets = false;
    double mean_loss = 0;  // of the last forward with targets
};

// Allocates the model for cfg with every parameter and moment zero.
template <typename real>
void gpt_build(GPT<real>* model, const Config& cfg) {
    config_validate(cfg);
    model->cfg = cfg;
    size_t n = num_params(cfg);
    model->params_memory.assign(n, real(0));
    model->grads_memory.assign(n, real(0));
    model->m_memory.assign(n, real(0));
    model->v_memory.assign(n, real(0));
    model->params = carve_weights(model->params_memory.data(), cfg);
    model->grads = carve_weights(model->grads_memory.data(), cfg);
    model->B = model->T = 0;
}

// DESIGN.md init: N(0, 0.02) for matrices, output projections of a residual
// branch (attprojw, fcprojw, w2) scaled by 1/sqrt(2L), biases 0, LayerNorm
// weights 1. Drawn in double so float and double models start identical.
inline bool ends_with(const std::string& s, const char* tail) {
    size_t n = std::strlen(tail);
    return s.size() >= n && s.compare(s.size() - n, n, tail) == 0;
}

template <typename real>
void gpt_init_weights(GPT<real>* model, uint64_t seed) {
    Rng rng = rng_seed(seed);
    const Config& c = model->cfg;
    for (const TensorSpec& s : param_specs(c)) {
        real* p = model->params_memory.data() + s.offset;
        bool is_layernorm_weight = ends_with(s.name, "ln1w") || ends_with(s.name, "ln2w") || s.name == "lnfw";
        if (s.ndim == 1) {
            for (size_t i = 0; i < s.numel; i++) p[i] = is_layernorm_weight ? real(1) : real(0);
            continue;
        }
        double std = 0.02;
        if (ends_with(s.name, "attprojw") || ends_with(s.name, "fcprojw") || ends_with(s.name, ".w2"))
            std /= std::sqrt(2.0 * c.L);
        for (size_t i = 0; i < s.numel; i++) p[i] = real(std * rng_normal(&rng));
    }
}

// (Re)carves the activation blocks when the batch shape changes.
template <typename real>
void gpt_ensure_acts(GPT<real>* model, int B, int T) {
    if (model->B == B && model->T == T) return;
    size_t n = num_acts(model->cfg, B, T);
    model->acts_memory.assign(n, real(0));
    model->grad_acts_memory.assign(n, real(0));
    model->acts = carve_acts(model->acts_memory.data(), model->cfg, B, T);
    model->grad_acts = carve_acts(model->grad_acts_memory.data(), model->cfg, B, T);
    model->B = B;
    model->T = T;
}

// The checks every batch must pass before it touches memory.
inline void check_batch(const Config& c, const int* inputs, const int* targets, int B, int T) {
    if (T < 1 || T > c.maxT) fail(strf("--seq %d is outside 1..%d, the model's maximum sequence length", T, c.maxT));
    bool any_mot = false;
    for (int k : c.kinds) any_mot |= k == MOT;
    if (B < 1) fail(strf("--batch must be positive (got %d)", B));
    if (any_mot && B % c.G != 0)
        fail(strf("--batch %d is not divisible by --group %d: MoT mixes tokens in groups of G batch rows", B, c.G));
    for (int i = 0; i < B * T; i++) {
        if (inputs[i] < 0 || inputs[i] >= c.V) fail(strf("token id %d at position %d is outside the vocabulary 0..%d", inputs[i], i, c.V - 1));
        if (targets && (targets[i] < 0 || targets[i] >= c.V)) fail(strf("target id %d at position %d is outside the vocabulary 0..%d", targets[i], i, c.V - 1));
    }
}

// Forward pass on inputs (B,T); with targets (B,T) also the loss.
template <typename real>
void gpt_forward(GPT<real>* model, const int* inputs, const int* targets, int B, int T) {
    const Config& c = model->cfg;
    check_batch(c, inputs, targets, B, T);
    gpt_ensure_acts(model, B, T);
    model->inputs.assign(inputs, inputs + B * T);
    model->has_targets = targets != nullptr;
    if (targets) model->targets.assign(targets, targets + B * T);
    const int C = c.C;
    const size_t BTC = (size_t)B * T * C;
    Weights<real>& w = model->params;
    Acts<real>& a = model->acts;

    PROF(0, PROF_ENCODER, encoder_forward(a.encoded, inputs, w.wte, w.wpe, B, T, C));
    const real* residual = a.encoded;  // (B,T,C) input of the current block
    for (int l = 0; l < c.L; l++) {
        LayerWeights<real>& lw = w.layer[l];
        LayerActs<real>& la = a.layer[l];
        PROF(0, PROF_LAYERNORM, layernorm_forward(la.ln1, la.ln1_mean, la.ln1_rstd, residual, lw.ln1w, lw.ln1b, B, T, C));
        PROF(0, PROF_MATMUL, matmul_forward(la.qkv, la.ln1, lw.qkvw, lw.qkvb, B, T, C, 3 * C));
        PROF(0, PROF_ATTENTION, attention_forward(la.atty, la.preatt, la.att, la.qkv, B, T, C, c.NH));
        PROF(0, PROF_MATMUL, matmul_forward(la.attproj, la.atty, lw.attprojw, lw.attprojb, B, T, C, C));
        PROF(0, PROF_RESIDUAL, residual_forward(la.res2, residual, la.attproj, BTC));
        PROF(0, PROF_LAYERNORM, layernorm_forward(la.ln2, la.ln2_mean, la.ln2_rstd, la.res2, lw.ln2w, lw.ln2b, B, T, C));
        if (c.kinds[l] == DENSE)
            PROF(0, PROF_FFN, ffn_forward(la.ffn, la.fch, la.fch_gelu, la.ln2, lw.fcw, lw.fcb, lw.fcprojw, lw.fcprojb, B, T, C, c.dff));
        else
            PROF(0, PROF_MOT, mot_forward(la.ffn, la.z, la.m, la.u, la.p, la.a, la.y, la.ln2, lw.wc, lw.w1, lw.w2,
                        B, T, C, c.E, c.G, c.f, real(c.tau)));
        PROF(0, PROF_RESIDUAL, residual_forward(la.res3, la.res2, la.ffn, BTC));
        residual = la.res3;
    }
    PROF(0, PROF_LAYERNORM, layernorm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, residual, w.lnfw, w.lnfb, B, T, C));
    PROF(0, PROF_LMHEAD, matmul_forward(a.logits, a.lnf, w.wte, (const real*)nullptr, B, T, C, c.Vp));
    if (!targets) return;
    PROF(0, PROF_LOSS, crossentropy_forward(a.losses, a.probs, a.logits, targets, B, T, c.V, c.Vp));
    double sum = 0;
    for (int i = 0; i < B * T; i++) sum += a.losses[i];
    model->mean_loss = sum / (B * T);
}

template <typename real>
void gpt_zero_grad(GPT<real>* model) {
    real* g = model->grads_memory.data();  // in parallel: one core cannot fill memory at full bandwidth
    #pragma omp parallel for simd
    for (size_t i = 0; i < model->grads_memory.size(); i++) g[i] = real(0);
}

// Zeroes the activation gradients that the backward pass accumulates into
// (+=). It skips scratch that the layer functions overwrite before they read
// it (attention's dpreatt and datt; MoT's dz, dm, du, dp, da, dy) and
// gradients nothing reads (probs): on the bench MoT model most of the block.
template <typename real>
void gpt_zero_grad_acts(GPT<real>* model) {
    const Config& c = model->cfg;
    Acts<real> da = model->grad_acts;  // a copy: visit_acts hands out its slots
    std::vector<const real*> skip = {da.probs};
    for (int l = 0; l < c.L; l++) {
        const LayerActs<real>& ld = da.layer[l];
        skip.insert(skip.end(), {ld.preatt, ld.att});
        if (c.kinds[l] != DENSE) skip.insert(skip.end(), {ld.z, ld.m, ld.u, ld.p, ld.a, ld.y});
    }
    visit_acts(da, c, model->B, model->T, [&](real*& slot, size_t n) {
        if (std::find(skip.begin(), skip.end(), slot) != skip.end()) return;
        real* p = slot;
        #pragma omp parallel for simd
        for (size_t i = 0; i < n; i++) p[i] = real(0);
    });
}

// Backward pass of the last forward (which must have had targets). Parameter
// gradients accumulate (+=) into model->grads, scaled by loss_scale: the
// gradient of loss_scale * mean loss. Gradient accumulation over k
// micro-batches passes loss_scale = 1/k.
template <typename real>
void gpt_backward(GPT<real>* model, double loss_scale = 1.0) {
    if (!model->has_targets) fail("gpt_backward: the last forward pass had no targets");
    const Config& c = model->cfg;
    const int B = model->B, T = model->T, C = c.C;
    const size_t BTC = (size_t)B * T * C;
    Weights<real>& w = model->params;
    Weights<real>& dw = model->grads;
    Acts<real>& a = model->acts;
    Acts<real>& da = model->grad_acts;
    const int* inputs = model->inputs.data();
    const int* targets = model->targets.data();

    // activation gradients are scratch: start from zero every time
    PROF(1, PROF_ZERO, gpt_zero_grad_acts(model));
    for (int i = 0; i < B * T; i++) da.losses[i] = real(loss_scale / (B * T));

    PROF(1, PROF_LOSS, crossentropy_backward(da.logits, da.losses, a.probs, targets, B, T, c.V, c.Vp));
    PROF(1, PROF_LMHEAD, matmul_backward(da.lnf, dw.wte, (real*)nullptr, da.logits, a.lnf, w.wte, B, T, C, c.Vp));
    const real* last = c.L > 0 ? a.layer[c.L - 1].res3 : a.encoded;
    real* dlast = c.L > 0 ? da.layer[c.L - 1].res3 : da.encoded;
    PROF(1, PROF_LAYERNORM, layernorm_backward(dlast, dw.lnfw, dw.lnfb, da.lnf, last, w.lnfw, a.lnf_mean, a.lnf_rstd, B, T, C));

    for (int l = c.L - 1; l >= 0; l--) {
        LayerWeights<real>& lw = w.layer[l];
        LayerWeights<real>& lg = dw.layer[l];
        LayerActs<real>& la = a.layer[l];
        LayerActs<real>& ld = da.layer[l];
        const real* residual = l == 0 ? a.encoded : a.layer[l - 1].res3;
        real* dresidual = l == 0 ? da.encoded : da.layer[l - 1].res3;

        PROF(1, PROF_RESIDUAL, residual_backward(ld.res2, ld.ffn, ld.res3, BTC));
        if (c.kinds[l] == DENSE)
            PROF(1, PROF_FFN, ffn_backward(ld.ln2, lg.fcw, lg.fcb, lg.fcprojw, lg.fcprojb, ld.fch, ld.fch_gelu, ld.ffn,
                         la.ln2, la.fch, la.fch_gelu, lw.fcw, lw.fcprojw, B, T, C, c.dff));
        else
            PROF(1, PROF_MOT, mot_backward(ld.ln2, lg.wc, lg.w1, lg.w2, ld.z, ld.m, ld.u, ld.p, ld.a, ld.y, ld.ffn,
                         la.ln2, la.m, la.u, la.p, la.a, la.y, lw.wc, lw.w1, lw.w2,
                         B, T, C, c.E, c.G, c.f, real(c.tau)));
        PROF(1, PROF_LAYERNORM, layernorm_backward(ld.res2, lg.ln2w, lg.ln2b, ld.ln2, la.res2, lw.ln2w, la.ln2_mean, la.ln2_rstd, B, T, C));
        PROF(1, PROF_RESIDUAL, residual_backward(dresidual, ld.attproj, ld.res2, BTC));
        PROF(1, PROF_MATMUL, matmul_backward(ld.atty, lg.attprojw, lg.attprojb, ld.attproj, la.atty, lw.attprojw, B, T, C, C));
        PROF(1, PROF_ATTENTION, attention_backward(ld.qkv, ld.preatt, ld.att, ld.atty, la.qkv, la.att, B, T, C, c.NH));
        PROF(1, PROF_MATMUL, matmul_backward(ld.ln1, lg.qkvw, lg.qkvb, ld.qkv, la.ln1, lw.qkvw, B, T, C, 3 * C));
        PROF(1, PROF_LAYERNORM, layernorm_backward(dresidual, lg.ln1w, lg.ln1b, ld.ln1, residual, lw.ln1w, la.ln1_mean, la.ln1_rstd, B, T, C));
    }
    PROF(1, PROF_ENCODER, encoder_backward(dw.wte, dw.wpe, da.encoded, inputs, B, T, C));
}

// Global gradient norm; when it exceeds clip (> 0), scales the gradients
// down to norm clip. Returns the norm before clipping.
template <typename real>
double gpt_clip_grads(GPT<real>* model, double clip) {
    double norm = std::sqrt(grad_norm_squared(model->grads_memory.data(), model->grads_memory.size()));
    grad_clip(model->grads_memory.data(), model->grads_memory.size(), norm, clip);
    return norm;
}

// One AdamW step; weight decay only on tensors of two or more dimensions.
// step is 0-based; bias correction uses step + 1.
template <typename real>
void gpt_update(GPT<real>* model, float lr, float beta1, float beta2, float eps, float wd, int step) {
    for (const TensorSpec& s : param_specs(model->cfg))
        adamw_update(model->params_memory.data() + s.offset, model->grads_memory.data() + s.offset,
                     model->m_memory.data() + s.offset, model->v_memory.data() + s.offset, s.numel,
                     lr, beta1, beta2, eps, s.ndim >= 2 ? wd : 0.0f, step + 1);
}

// ---------------------------------------------------------------------------
// Generation with a KV cache. B sequences advance one position per call; B
// must be a multiple of G when the model has MoT layers, since the MoT layer
// mixes the B tokens of the current position in groups exactly as in
// training (rows j*S + k form group k). Each call runs the layers on (B, 1)
// activations; attention reads earlier positions from the caches.
template <typename real>
struct Decoder {
    int B = 0;
    std::vector<real> kcache, vcache;  // (L, B, maxT, C) keys and values per layer
    std::vector<real> acts_memory;     // activations of one position, carved for (B, 1)
    Acts<real> acts;
};

template <typename real>
void decoder_init(Decoder<real>* d, const Config& c, int B) {
    bool any_mot = false;
    for (int k : c.kinds) any_mot |= k == MOT;
    if (B < 1 || (any_mot && B % c.G != 0))
        fail(strf("generation decodes %d sequences, which must be a positive multiple of the group size %d", B, c.G));
    d->B = B;
    size_t cache = (size_t)c.L * B * c.maxT * c.C;
    d->kcache.assign(cache, real(0));
    d->vcache.assign(cache, real(0));
    d->acts_memory.assign(num_acts(c, B, 1), real(0));
    d->acts = carve_acts(d->acts_memory.data(), c, B, 1);
}

// Feeds tokens (B) at position pos (0-based, < maxT); returns the logits
// (B, Vp) of the next token, valid until the next call.
template <typename real>
const real* gpt_decode_step(GPT<real>* model, Decoder<real>* d, const int* tokens, int pos) {
    const Config& c = model->cfg;
    const int B = d->B, C = c.C;
    if (pos < 0 || pos >= c.maxT) fail(strf("generation position %d is beyond the model's maximum %d", pos, c.maxT));
    for (int b = 0; b < B; b++)
        if (tokens[b] < 0 || tokens[b] >= c.V) fail(strf("token id %d is outside the vocabulary 0..%d", tokens[b], c.V - 1));
    Weights<real>& w = model->params;
    Acts<real>& a = d->acts;
    // wpe + pos*C: this position's embedding row plays the role of row 0
    encoder_forward(a.encoded, tokens, w.wte, w.wpe + (size_t)pos * C, B, 1, C);
    const real* residual = a.encoded;
    for (int l = 0; l < c.L; l++) {
        LayerWeights<real>& lw = w.layer[l];
        LayerActs<real>& la = a.layer[l];
        real* kc = d->kcache.data() + (size_t)l * B * c.maxT * C;
        real* vc = d->vcache.data() + (size_t)l * B * c.maxT * C;
        layernorm_forward(la.ln1, la.ln1_mean, la.ln1_rstd, residual, lw.ln1w, lw.ln1b, B, 1, C);
        matmul_forward(la.qkv, la.ln1, lw.qkvw, lw.qkvb, B, 1, C, 3 * C);
        attention_decode_forward(la.atty, kc, vc, la.qkv, pos, c.maxT, B, C, c.NH);
        matmul_forward(la.attproj, la.atty, lw.attprojw, lw.attprojb, B, 1, C, C);
        residual_forward(la.res2, residual, la.attproj, (size_t)B * C);
        layernorm_forward(la.ln2, la.ln2_mean, la.ln2_rstd, la.res2, lw.ln2w, lw.ln2b, B, 1, C);
        if (c.kinds[l] == DENSE)
            ffn_forward(la.ffn, la.fch, la.fch_gelu, la.ln2, lw.fcw, lw.fcb, lw.fcprojw, lw.fcprojb, B, 1, C, c.dff);
        else
            mot_forward(la.ffn, la.z, la.m, la.u, la.p, la.a, la.y, la.ln2, lw.wc, lw.w1, lw.w2,
                        B, 1, C, c.E, c.G, c.f, real(c.tau));
        residual_forward(la.res3, la.res2, la.ffn, (size_t)B * C);
        residual = la.res3;
    }
    layernorm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, residual, w.lnfw, w.lnfb, B, 1, C);
    matmul_forward(a.logits, a.lnf, w.wte, (const real*)nullptr, B, 1, C, c.Vp);
    return a.logits;
}

// Generates n_seq sequences together (a multiple of G: MoT mixes them), each
// starting with the same prompt tokens and continuing for len new tokens.
// The model sees at most maxT positions: when a sequence fills them, the
// window slides: decoding starts again from the last maxT/2 tokens of each
// sequence (re-reading them into the KV cache), so any length can be
// generated, each token conditioned on at least maxT/2 before it. Returns
// n_seq rows of new tokens.
template <typename real>
std::vector<std::vector<int>> gpt_generate(GPT<real>* model, const std::vector<int>& prompt, int n_seq, int len,
                                           float temperature, int top_k, Rng* rng) {
    const Config& c = model->cfg;
    if (prompt.empty()) fail("generation needs at least one prompt token");
    if ((int)prompt.size() >= c.maxT)
        fail(strf("the prompt has %zu tokens; the model's maximum sequence length is %d", prompt.size(), c.maxT));
    Decoder<real> d;
    decoder_init(&d, c, n_seq);
    std::vector<std::vector<int>> seq(n_seq, prompt);  // every token so far, prompt first
    std::vector<int> tokens(n_seq);
    const int keep = std::max(1, c.maxT / 2);
    size_t start = 0;  // index into seq of the token at window position 0
    int pos = 0;       // window position of the next token fed
    while ((int)(seq[0].size() - prompt.size()) < len) {
        if (pos == c.maxT) {  // the window is full: slide it
            start = seq[0].size() - keep;
            pos = 0;
        }
        for (int b = 0; b < n_seq; b++) tokens[b] = seq[b][start + pos];
        const real* logits = gpt_decode_step(model, &d, tokens.data(), pos);
        pos++;
        if (start + pos < seq[0].size()) continue;  // still reading known tokens into the cache
        for (int b = 0; b < n_seq; b++) seq[b].push_back(sample_token(logits + (size_t)b * c.Vp, c.V, temperature, top_k, rng));
    }
    std::vector<std::vector<int>> out(n_seq);
    for (int b = 0; b < n_seq; b++) out[b].assign(seq[b].begin() + prompt.size(), seq[b].end());
    return out;
}
