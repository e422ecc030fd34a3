// The GPU suites' harness (tests/test_gpu_layers.cu, tests/test_gpu_model.cu):
// device buffers, the GPU-against-CPU check, and the GPU_TEST decorator that
// skips, with the reason, where no GPU works. The inputs come from
// tests/rng.h with fixed seeds, the models from tests/models.h.
//
// Error measure, per tensor (tests/close.h, scaled_tol): every element must
// satisfy |gpu_i - cpu_i| < TOL * max_j |cpu_j|, the largest elementwise
// difference relative to the tensor's largest magnitude (elements near zero
// in a tensor of large values are held to the tensor's scale, not their own).
// TOL = 1e-4, fp32 with TF32 off. NaN or an infinity anywhere fails.
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "cpu/fast/kernels.h"
#include "cpu/gpt.h"
#include "gpu/gpt.cuh"
#include "tests/close.h"
#include "tests/models.h"
#include "tests/rng.h"

static const bool has_gpu = gpu_available();
static const std::string skip_reason = has_gpu ? "" : "no usable GPU: " + gpu_unavailable_reason();
static const bool banner = [] {
    if (!has_gpu) std::printf("test_gpu: every case is skipped, %s\n", skip_reason.c_str());
    return true;
}();
static const double TOL = 1e-4;
// every test case carries these decorators: skipped without a GPU, the reason
// in its description (--list-test-cases shows it)
#define GPU_TEST(name) TEST_CASE(name * doctest::skip(!has_gpu) * doctest::description(skip_reason.c_str()))

// A device buffer of n values, zeros or a copy of a host vector; freed on scope exit.
template <typename T>
struct Dev {
    T* p = nullptr;
    size_t n = 0;
    explicit Dev(size_t count) : n(count) {
        CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)));
        CUDA_CHECK(cudaMemset(p, 0, std::max<size_t>(n, 1) * sizeof(T)));
    }
    explicit Dev(const std::vector<T>& host) : Dev(host.size()) {
        CUDA_CHECK(cudaMemcpy(p, host.data(), n * sizeof(T), cudaMemcpyHostToDevice));
    }
    Dev(const Dev&) = delete;
    ~Dev() { cudaFree(p); }
    std::vector<T> get() const {
        std::vector<T> host(n);
        CUDA_CHECK(cudaMemcpy(host.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
        return host;
    }
};
using DevF = Dev<float>;
using DevI = Dev<int>;

// The GPU tensor against the CPU one (see the top).
inline void check_gpu(const DevF& gpu, const std::vector<float>& cpu, const std::string& what) {
    check_close(gpu.get(), cpu, scaled_tol(TOL, cpu), what);
}
// check_all(tag, {{"out", &d_out, &out}, ...}): check_gpu on every pair
struct Pair { const char* name; const DevF* gpu; const std::vector<float>* cpu; };
inline void check_all(const std::string& tag, std::initializer_list<Pair> pairs) {
    for (const Pair& q : pairs) check_gpu(*q.gpu, *q.cpu, q.name + tag);
}

struct ModelCase {
    const char* name;
    Config cfg;
    int B, T;
};

inline std::vector<ModelCase> model_cases() {
    return {{"dense", small_config({DENSE, DENSE}), 4, 37},
            {"mot", small_config({MOT, MOT}), 4, 37},
            {"mixed tau 0.8", small_config({DENSE, MOT, MOT}, 0.8f), 8, 7},
            {"mot G=1", small_config({MOT}, 1.0f, 1), 3, 16},
            {"mot G=B", small_config({MOT, DENSE}, 1.5f, 8), 8, 33},
            {"token choice k 2", token_choice_config(), 4, 37},
            {"token choice threshold k 2", threshold_config(), 4, 37}};
}

// The load-balancing loss's weight in the model tests: as in training
// (--aux-loss 0.01), so its gradient and its read-back value are compared too.
static const double AUX_WEIGHT = 0.01;

// The same model on both paths: CPU weights from gpt_init_weights(seed), copied to the GPU. The CPU
// model runs the kernels of CPU training.
inline void build_both(GPT<float, FastKernels>* cpu, gpu::GPT* gm, const Config& c, uint64_t seed) {
    gpt_build(cpu, c);
    gpt_init_weights(cpu, seed);
    gpu::gpt_build(gm, c);
    gpu::gpu_gpt_load_params(gm, cpu->params_memory.data());
    cpu->aux_weight = gm->aux_weight = AUX_WEIGHT;
}

// How far the N tokens' routing decisions are from a tie, from the router
// logits z (N,E): the smallest gap between a token's r-th and (r+1)-th
// largest logit, r < k, and for a threshold router (soft false: z holds the
// bias) the smallest |z| too. Float rounding cannot route differently on the
// two paths when this is well above the rounding of z.
inline double routing_margin(const float* z, int N, int E, int k, bool soft) {
    double margin = 1e300;
    for (int n = 0; n < N; n++) {
        std::vector<float> zn(z + (size_t)n * E, z + (size_t)(n + 1) * E);
        std::sort(zn.rbegin(), zn.rend());
        for (int r = 0; r < k && r + 1 < E; r++) margin = std::min(margin, (double)(zn[r] - zn[r + 1]));
        if (!soft)
            for (float x : zn) margin = std::min(margin, (double)std::fabs(x));
    }
    return margin;
}

// The routing margin of a model's last forward on the CPU, over its
// TOKEN_CHOICE layers (1e300 without any).
inline double model_routing_margin(const GPT<float, FastKernels>& m, int B, int T) {
    const Config& c = m.cfg;
    double margin = 1e300;
    for (int l = 0; l < c.L; l++)
        if (c.kinds[l] == TOKEN_CHOICE)
            margin = std::min(margin,
                              routing_margin(m.acts.layer[l].z, B * T, c.E, c.tc.topk, c.tc.router == ROUTER_SOFTMAX));
    return margin;
}

// Router logits reach a token-choice layer through the blocks before it, so
// the GPU's differ from the CPU's by about 1e-6 of their scale: a batch whose
// decisions are all 1e-4 apart on the CPU routes the same on the GPU.
static const double MODEL_ROUTING_MARGIN = 1e-4;

// A batch of random tokens that the model routes with MODEL_ROUTING_MARGIN
// (any batch for a model without token choice); leaves the CPU model's
// forward of that batch done.
inline void routable_batch(GPT<float, FastKernels>* cpu, TestRng& rng, int B, int T, std::vector<int>* inputs,
                           std::vector<int>* targets) {
    const Config& c = cpu->cfg;
    for (int tries = 0; tries < 1000; tries++) {
        *inputs = rng.tokens((size_t)B * T, c.V);
        *targets = rng.tokens((size_t)B * T, c.V);
        gpt_forward(cpu, inputs->data(), targets->data(), B, T);
        if (model_routing_margin(*cpu, B, T) > MODEL_ROUTING_MARGIN) return;
    }
    FAIL("no batch of 1000 routes every token with a margin of " << MODEL_ROUTING_MARGIN);
}

// The GPU's load-balancing loss against the CPU's (both 0 without a softmax router).
inline void check_aux(const GPT<float, FastKernels>& cpu, const gpu::GPT& gm, double tol, const std::string& what) {
    CHECK_MESSAGE(std::fabs(gm.aux_loss - cpu.aux_loss) <= tol * std::fabs(cpu.aux_loss),
                  what << " aux loss " << gm.aux_loss << " vs " << cpu.aux_loss);
}

// Compares every parameter-shaped block (params or grads), tensor by tensor.
inline void check_tensors(const Config& c, const std::vector<float>& gpu, const std::vector<float>& cpu,
                          const std::string& what, double tol = TOL) {
    for (const TensorSpec& s : param_specs(c)) {
        Span<float> want = span(cpu.data() + s.offset, s.numel);
        check_close(span(gpu.data() + s.offset, s.numel), want, scaled_tol(tol, want), what + " " + s.name);
    }
}
