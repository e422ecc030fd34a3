// The whole model on the GPU (cpu/gpt.h, docs/design.md section 2), built from the
// layer functions of this folder. Same function names and argument order as
// the CPU model, in namespace gpu; the GPU model holds one device allocation
// each for the parameters, their gradients, the AdamW moments (m and v in one
// block), the activations and the activation gradients, carved with
// carve_weights / carve_acts exactly like the CPU model (the integer
// activations, carve_int_acts, in a device block of their own).
//
// Weights are initialized on the host (gpt_init_weights of the CPU model) and
// copied in with gpu_gpt_load_params; checkpoints read them back with
// gpu_gpt_get_params / gpu_gpt_get_moments.
//
// --precision bf16 (bf16 set): the passes run with the kernel set
// Bf16Kernels<Bf16OperandKernels> (kernels.cuh, common/bf16_kernels.h) on a
// copy of the parameters rounded to bf16 once per forward, as the CPU's
// emulation does (cpu/gpt.h); the master weights, their gradients and the
// moments stay fp32.
#pragma once
#include <algorithm>
#include <cmath>
#include <vector>

#include "../common/bf16_kernels.h"
#include "../common/config.h"
#include "../common/layout.h"
#include "adamw.cuh"
#include "block.cuh"
#include "common.cuh"
#include "kernels.cuh"

namespace gpu {

struct GPT {
    Config cfg;
    size_t num_params = 0;
    float* params_memory = nullptr;  // (num_params) device, checkpoint order
    float* grads_memory = nullptr;   // (num_params) device, same layout
    float* mv_memory = nullptr;      // (2, num_params) device: AdamW m, then v
    AdamwChunk* adamw_chunks = nullptr;  // (n_chunks) device: the update's work, tensor by tensor (adamw.cuh)
    int n_chunks = 0;
    Weights<float> params, grads;    // named device views into the blocks above
    bool bf16 = false;                   // --precision bf16 (see the top)
    float* params_bf16_memory = nullptr;  // (num_params) device: the parameters rounded to bf16, under bf16
    Weights<float> params_bf16;           // its named views
    int B = 0, T = 0;                // the shape the activations are carved for
    size_t num_acts = 0;
    float* acts_memory = nullptr;       // (num_acts) device
    float* grad_acts_memory = nullptr;  // (num_acts) device
    int* int_acts_memory = nullptr;     // (num_int_acts) device: the integer activations (visit_int_acts)
    Acts<float> acts, grad_acts;        // named device views
    int* inputs = nullptr;              // (B,T) device, the batch of the last forward
    int* targets = nullptr;             // (B,T) device
    int* buckets = nullptr;             // (3*B*T + 1) device: inputs grouped by token (encoder.cuh)
    int n_buckets = 0;                  // distinct tokens in the last forward with targets
    std::vector<int> host_buckets;      // staging for buckets
    bool has_targets = false;
    double mean_loss = 0;  // cross-entropy of the last forward with targets
    std::vector<float> host_losses;  // (B,T) staging for mean_loss
    // layers with an aux loss (TOKEN_CHOICE): the objective is mean_loss + aux_weight * aux_loss
    double aux_weight = 0;  // --aux-loss
    double aux_loss = 0;    // sum of the layers' load-balancing losses, last forward with targets
    bool mot_discrete = false;  // MOT layers run discrete (eval; common/ffn_kinds.h FfnMode)
    // --distill: the teacher's probabilities (B,T,Vp) device for the next backward (cpu/gpt.h); null: none
    const float* teacher = nullptr;
    double distill_weight = 0;
    // expert parallelism (cfg.expert_shards > 1): the exchange of this rank's expert group, on device memory
    ExpertExchange* experts = nullptr;
    unsigned long long* fire_scratch = nullptr;  // (E) device: a threshold router's fire counts (gpt_count_fires)

    GPT() = default;
    GPT(const GPT&) = delete;
    GPT& operator=(const GPT&) = delete;
    ~GPT();
};

// Frees every device block of the model (safe to call twice).
inline void gpt_free(GPT* model) {
    float** blocks[] = {&model->params_memory, &model->grads_memory, &model->mv_memory,
                        &model->acts_memory, &model->grad_acts_memory, &model->params_bf16_memory};
    for (float** b : blocks) {
        if (*b) cudaFree(*b);  // no throw: also runs from the destructor
        *b = nullptr;
    }
    if (model->fire_scratch) cudaFree(model->fire_scratch);
    model->fire_scratch = nullptr;
    if (model->adamw_chunks) cudaFree(model->adamw_chunks);
    model->adamw_chunks = nullptr;
    int** ints[] = {&model->int_acts_memory, &model->inputs, &model->targets, &model->buckets};
    for (int** b : ints) {
        if (*b) cudaFree(*b);
        *b = nullptr;
    }
    model->B = model->T = 0;
}

inline GPT::~GPT() { gpt_free(this); }

// Allocates the model for cfg on the current device, every parameter,
// gradient and moment zero.
inline void gpt_build(GPT* model, const Config& cfg) {
    config_validate(cfg);
    gpt_free(model);
    model->cfg = cfg;
    size_t n = num_params(cfg);
    model->num_params = n;
    const char* hint = "a smaller model (width, layers, experts, expert width) needs less";
    gpu_malloc(&model->params_memory, n, "the parameters", hint);
    gpu_malloc(&model->grads_memory, n, "the parameter gradients", hint);
    gpu_malloc(&model->mv_memory, 2 * n, "the AdamW moments", hint);
    CUDA_CHECK(cudaMemset(model->params_memory, 0, n * sizeof(float)));
    CUDA_CHECK(cudaMemset(model->grads_memory, 0, n * sizeof(float)));
    CUDA_CHECK(cudaMemset(model->mv_memory, 0, 2 * n * sizeof(float)));
    // the optimizer's chunks: every tensor cut into pieces of ADAMW_CHUNK, with its weight-decay flag
    std::vector<AdamwChunk> chunks = adamw_chunk_table(cfg, 0, n, 0);
    model->n_chunks = (int)chunks.size();
    gpu_malloc(&model->adamw_chunks, chunks.size(), "the optimizer's chunk table", hint);
    CUDA_CHECK(cudaMemcpy(model->adamw_chunks, chunks.data(), chunks.size() * sizeof(AdamwChunk),
                          cudaMemcpyHostToDevice));
    model->params = carve_weights(model->params_memory, cfg);
    model->grads = carve_weights(model->grads_memory, cfg);
    if (has_kind(cfg, TOKEN_CHOICE) && cfg.tc.router != ROUTER_SOFTMAX)
        gpu_malloc(&model->fire_scratch, (size_t)cfg.E, "the routers' fire counts", hint);
}

// Threshold routers (--router-balance): adds to fires ((TOKEN_CHOICE
// layers, E) on the host, layers in order) the tokens of the last forward
// each expert fired for (token_choice_count_fires).
inline void gpt_count_fires(GPT* model, double* fires) {
    const Config& c = model->cfg;
    int N = model->B * model->T, i = 0;
    for (int l = 0; l < c.L; l++)
        if (c.kinds[l] == TOKEN_CHOICE)
            token_choice_count_fires(fires + (size_t)(i++) * c.E, model->fire_scratch, model->acts.layer[l].z, N, c.E);
}

// Host <-> device copies of the blocks, num_params floats each (moments: m and v).
inline void gpu_gpt_load_params(GPT* model, const float* host) {
    CUDA_CHECK(cudaMemcpy(model->params_memory, host, model->num_params * sizeof(float), cudaMemcpyHostToDevice));
}
inline void gpu_gpt_get_params(GPT* model, float* host) {
    CUDA_CHECK(cudaMemcpy(host, model->params_memory, model->num_params * sizeof(float), cudaMemcpyDeviceToHost));
}
inline void gpu_gpt_get_grads(GPT* model, float* host) {
    CUDA_CHECK(cudaMemcpy(host, model->grads_memory, model->num_params * sizeof(float), cudaMemcpyDeviceToHost));
}
inline void gpu_gpt_get_moments(GPT* model, float* host_m, float* host_v) {
    size_t bytes = model->num_params * sizeof(float);
    CUDA_CHECK(cudaMemcpy(host_m, model->mv_memory, bytes, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(host_v, model->mv_memory + model->num_params, bytes, cudaMemcpyDeviceToHost));
}
inline void gpu_gpt_load_moments(GPT* model, const float* host_m, const float* host_v) {
    size_t bytes = model->num_params * sizeof(float);
    CUDA_CHECK(cudaMemcpy(model->mv_memory, host_m, bytes, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(model->mv_memory + model->num_params, host_v, bytes, cudaMemcpyHostToDevice));
}

// Bytes of the bf16 copies of the products' operands under bf16
// (matmul.cuh, bf16_operand): each of the three slots grows to its largest
// use over the model's linear layers (qkv, attention projection, the logits,
// and its kinds' own, FfnKind::linear_layers: the dense FFN's two): slot 0
// the input (forward) or the output gradient (backward), slot 1 the weight,
// slot 2 the input (backward); and attention (attention.cuh): slot 0 q, k,
// v, slot 1 the probabilities or the scores' gradient (B,NH,T,T), slot 2
// the output gradient.
inline size_t bf16_operand_bytes(const Config& cfg, int B, int T) {
    size_t BT = (size_t)B * T, C = cfg.C;
    std::vector<std::pair<size_t, size_t>> layers = {{C, 3 * C}, {C, C}, {C, (size_t)cfg.Vp}};  // (in, out)
    for_each_ffn_kind([&](auto k) {
        if (has_kind(cfg, k.kind)) k.linear_layers(cfg, [&](size_t in, size_t out) { layers.push_back({in, out}); });
    });
    size_t slot0 = 0, slot1 = 0, slot2 = 0;
    for (auto [in, out] : layers) {
        slot0 = std::max(slot0, BT * std::max(in, out));
        slot1 = std::max(slot1, out * in);
        slot2 = std::max(slot2, BT * in);
    }
    slot1 = std::max(slot1, (size_t)B * cfg.NH * T * T);
    return (slot0 + slot1 + slot2) * 2;
}

// Bytes of device memory the model needs for batch shape (B,T): parameters,
// gradients, moments (and under bf16 the rounded parameters and the bf16
// operand copies), activations and their gradients, token buffers, plus what
// cuBLAS and the reductions take beside them (GPU_RESERVE_BYTES).
constexpr size_t GPU_RESERVE_BYTES = (size_t)256 << 20;  // cuBLAS workspace, reduction scratch, margin
inline size_t gpt_device_bytes(const Config& cfg, int B, int T, bool bf16 = false) {
    size_t BT = (size_t)B * T;
    size_t floats = (bf16 ? 5 : 4) * num_params(cfg) + 2 * num_acts(cfg, B, T);
    size_t ints = num_int_acts(cfg, B, T) + 2 * BT + 3 * BT + 1;  // integer activations, inputs, targets, token buckets
    return floats * sizeof(float) + ints * sizeof(int) + (bf16 ? bf16_operand_bytes(cfg, B, T) : 0) + GPU_RESERVE_BYTES;
}

// (Re)allocates and carves the activation blocks when the batch shape changes.
inline void gpt_ensure_acts(GPT* model, int B, int T) {
    if (model->B == B && model->T == T) return;
    float** fblocks[] = {&model->acts_memory, &model->grad_acts_memory};
    for (float** b : fblocks) {
        if (*b) CUDA_CHECK(cudaFree(*b));
        *b = nullptr;
    }
    int** iblocks[] = {&model->int_acts_memory, &model->inputs, &model->targets, &model->buckets};
    for (int** b : iblocks) {
        if (*b) CUDA_CHECK(cudaFree(*b));
        *b = nullptr;
    }
    model->B = model->T = 0;
    size_t n = num_acts(model->cfg, B, T), BT = (size_t)B * T;
    const char* hint = "a smaller batch or sequence length needs less";
    gpu_malloc(&model->acts_memory, n, "the activations", hint);
    gpu_malloc(&model->grad_acts_memory, n, "the activation gradients", hint);
    CUDA_CHECK(cudaMemset(model->acts_memory, 0, n * sizeof(float)));
    CUDA_CHECK(cudaMemset(model->grad_acts_memory, 0, n * sizeof(float)));
    size_t ni = num_int_acts(model->cfg, B, T);
    if (ni > 0) {
        gpu_malloc(&model->int_acts_memory, ni, "the integer activations", hint);
        CUDA_CHECK(cudaMemset(model->int_acts_memory, 0, ni * sizeof(int)));
    }
    gpu_malloc(&model->inputs, BT, "the input tokens", hint);
    gpu_malloc(&model->targets, BT, "the target tokens", hint);
    gpu_malloc(&model->buckets, 3 * BT + 1, "the token buckets", hint);
    model->num_acts = n;
    model->acts = carve_acts(model->acts_memory, model->cfg, B, T);
    carve_int_acts(&model->acts, model->int_acts_memory, model->cfg, B, T);
    model->grad_acts = carve_acts(model->grad_acts_memory, model->cfg, B, T);
    model->host_losses.assign((size_t)B * T, 0.0f);
    model->B = B;
    model->T = T;
}

// The weights the passes read: the parameters, or under bf16 their rounded
// copy, made anew from the parameters when refresh (each forward: the
// parameters change at every update) and read as made by the backward.
inline const Weights<float>& gpt_pass_weights(GPT* model, bool refresh) {
    if (!model->bf16) return model->params;
    if (model->params_bf16_memory == nullptr) {
        gpu_malloc(&model->params_bf16_memory, model->num_params, "the parameters rounded to bf16",
                   "a smaller model needs less; --precision fp32 needs no rounded copy");
        model->params_bf16 = carve_weights(model->params_bf16_memory, model->cfg);
        refresh = true;
    }
    if (refresh) bf16_round_copy(model->params_bf16_memory, model->params_memory, model->num_params);
    return model->params_bf16;
}

// Calls fn with the kernel set the model's passes run with: K32, or under
// bf16 K16 (kernels.cuh). bench/bench_gpu.cu passes sets that time each call.
template <typename K32, typename K16, typename Fn>
inline void with_kernel_set(const GPT* model, Fn fn) {
    if (model->bf16) fn(K16{});
    else fn(K32{});
}

// Forward pass on host token ids inputs (B,T); with host targets (B,T) also
// the loss (model->mean_loss, copied back to the host: this call then syncs).
template <typename K32 = Kernels, typename K16 = Bf16Kernels<Bf16OperandKernels>>
inline void gpt_forward(GPT* model, const int* inputs, const int* targets, int B, int T) {
    const Config& c = model->cfg;
    const int C = c.C;
    batch_validate(c, inputs, targets, B, T);
    gpt_ensure_acts(model, B, T);
    size_t BT = (size_t)B * T;
    CUDA_CHECK(cudaMemcpy(model->inputs, inputs, BT * sizeof(int), cudaMemcpyHostToDevice));
    model->has_targets = targets != nullptr;
    if (targets) {
        CUDA_CHECK(cudaMemcpy(model->targets, targets, BT * sizeof(int), cudaMemcpyHostToDevice));
        // for the backward: the inputs grouped by token, so dwte sums in a fixed order
        model->n_buckets = token_buckets_build(&model->host_buckets, inputs, BT);
        CUDA_CHECK(cudaMemcpy(model->buckets, model->host_buckets.data(), model->host_buckets.size() * sizeof(int),
                              cudaMemcpyHostToDevice));
    }
    Acts<float>& a = model->acts;
    const Weights<float>& w = gpt_pass_weights(model, true);
    with_kernel_set<K32, K16>(model, [&](auto kernels) {
        using K = decltype(kernels);
        K::encoder_forward(a.encoded, model->inputs, w.wte, w.wpe, B, T, C);
        const float* residual = a.encoded;  // (B,T,C) input of the current block
        for (int l = 0; l < c.L; l++) {
            block_forward<K>(a.layer[l], residual, w.layer[l], c.kinds[l], B, T, c,
                             FfnMode{false, model->mot_discrete, model->experts});
            residual = a.layer[l].res3;
        }
        K::layernorm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, residual, w.lnfw, w.lnfb, B, T, C);
        K::matmul_forward(a.logits, a.lnf, w.wte, (const float*)nullptr, B, T, C, c.Vp);
        if (targets) K::crossentropy_forward(a.losses, a.probs, a.logits, model->targets, B, T, c.V, c.Vp);
    });
    if (!targets) return;
    CUDA_CHECK(cudaMemcpy(model->host_losses.data(), a.losses, BT * sizeof(float), cudaMemcpyDeviceToHost));
    double sum = 0;
    for (size_t i = 0; i < BT; i++) sum += model->host_losses[i];
    model->mean_loss = sum / (double)BT;
    model->aux_loss = 0;
    for (int l = 0; l < c.L; l++)
        if (kind_has_aux_loss(c.kinds[l])) {
            float aux = 0;
            CUDA_CHECK(cudaMemcpy(&aux, a.layer[l].aux, sizeof(float), cudaMemcpyDeviceToHost));
            model->aux_loss += aux;
        }
}

inline void gpt_zero_grad(GPT* model) {
    CUDA_CHECK(cudaMemset(model->grads_memory, 0, model->num_params * sizeof(float)));
}

// Zeroes the activation gradients that the backward pass adds into (+=),
// skipping those it overwrites whole before reading them (common/layout.h,
// GRAD_OVERWRITES), as cpu/gpt.h does. Adjacent tensors to zero are cleared
// with one cudaMemset.
inline void gpt_zero_grad_acts(GPT* model) {
    Acts<float> da = model->grad_acts;  // a copy: visit_acts hands out its slots
    float* run = nullptr;  // start of the current stretch to zero
    size_t run_n = 0;
    auto flush = [&]() {
        if (run_n > 0) CUDA_CHECK(cudaMemset(run, 0, run_n * sizeof(float)));
        run = nullptr, run_n = 0;
    };
    visit_acts(da, model->cfg, model->B, model->T, [&](float*& slot, size_t n, GradUse use) {
        if (use == GRAD_OVERWRITES) return flush();
        if (run == nullptr) run = slot;
        run_n += n;  // tensors are carved back to back, so the stretch stays contiguous
    });
    flush();
}

// Backward pass of the last forward (which must have had targets). Parameter
// gradients accumulate (+=) into model->grads, scaled by loss_scale: the
// gradient of loss_scale * mean loss. Under bf16 it reads the weights the
// forward rounded.
template <typename K32 = Kernels, typename K16 = Bf16Kernels<Bf16OperandKernels>>
inline void gpt_backward(GPT* model, double loss_scale = 1.0) {
    if (!model->has_targets) fail("gpt_backward: the last forward pass had no targets");
    const Config& c = model->cfg;
    const int B = model->B, T = model->T, C = c.C;
    const size_t BT = (size_t)B * T;
    const Weights<float>& w = gpt_pass_weights(model, false);
    Weights<float>& dw = model->grads;
    Acts<float>& a = model->acts;
    Acts<float>& da = model->grad_acts;

    gpt_zero_grad_acts(model);
    // dlosses = loss_scale / (B*T) for every token: fill on the host, copy in
    std::vector<float> dlosses(BT, (float)(loss_scale / (double)BT));
    CUDA_CHECK(cudaMemcpy(da.losses, dlosses.data(), BT * sizeof(float), cudaMemcpyHostToDevice));

    // each aux loss (TOKEN_CHOICE's load balancing) enters the objective with weight aux_weight
    float daux = (float)(model->aux_weight * loss_scale);
    for (int l = 0; l < c.L; l++)
        if (kind_has_aux_loss(c.kinds[l]))
            CUDA_CHECK(cudaMemcpy(da.layer[l].aux, &daux, sizeof(float), cudaMemcpyHostToDevice));

    if (model->teacher)
        distill_backward(da.logits, da.losses, model->teacher, model->targets, (float)model->distill_weight, B, T, c.V,
                         c.Vp);
    with_kernel_set<K32, K16>(model, [&](auto kernels) {
        using K = decltype(kernels);
        K::crossentropy_backward(da.logits, da.losses, a.probs, model->targets, B, T, c.V, c.Vp);
        K::matmul_backward(da.lnf, dw.wte, (float*)nullptr, da.logits, a.lnf, w.wte, B, T, C, c.Vp);
        K::layernorm_backward(da.layer[c.L - 1].res3, dw.lnfw, dw.lnfb, da.lnf, a.layer[c.L - 1].res3, w.lnfw,
                              a.lnf_mean, a.lnf_rstd, B, T, C);
        for (int l = c.L - 1; l >= 0; l--) {
            const float* residual = l == 0 ? a.encoded : a.layer[l - 1].res3;
            float* dresidual = l == 0 ? da.encoded : da.layer[l - 1].res3;
            block_backward<K>(dresidual, dw.layer[l], da.layer[l], residual, w.layer[l], a.layer[l], c.kinds[l], B,
                              T, c, FfnMode{false, false, model->experts});
        }
    });
    encoder_backward(dw.wte, dw.wpe, da.encoded, token_buckets(model->buckets, model->n_buckets), B, T, C);
}

// The global gradient norm, summed in double in a fixed order (one read; syncs).
inline double gpt_grad_norm(GPT* model) {
    return std::sqrt(grad_norm_squared(model->grads_memory, model->num_params));
}

// One AdamW step on the parameters a chunk table covers (adamw_chunk_table:
// every parameter, or one rank's share under ZeRO-1, train/parallel.h), their
// moments in m and v where the table puts them; weight decay only on tensors
// of two or more dimensions; one launch. step is 0-based; bias correction
// uses step + 1. The covered gradients are zero afterwards.
inline void gpt_update_range(GPT* model, const AdamwChunk* chunks, int n_chunks,  // (n_chunks) device
                             float* m, float* v, float lr, float beta1, float beta2, float eps, float wd, int step,
                             float grad_scale) {
    adamw_update_chunks(model->params_memory, model->grads_memory, m, v, chunks, n_chunks, lr, beta1, beta2, eps, wd,
                        step + 1, grad_scale);
}

// One AdamW step on the gradients scaled by grad_scale (clip_scale of
// cpu/adamw.h clips them), every parameter; the gradients are zero afterwards.
inline void gpt_update(GPT* model, float lr, float beta1, float beta2, float eps, float wd, int step,
                       float grad_scale = 1.0f) {
    gpt_update_range(model, model->adamw_chunks, model->n_chunks, model->mv_memory,
                     model->mv_memory + model->num_params, lr, beta1, beta2, eps, wd, step, grad_scale);
}

}  // namespace gpu

