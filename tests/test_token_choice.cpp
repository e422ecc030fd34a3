// tests/test_token_choice.cpp: the TOKEN_CHOICE layer (cpu/token_choice.h,
// docs/design.md section 3.3) and the model and checkpoint around it; discrete MoT.
//   make build/test_token_choice && ./build/test_token_choice
//
// - backward against finite differences in double, routing held fixed
//   (inputs chosen away from ties), with and without dropped choices, the
//   load-balancing loss included;
// - capacity and the order of dispatch, worked out by hand (k 1 and 2, cf < 1);
// - the batched form (cpu/fast/token_choice.h) against the plain loops;
// - a model with TOKEN_CHOICE layers against finite differences;
// - checkpoints with kinds 0, 1 and 2 round-trip; bad headers are refused;
// - discrete MoT at a sharp controller equals soft MoT at low tau;
// - the threshold routers' rate controller (--router-balance): its move by
//   hand, bc left to it alone by AdamW, and the rates brought to 1/G.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/checkpoint.h"
#include "cpu/fast/kernels.h"
#include "cpu/gpt.h"
#include "cpu/token_choice.h"
#include "tests/bad_input.h"
#include "tests/close.h"
#include "tests/gradcheck.h"
#include "tests/models.h"
#include "tests/rng.h"
#include "train/model.h"
#include "train/transition.h"

using Vec = std::vector<double>;
using Ints = std::vector<int>;

// One TOKEN_CHOICE layer's tensors, in double.
struct TcLayer {
    int N, C, E, f, k, cap;
    TcRouter rt;
    Vec inp, wc, bc, w1, w2;
    Vec out, z, probs, load, first, aux, xin, pre, act, yout;
    Ints route, slot;
    TcLayer(int N_, int C_, int E_, int f_, int k_, double cf, uint64_t seed, TcRouter rt_ = {})
        : N(N_), C(C_), E(E_), f(f_), k(k_), cap((int)std::ceil(cf * k_ * N_ / E_)), rt(rt_) {
        TestRng r(seed);
        inp = r.doubles((size_t)N * C);
        wc = r.doubles((size_t)E * C, 1.5);
        w1 = r.doubles((size_t)E * f * C, 0.8);
        w2 = r.doubles((size_t)E * C * f, 0.8);
        bc = r.doubles((size_t)E, 0.5);  // read by the threshold routers only
        out.assign((size_t)N * C, 0);
        z.assign((size_t)N * E, 0);
        probs = z;
        route.assign((size_t)N * k, 0);
        slot = route;
        load.assign(E, 0);
        first = load;
        aux.assign(1, 0);
        xin.assign((size_t)E * cap * C, 0);
        yout = xin;
        pre.assign((size_t)E * cap * f, 0);
        act = pre;
    }
    void forward() {
        token_choice_forward(out.data(), z.data(), probs.data(), route.data(), slot.data(), load.data(), first.data(),
                             aux.data(), xin.data(), pre.data(), act.data(), yout.data(), inp.data(), wc.data(),
                             w1.data(), w2.data(), N, C, E, f, k, cap, bc.data(), rt);
    }
    // the smallest gap between consecutive probabilities of a token around its
    // k-th choice (threshold routers: between consecutive logits, and between
    // a logit and the threshold 0): perturbations below it leave the routing
    // as it is
    double routing_margin() const {
        double margin = 1e300;
        for (int n = 0; n < N; n++) {
            Vec p((rt.kind == ROUTER_SOFTMAX ? probs : z).begin() + (size_t)n * E,
                  (rt.kind == ROUTER_SOFTMAX ? probs : z).begin() + (size_t)(n + 1) * E);
            std::sort(p.rbegin(), p.rend());
            for (int r = 0; r < k && r + 1 < E; r++) margin = std::min(margin, p[r] - p[r + 1]);
            if (rt.kind != ROUTER_SOFTMAX)
                for (double x : p) margin = std::min(margin, std::abs(x));
        }
        return margin;
    }
    size_t unrouted() const { return (size_t)std::count(route.begin(), route.end(), -1); }
    size_t dropped() const { return (size_t)std::count(slot.begin(), slot.end(), -1); }
};

// A layer at a point away from routing ties: seeds are tried until every
// token's choices stand apart by more than 1e-3.
static TcLayer layer_away_from_ties(int N, int C, int E, int f, int k, double cf, uint64_t seed,
                                    TcRouter rt = {}) {
    for (uint64_t s = seed;; s++) {
        TcLayer L(N, C, E, f, k, cf, s, rt);
        L.forward();
        if (L.routing_margin() > 1e-3) return L;
    }
}

TEST_CASE("token-choice backward matches finite differences, routing fixed, aux loss included") {
    struct Shape { int N, C, E, f, k; double cf; const char* what; };
    for (Shape s : {Shape{12, 6, 4, 5, 1, 4.0, "k 1, nothing dropped"}, Shape{12, 6, 4, 5, 1, 0.5, "k 1, drops"},
                    Shape{12, 6, 4, 5, 2, 0.5, "k 2, drops"}, Shape{10, 5, 3, 4, 3, 2.0, "k = E"}}) {
        INFO(s.what);
        TcLayer L = layer_away_from_ties(s.N, s.C, s.E, s.f, s.k, s.cf, 100);
        if (s.cf < 1) CHECK(L.dropped() > 0);  // the drops are exercised
        TestRng r(7);
        const Vec R = r.doubles(L.out.size());  // loss = sum(out * R) + alpha * aux
        const double alpha = 0.7;
        auto loss = [&] {
            L.forward();
            double v = alpha * L.aux[0];
            for (size_t i = 0; i < R.size(); i++) v += L.out[i] * R[i];
            return v;
        };
        loss();
        Vec dinp(L.inp.size(), 0), dwc(L.wc.size(), 0), dw1(L.w1.size(), 0), dw2(L.w2.size(), 0);
        Vec dz(L.z.size()), dprobs(L.z.size()), dxin(L.xin.size()), dpre(L.pre.size()), dact(L.pre.size()),
            dyout(L.xin.size()), daux = {alpha};
        token_choice_backward(dinp.data(), dwc.data(), dw1.data(), dw2.data(), dz.data(), dprobs.data(), dxin.data(),
                              dpre.data(), dact.data(), dyout.data(), daux.data(), R.data(), L.inp.data(),
                              L.probs.data(), L.route.data(), L.slot.data(), L.first.data(), L.xin.data(),
                              L.pre.data(), L.act.data(), L.yout.data(), L.wc.data(), L.w1.data(), L.w2.data(), L.N,
                              L.C, L.E, L.f, L.k, L.cap);
        CHECK_GRAD("inp", loss, L.inp, dinp);
        CHECK_GRAD("wc", loss, L.wc, dwc);
        CHECK_GRAD("w1", loss, L.w1, dw1);
        CHECK_GRAD("w2", loss, L.w2, dw2);
    }
}

// The threshold routers (cpu/token_choice.h): expert e fires when
// z + bc >= 0, gate sigmoid((z + bc) / tau) or 1. Mutations caught: the
// sigmoid's derivative without 1/tau, the bias gradient left out, the gate-one
// router passing a gradient, a choice below the threshold dispatched.
TEST_CASE("threshold routers: backward matches finite differences, bias included, routing fixed") {
    struct Case { TcRouter rt; int k; double cf; const char* what; };
    for (Case cs : {Case{{ROUTER_THRESHOLD, 0.7f}, 2, 4.0, "sigmoid gate, k 2, nothing dropped"},
                    Case{{ROUTER_THRESHOLD, 0.3f}, 3, 0.5, "sigmoid gate, k 3, drops"},
                    Case{{ROUTER_THRESHOLD_ONE, 1.0f}, 2, 4.0, "gate 1, k 2"}}) {
        INFO(cs.what);
        TcLayer L = layer_away_from_ties(12, 6, 4, 5, cs.k, cs.cf, 700, cs.rt);
        CHECK(L.unrouted() > 0);  // some choices fall below the threshold
        CHECK(L.unrouted() < L.route.size());
        if (cs.cf < 1) CHECK(L.dropped() > L.unrouted());  // and some are dropped for capacity
        for (int n = 0; n < L.N; n++)  // every choice made clears the threshold; the gates are as defined
            for (int r = 0; r < L.k; r++) {
                int e = L.route[(size_t)n * L.k + r];
                if (e < 0) continue;
                double z = L.z[(size_t)n * L.E + e];
                CHECK(z >= 0);
                double g = cs.rt.kind == ROUTER_THRESHOLD ? 1 / (1 + std::exp(-z / (double)cs.rt.tau)) : 1.0;
                CHECK(L.probs[(size_t)n * L.E + e] == doctest::Approx(g).epsilon(1e-14));
            }
        CHECK(L.aux[0] == 0.0);  // no load-balancing loss
        TestRng r(8);
        const Vec R = r.doubles(L.out.size());
        auto loss = [&] {
            L.forward();
            double v = 0;
            for (size_t i = 0; i < R.size(); i++) v += L.out[i] * R[i];
            return v;
        };
        loss();
        Vec dinp(L.inp.size(), 0), dwc(L.wc.size(), 0), dbc(L.bc.size(), 0), dw1(L.w1.size(), 0),
            dw2(L.w2.size(), 0);
        Vec dz(L.z.size()), dprobs(L.z.size()), dxin(L.xin.size()), dpre(L.pre.size()), dact(L.pre.size()),
            dyout(L.xin.size()), daux = {0.9};  // ignored: no aux loss
        token_choice_backward(dinp.data(), dwc.data(), dw1.data(), dw2.data(), dz.data(), dprobs.data(), dxin.data(),
                              dpre.data(), dact.data(), dyout.data(), daux.data(), R.data(), L.inp.data(),
                              L.probs.data(), L.route.data(), L.slot.data(), L.first.data(), L.xin.data(),
                              L.pre.data(), L.act.data(), L.yout.data(), L.wc.data(), L.w1.data(), L.w2.data(), L.N,
                              L.C, L.E, L.f, L.k, L.cap, dbc.data(), L.rt);
        CHECK_GRAD("inp", loss, L.inp, dinp);
        CHECK_GRAD("w1", loss, L.w1, dw1);
        CHECK_GRAD("w2", loss, L.w2, dw2);
        if (cs.rt.kind == ROUTER_THRESHOLD_ONE) {  // gate 1: the router learns nothing (nor does the loss move)
            CHECK(max_abs(dwc) == 0.0);
            CHECK(max_abs(dbc) == 0.0);
        } else {
            CHECK_GRAD("wc", loss, L.wc, dwc);
            CHECK_GRAD("bc", loss, L.bc, dbc);
        }
    }
}

// Six tokens in C = 2 with the router wc = I and thresholds bc = (-1, -2):
// expert 0 fires where x0 >= 1, expert 1 where x1 >= 2.
TEST_CASE("threshold router: the choices, their order and capacity, worked out by hand") {
    TcLayer L(6, 2, 2, 3, 2, 1.0, 1, {ROUTER_THRESHOLD_ONE, 1.0f});
    L.inp = {2, 0, 3, 1, 0, 2, 1.5, 0, 4, 3, 0, 1};
    L.wc = {1, 0, 0, 1};
    L.bc = {-1, -2};
    L.cap = 3;
    L.forward();
    // shifted logits: (1,-2) (2,-1) (-1,0) (0.5,-2) (3,1) (-1,-1); k 2, the larger first
    CHECK(L.route == Ints{0, -1, 0, -1, 1, -1, 0, -1, 0, 1, -1, -1});
    // r = 1: expert 0 <- tokens 0, 1, 3 (slots 0-2), 4 finds it full; expert 1 <- 2; r = 2: token 4 -> expert 1
    CHECK(L.slot == Ints{0, -1, 1, -1, 0, -1, 2, -1, -1, 1, -1, -1});
    CHECK(L.load == Vec{3, 2});
    CHECK(L.aux[0] == 0.0);
    for (int c = 0; c < 2; c++) CHECK(L.out[5 * 2 + c] == 0.0);          // token 5 fires no expert
    for (int c = 0; c < 2; c++) CHECK(L.out[c] == L.yout[c]);             // gate 1
}

TEST_CASE("the aux loss alone: its gradient flows through P_e only") {
    TcLayer L = layer_away_from_ties(16, 5, 4, 3, 2, 1.0, 300);
    auto loss = [&] {
        L.forward();
        return L.aux[0];
    };
    loss();
    Vec zero(L.out.size(), 0.0), dinp(L.inp.size(), 0), dwc(L.wc.size(), 0), dw1(L.w1.size(), 0), dw2(L.w2.size(), 0);
    Vec dz(L.z.size()), dprobs(L.z.size()), dxin(L.xin.size()), dpre(L.pre.size()), dact(L.pre.size()),
        dyout(L.xin.size()), daux = {1.0};
    token_choice_backward(dinp.data(), dwc.data(), dw1.data(), dw2.data(), dz.data(), dprobs.data(), dxin.data(),
                          dpre.data(), dact.data(), dyout.data(), daux.data(), zero.data(), L.inp.data(),
                          L.probs.data(), L.route.data(), L.slot.data(), L.first.data(), L.xin.data(), L.pre.data(),
                          L.act.data(), L.yout.data(), L.wc.data(), L.w1.data(), L.w2.data(), L.N, L.C, L.E, L.f,
                          L.k, L.cap);
    CHECK_GRAD("inp", loss, L.inp, dinp);
    CHECK_GRAD("wc", loss, L.wc, dwc);
    CHECK(*std::max_element(dw1.begin(), dw1.end()) == 0.0);  // the experts do not enter aux
    CHECK(*std::min_element(dw2.begin(), dw2.end()) == 0.0);
    // aux = E sum_e f_e P_e: 1 when the routing is uniform, at most E
    CHECK(L.aux[0] > 0);
    CHECK(L.aux[0] <= L.E + 1e-12);
}

// Six tokens in C = 2 with the router wc = I: each token's logits are its own
// coordinates, so its choices are known. First choices: experts 0 0 1 0 0 1;
// second choices the other expert.
static TcLayer hand_layer(int k, double cf) {
    TcLayer L(6, 2, 2, 3, k, cf, 1);
    L.inp = {2, 0, 3, 1, 0, 2, 1.5, 0, 4, 3, 0, 1};
    L.wc = {1, 0, 0, 1};
    L.forward();
    return L;
}

TEST_CASE("capacity and the order of dispatch, worked out by hand") {
    SUBCASE("k 1, cf 0.5: cap 2; expert 0 takes tokens 0 and 1, drops 3 and 4; expert 1 takes 2 and 5") {
        TcLayer L = hand_layer(1, 0.5);
        CHECK(L.cap == 2);
        CHECK(L.route == Ints{0, 0, 1, 0, 0, 1});
        CHECK(L.slot == Ints{0, 1, 0, -1, -1, 1});
        CHECK(L.load == Vec{2, 2});
        CHECK(L.first == Vec{4.0 / 6, 2.0 / 6});
        // a dropped token's output is zero; a dispatched one is p * expert(h)
        for (int c = 0; c < 2; c++) CHECK(L.out[3 * 2 + c] == 0.0);
        double p0 = L.probs[0];  // token 0's probability of expert 0
        for (int c = 0; c < 2; c++) CHECK(L.out[c] == doctest::Approx(p0 * L.yout[c]).epsilon(1e-14));
        double P0 = 0, P1 = 0;
        for (int n = 0; n < 6; n++) P0 += L.probs[n * 2] / 6, P1 += L.probs[n * 2 + 1] / 6;
        CHECK(L.aux[0] == doctest::Approx(2 * (4.0 / 6 * P0 + 2.0 / 6 * P1)).epsilon(1e-14));
    }
    SUBCASE("k 2, cf 0.5: cap 3; first choices dispatch before second choices, in token order") {
        TcLayer L = hand_layer(2, 0.5);
        CHECK(L.cap == 3);
        // route (n, r): first then second choice
        CHECK(L.route == Ints{0, 1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0});
        // r = 1: expert 0 <- tokens 0, 1, 3 (slots 0, 1, 2), 4 dropped; expert 1 <- 2, 5 (slots 0, 1)
        // r = 2: token 0 -> expert 1 slot 2; every later second choice finds its expert full
        CHECK(L.slot == Ints{0, 2, 1, -1, 0, -1, 2, -1, -1, -1, 1, -1});
        CHECK(L.load == Vec{3, 3});
        CHECK(L.dropped() == 6);
    }
    SUBCASE("decoding (cap = N) drops nothing") {
        TcLayer L(6, 2, 2, 3, 2, 0.5, 1);
        L.inp = hand_layer(2, 0.5).inp;
        L.wc = {1, 0, 0, 1};
        L.cap = TokenChoiceFfn::capacity(make_config(11, 8, 1, 2, 4, 2, 1, 3, 1, {TOKEN_CHOICE}, 2, 0.5f), 6, true);
        CHECK(L.cap == 6);
        L.xin.assign((size_t)2 * 6 * 2, 0);
        L.yout = L.xin;
        L.pre.assign((size_t)2 * 6 * 3, 0);
        L.act = L.pre;
        L.forward();
        CHECK(L.dropped() == 0);
    }
}

TEST_CASE("the batched form equals the plain loops, forward and backward, at odd shapes") {
    struct Shape { int N, C, E, f, k; double cf; TcRouter rt; };
    for (Shape s : {Shape{13, 7, 5, 9, 1, 1.25, {}}, Shape{17, 11, 4, 6, 2, 0.6, {}}, Shape{9, 5, 3, 4, 3, 2.0, {}},
                    Shape{1, 3, 2, 5, 1, 1.0, {}}, Shape{17, 11, 5, 6, 3, 0.6, {ROUTER_THRESHOLD, 0.4f}},
                    Shape{13, 7, 4, 9, 2, 1.0, {ROUTER_THRESHOLD_ONE, 1.0f}},
                    // buffers mostly empty: each expert's products over its taken rows only
                    Shape{9, 7, 16, 5, 2, 4.0, {ROUTER_THRESHOLD, 0.5f}}, Shape{11, 6, 8, 4, 1, 8.0, {}}}) {
        INFO("N " << s.N << " C " << s.C << " E " << s.E << " f " << s.f << " k " << s.k << " cf " << s.cf
                  << " router " << s.rt.kind);
        TcLayer plain(s.N, s.C, s.E, s.f, s.k, s.cf, 500 + s.N, s.rt), fastL = plain;
        plain.forward();
        fast::token_choice_forward(fastL.out.data(), fastL.z.data(), fastL.probs.data(), fastL.route.data(),
                                   fastL.slot.data(), fastL.load.data(), fastL.first.data(), fastL.aux.data(),
                                   fastL.xin.data(), fastL.pre.data(), fastL.act.data(), fastL.yout.data(),
                                   fastL.inp.data(), fastL.wc.data(), fastL.w1.data(), fastL.w2.data(), s.N, s.C, s.E,
                                   s.f, s.k, fastL.cap, fastL.bc.data(), s.rt);
        CHECK(fastL.route == plain.route);
        CHECK(fastL.slot == plain.slot);
        for (auto [got, want, what] : {std::tuple{&fastL.out, &plain.out, "out"}, {&fastL.yout, &plain.yout, "yout"},
                                       {&fastL.pre, &plain.pre, "pre"}, {&fastL.aux, &plain.aux, "aux"}})
            check_close(*got, *want, scaled_tol(1e-12, *want), what);
        TestRng r(9);
        Vec dout = r.doubles(plain.out.size()), daux = {0.3};
        struct Grads { Vec dinp, dwc, dw1, dw2, dz, dp, dxin, dpre, dact, dy, dbc; };
        auto grads = [&](const TcLayer& L) {
            return Grads{Vec(L.inp.size(), 0.5), Vec(L.wc.size(), -0.25), Vec(L.w1.size(), 0.125),
                         Vec(L.w2.size(), 0.0), Vec(L.z.size(), NAN), Vec(L.z.size(), NAN), Vec(L.xin.size(), NAN),
                         Vec(L.pre.size(), NAN), Vec(L.pre.size(), NAN), Vec(L.xin.size(), NAN),
                         Vec(L.bc.size(), 0.25)};
        };
        Grads gp = grads(plain), gf = grads(fastL);
        token_choice_backward(gp.dinp.data(), gp.dwc.data(), gp.dw1.data(), gp.dw2.data(), gp.dz.data(),
                              gp.dp.data(), gp.dxin.data(), gp.dpre.data(), gp.dact.data(), gp.dy.data(), daux.data(),
                              dout.data(), plain.inp.data(), plain.probs.data(), plain.route.data(),
                              plain.slot.data(), plain.first.data(), plain.xin.data(), plain.pre.data(),
                              plain.act.data(), plain.yout.data(), plain.wc.data(), plain.w1.data(),
                              plain.w2.data(), s.N, s.C, s.E, s.f, s.k, plain.cap, gp.dbc.data(), s.rt);
        fast::token_choice_backward(gf.dinp.data(), gf.dwc.data(), gf.dw1.data(), gf.dw2.data(), gf.dz.data(),
                                    gf.dp.data(), gf.dxin.data(), gf.dpre.data(), gf.dact.data(), gf.dy.data(),
                                    daux.data(), dout.data(), fastL.inp.data(), fastL.probs.data(),
                                    fastL.route.data(), fastL.slot.data(), fastL.first.data(), fastL.xin.data(),
                                    fastL.pre.data(), fastL.act.data(), fastL.yout.data(), fastL.wc.data(),
                                    fastL.w1.data(), fastL.w2.data(), s.N, s.C, s.E, s.f, s.k, fastL.cap, gf.dbc.data(),
                                    s.rt);
        for (auto [got, want, what] : {std::tuple{&gf.dinp, &gp.dinp, "dinp"}, {&gf.dwc, &gp.dwc, "dwc"},
                                       {&gf.dbc, &gp.dbc, "dbc"},
                                       {&gf.dw1, &gp.dw1, "dw1"}, {&gf.dw2, &gp.dw2, "dw2"}, {&gf.dz, &gp.dz, "dz"},
                                       {&gf.dy, &gp.dy, "dyout"}, {&gf.dxin, &gp.dxin, "dxin"}})
            check_close(*got, *want, scaled_tol(1e-12, *want), what);
    }
}

TEST_CASE("a model with TOKEN_CHOICE layers: every gradient matches finite differences") {
    // cf 4 (nothing dropped) and weights drawn until every routing decision
    // stands apart: the loss is smooth around the point checked
    for (std::vector<int> kinds : {std::vector<int>{TOKEN_CHOICE, DENSE}, std::vector<int>{MOT, TOKEN_CHOICE}}) {
        Config c = make_config(11, 8, 2, 8, 16, 4, 2, 8, 1.0f, kinds, 2, 4.0f);
        const int B = 4, T = 5;
        TestRng r(3);
        std::vector<int> inp = r.tokens(B * T, c.V), tgt = r.tokens(B * T, c.V);
        GPT<double> model;
        for (uint64_t seed = 40;; seed++) {
            build_random(&model, c, seed, 0.5);
            gpt_forward(&model, inp.data(), tgt.data(), B, T);
            double margin = 1e300;
            for (int l = 0; l < c.L; l++) {
                if (c.kinds[l] != TOKEN_CHOICE) continue;
                for (int n = 0; n < B * T; n++) {
                    Vec p(model.acts.layer[l].m + (size_t)n * c.E, model.acts.layer[l].m + (size_t)(n + 1) * c.E);
                    std::sort(p.rbegin(), p.rend());
                    for (int q = 0; q < c.tc.topk; q++) margin = std::min(margin, p[q] - p[q + 1]);
                }
            }
            if (margin > 1e-3) break;
        }
        model.aux_weight = 0.5;
        gpt_forward(&model, inp.data(), tgt.data(), B, T);
        gpt_zero_grad(&model);
        gpt_backward(&model);
        Vec analytic = model.grads_memory;
        auto loss = [&] {
            gpt_forward(&model, inp.data(), tgt.data(), B, T);
            return model.mean_loss + model.aux_weight * model.aux_loss;
        };
        for (const TensorSpec& s : param_specs(c)) {
            GradCheckResult g = gradcheck(loss, model.params_memory.data() + s.offset, s.numel,
                                          analytic.data() + s.offset);
            INFO("gradient of " << s.name << ": worst rel err " << g.worst << " at [" << g.worst_i << "]");
            CHECK(g.worst < 1e-6);
        }
    }
}

TEST_CASE("a model with threshold-routed TOKEN_CHOICE layers: every gradient matches finite differences") {
    for (int router : {ROUTER_THRESHOLD, ROUTER_THRESHOLD_ONE}) {
        Config c = make_config(11, 8, 2, 8, 16, 4, 2, 8, 1.0f, {MOT, TOKEN_CHOICE}, 2, 4.0f);
        c.tc.router = router;
        c.tc.router_tau = 0.6f;
        INFO("router " << router_name(router));
        const int B = 4, T = 5;
        TestRng r(3);
        std::vector<int> inp = r.tokens(B * T, c.V), tgt = r.tokens(B * T, c.V);
        GPT<double> model;
        for (uint64_t seed = 40;; seed++) {  // away from ties and from the thresholds
            build_random(&model, c, seed, 0.5);
            gpt_forward(&model, inp.data(), tgt.data(), B, T);
            double margin = 1e300;
            const double* z = model.acts.layer[1].z;
            for (int n = 0; n < B * T; n++) {
                Vec p(z + (size_t)n * c.E, z + (size_t)(n + 1) * c.E);
                std::sort(p.rbegin(), p.rend());
                for (int q = 0; q + 1 < c.E; q++) margin = std::min(margin, p[q] - p[q + 1]);
                for (double x : p) margin = std::min(margin, std::abs(x));
            }
            if (margin > 1e-3) break;
        }
        gpt_zero_grad(&model);
        gpt_backward(&model);
        Vec analytic = model.grads_memory;
        auto loss = [&] {
            gpt_forward(&model, inp.data(), tgt.data(), B, T);
            return model.mean_loss;
        };
        bool has_bc = false;
        for (const TensorSpec& s : param_specs(c)) {
            has_bc |= s.name == "h1.bc";
            GradCheckResult g = gradcheck(loss, model.params_memory.data() + s.offset, s.numel,
                                          analytic.data() + s.offset);
            INFO("gradient of " << s.name << ": worst rel err " << g.worst << " at [" << g.worst_i << "]");
            CHECK(g.worst < 1e-6);
        }
        CHECK(has_bc);
    }
}

TEST_CASE("checkpoints with kinds 0, 1 and 2 round-trip bit-exactly; bad headers are refused") {
    Config c = make_config(37, 8, 2, 16, 32, 4, 2, 16, 0.75f, {DENSE, MOT, TOKEN_CHOICE}, 2, 0.8f);
    GPT<float> m;
    build_random(&m, c, 5, 0.3);
    std::string path = "build/tc_kinds.ckpt";
    checkpoint_save(path, c, m.params_memory.data());
    Config back;
    std::vector<float> params;
    checkpoint_load(path, &back, &params);
    CHECK(back.kinds == c.kinds);
    CHECK(back.tc.topk == 2);
    CHECK(back.tc.capacity_factor == 0.8f);
    CHECK(params == m.params_memory);
    checkpoint_save("build/tc_kinds2.ckpt", back, params.data());
    CHECK(read_file("build/tc_kinds2.ckpt") == read_file(path));
    // good with 4 bytes at offset replaced by value: refused, the message holding needle
    auto refused = [](const std::string& good, size_t offset, const std::string& value, const char* needle) {
        std::string bad = good;
        bad.replace(offset, 4, value);
        write_bytes("build/tc_bad.ckpt", bad);
        expect_throw([] {
            Config k;
            std::vector<float> p;
            checkpoint_load("build/tc_bad.ckpt", &k, &p);
        }, {"build/tc_bad.ckpt", needle});
    };
    std::string good = read_file(path);
    float negative = -1.0f, nan = NAN;
    refused(good, 4 * 14, std::string("\x05\0\0\0", 4), "top-k 5");
    refused(good, 4 * 14, std::string("\xff\xff\xff\xff", 4), "top-k -1");
    refused(good, 4 * 15, std::string((const char*)&negative, 4), "capacity factor");
    refused(good, 4 * 15, std::string((const char*)&nan, 4), "capacity factor");
    // a threshold router's kind and gate temperature round-trip; a bad kind or temperature is refused
    Config t = c;
    t.tc.router = ROUTER_THRESHOLD;
    t.tc.router_tau = 0.25f;
    GPT<float> mt;
    build_random(&mt, t, 6, 0.3);
    checkpoint_save(path, t, mt.params_memory.data());
    checkpoint_load(path, &back, &params);
    CHECK(back.tc.router == ROUTER_THRESHOLD);
    CHECK(back.tc.router_tau == 0.25f);
    CHECK(params == mt.params_memory);
    CHECK(num_params(t) == num_params(c) + (size_t)c.E);  // one bias per expert
    std::string good_t = read_file(path);
    float subnormal = 1e-45f;
    refused(good_t, 4 * 16, std::string("\x03\0\0\0", 4), "router kind 3");
    refused(good_t, 4 * 17, std::string((const char*)&negative, 4), "router temperature");
    refused(good_t, 4 * 17, std::string((const char*)&subnormal, 4), "router temperature");
}

// The transition to a threshold router (train/transition.h): the routed
// model keeps every tensor under its name, and calibration sets each
// expert's bias so that it fires for round(n/G) of the n calibration tokens.
// Mutations caught: the quantile at 1/G instead of 1 - 1/G, bc = +q.
TEST_CASE("transition: the routed model keeps the tensors; calibrated thresholds fire each expert for 1/G") {
    const int B = 8, T = 6;
    Config mot = make_config(37, 8, 2, 16, 32, 8, 4, 8, 0.1f, {MOT, DENSE});
    GPT<float> m;
    build_random(&m, mot, 11, 0.5);
    Config routed = transition_config(mot, ROUTER_THRESHOLD_ONE, 0.0f, 8, 100.0f);
    CHECK(routed.kinds == std::vector<int>{TOKEN_CHOICE, DENSE});
    CHECK(routed.tc.router_tau == 0.1f);  // 0: the MoT temperature
    std::vector<float> p = transition_params(mot, routed, m.params_memory);
    std::vector<TensorSpec> from = param_specs(mot);
    for (const TensorSpec& t : param_specs(routed)) {
        INFO(t.name);
        auto s = std::find_if(from.begin(), from.end(), [&](const TensorSpec& x) { return x.name == t.name; });
        if (s == from.end()) {
            CHECK(t.name == "h0.bc");
            continue;
        }
        CHECK(std::equal(p.begin() + t.offset, p.begin() + t.offset + t.numel, m.params_memory.begin() + s->offset));
    }
    std::vector<std::vector<int>> batches = {TestRng(5).tokens((size_t)B * T, mot.V)};
    std::vector<std::vector<float>> q = calibrate_thresholds(mot, m.params_memory, routed, &p, batches, B, T);
    REQUIRE(q.size() == 1);
    // the routed model on the calibration batch: layer 0 sees what the MoT layer saw, so each expert takes
    // round(48 / 4) = 12 tokens (k = E and a large capacity: nothing is dropped)
    GPT<float, FastKernels> r;  // the kernels calibration ran the MoT model with
    gpt_build(&r, routed);
    std::copy(p.begin(), p.end(), r.params_memory.begin());
    gpt_forward(&r, batches[0].data(), (const int*)nullptr, B, T);
    for (int e = 0; e < mot.E; e++) {
        CHECK(r.acts.layer[0].load[e] == 12.0f);
        CHECK(r.params.layer[0].bc[e] == -q[0][e]);
    }
}

TEST_CASE("discrete MoT: one-hot mixing at the argmax; at a sharp controller it equals soft MoT at low tau") {
    const int B = 4, T = 3, C = 6, E = 3, G = 2, f = 5, S = B / G;
    TestRng r(21);
    Vec inp = r.doubles((size_t)B * T * C), wc = r.doubles((size_t)E * C, 3.0), w1 = r.doubles((size_t)E * f * C),
        w2 = r.doubles((size_t)E * C * f);
    auto run = [&](double tau, bool discrete, Vec* m_out) {
        Vec out((size_t)B * T * C), z((size_t)B * T * E), m = z, u((size_t)S * T * E * C), y = u,
            p((size_t)S * T * E * f), a = p;
        mot_forward(out.data(), z.data(), m.data(), u.data(), p.data(), a.data(), y.data(), inp.data(), wc.data(),
                    w1.data(), w2.data(), B, T, C, E, G, f, tau, discrete);
        if (m_out) *m_out = m;
        return out;
    };
    Vec m;
    Vec hard = run(1.0, true, &m);
    for (double x : m) CHECK((x == 0.0 || x == 1.0));  // one-hot
    for (int g = 0; g < S * T; g++)  // each (group, expert): exactly one member takes the whole weight
        for (int e = 0; e < E; e++) {
            int k = g / T, t = g % T;
            double sum = 0;
            for (int j = 0; j < G; j++) sum += m[((size_t)(j * S + k) * T + t) * E + e];
            CHECK(sum == 1.0);
        }
    check_close(run(1e-3, false, nullptr), hard, scaled_tol(1e-9, hard), "soft MoT at tau 1e-3");
    Vec soft = run(1.0, false, nullptr);
    CHECK(closeness(soft, hard, scaled_tol(1e-3, hard)).worst > 1);  // at tau 1 the two differ
}

TEST_CASE("router balance: the fire counts and the controller's move, worked out by hand") {
    // N 4 tokens, E 3 experts; an expert fires where the shifted logit is >= 0 (0 itself fires)
    const std::vector<float> z = {0.1f, -1.0f, 0.0f,   //
                                  0.3f, -0.5f, -0.1f,  //
                                  -0.2f, 2.0f, 0.5f,   //
                                  1.0f, -3.0f, 0.7f};
    std::vector<double> fires(3, 0.0);
    token_choice_count_fires(fires.data(), z.data(), 4, 3);
    CHECK(fires == std::vector<double>{3, 1, 3});
    token_choice_count_fires(fires.data(), z.data(), 4, 3);  // a second micro-batch adds
    CHECK(fires == std::vector<double>{6, 2, 6});
    // over the 8 tokens: rates 0.75, 0.25, 0.75 against the target 0.25; eta 2 moves bc by -1, 0, -1
    std::vector<float> bc = {0.5f, -0.2f, 1.0f};
    router_balance_update(bc.data(), fires.data(), 8.0, 0.25, 2.0, 3);
    CHECK(bc[0] == doctest::Approx(-0.5).epsilon(1e-6));
    CHECK(bc[1] == -0.2f);
    CHECK(bc[2] == doctest::Approx(0.0).epsilon(1e-6));
    // an expert firing too rarely has its threshold lowered: rate 0 against 0.25, eta 2 -> +0.5
    std::vector<double> none(3, 0.0);
    router_balance_update(bc.data(), none.data(), 8.0, 0.25, 2.0, 3);
    CHECK(bc[1] == doctest::Approx(0.3).epsilon(1e-6));
}

// A CPU model with one threshold-routed TOKEN_CHOICE layer (E 8, G 4: the
// target rate 1/4; k = E and a large capacity: nothing dropped) and one dense.
static Config balance_config() {
    Config c = make_config(37, 8, 2, 16, 32, 8, 4, 8, 0.1f, {TOKEN_CHOICE, DENSE}, 8, 100.0f);
    c.tc.router = ROUTER_THRESHOLD;
    c.tc.router_tau = 0.5f;
    return c;
}

// One optimizer step as training takes it (train/step.h) with --router-balance eta:
// forward and counts, backward, bc's gradient zeroed, AdamW, the controller.
// Returns the layer's mean relative rate error before the move.
static double balance_step(Model* m, const std::vector<int>& inp, const std::vector<int>& tgt, int B, int T,
                           float lr, float eta, std::vector<double>* fires_out = nullptr) {
    std::vector<double> fires;
    model_forward(m, inp.data(), tgt.data(), B, T);
    model_count_fires(m, &fires);
    model_backward(m, 1.0);
    model_zero_router_bias_grads(m);
    std::vector<float> bc = model_router_bias(m);
    model_update(m, lr, 0.9f, 0.95f, 1e-8f, 0.1f, 0, 1.0f);
    if (fires_out) *fires_out = fires;
    return model_router_balance(m, &bc, fires, (double)B * T, eta)[0];
}

TEST_CASE("router balance: bc moves by the controller alone; AdamW moves the other weights") {
    const Config c = balance_config();
    const int B = 4, T = 8, E = c.E;
    GPT<float> init;
    build_random(&init, c, 21, 0.5);
    Model m;
    model_build(&m, c, "cpu", B, T, init.params_memory.data());
    TestRng r(8);
    std::vector<int> inp = r.tokens(B * T, c.V), tgt = r.tokens(B * T, c.V);
    // without the controller the bias has a gradient, which AdamW would follow
    model_forward(&m, inp.data(), tgt.data(), B, T);
    model_backward(&m, 1.0);
    double grad = 0;
    for (int e = 0; e < E; e++) grad += std::fabs(m.cpu.grads.layer[0].bc[e]);
    CHECK(grad > 1e-4);
    model_zero_grad(&m);
    // the rates the test counts itself from the routed logits of the same forward
    model_forward(&m, inp.data(), tgt.data(), B, T);
    std::vector<double> mine(E, 0.0);
    for (int n = 0; n < B * T; n++)
        for (int e = 0; e < E; e++) mine[e] += m.cpu.acts.layer[0].z[(size_t)n * E + e] >= 0;
    const std::vector<float> bc0(m.cpu.params.layer[0].bc, m.cpu.params.layer[0].bc + E),
        wc0(m.cpu.params.layer[0].wc, m.cpu.params.layer[0].wc + (size_t)E * c.C);
    const float eta = 0.75f;
    std::vector<double> fires;
    double err = balance_step(&m, inp, tgt, B, T, 1e-2f, eta, &fires);
    CHECK(fires == mine);
    double want_err = 0;
    bool moved = false;
    for (int e = 0; e < E; e++) {
        INFO("expert " << e << ": fired for " << mine[e] << " of " << B * T);
        double rate = mine[e] / (B * T);
        want_err += std::fabs(rate - 0.25) / 0.25 / E;
        float want = (float)((double)bc0[e] - eta * (rate - 0.25));
        CHECK(m.cpu.params.layer[0].bc[e] == want);
        moved |= want != bc0[e];
        CHECK(m.cpu.m_memory[m.cpu.params.layer[0].bc - m.cpu.params_memory.data() + e] == 0.0f);
        CHECK(m.cpu.v_memory[m.cpu.params.layer[0].bc - m.cpu.params_memory.data() + e] == 0.0f);
    }
    CHECK(moved);  // the case is not one where every rate is on target
    CHECK(err == doctest::Approx(want_err).epsilon(1e-9));
    CHECK(!std::equal(wc0.begin(), wc0.end(), m.cpu.params.layer[0].wc));  // AdamW ran
}

TEST_CASE("router balance: the firing rates converge to 1/G over a few steps, and stay off it without") {
    const Config c = balance_config();
    const int B = 8, T = 8;
    GPT<float> init;
    build_random(&init, c, 33, 0.5);
    for (int e = 0; e < c.E; e++) init.params.layer[0].bc[e] = 1.5f;  // nearly every expert fires for every token
    for (float eta : {0.0f, 2.0f}) {
        INFO("eta " << eta);
        Model m;
        model_build(&m, c, "cpu", B, T, init.params_memory.data());
        TestRng r(17);
        std::vector<double> err;
        for (int step = 0; step < 24; step++) {
            std::vector<int> inp = r.tokens(B * T, c.V), tgt = r.tokens(B * T, c.V);
            err.push_back(balance_step(&m, inp, tgt, B, T, 1e-3f, eta));
        }
        INFO("rate errors: first " << err[0] << ", last " << err.back());
        CHECK(err[0] > 1.5);  // rates near 1 against 1/4
        if (eta == 0) {
            CHECK(err.back() > 1.0);
        } else {
            for (int s = 18; s < 24; s++) CHECK(err[s] < 0.25 * err[0]);
        }
    }
}
