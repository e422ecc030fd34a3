// The GPU suites' harness (tests/test_gpu_layers.cu, tests/test_gpu_model.cu):
// device buffers, random inputs, the closeness measure, the small models, and
// the GPU_TEST decorator that skips, with the reason, where no GPU works.
//
// Error measure, per tensor: rel = max_i |gpu_i - cpu_i| / max(max_i |cpu_i|, 1e-30),
// i.e. the largest elementwise difference relative to the tensor's largest
// magnitude (elements near zero in a tensor of large values are held to the
// tensor's scale, not their own). Every check needs rel < 1e-4, fp32 with TF32
// off. NaN anywhere counts as infinite error. Inputs are fresh random values
// from common/rng.h with fixed seeds.
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "common/rng.h"
#include "cpu/gpt.h"
#include "gpu/gpt.cuh"

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

inline std::vector<float> rand_vec(Rng* rng, size_t n, float scale = 1.0f) {
    std::vector<float> v(n);
    for (float& x : v) x = scale * (2.0f * rng_uniform(rng) - 1.0f);
    return v;
}

inline std::vector<int> rand_tokens(Rng* rng, size_t n, int V) {
    std::vector<int> v(n);
    for (int& x : v) x = (int)(rng_u64(rng) % (uint64_t)V);
    return v;
}

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

inline double rel_err(const float* gpu, const float* cpu, size_t n) {
    double maxdiff = 0, maxref = 0;
    for (size_t i = 0; i < n; i++) {
        double d = std::fabs((double)gpu[i] - (double)cpu[i]);
        if (std::isnan(gpu[i]) || std::isnan(cpu[i]) || std::isinf(gpu[i])) return INFINITY;
        maxdiff = std::max(maxdiff, d);
        maxref = std::max(maxref, std::fabs((double)cpu[i]));
    }
    return maxdiff / std::max(maxref, 1e-30);
}

inline void check_close(const std::vector<float>& gpu, const std::vector<float>& cpu, const std::string& what) {
    REQUIRE(gpu.size() == cpu.size());
    double e = rel_err(gpu.data(), cpu.data(), cpu.size());
    CHECK_MESSAGE(e < TOL, what << ": relative error " << e);
}

inline void check_close(const DevF& gpu, const std::vector<float>& cpu, const std::string& what) {
    check_close(gpu.get(), cpu, what);
}
// check_all(tag, {{"out", &d_out, &out}, ...}): check_close on every pair
struct Pair { const char* name; const DevF* gpu; const std::vector<float>* cpu; };
inline void check_all(const std::string& tag, std::initializer_list<Pair> pairs) {
    for (const Pair& q : pairs) check_close(*q.gpu, *q.cpu, q.name + tag);
}

// A small model: V 257 (Vp 320), maxT 64, C 64, NH 4, dff 256, E 8, G 4, f 128.
inline Config small_config(std::vector<int> kinds, float tau = 1.0f, int G = 4) {
    Config c;
    c.V = 257, c.Vp = pad_vocab(c.V), c.maxT = 64, c.L = (int)kinds.size(), c.NH = 4, c.C = 64, c.dff = 256;
    c.E = 8, c.G = G, c.f = c.dff * c.G / c.E, c.tau = tau, c.kinds = kinds;
    return c;
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
            {"mot G=B", small_config({MOT, DENSE}, 1.5f, 8), 8, 33}};
}

// The same model on both paths: CPU weights from gpt_init_weights(seed), copied to the GPU.
inline void build_both(GPT<float>* cpu, gpu::GPT* gm, const Config& c, uint64_t seed) {
    gpt_build(cpu, c);
    gpt_init_weights(cpu, seed);
    gpu::gpt_build(gm, c);
    gpu::gpu_gpt_load_params(gm, cpu->params_memory.data());
}

// Compares every parameter-shaped block (params or grads), tensor by tensor.
inline void check_tensors(const Config& c, const std::vector<float>& gpu, const std::vector<float>& cpu,
                          const std::string& what) {
    for (const TensorSpec& s : param_specs(c)) {
        double e = rel_err(gpu.data() + s.offset, cpu.data() + s.offset, s.numel);
        CHECK_MESSAGE(e < TOL, what << " " << s.name << ": relative error " << e);
    }
}

