// The bf16 emulation: the rounding of common/bf16.h, which the CPU's bf16
// training (common/bf16_kernels.h) applies wherever a bf16 run stores a value.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "common/bf16.h"
#include "tests/bf16_agree.h"

static uint16_t bf16_of_bits(uint32_t u) { return bf16_from_float(float_of_bits(u)); }

TEST_CASE("bf16: rounding to nearest, ties to even, both signs") {
    CHECK(bf16_of_bits(0x3f800000u) == 0x3f80);  // 1, exact
    CHECK(bf16_of_bits(0x3f807fffu) == 0x3f80);  // below the half: down
    CHECK(bf16_of_bits(0x3f808001u) == 0x3f81);  // above the half: up
    CHECK(bf16_of_bits(0x3f808000u) == 0x3f80);  // a tie, even below: down
    CHECK(bf16_of_bits(0x3f818000u) == 0x3f82);  // a tie, odd below: up to even
    CHECK(bf16_of_bits(0xbf818000u) == 0xbf82);  // negative ties alike, away from zero to the even one
    CHECK(bf16_of_bits(0xbf808000u) == 0xbf80);  // negative tie, even: toward zero
    CHECK(bf16_of_bits(0xbf807fffu) == 0xbf80);
    CHECK(bf16_of_bits(0xbf808001u) == 0xbf81);
}

TEST_CASE("bf16: the carry reaches the exponent") {
    CHECK(bf16_of_bits(0x3fffffffu) == 0x4000);  // just under 2 -> 2
    CHECK(bf16_of_bits(0x3f7f8000u) == 0x3f80);  // a tie whose even side is 1.0, one binade up
    CHECK(bf16_of_bits(0xbf7f8000u) == 0xbf80);
    CHECK(bf16_of_bits(0x007fffffu) == 0x0080);  // the largest subnormal float -> the smallest normal
}

TEST_CASE("bf16: overflow: the largest finite floats round to infinity or stay finite by the tie rule") {
    // the largest finite bf16 is 0x7f7f; half an ulp above it is 0x7f7f8000,
    // a tie whose even neighbour is 0x7f80, infinity
    CHECK(bf16_of_bits(0x7f7f0000u) == 0x7f7f);
    CHECK(bf16_of_bits(0x7f7f7fffu) == 0x7f7f);  // the largest float that stays finite
    CHECK(bf16_of_bits(0x7f7f8000u) == 0x7f80);  // the smallest that goes to infinity
    CHECK(bf16_of_bits(0x7f7fffffu) == 0x7f80);  // FLT_MAX
    CHECK(bf16_of_bits(0xff7f7fffu) == 0xff7f);
    CHECK(bf16_of_bits(0xff7f8000u) == 0xff80);
    CHECK(std::isinf(bf16_round(std::numeric_limits<float>::max())));
    CHECK(bf16_round(-std::numeric_limits<float>::max()) == -INFINITY);
}

TEST_CASE("bf16: infinities stay; NaN stays NaN with its sign") {
    CHECK(bf16_of_bits(0x7f800000u) == 0x7f80);
    CHECK(bf16_of_bits(0xff800000u) == 0xff80);
    CHECK(bf16_round(INFINITY) == INFINITY);
    CHECK(bf16_round(-INFINITY) == -INFINITY);
    // payloads only in the low half would truncate to infinity; they must not
    for (uint32_t nan : {0x7fc00000u, 0x7f800001u, 0x7fffffffu, 0xff800001u, 0x7f80ffffu, 0xffc00000u, 0xff80ffffu}) {
        INFO(nan);
        uint16_t h = bf16_of_bits(nan);
        CHECK(std::isnan(bf16_to_float(h)));
        CHECK((h & 0x8000) == (nan >> 16 & 0x8000));
        float r = bf16_round(float_of_bits(nan));
        CHECK(std::isnan(r));
        CHECK(std::signbit(r) == bool(nan >> 31));
    }
}

TEST_CASE("bf16: subnormals, their ties, and signed zeros") {
    CHECK(bf16_of_bits(0x00008000u) == 0x0000);  // tie between 0 and the smallest subnormal: to 0 (even)
    CHECK(bf16_of_bits(0x00008001u) == 0x0001);  // just above: the smallest bf16 subnormal
    CHECK(bf16_of_bits(0x00018000u) == 0x0002);  // tie, odd below: up
    CHECK(bf16_of_bits(0x00028000u) == 0x0002);  // tie, even below: down
    CHECK(bf16_of_bits(0x80018000u) == 0x8002);  // negative subnormal tie
    CHECK(bf16_of_bits(0x00000001u) == 0x0000);  // the smallest float subnormal: to +0
    CHECK(bf16_of_bits(0x80000001u) == 0x8000);  // its negative: to -0, the sign kept
    CHECK(bf16_of_bits(0x00000000u) == 0x0000);
    CHECK(bf16_of_bits(0x80000000u) == 0x8000);  // -0 stays -0
    float nz = bf16_round(-0.0f);
    CHECK(nz == 0.0f);
    CHECK(std::signbit(nz));
    CHECK(bf16_round(float_of_bits(0x00010000u)) == float_of_bits(0x00010000u));  // a bf16 subnormal is exact
}

TEST_CASE("bf16: every bf16 value survives float and back; bf16_round is idempotent") {
    CHECK(bf16_to_float(0x3f80) == 1.0f);
    CHECK(bf16_to_float(0xc040) == -3.0f);
    for (uint32_t h = 0; h < 0x10000; h++) {
        float x = bf16_to_float((uint16_t)h);
        if (std::isnan(x)) continue;
        CHECK_MESSAGE(bf16_from_float(x) == h, h);
        CHECK(bits_of_float(bf16_round(x)) == bits_of_float(x));
        CHECK(is_bf16(x));
    }
}

TEST_CASE("bf16: the nearest of the two neighbours, over a sweep of floats") {
    // for every float x: r = bf16_round(x) is a bf16 value, and no bf16 value
    // lies closer (the two candidates are the truncation and the next one up)
    for (uint32_t u = 0x00000000u; u < 0x7f800000u; u += 0x00012345u) {
        for (uint32_t sign : {0u, 0x80000000u}) {
            float x = float_of_bits(u | sign);
            float r = bf16_round(x);
            REQUIRE(is_bf16(r));
            float lo = float_of_bits((u | sign) & 0xffff0000u);
            float hi = float_of_bits(((u | sign) & 0xffff0000u) + 0x10000u);
            double dr = std::fabs((double)r - x), dlo = std::fabs((double)lo - x), dhi = std::fabs((double)hi - x);
            CHECK(dr <= dlo);
            CHECK(dr <= dhi);
        }
    }
}

TEST_CASE("bf16: the in-place array rounding matches the scalar one, float and double") {
    std::vector<float> x = {1.0f, float_of_bits(0x3f818000u), -3.14159f, 1e-40f, -0.0f, NAN, INFINITY, 65504.0f,
                            float_of_bits(0x7f7f8000u)};
    std::vector<float> want(x.size());
    for (size_t i = 0; i < x.size(); i++) want[i] = bf16_round(x[i]);
    bf16_round(x.data(), x.size());
    for (size_t i = 0; i < x.size(); i++) {
        INFO(i);
        if (std::isnan(want[i])) CHECK(std::isnan(x[i]));
        else CHECK(bits_of_float(x[i]) == bits_of_float(want[i]));
    }
    std::vector<double> d = {1.0, -3.14159, 0.1, 1e300};
    bf16_round(d.data(), d.size());
    CHECK(d[0] == 1.0);
    CHECK(d[1] == (double)bf16_round(-3.14159f));
    CHECK(d[2] == (double)bf16_round(0.1f));
    CHECK(std::isinf(d[3]));  // beyond the float range: infinity, as in a float run
}

// ---------------------------------------------------------------------------
// The model under bf16 emulation (common/bf16_kernels.h, GPT::bf16).

#include "common/layout.h"
#include "cpu/fast/kernels.h"
#include "cpu/gpt.h"
#include "tests/attention_ref.h"
#include "tests/bad_input.h"
#include "tests/close.h"
#include "tests/models.h"
#include "tests/rng.h"

// Every kind of FFN layer: DENSE, MOT, TOKEN_CHOICE (top-1, capacity 1.25).
static Config kinds3_config() { return make_config(37, 16, 2, 20, 40, 4, 2, 20, 1.0f, {DENSE, MOT, TOKEN_CHOICE}); }

static bool all_bf16(const float* x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!is_bf16(x[i])) return false;
    return true;
}

template <typename Kernels>
static void build_wide(GPT<float, Kernels>* m, const Config& c, bool bf16) {
    gpt_build(m, c);
    gpt_init_weights(m, 99);
    for (float& p : m->params_memory) p *= 5;  // wider than the init, so layers are not near-linear
    m->bf16 = bf16;
    m->aux_weight = 0.01;
}

// forward, zero_grad, backward, clip, AdamW; the loss, and the gradients before the update
template <typename Kernels>
static double step(GPT<float, Kernels>* m, const std::vector<int>& inp, const std::vector<int>& tgt, int B, int T,
                   int s, std::vector<float>* grads) {
    gpt_forward(m, inp.data(), tgt.data(), B, T);
    gpt_zero_grad(m);
    gpt_backward(m);
    *grads = m->grads_memory;
    gpt_update(m, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, s, clip_scale(gpt_grad_norm(m), 1.0));
    return m->mean_loss;
}

// Attention's bf16_probs, on both CPU forms: the probabilities are the
// unrounded layer's rounded to bf16, bit for bit, and weigh the values as
// such; in the backward, from the same (rounded) probabilities, dpreatt is
// the unrounded backward's rounded, and dq, dk follow from it.
template <typename Forward, typename Backward>
static void check_attention_bf16_probs(Forward forward, Backward backward, const char* form) {
    INFO(form);
    TestRng r(21);
    const int B = 2, T = 19, C = 24, NH = 3;
    const size_t BT = (size_t)B * T, TT = (size_t)B * NH * T * T;
    std::vector<float> qkv = r.floats(BT * 3 * C), dout = r.floats(BT * C);
    for (float& x : qkv) x = bf16_round(x);
    std::vector<float> out0(BT * C), pre0(TT), att0(TT), out1(BT * C), pre1(TT), att1(TT);
    forward(out0.data(), pre0.data(), att0.data(), qkv.data(), B, T, C, NH, false);
    forward(out1.data(), pre1.data(), att1.data(), qkv.data(), B, T, C, NH, true);
    CHECK(pre1 == pre0);
    size_t changed = 0;
    for (size_t i = 0; i < TT; i++) {
        CHECK(bits_of_float(att1[i]) == bits_of_float(bf16_round(att0[i])));
        changed += att1[i] != att0[i];
    }
    CHECK(changed > TT / 4);  // the rounding did something
    // out = att1 V, in double from the rounded probabilities
    const std::vector<float> want = mix_from(att1, qkv, B, T, C, NH);
    double worst = 0;
    for (size_t i = 0; i < want.size(); i++) worst = std::max(worst, (double)std::fabs(want[i] - out1[i]));
    CHECK(worst < 1e-5);
    std::vector<float> dinp0(BT * 3 * C, 0.0f), dinp1(BT * 3 * C, 0.0f), dpre0(TT), dpre1(TT), datt0(TT), datt1(TT);
    backward(dinp0.data(), dpre0.data(), datt0.data(), dout.data(), qkv.data(), att1.data(), B, T, C, NH, false);
    backward(dinp1.data(), dpre1.data(), datt1.data(), dout.data(), qkv.data(), att1.data(), B, T, C, NH, true);
    CHECK(datt1 == datt0);
    for (size_t i = 0; i < TT; i++) CHECK(bits_of_float(dpre1[i]) == bits_of_float(bf16_round(dpre0[i])));
    for (size_t i = 0; i < BT; i++)  // dv does not go through dpreatt
        for (int j = 2 * C; j < 3 * C; j++) CHECK(dinp1[i * 3 * C + j] == dinp0[i * 3 * C + j]);
    CHECK(dinp1 != dinp0);  // dq, dk do
}

TEST_CASE("bf16 attention: the probabilities and the scores' gradient rounded where they enter products") {
    check_attention_bf16_probs(
        [](auto... a) { attention_forward(a...); }, [](auto... a) { attention_backward(a...); }, "plain loops");
    check_attention_bf16_probs(
        [](auto... a) { fast::attention_forward(a...); }, [](auto... a) { fast::attention_backward(a...); }, "fast forms");
}

TEST_CASE("bf16 model: the contract's bf16 tensors are bf16 values, its float ones are not rounded") {
    Config c = kinds3_config();
    const int B = 4, T = 7, C = c.C;
    const size_t BT = (size_t)B * T, BTC = BT * C;
    TestRng r(3);
    std::vector<int> inp = r.tokens(B * T, c.V), tgt = r.tokens(B * T, c.V);
    GPT<float, FastKernels> m;
    build_wide(&m, c, true);
    std::vector<float> master = m.params_memory;
    gpt_forward(&m, inp.data(), tgt.data(), B, T);
    gpt_zero_grad(&m);
    gpt_backward(&m);
    // the weights the passes read are the master weights rounded; the master stays float
    REQUIRE(m.params_bf16_memory.size() == master.size());
    CHECK(m.params_memory == master);
    CHECK(!all_bf16(master.data(), master.size()));
    for (size_t i = 0; i < master.size(); i++)
        if (m.params_bf16_memory[i] != bf16_round(master[i])) FAIL_CHECK("weight " << i << " not the rounded master");
    const Acts<float>& a = m.acts;
    const Acts<float>& da = m.grad_acts;
    CHECK(all_bf16(a.encoded, BTC));
    CHECK(all_bf16(a.lnf, BTC));
    CHECK(all_bf16(a.logits, BT * c.Vp));
    CHECK(all_bf16(da.logits, BT * c.Vp));
    CHECK(all_bf16(da.encoded, BTC));
    // float by the contract: layernorm statistics, softmax outputs, losses
    CHECK(!all_bf16(a.lnf_rstd, BT));
    CHECK(!all_bf16(a.probs, BT * c.Vp));
    CHECK(!all_bf16(a.losses, BT));
    for (int l = 0; l < c.L; l++) {
        INFO("layer " << l);
        const LayerActs<float>& la = a.layer[l];
        const LayerActs<float>& ld = da.layer[l];
        for (const float* x : {la.ln1, la.atty, la.attproj, la.res2, la.ln2, la.ffn, la.res3}) CHECK(all_bf16(x, BTC));
        CHECK(all_bf16(la.qkv, 3 * BTC));
        CHECK(!all_bf16(la.ln1_mean, BT));
        // attention: the probabilities and the scores' gradient bf16 (operands of tensor-core products),
        // the scores and the probabilities' gradient float
        const size_t TT = (size_t)B * c.NH * T * T;
        CHECK(all_bf16(la.att, TT));
        CHECK(all_bf16(ld.preatt, TT));
        CHECK(!all_bf16(la.preatt, TT));
        CHECK(!all_bf16(ld.att, TT));
        // the gradients handed between layers
        for (const float* x : {ld.ln1, ld.atty, ld.attproj, ld.res2, ld.ln2, ld.ffn, ld.res3}) CHECK(all_bf16(x, BTC));
        CHECK(all_bf16(ld.qkv, 3 * BTC));
        if (c.kinds[l] == DENSE) {
            CHECK(all_bf16(la.fch, BT * c.dff));
            CHECK(all_bf16(la.fch_gelu, BT * c.dff));
            CHECK(all_bf16(ld.fch, BT * c.dff));
        } else {
            size_t rows =
                c.kinds[l] == MOT ? BT / c.mot.G * c.E : (size_t)c.E * TokenChoiceFfn::capacity(c, (int)BT, false);
            CHECK(all_bf16(la.u, rows * C));
            CHECK(all_bf16(la.p, rows * c.f));
            CHECK(all_bf16(la.a, rows * c.f));
            CHECK(all_bf16(la.y, rows * C));
            CHECK(!all_bf16(la.z, BT * c.E));  // controller / router logits stay float
            CHECK(!all_bf16(la.m, BT * c.E));  // mixing weights / gates stay float
        }
    }
    // parameter gradients are float
    CHECK(!all_bf16(m.grads_memory.data(), m.grads_memory.size()));
}

// The loss and the gradients of bf16 against fp32 on the same master
// weights: those of an fp32 run after s steps, for s = 0, 1, 2 (each on its
// own batch). The loss within 1e-2 relative; the gradients, as one vector,
// within l2_tol in relative L2 norm, and each within grad_tol of the
// largest. The weights are 5x the init (build_wide), so activations are
// large and the softmaxes sharp: the rounding moves gradients by a few
// percent (the messages print by how much), about half the tolerances.

static void check_step_vs_fp32(const Config& c, double grad_tol, double l2_tol) {
    const int B = 4, T = 7;
    TestRng r(5);
    GPT<float, FastKernels> h, f;
    build_wide(&h, c, true);
    build_wide(&f, c, false);
    for (int s = 0; s < 3; s++) {
        INFO("step " << s);
        std::vector<int> inp = r.tokens(B * T, c.V), tgt = r.tokens(B * T, c.V);
        h.params_memory = f.params_memory;
        std::vector<float> gh, gf;
        double lh = step(&h, inp, tgt, B, T, s, &gh);
        double lf = step(&f, inp, tgt, B, T, s, &gf);
        MESSAGE("step " << s << ": loss fp32 " << lf << ", bf16 " << lh << ", relative " << std::fabs(lh - lf) / lf
                        << "; gradients worst " << closeness(gh, gf, scaled_tol(1.0, gf)).worst
                        << " of the largest, relative L2 " << relative_l2(gh, gf));
        CHECK(lh != lf);  // the emulation rounds
        CHECK(std::fabs(lh - lf) < 1e-2 * lf);
        CHECK(gh != gf);
        check_close(gh, gf, scaled_tol(grad_tol, gf), "gradients, against the largest");
        CHECK(relative_l2(gh, gf) < l2_tol);
    }
}

TEST_CASE("bf16 model: a step differs from fp32 by bf16 rounding, and only by it") {
    SUBCASE("dense") { check_step_vs_fp32(make_config(37, 16, 2, 20, 40, 4, 2, 20, 1.0f, {DENSE, DENSE}), 0.1, 0.08); }
    SUBCASE("mot") { check_step_vs_fp32(make_config(37, 16, 2, 20, 40, 4, 2, 20, 1.0f, {MOT, MOT}), 0.15, 0.15); }
    SUBCASE("token choice") { check_step_vs_fp32(make_config(37, 16, 2, 20, 40, 4, 2, 20, 1.0f, {TOKEN_CHOICE, TOKEN_CHOICE}), 0.2, 0.2); }
    SUBCASE("all three") { check_step_vs_fp32(kinds3_config(), 0.15, 0.1); }
}

template <typename Kernels>
static void forward_backward(GPT<float, Kernels>* m, const std::vector<int>& inp, const std::vector<int>& tgt, int B,
                             int T) {
    gpt_forward(m, inp.data(), tgt.data(), B, T);
    gpt_zero_grad(m);
    gpt_backward(m);
}

// The GPU's bf16 is held to the CPU's emulation by tests/bf16_agree.h's
// bounds. Here the same bounds on a pair that needs no GPU and differs the
// same way, in float rounding alone: the plain loops against the fast forms,
// both under the bf16 contract, at the GPU model tests' shapes and init. The
// bounds must hold, the pair must differ (else this proves nothing), and
// the same logits check must fail for bf16 against fp32 (else it could not
// tell a wrong bf16 from a right one).
TEST_CASE("bf16 model: plain loops and fast forms, both bf16, agree within the GPU tests' bounds") {
    struct Case { const char* name; Config c; int B, T; };
    std::vector<Case> cases = {{"dense", small_config({DENSE, DENSE}), 4, 37},
                               {"mot", small_config({MOT, MOT}), 4, 37},
                               {"mixed tau 0.8", small_config({DENSE, MOT, MOT}, 0.8f), 8, 7},
                               {"token choice k 2", token_choice_config(), 4, 37},
                               {"token choice threshold k 2", threshold_config(), 4, 37}};
    bool any_differs = false;
    for (const Case& k : cases) {
        INFO("model " << k.name);
        GPT<float, PlainKernels> p;
        GPT<float, FastKernels> f;
        gpt_build(&p, k.c);
        gpt_init_weights(&p, 1234);
        gpt_build(&f, k.c);
        f.params_memory = p.params_memory;
        p.bf16 = f.bf16 = true;
        p.aux_weight = f.aux_weight = 0.01;
        TestRng r(99);
        std::vector<int> inp = r.tokens((size_t)k.B * k.T, k.c.V), tgt = r.tokens((size_t)k.B * k.T, k.c.V);
        forward_backward(&p, inp, tgt, k.B, k.T);
        forward_backward(&f, inp, tgt, k.B, k.T);
        const size_t n = (size_t)k.B * k.T * k.c.Vp;
        check_bf16_tensor(std::vector<float>(f.acts.logits, f.acts.logits + n),
                          std::vector<float>(p.acts.logits, p.acts.logits + n), 1e-4, std::string(k.name) + " logits");
        double loss = std::fabs(f.mean_loss - p.mean_loss) / p.mean_loss, l2 = relative_l2(f.grads_memory, p.grads_memory);
        MESSAGE(std::string(k.name) << ": loss relative " << loss << ", gradients relative L2 " << l2);
        CHECK(loss <= BF16_LOSS_TOL);
        CHECK(l2 <= BF16_GRAD_L2);
        any_differs = any_differs || f.grads_memory != p.grads_memory;
        GPT<float, FastKernels> fp32;
        gpt_build(&fp32, k.c);
        fp32.params_memory = p.params_memory;
        fp32.aux_weight = 0.01;
        forward_backward(&fp32, inp, tgt, k.B, k.T);
        Bf16Agreement against_fp32 = bf16_agreement(std::vector<float>(f.acts.logits, f.acts.logits + n),
                                                    std::vector<float>(fp32.acts.logits, fp32.acts.logits + n), 1e-4);
        CHECK_MESSAGE(against_fp32.differ > BF16_DIFF_SHARE * n,
                      k.name << ": bf16 against fp32, " << against_fp32.differ << " of " << n << " logits differ");
    }
    CHECK(any_differs);
}

TEST_CASE("bf16 model: two runs are equal bit for bit; fp32 is untouched by the bf16 machinery") {
    Config c = kinds3_config();
    const int B = 4, T = 7;
    TestRng r(9);
    std::vector<int> inp = r.tokens(B * T, c.V), tgt = r.tokens(B * T, c.V);
    GPT<float, FastKernels> a, b, f;
    build_wide(&a, c, true);
    build_wide(&b, c, true);
    build_wide(&f, c, false);
    for (int s = 0; s < 2; s++) {
        std::vector<float> ga, gb, gf;
        double la = step(&a, inp, tgt, B, T, s, &ga), lb = step(&b, inp, tgt, B, T, s, &gb);
        CHECK(la == lb);
        CHECK(ga == gb);
        CHECK(a.params_memory == b.params_memory);
        step(&f, inp, tgt, B, T, s, &gf);
    }
    CHECK(f.params_bf16_memory.empty());  // fp32 never makes the rounded copy
}

TEST_CASE("--precision: bf16 with --tf32, and an unknown precision, are refused, saying why") {
    expect_error("--precision bf16 --tf32 --steps 1", {"--tf32", "--precision bf16"});
    expect_error("--precision fp16 --steps 1", {"--precision", "fp16"});
}

// ---------------------------------------------------------------------------
// Checkpoints of a bf16 run (./train_mot on the CPU): fp32 master weights,
// resumed bit for bit at the same precision.

#include "tests/train_checks.h"

// The parameters of a checkpoint file (after its 256-int32 header) that are
// not bf16 values: a file of the rounded copy would have none.
static size_t non_bf16_params(const std::string& bytes, size_t* n) {
    *n = (bytes.size() - 1024) / 4;
    size_t count = 0;
    for (size_t i = 0; i < *n; i++) {
        float x;
        std::memcpy(&x, bytes.data() + 1024 + 4 * i, 4);
        count += !is_bf16(x);
    }
    return count;
}

TEST_CASE("--precision bf16: a checkpoint resumes bit for bit, and holds fp32 master weights") {
    struct Kind {
        const char* name;
        std::string options;
    };
    for (const Kind& k : {Kind{"dense", " --ffn dense"}, Kind{"mot", " --ffn mot"},
                          Kind{"token-choice", " --ffn token-choice"}}) {
        INFO(k.name);
        std::string prefix = std::string("build/tbf_") + k.name;
        // the log rows after the step-10 checkpoint, validation, samples and
        // the final model equal the uninterrupted run's
        check_resume(prefix, "cpu", 1, k.options + " --precision bf16");
        std::string bf = slurp(prefix + "_resume1_full.ckpt");

        // the same training in fp32: a file of the same size, other values
        std::string fp_path = prefix + "_fp32.ckpt";
        Run fp = run("--data " + prefix + "_small.bin --val-data " + prefix + "_val.bin --val-every 0 --warmup 4 --lr 1e-2"
                     " --steps 20 --shuffle 1" + TINY_MODEL + " --device cpu" + k.options + " --save " + fp_path);
        INFO(fp.out);
        REQUIRE(fp.rc == 0);
        std::string f = slurp(fp_path);
        REQUIRE(f.size() > 1024);
        CHECK(bf.size() == f.size());
        // one header but for its checksum ([30..31]): bf16 is not recorded in the model
        CHECK(bf.compare(0, 120, f, 0, 120) == 0);
        CHECK(bf.compare(128, 1024 - 128, f, 128, 1024 - 128) == 0);
        CHECK(bf != f);                               // the run was bf16: it trained other weights
        // the masters (float init, fp32 AdamW) have bits below bf16's in
        // nearly every weight; the rounded copy a step reads has none
        size_t n = 0, non = non_bf16_params(bf, &n);
        CHECK(non > n / 2);
    }
}

TEST_CASE("--resume of a bf16 run goes on in bf16 unless --precision is given, and says so when it changes") {
    std::string prefix = "build/tbf_keep";
    make_train_data(prefix);
    std::string dir = prefix + "_ckpt";
    clear_dir(dir);
    std::string common = "--data " + prefix + "_small.bin --val-every 0 --sample-every 0 --warmup 4 --lr 1e-2 --steps 12"
                         " --shuffle 1" + TINY_MODEL + " --device cpu --checkpoint-dir " + dir;
    for (const char* f : {"_full.jsonl", "_kept.jsonl"}) std::remove((prefix + f).c_str());
    Run full = run(common + " --precision bf16 --checkpoint-every 6 --keep-checkpoints 0 --log " + prefix + "_full.jsonl");
    INFO(full.out);
    REQUIRE(full.rc == 0);
    auto restart = [&](const std::string& extra, const std::string& log) {
        std::remove((dir + "/step_00000012.ckpt").c_str());
        std::remove((dir + "/step_00000012.state").c_str());
        Run r = run(common + " --resume" + extra + (log.empty() ? "" : " --log " + log));
        INFO(r.out);
        REQUIRE(r.rc == 0);
        return r;
    };
    Run kept = restart("", prefix + "_kept.jsonl");  // no --precision: the state's
    CHECK(kept.out.find("bf16 emulated") != std::string::npos);
    CHECK(kept.out.find("note: the run was trained with --precision") == std::string::npos);
    LogRows f = read_log(prefix + "_full.jsonl"), k = read_log(prefix + "_kept.jsonl");
    REQUIRE(k.size() == 6);
    for (int s = 7; s <= 12; s++) {
        INFO("step ", s);
        CHECK(k[s]["loss"] == f[s]["loss"]);
    }
    Run changed = restart(" --precision fp32", "");
    CHECK(changed.out.find("note: the run was trained with --precision bf16, now fp32") != std::string::npos);
    CHECK(changed.out.find("bf16 emulated") == std::string::npos);
}
