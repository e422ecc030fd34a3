// tests/models.h: the models of the test suites. One builder that sets every
// field of Config (common/config.h gives none a default), the named presets
// built with it, and weights drawn wider than the training init.
#pragma once
#include <doctest/doctest.h>

#include <vector>

#include "common/config.h"
#include "cpu/gpt.h"
#include "tests/rng.h"

// Every field spelled out: Vp is V padded to a multiple of 64, L the number
// of layer kinds, the activation gelu.
inline Config make_config(int V, int maxT, int NH, int C, int dff, int E, int G, int f, float tau,
                          const std::vector<int>& kinds, int topk = 1, float capacity = 1.25f) {
    Config c;
    c.V = V;
    c.Vp = pad_vocab(V);
    c.maxT = maxT;
    c.L = (int)kinds.size();
    c.NH = NH;
    c.C = C;
    c.dff = dff;
    c.E = E;
    c.mot.G = G;
    c.f = f;
    c.mot.tau = tau;
    c.tc.topk = topk;
    c.tc.capacity_factor = capacity;
    c.activation = 0;
    c.kinds = kinds;
    return c;
}

// The finite-difference model (tests/test_model.cpp, test_mot.cpp,
// test_generate.cpp): V 11 (Vp 64), maxT 8, NH 2, C 8, dff 16, E 4; G 2 and
// f 8 unless given.
inline Config tiny_config(const std::vector<int>& kinds, float tau = 1.0f, int G = 2, int f = 8) {
    return make_config(11, 8, 2, 8, 16, 4, G, f, tau, kinds);
}

// Odd sizes for the fast kernels (tests/test_fast.cpp): V 37, maxT 16, C 20
// (not a multiple of 16), NH 2 (head size 10), dff 40, E 4, G 2, f 20; one
// DENSE and one MOT layer.
inline Config odd_config() { return make_config(37, 16, 2, 20, 40, 4, 2, 20, 1.0f, {DENSE, MOT}); }

// Three layers MOT, DENSE, MOT and tau 0.75 (tests/test_checkpoint.cpp: a
// header with a kind per layer and a temperature that is not 1): V 37, maxT 8,
// NH 2, C 16, dff 32, E 4, G 2, f 16.
inline Config mixed3_config() { return make_config(37, 8, 2, 16, 32, 4, 2, 16, 0.75f, {MOT, DENSE, MOT}); }

// The GPU suites' small model: V 257 (Vp 320), maxT 64, NH 4, C 64, dff 256,
// E 8, G 4 unless given, f = dff * G / E (the dense layer's FLOPs).
inline Config small_config(const std::vector<int>& kinds, float tau = 1.0f, int G = 4) {
    return make_config(257, 64, 4, 64, 256, 8, G, 256 * G / 8, tau, kinds);
}

// A token-choice layer (k 2, cf 0.75: some choices dropped) after a dense one.
inline Config token_choice_config() {
    Config c = small_config({DENSE, TOKEN_CHOICE});
    c.tc.topk = 2;
    c.tc.capacity_factor = 0.75f;
    c.f = c.dff / c.tc.topk;
    return c;
}

// The same with the threshold router (each expert's logit plus its bias
// against 0, gate sigmoid(./0.5)).
inline Config threshold_config() {
    Config c = token_choice_config();
    c.tc.router = ROUTER_THRESHOLD;
    c.tc.router_tau = 0.5f;
    return c;
}

// GPT-2-small widths and lengths (V 50257, maxT 1024, NH 12, C 768, dff 3072),
// two layers, the second MoT with E 8, G 4, f 1536.
inline Config gpt2_small_config() { return make_config(50257, 1024, 12, 768, 3072, 8, 4, 1536, 1.0f, {DENSE, MOT}); }

// Weights drawn wider than the training init (N(0, 0.02)), so that gradients
// stand well above the finite-difference noise floor and the sequences of a
// batch diverge: matrices uniform in +-scale, biases +-0.1, LayerNorm weights
// 1 +- 0.2.
template <typename real, typename Kernels>
void randomize_params(GPT<real, Kernels>* model, uint64_t seed, double scale) {
    TestRng r(seed);
    for (const TensorSpec& s : param_specs(model->cfg)) {
        real* p = model->params_memory.data() + s.offset;
        bool lnw = s.init == INIT_ONE;  // LayerNorm weights
        for (size_t i = 0; i < s.numel; i++)
            p[i] = real(s.ndim >= 2 ? scale * r.sym() : lnw ? 1.0 + 0.2 * r.sym() : 0.1 * r.sym());
    }
}

// gpt_build, then randomize_params.
template <typename real, typename Kernels>
void build_random(GPT<real, Kernels>* model, const Config& c, uint64_t seed, double scale) {
    gpt_build(model, c);
    randomize_params(model, seed, scale);
}

// A model read back from a file has the configuration it was written with,
// field by field.
inline void check_same_config(const Config& a, const Config& b) {
    CHECK(a.V == b.V);
    CHECK(a.Vp == b.Vp);
    CHECK(a.maxT == b.maxT);
    CHECK(a.L == b.L);
    CHECK(a.NH == b.NH);
    CHECK(a.C == b.C);
    CHECK(a.dff == b.dff);
    CHECK(a.E == b.E);
    CHECK(a.mot.G == b.mot.G);
    CHECK(a.f == b.f);
    CHECK(a.mot.tau == b.mot.tau);
    CHECK(a.tc.topk == b.tc.topk);
    CHECK(a.tc.capacity_factor == b.tc.capacity_factor);
    CHECK(a.tc.router == b.tc.router);
    CHECK(a.tc.router_tau == b.tc.router_tau);
    CHECK(a.activation == b.activation);
    CHECK(a.kinds == b.kinds);
}
