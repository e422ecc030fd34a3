// tests/test_mot.cpp: properties of the Mixture-of-Tokens layer and of the model
// around it (docs/design.md sections 3.2 and 12), in double: the per-group loops of
// cpu/mot.h. (tests/test_fast.cpp holds the batched form of cpu/fast/mot.h
// against them; tests/test_layers.cpp checks their gradients.)
//   g++ -std=c++17 -O2 -march=native -fopenmp -Wall -Wextra -I. tests/test_mot.cpp -o /tmp/test_mot
//
// Group of row b: k = b % S with S = B/G; its members are rows j*S + k.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/ffn.h"
#include "cpu/gpt.h"
#include "cpu/mot.h"
#include "tests/close.h"
#include "tests/gradcheck.h"  // set_test_threads: one OpenMP thread
#include "tests/models.h"
#include "tests/rng.h"

using Vec = std::vector<double>;
// |got - want| < 1e-12 max(1, |want|) (tests/close.h)
static const Tol TIGHT{0.5e-12, 0.5e-12};

// One MoT layer's tensors and a forward call.
struct MotLayer {
    int B, T, C, E, G, f, S;
    double tau;
    Vec inp, wc, w1, w2, out, z, m, u, p, a, y;
    MotLayer(int B_, int T_, int C_, int E_, int G_, int f_, double tau_, uint64_t seed)
        : B(B_), T(T_), C(C_), E(E_), G(G_), f(f_), S(B_ / G_), tau(tau_) {
        TestRng r(seed);
        inp = r.doubles((size_t)B * T * C);
        wc = r.doubles((size_t)E * C);
        w1 = r.doubles((size_t)E * f * C, 0.8);
        w2 = r.doubles((size_t)E * C * f, 0.8);
        out.assign((size_t)B * T * C, 0);
        z.assign((size_t)B * T * E, 0);
        m = z;
        u.assign((size_t)S * T * E * C, 0);
        y = u;
        p.assign((size_t)S * T * E * f, 0);
        a = p;
    }
    void forward() {
        mot_forward(out.data(), z.data(), m.data(), u.data(), p.data(), a.data(), y.data(), inp.data(), wc.data(),
                    w1.data(), w2.data(), B, T, C, E, G, f, tau);
    }
    size_t row(int b, int t) const { return (size_t)b * T + t; }
};

struct Shape { int B, T, C, E, G, f; double tau; };
static const Shape kShapes[] = {
    {4, 3, 6, 4, 2, 5, 1.0}, {6, 2, 5, 3, 3, 4, 0.5}, {4, 2, 4, 2, 4, 3, 2.0}, {3, 2, 4, 3, 1, 4, 1.0},
    {6, 3, 5, 1, 2, 3, 1.0},
};

TEST_CASE("mixing weights: for every group and expert they sum to 1 over the group, each in (0,1)") {
    for (const Shape& s : kShapes) {
        CAPTURE(s.B); CAPTURE(s.G); CAPTURE(s.E); CAPTURE(s.tau);
        MotLayer L(s.B, s.T, s.C, s.E, s.G, s.f, s.tau, 2000 + s.B * 10 + s.G);
        for (double& w : L.wc) w *= 3;  // peaked softmax: the weights are far from 1/G
        L.forward();
        size_t bad_sum = 0, bad_range = 0;
        for (int k = 0; k < L.S; k++)
            for (int t = 0; t < L.T; t++)
                for (int e = 0; e < L.E; e++) {
                    double sum = 0;
                    for (int j = 0; j < L.G; j++) {
                        double mw = L.m[L.row(j * L.S + k, t) * L.E + e];
                        sum += mw;
                        if (L.G > 1) bad_range += !(mw > 0 && mw < 1);
                        else bad_range += !(mw == 1.0);
                    }
                    bad_sum += !(std::fabs(sum - 1) < 1e-14);
                }
        CHECK(bad_sum == 0);
        CHECK(bad_range == 0);
    }
    // the same inside the model, for every MoT layer
    Config c = tiny_config({MOT, MOT}, 1.0f, 3, 6);
    GPT<double> model;
    gpt_build(&model, c);
    gpt_init_weights(&model, 5);
    const int B = 6, T = 4, S = B / c.mot.G;
    std::vector<int> tok = TestRng(3).tokens(B * T, c.V);
    gpt_forward(&model, tok.data(), nullptr, B, T);
    for (int l = 0; l < c.L; l++) {
        const double* m = model.acts.layer[l].m;
        size_t bad = 0;
        for (int k = 0; k < S; k++)
            for (int t = 0; t < T; t++)
                for (int e = 0; e < c.E; e++) {
                    double sum = 0;
                    for (int j = 0; j < c.mot.G; j++) {
                        double mw = m[((size_t)(j * S + k) * T + t) * c.E + e];
                        bad += !(mw > 0 && mw < 1);
                        sum += mw;
                    }
                    bad += !(std::fabs(sum - 1) < 1e-14);
                }
        CAPTURE(l);
        CHECK(bad == 0);
    }
}

static Vec logits_of(GPT<double>* model, const std::vector<int>& tok, int B, int T) {
    gpt_forward(model, tok.data(), nullptr, B, T);
    const int Vp = model->cfg.Vp;
    return Vec(model->acts.logits, model->acts.logits + (size_t)B * T * Vp);
}

// max |a - b| over the logits of row b, positions [t0, t1)
static double row_diff(const Vec& a, const Vec& b, int row, int t0, int t1, int T, int Vp) {
    double d = 0;
    for (int t = t0; t < t1; t++)
        for (int v = 0; v < Vp; v++) {
            size_t i = ((size_t)row * T + t) * Vp + v;
            d = std::max(d, std::fabs(a[i] - b[i]));
        }
    return d;
}

TEST_CASE("causality: changing the token at position t changes no logits before t, and changes some at t") {
    for (auto kinds : {std::vector<int>{MOT, MOT}, std::vector<int>{DENSE, MOT}}) {
        const int B = 4, T = 6, G = 2;
        Config c = tiny_config(kinds, 1.0f, G);
        GPT<double> model;
        build_random(&model, c, 11, 0.5);  // wider than the init: changes propagate visibly
        TestRng r(12);
        std::vector<int> tok = r.tokens(B * T, c.V);
        Vec base = logits_of(&model, tok, B, T);
        for (int b : {0, 3})
            for (int t = 0; t < T; t++) {
                CAPTURE(kinds[0]); CAPTURE(b); CAPTURE(t);
                std::vector<int> tok2 = tok;
                tok2[b * T + t] = (tok[b * T + t] + 1 + r.below(c.V - 1)) % c.V;  // a different token
                Vec changed = logits_of(&model, tok2, B, T);
                for (int row = 0; row < B; row++) CHECK(row_diff(base, changed, row, 0, t, T, c.Vp) <= 1e-12);
                CHECK(row_diff(base, changed, b, t, t + 1, T, c.Vp) > 1e-4);
                // its group mate at the same position sees it through the mixture
                int mate = (b + B / G) % B;
                CHECK(row_diff(base, changed, mate, t, T, T, c.Vp) > 1e-6);
            }
    }
}

TEST_CASE("group independence: a row's tokens change no logits outside its group, and change its group's") {
    struct Case { int B, G; };
    for (Case cs : {Case{6, 2}, Case{6, 3}, Case{4, 4}}) {
        const int T = 4, S = cs.B / cs.G;
        Config c = tiny_config({MOT, DENSE, MOT}, 1.0f, cs.G);
        GPT<double> model;
        build_random(&model, c, 21, 0.5);
        TestRng r(22);
        std::vector<int> tok = r.tokens(cs.B * T, c.V);
        Vec base = logits_of(&model, tok, cs.B, T);
        for (int b = 0; b < cs.B; b++) {
            CAPTURE(cs.B); CAPTURE(cs.G); CAPTURE(b);
            std::vector<int> tok2 = tok;
            for (int t = 0; t < T; t++) tok2[b * T + t] = (tok[b * T + t] + 1 + r.below(c.V - 1)) % c.V;
            Vec changed = logits_of(&model, tok2, cs.B, T);
            for (int row = 0; row < cs.B; row++) {
                CAPTURE(row);
                double d = row_diff(base, changed, row, 0, T, T, c.Vp);
                if (row % S == b % S) CHECK(d > 1e-6);  // same group (rows j*S + k)
                else CHECK(d <= 1e-12);
            }
        }
    }
}

TEST_CASE("G = 1: the MoT layer is a bias-free dense FFN of width E*f, forward and backward") {
    const int B = 3, T = 4, C = 6, E = 3, f = 5, H = E * f;
    for (double tau : {1.0, 0.5}) {  // with one member per group tau has no effect
        CAPTURE(tau);
        MotLayer L(B, T, C, E, 1, f, tau, 31);
        L.forward();
        // W1 (E*f, C): rows e*f + i are w1[e][i];  W2 (C, E*f): columns e*f + i are w2[e][:, i]
        Vec W1(L.w1), W2((size_t)C * H), b1(H, 0.0), b2(C, 0.0);
        for (int e = 0; e < E; e++)
            for (int c = 0; c < C; c++)
                for (int i = 0; i < f; i++) W2[(size_t)c * H + e * f + i] = L.w2[((size_t)e * C + c) * f + i];
        Vec out((size_t)B * T * C), h((size_t)B * T * H), hg(h.size());
        ffn_forward(out.data(), h.data(), hg.data(), L.inp.data(), W1.data(), b1.data(), W2.data(), b2.data(), B, T, C, H);
        check_close(L.out, out, TIGHT, "out");
        double mag = 0;
        for (double x : out) mag = std::max(mag, std::fabs(x));
        CHECK(mag > 0.1);

        TestRng r(32);
        Vec dout = r.doubles(out.size());
        Vec dinp(L.inp.size(), 0.0), dwc(L.wc.size(), 0.0), dw1(L.w1.size(), 0.0), dw2(L.w2.size(), 0.0);
        Vec dz(L.z.size()), dm(L.m.size()), du(L.u.size()), dp(L.p.size()), da(L.a.size()), dy(L.y.size());
        mot_backward(dinp.data(), dwc.data(), dw1.data(), dw2.data(), dz.data(), dm.data(), du.data(), dp.data(),
                     da.data(), dy.data(), dout.data(), L.inp.data(), L.m.data(), L.u.data(), L.p.data(), L.a.data(),
                     L.y.data(), L.wc.data(), L.w1.data(), L.w2.data(), B, T, C, E, 1, f, tau);
        Vec dinp2(dinp.size(), 0.0), dW1(W1.size(), 0.0), db1(H, 0.0), dW2(W2.size(), 0.0), db2(C, 0.0);
        Vec dh(h.size(), 0.0), dhg(h.size(), 0.0);
        ffn_backward(dinp2.data(), dW1.data(), db1.data(), dW2.data(), db2.data(), dh.data(), dhg.data(), dout.data(),
                     L.inp.data(), h.data(), hg.data(), W1.data(), W2.data(), B, T, C, H);
        check_close(dinp, dinp2, TIGHT, "dinp");
        check_close(dw1, dW1, TIGHT, "dw1");  // same (E*f, C) layout
        Vec dw2_as_W2((size_t)C * H);
        for (int e = 0; e < E; e++)
            for (int c = 0; c < C; c++)
                for (int i = 0; i < f; i++) dw2_as_W2[(size_t)c * H + e * f + i] = dw2[((size_t)e * C + c) * f + i];
        check_close(dw2_as_W2, dW2, TIGHT, "dw2");
        for (double g : dwc) CHECK(g == 0.0);  // M == 1 whatever the controller says
    }
}

TEST_CASE("permuting the members of a group permutes the outputs the same way") {
    for (const Shape& s : kShapes) {
        if (s.G < 2) continue;
        CAPTURE(s.B); CAPTURE(s.G);
        MotLayer L(s.B, s.T, s.C, s.E, s.G, s.f, s.tau, 4000 + s.B * 10 + s.G);
        L.forward();
        Vec out0 = L.out, inp0 = L.inp;
        // member j of every group takes the input of member perm[j] (a cycle, so nothing is fixed)
        std::vector<int> perm(s.G);
        for (int j = 0; j < s.G; j++) perm[j] = (j + 1) % s.G;
        for (int k = 0; k < L.S; k++)
            for (int j = 0; j < s.G; j++)
                for (int t = 0; t < s.T; t++)
                    std::copy_n(&inp0[L.row(perm[j] * L.S + k, t) * s.C], s.C, &L.inp[L.row(j * L.S + k, t) * s.C]);
        L.forward();
        double worst = 0, moved = 0;
        for (int k = 0; k < L.S; k++)
            for (int j = 0; j < s.G; j++)
                for (int t = 0; t < s.T; t++)
                    for (int c = 0; c < s.C; c++) {
                        double got = L.out[L.row(j * L.S + k, t) * s.C + c];
                        worst = std::max(worst, std::fabs(got - out0[L.row(perm[j] * L.S + k, t) * s.C + c]));
                        moved = std::max(moved, std::fabs(got - out0[L.row(j * L.S + k, t) * s.C + c]));
                    }
        CHECK(worst < 1e-12);
        CHECK(moved > 1e-3);  // the permutation did move the outputs
    }

    // the whole model: permuting batch rows within their groups permutes the logits
    const int B = 6, T = 4, G = 3, S = B / G;
    Config c = tiny_config({MOT, DENSE}, 1.0f, G);
    GPT<double> model;
    build_random(&model, c, 41, 0.5);
    TestRng r(42);
    std::vector<int> tok = r.tokens(B * T, c.V);
    Vec base = logits_of(&model, tok, B, T);
    const int perm[G] = {2, 0, 1};
    std::vector<int> tok2(tok.size());
    for (int k = 0; k < S; k++)
        for (int j = 0; j < G; j++)
            std::copy_n(&tok[(perm[j] * S + k) * T], T, &tok2[(j * S + k) * T]);
    Vec changed = logits_of(&model, tok2, B, T);
    const size_t n = (size_t)T * c.Vp;  // the logits of one row
    for (int k = 0; k < S; k++)
        for (int j = 0; j < G; j++)
            check_close(span(&changed[(j * S + k) * n], n), span(&base[(perm[j] * S + k) * n], n), Tol{1e-12, 0},
                        "logits of row " + std::to_string(j * S + k));
}
