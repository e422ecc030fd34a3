// The whole model on the CPU: GPT-2 blocks whose FFN is DENSE or MOT per layer
// (docs/design.md section 2), built from the layer functions of this folder.
//
//   x = wte[tok] + wpe[pos]
//   for each layer: x = x + attn(ln1(x));  x = x + ffn(ln2(x))
//   logits = lnf(x) wte^T;  loss = mean cross-entropy over the first V logits
#pragma once
#include <algorithm>
#include <csignal>
#include <cstring>
#include <string>
#include <vector>

#include "../common/bf16_kernels.h"
#include "../common/config.h"
#include "../common/layout.h"
#include "../common/memory.h"
#include "../common/rng.h"
#include "../common/sampler.h"
#include "adamw.h"
#include "block.h"
#include "encoder.h"
#include "kernels.h"

// Kernels: the kernel set the model runs its layers with (kernels.h), passed
// down to every block; PlainKernels, the loops of this folder, unless chosen.
template <typename real, typename Kernels = PlainKernels>
struct GPT {
    Config cfg;
    std::vector<real> params_memory;  // (num_params) every weight, checkpoint order
    std::vector<real> grads_memory;   // (num_params) same layout
    std::vector<real> m_memory, v_memory;  // (num_params) AdamW moments
    Weights<real> params, grads;           // named views into the blocks above
    int B = 0, T = 0;                      // the shape the activations are carved for
    std::vector<real> acts_memory, grad_acts_memory;
    std::vector<int> int_acts_memory;  // the integer activations (visit_int_acts); no gradient block
    Acts<real> acts, grad_acts;
    std::vector<int> inputs, targets;  // (B,T) the batch of the last forward
    bool has_targets = false;
    double mean_loss = 0;  // cross-entropy of the last forward with targets
    // layers with an aux loss (TOKEN_CHOICE): the objective is mean_loss + aux_weight * aux_loss
    double aux_weight = 0;  // --aux-loss
    double aux_loss = 0;    // sum of the layers' load-balancing losses, last forward
    bool mot_discrete = false;  // MOT layers run discrete (eval, sample; common/ffn_kinds.h FfnMode)
    // --distill: the objective is (1 - distill_weight) mean_loss + distill_weight KL(teacher || p), teacher the
    // probabilities (B,T,Vp) another model gave the same batch, set before each backward; null: plain loss
    const real* teacher = nullptr;
    double distill_weight = 0;
    // expert parallelism (cfg.expert_shards > 1): the exchange of this process's expert group
    ExpertExchange* experts = nullptr;
    // --precision bf16: the passes run with Bf16Kernels<Kernels> (bf16_kernels.h) on the weights rounded to
    // bf16; params_memory stays the float master copy that AdamW updates and checkpoints hold
    bool bf16 = false;
    std::vector<real> params_bf16_memory;  // (num_params) params_memory rounded, remade by every forward
    Weights<real> params_bf16;             // named views into it
};

// Allocates the model for cfg with every parameter and moment zero.
template <typename real, typename Kernels>
void gpt_build(GPT<real, Kernels>* model, const Config& cfg) {
    config_validate(cfg);
    model->cfg = cfg;
    size_t n = num_params(cfg);
    assign_zeros_huge(model->params_memory, n);
    assign_zeros_huge(model->grads_memory, n);
    assign_zeros_huge(model->m_memory, n);
    assign_zeros_huge(model->v_memory, n);
    model->params = carve_weights(model->params_memory.data(), cfg);
    model->grads = carve_weights(model->grads_memory.data(), cfg);
    model->B = model->T = 0;
}

// The initialisation of docs/design.md section 2.3, by each tensor's Init
// (common/layout.h): N(0, 0.02) for matrices, output projections of a
// residual branch scaled by 1/sqrt(2L), biases 0, LayerNorm weights 1. Drawn
// in double so float and double models start identical.
template <typename real, typename Kernels>
void gpt_init_weights(GPT<real, Kernels>* model, uint64_t seed) {
    Rng rng = rng_seed(seed);
    const Config& c = model->cfg;
    for (const TensorSpec& s : param_specs(c)) {
        real* p = model->params_memory.data() + s.offset;
        if (s.init == INIT_ZERO || s.init == INIT_ONE) {
            for (size_t i = 0; i < s.numel; i++) p[i] = real(s.init == INIT_ONE ? 1 : 0);
            continue;
        }
        double std = s.init == INIT_RESIDUAL ? 0.02 / std::sqrt(2.0 * c.L) : 0.02;
        for (size_t i = 0; i < s.numel; i++) p[i] = real(std * rng_normal(&rng));
    }
}

// (Re)carves the activation blocks when the batch shape changes.
template <typename real, typename Kernels>
void gpt_ensure_acts(GPT<real, Kernels>* model, int B, int T) {
    if (model->B == B && model->T == T) return;
    size_t n = num_acts(model->cfg, B, T);
    assign_zeros_huge(model->acts_memory, n);
    assign_zeros_huge(model->grad_acts_memory, n);
    model->int_acts_memory.assign(num_int_acts(model->cfg, B, T), 0);
    model->acts = carve_acts(model->acts_memory.data(), model->cfg, B, T);
    carve_int_acts(&model->acts, model->int_acts_memory.data(), model->cfg, B, T);
    model->grad_acts = carve_acts(model->grad_acts_memory.data(), model->cfg, B, T);
    model->B = B;
    model->T = T;
}

// The weights the passes read: the parameters themselves, or under bf16 a
// copy rounded to bf16, remade from the master weights when refresh is set
// (every forward: the weights change only between a step's backward and the
// next forward, so this is the once-per-step rounding of the contract).
template <typename real, typename Kernels>
const Weights<real>& gpt_pass_weights(GPT<real, Kernels>* model, bool refresh) {
    if (!model->bf16) return model->params;
    if (refresh || model->params_bf16_memory.size() != model->params_memory.size()) {
        model->params_bf16_memory.assign(model->params_memory.begin(), model->params_memory.end());
        bf16_round(model->params_bf16_memory.data(), model->params_bf16_memory.size());
        model->params_bf16 = carve_weights(model->params_bf16_memory.data(), model->cfg);
    }
    return model->params_bf16;
}

// Calls fn with the kernel set the model's passes run with: its own, or
// under bf16 that set with what it stores rounded to bf16 (bf16_kernels.h).
template <typename real, typename Kernels, typename Fn>
void with_kernel_set(const GPT<real, Kernels>* model, Fn fn) {
    if (model->bf16) fn(Bf16Kernels<Kernels>{});
    else fn(Kernels{});
}

// Forward pass on inputs (B,T); with targets (B,T) also the loss.
template <typename real, typename Kernels>
void gpt_forward(GPT<real, Kernels>* model, const int* inputs, const int* targets, int B, int T) {
    const Config& c = model->cfg;
    const int C = c.C;
    batch_validate(c, inputs, targets, B, T);
    gpt_ensure_acts(model, B, T);
    model->inputs.assign(inputs, inputs + (size_t)B * T);
    model->has_targets = targets != nullptr;
    if (targets) model->targets.assign(targets, targets + (size_t)B * T);
    const Weights<real>& w = gpt_pass_weights(model, true);
    Acts<real>& a = model->acts;
    with_kernel_set(model, [&](auto kernels) {
        using K = decltype(kernels);
        K::encoder_forward(a.encoded, inputs, w.wte, w.wpe, B, T, C);
        const real* residual = a.encoded;  // (B,T,C) input of the current block
        for (int l = 0; l < c.L; l++) {
            block_forward<K>(a.layer[l], residual, w.layer[l], c.kinds[l], B, T, c, (const KVCache<real>*)nullptr,
                             FfnMode{false, model->mot_discrete, model->experts});
            residual = a.layer[l].res3;
        }
        K::layernorm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, residual, w.lnfw, w.lnfb, B, T, C);
        K::matmul_forward(a.logits, a.lnf, w.wte, (const real*)nullptr, B, T, C, c.Vp);
        if (targets) K::crossentropy_forward(a.losses, a.probs, a.logits, targets, B, T, c.V, c.Vp);
    });
    model->aux_loss = 0;
    for (int l = 0; l < c.L; l++)
        if (kind_has_aux_loss(c.kinds[l])) model->aux_loss += a.layer[l].aux[0];
    if (!targets) return;
    double sum = 0;
    for (size_t i = 0; i < (size_t)B * T; i++) sum += a.losses[i];
    model->mean_loss = sum / ((double)B * T);
}

// Zeroes the parameter gradients. gpt_update leaves them zero, so training
// needs this only after a step whose update it skipped.
template <typename real, typename Kernels>
void gpt_zero_grad(GPT<real, Kernels>* model) {
    real* g = model->grads_memory.data();  // in parallel: one core cannot fill memory at full bandwidth
    #pragma omp parallel for simd
    for (size_t i = 0; i < model->grads_memory.size(); i++) g[i] = real(0);
}

// Zeroes the activation gradients that the backward pass adds into (+=),
// skipping those it overwrites whole before reading them (common/layout.h,
// GRAD_OVERWRITES: attention's dpreatt and datt, the MoT scratch, dprobs): on
// the bench MoT model most of the block.
template <typename real, typename Kernels>
void gpt_zero_grad_acts(GPT<real, Kernels>* model) {
    Acts<real> da = model->grad_acts;  // a copy: visit_acts hands out its slots
    visit_acts(da, model->cfg, model->B, model->T, [&](real*& slot, size_t n, GradUse use) {
        if (use == GRAD_OVERWRITES) return;
        real* p = slot;
        #pragma omp parallel for simd
        for (size_t i = 0; i < n; i++) p[i] = real(0);
    });
}

// Backward pass of the last forward (which must have had targets). Parameter
// gradients accumulate (+=) into model->grads, scaled by loss_scale: the
// gradient of loss_scale * mean loss. Gradient accumulation over k
// micro-batches passes loss_scale = 1/k. Under bf16 it reads the weights the
// forward rounded.
template <typename real, typename Kernels>
void gpt_backward(GPT<real, Kernels>* model, double loss_scale = 1.0) {
    if (!model->has_targets) fail("gpt_backward: the last forward pass had no targets");
    const Config& c = model->cfg;
    const int B = model->B, T = model->T, C = c.C;
    const Weights<real>& w = gpt_pass_weights(model, false);
    Weights<real>& dw = model->grads;
    Acts<real>& a = model->acts;
    Acts<real>& da = model->grad_acts;
    const int* inputs = model->inputs.data();
    const int* targets = model->targets.data();

    // activation gradients are scratch: start from zero every time
    gpt_zero_grad_acts(model);
    for (size_t i = 0; i < (size_t)B * T; i++) da.losses[i] = real(loss_scale / ((double)B * T));

    if (model->teacher)
        distill_backward(da.logits, da.losses, model->teacher, targets, real(model->distill_weight), B, T, c.V, c.Vp);
    // each aux loss (TOKEN_CHOICE's load balancing) enters the objective with weight aux_weight
    for (int l = 0; l < c.L; l++)
        if (kind_has_aux_loss(c.kinds[l])) da.layer[l].aux[0] = real(model->aux_weight * loss_scale);
    with_kernel_set(model, [&](auto kernels) {
        using K = decltype(kernels);
        K::crossentropy_backward(da.logits, da.losses, a.probs, targets, B, T, c.V, c.Vp);
        K::matmul_backward(da.lnf, dw.wte, (real*)nullptr, da.logits, a.lnf, w.wte, B, T, C, c.Vp);
        K::layernorm_backward(da.layer[c.L - 1].res3, dw.lnfw, dw.lnfb, da.lnf, a.layer[c.L - 1].res3, w.lnfw,
                              a.lnf_mean, a.lnf_rstd, B, T, C);
        for (int l = c.L - 1; l >= 0; l--) {
            const real* residual = l == 0 ? a.encoded : a.layer[l - 1].res3;
            real* dresidual = l == 0 ? da.encoded : da.layer[l - 1].res3;
            block_backward<K>(dresidual, dw.layer[l], da.layer[l], residual, w.layer[l], a.layer[l], c.kinds[l], B,
                              T, c, FfnMode{false, false, model->experts});
        }
    });
    encoder_backward(dw.wte, dw.wpe, da.encoded, inputs, B, T, C);
}

// The global gradient norm, summed in double in a fixed order (one read).
template <typename real, typename Kernels>
double gpt_grad_norm(GPT<real, Kernels>* model) {
    return std::sqrt(grad_norm_squared(model->grads_memory.data(), model->grads_memory.size()));
}

// One AdamW step on the parameters [lo, lo + n) alone, with the gradients
// and moments of that range in grads, m, v ((n) each: element i belongs to
// parameter lo + i): the whole model (lo 0, n num_params, the model's own
// blocks), or one rank's share under ZeRO-1 (train/parallel.h). Weight
// decay only on tensors of two or more dimensions; a range may cut a tensor.
// step is 0-based; bias correction uses step + 1. The range's gradients are
// zero afterwards (adamw_update consumes them).
template <typename real, typename Kernels>
void gpt_update_range(GPT<real, Kernels>* model, size_t lo, size_t n,
                      real* grads,  // (n)
                      real* m,      // (n)
                      real* v,      // (n)
                      float lr, float beta1, float beta2, float eps, float wd, int step, float grad_scale) {
    for (const TensorSpec& s : param_specs(model->cfg)) {
        size_t a = std::max(lo, s.offset), b = std::min(lo + n, s.offset + s.numel);
        if (a >= b) continue;
        adamw_update(model->params_memory.data() + a, grads + (a - lo), m + (a - lo), v + (a - lo), b - a, lr, beta1,
                     beta2, eps, s.ndim >= 2 ? wd : 0.0f, step + 1, real(grad_scale));
    }
}

// One AdamW step on the gradients scaled by grad_scale (clip_scale(norm,
// clip) clips them), every parameter; the gradients are zero afterwards.
template <typename real, typename Kernels>
void gpt_update(GPT<real, Kernels>* model, float lr, float beta1, float beta2, float eps, float wd, int step,
                float grad_scale = 1.0f) {
    gpt_update_range(model, 0, model->params_memory.size(), model->grads_memory.data(), model->m_memory.data(),
                     model->v_memory.data(), lr, beta1, beta2, eps, wd, step, grad_scale);
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
    std::vector<int> int_acts_memory;  // their integer activations
    Acts<real> acts;
};

template <typename real>
void decoder_init(Decoder<real>* d, const Config& c, int B) {
    if (B < 1 || (batch_in_groups(c) && B % c.mot.G != 0))
        fail(strf("generation decodes %d sequences, which must be a positive multiple of the group size %d", B,
                  c.mot.G));
    d->B = B;
    size_t cache = (size_t)c.L * B * c.maxT * c.C;
    d->kcache.assign(cache, real(0));
    d->vcache.assign(cache, real(0));
    d->acts_memory.assign(num_acts(c, B, 1, true), real(0));
    d->int_acts_memory.assign(num_int_acts(c, B, 1, true), 0);
    d->acts = carve_acts(d->acts_memory.data(), c, B, 1, true);
    carve_int_acts(&d->acts, d->int_acts_memory.data(), c, B, 1, true);
}

// Feeds tokens (B) at position pos (0-based, < maxT); returns the logits
// (B, Vp) of the next token, valid until the next call. Under bf16 the
// weights are rounded at position 0 (a new sequence) and reused after.
template <typename real, typename Kernels>
const real* gpt_decode_step(GPT<real, Kernels>* model, Decoder<real>* d, const int* tokens, int pos) {
    const Config& c = model->cfg;
    const int B = d->B, C = c.C;
    if (pos < 0 || pos >= c.maxT) fail(strf("generation position %d is beyond the model's maximum %d", pos, c.maxT));
    for (int b = 0; b < B; b++)
        if (tokens[b] < 0 || tokens[b] >= c.V) fail(strf("token id %d is outside the vocabulary 0..%d", tokens[b], c.V - 1));
    const Weights<real>& w = gpt_pass_weights(model, pos == 0);
    Acts<real>& a = d->acts;
    with_kernel_set(model, [&](auto kernels) {
        using K = decltype(kernels);
        // wpe + pos*C: this position's embedding row plays the role of row 0
        K::encoder_forward(a.encoded, tokens, w.wte, w.wpe + (size_t)pos * C, B, 1, C);
        const real* residual = a.encoded;
        for (int l = 0; l < c.L; l++) {
            size_t layer_cache = (size_t)l * B * c.maxT * C;
            KVCache<real> cache{d->kcache.data() + layer_cache, d->vcache.data() + layer_cache, pos, c.maxT};
            block_forward<K>(a.layer[l], residual, w.layer[l], c.kinds[l], B, 1, c, &cache,
                             FfnMode{true, model->mot_discrete});
            residual = a.layer[l].res3;
        }
        K::layernorm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, residual, w.lnfw, w.lnfb, B, 1, C);
        K::matmul_forward(a.logits, a.lnf, w.wte, (const real*)nullptr, B, 1, C, c.Vp);
    });
    return a.logits;
}

// The mean cross-entropy of a batch (B,T) when every sequence is decoded
// alone, one token at a time with the KV cache: what a sparse or dense model
// scores serving one request. (A MoT model decodes G sequences at once.)
template <typename real, typename Kernels>
double gpt_decode_loss(GPT<real, Kernels>* model, const int* inputs, const int* targets, int B, int T) {
    const Config& c = model->cfg;
    if (has_kind(c, MOT))
        fail(strf("decoding one sequence alone: the model has MoT layers, which mix %d sequences at once", c.mot.G));
    batch_validate(c, inputs, targets, B, T);
    Decoder<real> d;
    decoder_init(&d, c, 1);
    double sum = 0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {  // the cache past t is stale, but attention reads positions <= t only
            const real* lg = gpt_decode_step(model, &d, inputs + (size_t)b * T + t, t);
            double maxv = lg[0], z = 0;
            for (int v = 1; v < c.V; v++) maxv = std::max(maxv, (double)lg[v]);
            for (int v = 0; v < c.V; v++) z += std::exp((double)lg[v] - maxv);
            sum += maxv + std::log(z) - (double)lg[targets[(size_t)b * T + t]];
        }
    return sum / ((double)B * T);
}

// Generates n_seq sequences together (a multiple of G: MoT mixes them), each
// starting with the same prompt tokens and continuing for len new tokens.
// The model sees at most maxT positions: when a sequence fills them, the
// window slides: decoding starts again from the last maxT/2 tokens of each
// sequence (re-reading them into the KV cache), so any length can be
// generated, each token conditioned on at least maxT/2 before it. Returns
// n_seq rows of new tokens. A set *stop (a stop signal's flag) ends the
// generation at the next token: the rows are then shorter than len.
template <typename real, typename Kernels>
std::vector<std::vector<int>> gpt_generate(GPT<real, Kernels>* model, const std::vector<int>& prompt, int n_seq,
                                           int len, float temperature, int top_k, Rng* rng,
                                           const volatile std::sig_atomic_t* stop = nullptr) {
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
    while ((int)(seq[0].size() - prompt.size()) < len && !(stop && *stop)) {
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
