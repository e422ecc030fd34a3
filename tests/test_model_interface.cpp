// tests/test_model_interface.cpp: the calls of train/model.h that the
// exchange between ranks (train/parallel.h) makes, on the CPU model.
//   make build/test_model_interface && ./build/test_model_interface
//
// - the parameter and gradient blocks as spans: where they are, their host
//   copies, the sum of squares behind the gradient norm.
// - ZeRO-1's share: model_shard keeps moments for some ranges alone, and
//   model_update_share updates those ranges as model_update would, reading
//   each range's gradients where it is told (MPI's reduce-scatter leaves a
//   rank's slice at the front of the block); the moments read back and
//   written are the share's.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "tests/models.h"
#include "tests/rng.h"
#include "train/model.h"

static void forward_backward(Model* m, const std::vector<int>& inp, const std::vector<int>& tgt, int B, int T) {
    model_zero_grad(m);
    model_forward(m, inp.data(), tgt.data(), B, T);
    model_backward(m, 1.0);
}

static std::vector<float> host(FloatSpan s) {
    std::vector<float> out(s.n);
    span_to_host(s, out.data());
    return out;
}

TEST_CASE("model spans: the parameter and gradient blocks, their host copies and sum of squares") {
    const Config c = small_config({DENSE, MOT});
    const int B = 4, T = 8;
    GPT<float> init;
    build_random(&init, c, 3, 0.3);
    Model m;
    model_build(&m, c, "cpu", B, T, init.params_memory.data());
    TestRng r(4);
    std::vector<int> inp = r.tokens(B * T, c.V), tgt = r.tokens(B * T, c.V);
    forward_backward(&m, inp, tgt, B, T);

    const size_t N = num_params(c);
    FloatSpan w = model_param_span(&m), g = model_grad_span(&m);
    CHECK(w.n == N);
    CHECK(g.n == N);
    CHECK(!w.on_device);
    CHECK(!g.on_device);
    CHECK(host(w) == init.params_memory);
    std::vector<float> grads = host(g);
    double sq = 0;
    for (float x : grads) sq += (double)x * x;
    CHECK(sq > 0);
    CHECK(std::sqrt(span_norm_squared(g)) == model_grad_norm(&m));
    CHECK(span_norm_squared(g) == doctest::Approx(sq).epsilon(1e-12));

    // a part of a span, written from the host and read back
    FloatSpan part = span_part(g, 10, 7);
    CHECK(part.data == g.data + 10);
    CHECK(part.n == 7);
    std::vector<float> seven(7);
    for (int i = 0; i < 7; i++) seven[i] = (float)i + 0.5f;
    span_from_host(part, seven.data());
    CHECK(host(part) == seven);
    std::vector<float> after = host(g);
    size_t changed = 0;  // outside the part
    for (size_t i = 0; i < N; i++) changed += (i < 10 || i >= 17) && after[i] != grads[i];
    CHECK(changed == 0);
}

TEST_CASE("model_shard: a share's AdamW update is model_update's on its parameters, for two steps") {
    const Config c = small_config({MOT, DENSE});
    const int B = 4, T = 8;
    const size_t N = num_params(c), S = N / 3, tail = 5;
    GPT<float> init;
    build_random(&init, c, 11, 0.3);
    Model full, shard;
    model_build(&full, c, "cpu", B, T, init.params_memory.data());
    model_build(&shard, c, "cpu", B, T, init.params_memory.data());
    // the body's slice [S, 2S) with its gradients at the front (as after
    // MPI's reduce-scatter), and a tail [N - tail, N) in place; the slice
    // cuts tensors at both ends
    model_shard(&shard, {{S, S, 0}, {N - tail, tail, N - tail}});
    std::vector<float> mom, vel;
    model_get_moments(&shard, &mom, &vel);
    CHECK(mom == std::vector<float>(S + tail, 0.0f));
    CHECK(vel == std::vector<float>(S + tail, 0.0f));

    TestRng r(12);
    for (int step = 0; step < 2; step++) {
        CAPTURE(step);
        std::vector<int> inp = r.tokens(B * T, c.V), tgt = r.tokens(B * T, c.V);
        forward_backward(&full, inp, tgt, B, T);
        forward_backward(&shard, inp, tgt, B, T);
        REQUIRE(host(model_grad_span(&full)) == host(model_grad_span(&shard)));
        // the slice's gradients to the front of the block, other values where they were
        FloatSpan g = model_grad_span(&shard);
        std::vector<float> slice(S), other(S, 1e3f);
        span_to_host(span_part(g, S, S), slice.data());
        span_from_host(span_part(g, 0, S), slice.data());
        span_from_host(span_part(g, S, S), other.data());

        std::vector<float> before = host(model_param_span(&shard));
        model_update(&full, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, step, 0.5f);
        model_update_share(&shard, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, step, 0.5f);

        std::vector<float> want = host(model_param_span(&full)), got = host(model_param_span(&shard));
        size_t wrong = 0, moved = 0;  // the share's as model_update's, the others' as before
        for (size_t i = 0; i < N; i++) {
            bool mine = (i >= S && i < 2 * S) || i >= N - tail;
            wrong += got[i] != (mine ? want[i] : before[i]);
            moved += mine && got[i] != before[i];
        }
        CHECK(wrong == 0);
        CHECK(moved > S / 2);
        CHECK(host(model_grad_span(&shard)) == std::vector<float>(N, 0.0f));
        std::vector<float> full_m, full_v;
        model_get_moments(&full, &full_m, &full_v);
        model_get_moments(&shard, &mom, &vel);
        REQUIRE(mom.size() == S + tail);
        REQUIRE(vel.size() == S + tail);
        CHECK(std::equal(mom.begin(), mom.begin() + S, full_m.begin() + S));
        CHECK(std::equal(vel.begin(), vel.begin() + S, full_v.begin() + S));
        CHECK(std::equal(mom.begin() + S, mom.end(), full_m.end() - tail));
        CHECK(std::equal(vel.begin() + S, vel.end(), full_v.end() - tail));
        // the other ranks' parameters, as the all-gather brings them
        span_from_host(model_param_span(&shard), want.data());
    }

    // the share's moments written from the host and read back
    std::vector<float> m2(S + tail), v2(S + tail);
    for (size_t i = 0; i < S + tail; i++) m2[i] = 0.001f * (float)i, v2[i] = 0.002f * (float)i;
    model_set_moments(&shard, m2, v2);
    model_get_moments(&shard, &mom, &vel);
    CHECK(mom == m2);
    CHECK(vel == v2);
}
