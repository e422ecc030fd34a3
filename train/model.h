// The model on whichever device trains it. train_mot calls these functions
// and never looks inside: on the CPU they call cpu/gpt.h, on the GPU (when
// built by nvcc and chosen by --device) the GPU half of train/device.h (the
// passes, gpu/gpt.cuh's gpt_forward and gpt_backward, by their own names),
// which holds every difference between a build with nvcc and one without:
// nothing here asks how the program was built.
// Include from one translation unit only (gpu/ headers define kernels).
#pragma once
#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/layout.h"
#include "cpu/fast/kernels.h"
#include "cpu/gpt.h"
#include "train/device.h"
#include "train/peak.h"
#ifdef _OPENMP
#include <omp.h>
#endif

struct Model {
    Config cfg;
    bool on_gpu = false;
    GPT<float, FastKernels> cpu;  // the CPU model; on the GPU path a host copy used for generation
    GpuModel gpu;    // the GPU model (train/device.h); without nvcc it holds no device state
    std::vector<ParamRange> share;  // ZeRO-1: the parameters this rank updates (model_shard); empty: all
};

// A block of the model's floats: where it starts, how many, and whether it
// lives in the GPU's memory (on_device) or the host's.
struct FloatSpan {
    float* data;
    size_t n;
    bool on_device;
};

inline FloatSpan span_part(FloatSpan s, size_t at, size_t n) { return {s.data + at, n, s.on_device}; }

// Host copies of a span's floats: out (s.n) from it, or in (s.n) into it.
inline void span_to_host(FloatSpan s, float* out) {
    if (s.on_device) device_to_host(out, s.data, s.n);
    else std::copy(s.data, s.data + s.n, out);
}
inline void span_from_host(FloatSpan s, const float* in) {
    if (s.on_device) host_to_device(s.data, in, s.n);
    else std::copy(in, in + s.n, s.data);
}

// The sum of squares of a span's floats, in double, in one fixed order.
inline double span_norm_squared(FloatSpan s) {
    return s.on_device ? device_norm_squared(s.data, s.n) : grad_norm_squared(s.data, s.n);
}

// Chooses the device for --device cpu|cuda|auto, a batch shape and a
// precision (bf16 or not); says why when the GPU is not used. Fails for an
// explicit cuda that cannot work.
inline bool choose_gpu(const std::string& device, const Config& c, int B, int T, bool bf16, std::string* why) {
    if (device == "cpu") return false;
    if (gpu_model_fits(c, B, T, bf16, why)) return true;
    if (device == "cuda") fail("--device cuda: " + *why);
    return false;  // auto falls back to the CPU
}

// --precision bf16: the model runs the contract of common/bf16_kernels.h,
// the CPU emulating it (cpu/gpt.h, GPT::bf16), the GPU computing it
// (gpu/gpt.cuh); on the GPU path the host copy that generates does too.
inline void model_set_bf16(Model* m, bool on) {
    if (m->on_gpu) gpu_model_set_bf16(&m->gpu, on);
    m->cpu.bf16 = on;
}

inline std::string device_name(const Model& m) {
    if (m.on_gpu) return "cuda (" + gpu_device_name() + ")" + (m.cpu.bf16 ? ", bf16" : "");
    return m.cpu.bf16 ? "cpu, bf16 emulated" : "cpu";
}

// Bytes of memory the system can still give this process (MemAvailable in
// /proc/meminfo, plus free swap); 0 when unknown.
inline size_t host_available_bytes() {
    FILE* fp = std::fopen("/proc/meminfo", "r");
    if (!fp) return 0;
    char line[256];
    size_t avail = 0, swap = 0;
    while (std::fgets(line, sizeof line, fp)) {
        unsigned long long kb = 0;
        if (std::sscanf(line, "MemAvailable: %llu kB", &kb) == 1) avail = kb * 1024;
        if (std::sscanf(line, "SwapFree: %llu kB", &kb) == 1) swap = kb * 1024;
    }
    std::fclose(fp);
    return avail + swap;
}

// Fails before allocating, naming the sizes and the options that set them,
// when the model on the CPU (or its host copy, on_gpu) cannot fit in memory:
// allocating anyway would end in std::bad_alloc or the kernel's OOM killer.
inline void check_host_memory(const Config& c, int B, int T, bool on_gpu) {
    const double GiB = 1073741824.0;
    double params = 4.0 * num_params(c) * sizeof(float);  // parameters, gradients, AdamW m and v
    // activations and their gradients, and the integer activations
    double acts = on_gpu || B == 0 ? 0.0 : 2.0 * num_acts(c, B, T) * sizeof(float) + num_int_acts(c, B, T) * sizeof(int);
    size_t avail = host_available_bytes();
    if (avail == 0 || params + acts < 0.95 * avail) return;
    std::string parts = strf("%.2f GiB of parameters, gradients and AdamW moments, set by --layers, --d-model, "
                             "--d-ff, --experts and --expert-size", params / GiB);
    if (acts > 0) parts += strf("; %.2f GiB of activations, set by --batch %d and --seq %d", acts / GiB, B, T);
    if (acts > 0 && has_kind(c, TOKEN_CHOICE)) {
        // each token-choice layer's expert buffers (inputs, hidden, activated, outputs) and their gradients
        int cap = TokenChoiceFfn::capacity(c, B * T, false);
        double buffers = 2.0 * count_kind(c, TOKEN_CHOICE) * c.E * (double)cap * (2.0 * c.C + 2.0 * c.f) * sizeof(float);
        parts += strf(", of which %.2f GiB are the token-choice layers' expert buffers, %d experts x %d rows (set by "
                      "--experts, --capacity-factor %g and --topk %d)",
                      buffers / GiB, c.E, cap, c.tc.capacity_factor, c.tc.topk);
    }
    fail(strf("out of memory: the model needs %.2f GiB (%s), and %.2f GiB are available", (params + acts) / GiB,
              parts.c_str(), avail / GiB));
}

// Builds the model with the given parameters (num_params(c) floats) on the
// device that --device (cpu, cuda or auto) picks for batch shape (B,T). On
// the GPU the activations for (B,T) are allocated here, so that running out
// of memory shows now: under auto the GPU blocks are freed and the model is
// built on the CPU, saying so; under cuda it is an error naming the sizes.
inline void model_build(Model* m, const Config& c, const std::string& device, int B, int T, const float* params,
                        bool bf16 = false) {
    m->cfg = c;
    std::string why;
    m->on_gpu = choose_gpu(device, c, B, T, bf16, &why);
    check_host_memory(c, B, T, m->on_gpu);
    gpt_build(&m->cpu, c);
    std::copy(params, params + num_params(c), m->cpu.params_memory.begin());
    if (m->on_gpu) {
        try {
            gpu_model_build(&m->gpu, c, params, B, T);
        } catch (const std::exception& e) {
            if (device != "auto")
                fail(strf("--device cuda: %s (the options: --batch, --seq; --d-model, --layers, --experts, "
                          "--expert-size; or --device cpu)",
                          e.what()));
            gpu_model_free(&m->gpu);
            m->on_gpu = false;
            why = strf("the GPU build failed: %s", e.what());
            check_host_memory(c, B, T, false);
        }
    }
    if (m->on_gpu) {
        // the host copy keeps only the weights; its other blocks are not needed
        std::vector<float>().swap(m->cpu.grads_memory);
        std::vector<float>().swap(m->cpu.m_memory);
        std::vector<float>().swap(m->cpu.v_memory);
    }
    if (!m->on_gpu && device == "auto" && gpu_compiled()) std::printf("device auto: using the CPU (%s)\n", why.c_str());
    model_set_bf16(m, bf16);
}

// Host copy of the current weights (for checkpoints and generation).
inline const float* model_params(Model* m) {
    if (m->on_gpu) gpu_model_get_params(&m->gpu, m->cpu.params_memory.data());
    return m->cpu.params_memory.data();
}

// The blocks the device trains, (num_params) each in checkpoint order: the
// parameters and their gradients (train/parallel.h exchanges them).
inline FloatSpan model_param_span(Model* m) {
    if (m->on_gpu) return {gpu_model_params(&m->gpu), num_params(m->cfg), true};
    return {m->cpu.params_memory.data(), m->cpu.params_memory.size(), false};
}
inline FloatSpan model_grad_span(Model* m) {
    if (m->on_gpu) return {gpu_model_grads(&m->gpu), num_params(m->cfg), true};
    return {m->cpu.grads_memory.data(), m->cpu.grads_memory.size(), false};
}

// The AdamW moments the model holds, m and v, on the host: those of every
// parameter, or after model_shard those of its ranges, packed in order.
inline void model_get_moments(Model* m, std::vector<float>* mom, std::vector<float>* vel) {
    if (m->on_gpu) {
        gpu_model_get_moments(&m->gpu, mom, vel);
        return;
    }
    *mom = m->cpu.m_memory;
    *vel = m->cpu.v_memory;
}

inline void model_set_moments(Model* m, const std::vector<float>& mom, const std::vector<float>& vel) {
    if (m->on_gpu) {
        gpu_model_set_moments(&m->gpu, mom.data(), vel.data());
        return;
    }
    m->cpu.m_memory = mom;
    m->cpu.v_memory = vel;
}

// Forward pass; returns the mean loss when targets are given.
inline double model_forward(Model* m, const int* inputs, const int* targets, int B, int T) {
    if (m->on_gpu) {
        gpu::gpt_forward(&m->gpu.gpt, inputs, targets, B, T);
        return m->gpu.gpt.mean_loss;
    }
    gpt_forward(&m->cpu, inputs, targets, B, T);
    return m->cpu.mean_loss;
}

// The last forward's logits (B,T,Vp) and per-token losses (B,T) on the host.
inline void model_logits_losses(Model* m, int B, int T, std::vector<float>* logits, std::vector<float>* losses) {
    const size_t BT = (size_t)B * T, Vp = m->cfg.Vp;
    logits->resize(BT * Vp);
    losses->resize(BT);
    if (m->on_gpu) {
        gpu_model_logits_losses(&m->gpu, BT, Vp, logits->data(), losses->data());
        return;
    }
    std::copy(m->cpu.acts.logits, m->cpu.acts.logits + BT * Vp, logits->begin());
    std::copy(m->cpu.acts.losses, m->cpu.acts.losses + BT, losses->begin());
}

// TOKEN_CHOICE layers: the weight of their load-balancing loss in the
// objective (--aux-loss), and its value (summed over the layers) in the last
// forward with targets.
inline void model_set_aux_weight(Model* m, double weight) {
    m->cpu.aux_weight = weight;
    gpu_model_set_aux_weight(&m->gpu, weight);
}

inline double model_aux_loss(const Model& m) {
    if (m.on_gpu) return gpu_model_aux_loss(m.gpu);
    return m.cpu.aux_loss;
}

// --distill: the next backward of student distills with weight w from the
// probabilities of teacher's last forward, which must have run on the same
// batch and the same device (null teacher: the plain loss again).
inline void model_set_teacher(Model* student, const Model* teacher, double w) {
    if (teacher && teacher->on_gpu != student->on_gpu)
        fail("--distill: the teacher and the model being trained must be on the same device");
    if (teacher && teacher->cfg.Vp != student->cfg.Vp)
        fail(strf("--distill: the teacher's vocabulary (%d) is not the model's (%d)", teacher->cfg.V, student->cfg.V));
    if (student->on_gpu) {
        gpu_model_set_teacher(&student->gpu, teacher ? &teacher->gpu : nullptr, w);
        return;
    }
    student->cpu.teacher = teacher ? teacher->cpu.acts.probs : nullptr;
    student->cpu.distill_weight = w;
}

// MOT layers with one-hot mixing weights (eval and sample --mot-discrete).
inline void model_set_mot_discrete(Model* m, bool on) {
    m->cpu.mot_discrete = on;
    gpu_model_set_mot_discrete(&m->gpu, on);
}

inline bool model_mot_discrete(const Model& m) { return m.cpu.mot_discrete; }

// Expert parallelism (train/parallel.h): the exchange of this rank's expert
// group, which the expert layers of a model built with expert_shards > 1
// call (on the GPU MoT layers only, the exchange on device memory).
inline void model_set_experts(Model* m, ExpertExchange* x) {
    if (m->on_gpu) gpu_model_set_experts(&m->gpu, x);
    else m->cpu.experts = x;
}

// Whether every forward is a collective of the expert group: its ranks must
// run the same number of forwards (report.h, evaluate).
inline bool model_in_lockstep(const Model& m) { return m.cfg.expert_shards > 1; }

// How the TOKEN_CHOICE layers routed a step, as counts added over its
// forwards (micro-batches, then ranks by a sum), so that R ranks derive the
// statistics of one process accumulating the same micro-batches: per layer
// in order, the tokens each expert took (E), the choices made (a threshold
// router makes only the choices above its thresholds) and the tokens routed.
inline size_t router_counts_size(const Config& c) { return (size_t)count_kind(c, TOKEN_CHOICE) * (c.E + 2); }

// Adds the last forward's routing to counts (router_counts_size).
inline void model_add_router_counts(Model* m, std::vector<double>* counts) {
    const Config& c = m->cfg;
    counts->resize(router_counts_size(c), 0.0);
    double* at = counts->data();
    for (int l = 0; l < c.L; l++) {
        if (c.kinds[l] != TOKEN_CHOICE) continue;
        std::vector<float> load(c.E);
        int N = 0;
        const int* route = nullptr;  // (N,k) the choices; -1 where a threshold router made none
        std::vector<int> route_host;
        if (m->on_gpu) {
            N = gpu_model_routing(&m->gpu, l, load.data(), &route_host);
            if (c.tc.router != ROUTER_SOFTMAX) route = route_host.data();
        } else {
            std::copy(m->cpu.acts.layer[l].load, m->cpu.acts.layer[l].load + c.E, load.begin());
            N = m->cpu.B * m->cpu.T;
            route = m->cpu.acts.layer[l].route;
        }
        for (int e = 0; e < c.E; e++) at[e] += load[e];
        double choices = (double)N * c.tc.topk;
        if (c.tc.router != ROUTER_SOFTMAX) {
            choices = 0;
            for (size_t i = 0; i < (size_t)N * c.tc.topk; i++) choices += route[i] >= 0;
        }
        at[c.E] += choices;
        at[c.E + 1] += N;
        at += c.E + 2;
    }
}

// What the counts say per TOKEN_CHOICE layer: the share of choices dropped
// for capacity (of those made), the smallest and largest share of the
// dispatched tokens one expert took, and the experts run per token.
struct RouterStats {
    int layer;
    double dropped, min_share, max_share;
    double per_token;  // experts that ran per token (dispatched choices / tokens)
};

inline std::vector<RouterStats> router_stats(const Config& c, const std::vector<double>& counts) {
    std::vector<RouterStats> stats;
    const double* at = counts.data();
    for (int l = 0; l < c.L; l++) {
        if (c.kinds[l] != TOKEN_CHOICE) continue;
        double taken = 0, lo = 1e300, hi = 0;
        for (int e = 0; e < c.E; e++) taken += at[e], lo = std::min(lo, at[e]), hi = std::max(hi, at[e]);
        double choices = at[c.E], N = at[c.E + 1];
        stats.push_back({l, choices > 0 ? 1 - taken / choices : 0, taken > 0 ? lo / taken : 0,
                         taken > 0 ? hi / taken : 0, N > 0 ? taken / N : 0});
        at += c.E + 2;
    }
    return stats;
}

// Threshold routers held at a firing rate (--router-balance;
// cpu/token_choice.h, router_balance_update). fires and bc hold (TOKEN_CHOICE
// layers, E), the layers in order.

// Adds the tokens of the last forward each expert fired for.
inline void model_count_fires(Model* m, std::vector<double>* fires) {
    const Config& c = m->cfg;
    fires->resize((size_t)count_kind(c, TOKEN_CHOICE) * c.E, 0.0);
    if (m->on_gpu) {
        gpu_model_count_fires(&m->gpu, fires->data());
        return;
    }
    int N = m->cpu.B * m->cpu.T, i = 0;
    for (int l = 0; l < c.L; l++)
        if (c.kinds[l] == TOKEN_CHOICE)
            token_choice_count_fires(fires->data() + (size_t)(i++) * c.E, m->cpu.acts.layer[l].z, N, c.E);
}

// The routers' biases, read or written.
inline std::vector<float> model_router_bias(Model* m) {
    const Config& c = m->cfg;
    std::vector<float> bc;
    for (int l = 0; l < c.L; l++) {
        if (c.kinds[l] != TOKEN_CHOICE) continue;
        bc.resize(bc.size() + c.E);
        float* out = bc.data() + bc.size() - c.E;
        if (m->on_gpu) gpu_model_router_bias(&m->gpu, l, out);
        else std::copy(m->cpu.params.layer[l].bc, m->cpu.params.layer[l].bc + c.E, out);
    }
    return bc;
}

inline void model_set_router_bias(Model* m, const std::vector<float>& bc) {
    const Config& c = m->cfg;
    int i = 0;
    for (int l = 0; l < c.L; l++) {
        if (c.kinds[l] != TOKEN_CHOICE) continue;
        const float* in = bc.data() + (size_t)(i++) * c.E;
        if (m->on_gpu) gpu_model_set_router_bias(&m->gpu, l, in);
        else std::copy(in, in + c.E, m->cpu.params.layer[l].bc);
    }
}

// The routers' biases get no gradient: zeroed before the gradients are
// summed, their norm taken and AdamW run (their moments then stay zero).
inline void model_zero_router_bias_grads(Model* m) {
    const Config& c = m->cfg;
    for (int l = 0; l < c.L; l++) {
        if (c.kinds[l] != TOKEN_CHOICE) continue;
        if (m->on_gpu) gpu_model_zero_router_bias_grad(&m->gpu, l);
        else std::fill(m->cpu.grads.layer[l].bc, m->cpu.grads.layer[l].bc + c.E, 0.0f);
    }
}

// The controller's step (--router-balance ETA), after the AdamW update
// (whose gradients of bc model_zero_router_bias_grads zeroed): bc holds the
// biases from before the update, fires the step's counts over all its
// micro-batches and ranks; each bias becomes bc_e - ETA (r_e - 1/G), r_e =
// fires[e] / tokens, 1/G the share each expert fired for at the switch (the
// transition calibrates the thresholds so and keeps the MoT model's G in the
// routed model). Every rank computes the same. Returns per layer the mean
// over the experts of |r_e - 1/G| * G, before the move.
inline std::vector<double> model_router_balance(Model* m, std::vector<float>* bc, const std::vector<double>& fires,
                                                double tokens, float eta) {
    const Config& c = m->cfg;
    const double target = 1.0 / c.mot.G;
    std::vector<double> err;
    for (size_t i = 0; i * c.E < fires.size(); i++) {
        const double* f = fires.data() + i * c.E;
        double sum = 0;
        for (int e = 0; e < c.E; e++) sum += std::fabs(f[e] / tokens - target) / target;
        err.push_back(sum / c.E);
        router_balance_update(bc->data() + i * c.E, f, tokens, target, eta, c.E);
    }
    model_set_router_bias(m, *bc);
    return err;
}

inline void model_zero_grad(Model* m) {
    if (m->on_gpu) gpu_model_zero_grad(&m->gpu);
    else gpt_zero_grad(&m->cpu);
}

inline void model_backward(Model* m, double loss_scale) {
    if (m->on_gpu) gpu::gpt_backward(&m->gpu.gpt, loss_scale);
    else gpt_backward(&m->cpu, loss_scale);
}

// The global gradient norm (one read of the gradients).
inline double model_grad_norm(Model* m) {
    if (m->on_gpu) return gpu_model_grad_norm(&m->gpu);
    return gpt_grad_norm(&m->cpu);
}

// One AdamW step on the gradients scaled by grad_scale (clip_scale clips
// them), in one pass over parameters, gradients and moments; the gradients
// are zero afterwards, ready for the next step.
inline void model_update(Model* m, float lr, float beta1, float beta2, float eps, float wd, int step,
                         float grad_scale) {
    if (m->on_gpu) gpu_model_update(&m->gpu, lr, beta1, beta2, eps, wd, step, grad_scale);
    else gpt_update(&m->cpu, lr, beta1, beta2, eps, wd, step, grad_scale);
}

// ZeRO-1 (train/parallel.h): from here on the model keeps AdamW moments for
// the given ranges of the parameters alone (packed in order, zero), and
// model_update_share updates those ranges, each reading its gradients at its
// grads_at. Call once, after model_build and before any update.
inline void model_shard(Model* m, const std::vector<ParamRange>& ranges) {
    m->share = ranges;
    if (m->on_gpu) {
        gpu_model_shard(&m->gpu, ranges);
        return;
    }
    size_t n = 0;
    for (const ParamRange& r : ranges) n += r.n;
    std::vector<float>(n, 0.0f).swap(m->cpu.m_memory);
    std::vector<float>(n, 0.0f).swap(m->cpu.v_memory);
}

// One AdamW step (model_update's arguments) on the ranges of model_shard;
// every gradient is zero afterwards, the other ranges' too (not consumed).
inline void model_update_share(Model* m, float lr, float beta1, float beta2, float eps, float wd, int step,
                               float grad_scale) {
    if (m->on_gpu) {
        gpu_model_update_share(&m->gpu, lr, beta1, beta2, eps, wd, step, grad_scale);
        return;
    }
    GPT<float, FastKernels>& g = m->cpu;
    size_t at = 0;  // the range's first moment
    for (const ParamRange& r : m->share) {
        gpt_update_range(&g, r.lo, r.n, g.grads_memory.data() + r.grads_at, g.m_memory.data() + at,
                         g.v_memory.data() + at, lr, beta1, beta2, eps, wd, step, grad_scale);
        at += r.n;
    }
    std::fill(g.grads_memory.begin(), g.grads_memory.end(), 0.0f);
}

// Generation runs on the host copy with a KV cache (cpu/gpt.h).
inline std::vector<std::vector<int>> model_generate(Model* m, const std::vector<int>& prompt, int n_seq, int len,
                                                    float temperature, int top_k, Rng* rng,
                                                    const volatile std::sig_atomic_t* stop = nullptr) {
    model_params(m);  // refresh the host copy
    return gpt_generate(&m->cpu, prompt, n_seq, len, temperature, top_k, rng, stop);
}

// The mean loss of a batch (B,T) with every sequence decoded alone
// (cpu/gpt.h gpt_decode_loss), on the host copy.
inline double model_decode_loss(Model* m, const int* inputs, const int* targets, int B, int T) {
    model_params(m);  // refresh the host copy
    return gpt_decode_loss(&m->cpu, inputs, targets, B, T);
}

// Peak FLOP rate of the training device, with how it was derived: the GPU's
// fp32 rate (its TF32 tensor-core rate under --tf32, its bf16 tensor-core
// rate under bf16, whose linear layers run on them: gpu/kernels.cuh), or
// the CPU's.
inline double device_peak_flops(const Model& m, std::string* how) {
    if (m.on_gpu) return gpu_peak_flops(m.cpu.bf16 ? "bf16" : gpu_tf32() ? "tf32" : "fp32", how);
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    return cpu_peak_flops(threads, how);
}
