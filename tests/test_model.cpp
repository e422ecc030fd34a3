// tests/test_model.cpp: the whole CPU model (cpu/gpt.h).
//   g++ -std=c++17 -O2 -march=native -fopenmp -Wall -Wextra -I. tests/test_model.cpp -o /tmp/test_model
//
// - gpt_backward against finite differences of the mean loss of gpt_forward,
//   for every parameter, in double: all DENSE, all MOT, mixed, tau != 1, and
//   a layer of every kind of the table.
// - loss_scale scales the gradients; gradients accumulate over backward calls.
// - training memorizes one fixed batch; float (the fast kernels, as training
//   runs it) and double agree over 5 steps.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/fast/kernels.h"
#include "cpu/gpt.h"
#include "tests/close.h"
#include "tests/gradcheck.h"
#include "tests/models.h"
#include "tests/rng.h"

// A fixed batch (B,T) whose rows start with distinct tokens, so every prefix is
// distinct and a model can fit every target.
static void make_batch(int B, int T, int V, uint64_t seed, std::vector<int>& inp, std::vector<int>& tgt) {
    TestRng r(seed);
    inp.assign(B * T, 0);
    tgt.assign(B * T, 0);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            inp[b * T + t] = t == 0 ? b % V : r.below(V);
            tgt[b * T + t] = r.below(V);
        }
}

static void check_model_gradients(const Config& cfg) {
    const int B = 4, T = 5;
    GPT<double> model;
    build_random(&model, cfg, 77, 0.5);
    std::vector<int> inp, tgt;
    make_batch(B, T, cfg.V, 5, inp, tgt);

    gpt_forward(&model, inp.data(), tgt.data(), B, T);
    gpt_zero_grad(&model);
    gpt_backward(&model);
    std::vector<double> analytic = model.grads_memory;

    auto loss = [&] {
        gpt_forward(&model, inp.data(), tgt.data(), B, T);
        return model.mean_loss;
    };
    // tensor by tensor, so a failure names the tensor
    for (const TensorSpec& s : param_specs(cfg)) {
        GradCheckResult r = gradcheck(loss, model.params_memory.data() + s.offset, s.numel,
                                      analytic.data() + s.offset);
        GRADCHECK_LOG(s.name, r);
        INFO("gradient of " << s.name << ": worst rel err " << r.worst << " at [" << r.worst_i << "] analytic "
             << r.worst_a << " numeric " << r.worst_n);
        CHECK(r.worst < 1e-6);
        CHECK(r.max_abs_grad > 1e-4);  // every tensor takes part in the loss
    }
    // padded vocabulary rows of wte: no input uses them, no softmax sees them
    for (size_t i = (size_t)cfg.V * cfg.C; i < (size_t)cfg.Vp * cfg.C; i++) CHECK(analytic[i] == 0.0);
}

// The model's buffers come from assign_zeros_huge (common/memory.h): n zeros
// whether it reuses the old allocation or makes a new one advised onto 2 MB
// pages, and whatever the buffer held before.
TEST_CASE("assign_zeros_huge: n zeros, in the old allocation or a new one") {
    std::vector<float> v(1000, 3.0f);
    assign_zeros_huge(v, 10);  // fits: the old allocation
    CHECK(v.size() == 10);
    CHECK(std::count(v.begin(), v.end(), 0.0f) == 10);
    v.assign(10, 7.0f);
    const size_t n = (size_t(6) << 20) + 3;  // 24 MB: a new allocation, several 2 MB pages
    assign_zeros_huge(v, n);
    CHECK(v.size() == n);
    CHECK(std::count(v.begin(), v.end(), 0.0f) == (long)n);
    GPT<float> model;
    gpt_build(&model, tiny_config({DENSE}));
    CHECK(std::count(model.params_memory.begin(), model.params_memory.end(), 0.0f) ==
          (long)model.params_memory.size());
}

TEST_CASE("model gradients match finite differences: all DENSE") {
    check_model_gradients(tiny_config({DENSE, DENSE}));
}

TEST_CASE("model gradients match finite differences: all MOT") {
    check_model_gradients(tiny_config({MOT, MOT}));
}

TEST_CASE("model gradients match finite differences: mixed MOT and DENSE") {
    check_model_gradients(tiny_config({MOT, DENSE}));
    check_model_gradients(tiny_config({DENSE, MOT}));
}

// Every kind of the table (common/ffn_kinds.h, for_each_ffn_kind), a kind added
// later included: a layer of it before a DENSE one. Top-k = E and capacity
// factor 4: a token-choice layer sends every token to every expert, so no
// routing decision sits near the points the finite differences visit.
TEST_CASE("model gradients match finite differences: every kind of the table") {
    int kinds = 0;
    for_each_ffn_kind([&](auto k) {
        INFO("kind ", std::string(k.option));
        check_model_gradients(make_config(11, 8, 2, 8, 16, 4, 2, 8, 1.0f, {k.kind, DENSE}, 4, 4.0f));
        kinds++;
    });
    CHECK(kinds >= 3);
}

TEST_CASE("model gradients match finite differences: MOT with tau = 0.5") {
    check_model_gradients(tiny_config({MOT, MOT}, 0.5f));
}

TEST_CASE("gpt_backward: loss_scale scales the gradients, and gradients accumulate") {
    Config cfg = tiny_config({MOT, DENSE});
    const int B = 4, T = 5;
    GPT<double> model;
    build_random(&model, cfg, 3, 0.5);
    std::vector<int> inp, tgt;
    make_batch(B, T, cfg.V, 9, inp, tgt);
    gpt_forward(&model, inp.data(), tgt.data(), B, T);

    gpt_zero_grad(&model);
    gpt_backward(&model, 1.0);
    std::vector<double> full = model.grads_memory;
    gpt_zero_grad(&model);
    gpt_backward(&model, 0.5);
    std::vector<double> half = model.grads_memory;
    gpt_backward(&model, 0.5);  // no zero_grad: adds another half
    std::vector<double> twice = model.grads_memory;

    REQUIRE(max_abs(full) > 0);
    std::vector<double> half_full(full.size());
    for (size_t i = 0; i < full.size(); i++) half_full[i] = 0.5 * full[i];
    // within 1e-12 |full_i| (+ 1e-300): rel 2e-12 of half_full_i is 1e-12 of full_i
    check_close(half, half_full, Tol{1e-300, 2e-12}, "loss_scale 0.5");
    check_close(twice, full, Tol{1e-300, 1e-12}, "two backward calls of 0.5");
}

// One training step as the training loop does it.
template <typename real, typename Kernels>
static double train_step(GPT<real, Kernels>* model, const std::vector<int>& inp, const std::vector<int>& tgt, int B,
                         int T, float lr, int step) {
    gpt_forward(model, inp.data(), tgt.data(), B, T);
    gpt_zero_grad(model);
    gpt_backward(model);
    gpt_update(model, lr, 0.9f, 0.95f, 1e-8f, 0.0f, step, clip_scale(gpt_grad_norm(model), 1.0));
    return model->mean_loss;
}

TEST_CASE("training in float memorizes one fixed batch") {
    for (int kind : {MOT, DENSE}) {
        CAPTURE(kind);
        Config cfg = tiny_config({kind, kind});
        const int B = 4, T = 5;
        GPT<float, FastKernels> model;  // as training runs it
        gpt_build(&model, cfg);
        gpt_init_weights(&model, 1);
        std::vector<int> inp, tgt;
        make_batch(B, T, cfg.V, 21, inp, tgt);
        double first = 0, last = 0;
        for (int step = 0; step < 300; step++) {
            last = train_step(&model, inp, tgt, B, T, 1e-2f, step);
            if (step == 0) first = last;
        }
        gpt_forward(&model, inp.data(), tgt.data(), B, T);
        last = model.mean_loss;
        CAPTURE(first);
        CAPTURE(last);
        CHECK(first > 2.0);  // starts near log(11) = 2.4: nothing memorized yet
        CHECK(last < 0.05);
    }
}

TEST_CASE("float and double training agree for 5 steps from the same init") {
    Config cfg = tiny_config({MOT, DENSE});
    const int B = 4, T = 5;
    GPT<float, FastKernels> mf;  // as training runs it
    GPT<double> md;
    gpt_build(&mf, cfg);
    gpt_build(&md, cfg);
    gpt_init_weights(&mf, 7);
    for (size_t i = 0; i < mf.params_memory.size(); i++) md.params_memory[i] = mf.params_memory[i];  // exact copy
    std::vector<int> inp, tgt;
    make_batch(B, T, cfg.V, 33, inp, tgt);
    for (int step = 0; step < 5; step++) {
        double lf = train_step(&mf, inp, tgt, B, T, 1e-2f, step);
        double ld = train_step(&md, inp, tgt, B, T, 1e-2f, step);
        CAPTURE(step); CAPTURE(lf); CAPTURE(ld);
        CHECK(std::fabs(lf - ld) <= 1e-4 * std::fabs(ld));
    }
    gpt_forward(&mf, inp.data(), tgt.data(), B, T);
    gpt_forward(&md, inp.data(), tgt.data(), B, T);
    CHECK(std::fabs(mf.mean_loss - md.mean_loss) <= 1e-4 * std::fabs(md.mean_loss));
}
