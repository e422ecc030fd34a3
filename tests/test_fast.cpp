// tests/test_fast.cpp: the fast forms of the CPU path (cpu/fast/, the kernel
// set FastKernels of cpu/fast/kernels.h) in float against the reference loops
// of cpu/, which run in double on the same inputs. Odd shapes: T 1, 7, 37; C
// not a multiple of 16; NH 1..4. The batched-GEMM MoT of cpu/fast/mot.h also
// runs in double, against the per-group loops of cpu/mot.h. Then a whole float
// training step of a GPT<float, FastKernels> against the same model on
// PlainKernels, and a second backward on dirty scratch (gpt_backward does not
// zero the scratch blocks), on both sets.
// Each comparison passes when |fast - reference| < abs + rel |reference|
// elementwise (Tol{abs, rel}, tests/close.h).
//   g++ -std=c++17 -O2 -march=native -fopenmp -Wall -Wextra -I. tests/test_fast.cpp -o /tmp/test_fast
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "cpu/fast/kernels.h"
#include "cpu/gpt.h"
#include "tests/close.h"
#include "tests/models.h"
#include "tests/rng.h"

static std::vector<float> to_float(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

TEST_CASE("fast_exp matches std::exp to about one ulp") {
    double worst = 0;
    for (double x = -80; x < 80; x += 0.0137) {
        double e = std::exp((double)(float)x);  // of the float argument
        worst = std::max(worst, std::fabs(fast::fast_exp((float)x) - e) / e);
    }
    CHECK(worst < 4e-7);
    CHECK(fast::fast_exp(-1000.0f) < 1e-37f);
    CHECK(std::isfinite(fast::fast_exp(1000.0f)));
    // non-finite inputs: NaN stays NaN (training must see a NaN loss), and the
    // clamp keeps the exponent arithmetic defined (UBSan runs this in CI)
    CHECK(std::isnan(fast::fast_exp(NAN)));
    CHECK(fast::fast_exp(-INFINITY) < 1e-37f);
    CHECK(fast::fast_exp(INFINITY) > 1e38f);
}

TEST_CASE("gelu forward and backward, fast vs reference") {
    TestRng r(1);
    for (size_t N : {1, 7, 37, 1000, 4099}) {
        std::vector<double> x = r.doubles(N, 9), d = r.doubles(N), y(N), dx = r.doubles(N);
        std::vector<float> xf = to_float(x), df = to_float(d), yf(N), dxf = to_float(dx);
        gelu_forward(y.data(), x.data(), N);
        FastKernels::gelu_forward(yf.data(), xf.data(), N);
        check_close(yf, y, Tol{1e-6, 1e-5}, "gelu");
        gelu_backward(dx.data(), x.data(), d.data(), N);
        FastKernels::gelu_backward(dxf.data(), xf.data(), df.data(), N);
        check_close(dxf, dx, Tol{1e-5, 1e-5}, "gelu backward");  // += onto O(1) values
    }
}

TEST_CASE("layernorm forward and backward, fast vs reference") {
    TestRng r(2);
    for (int C : {1, 5, 24, 37, 130})
        for (int T : {1, 7}) {
            int B = 3, N = B * T;
            std::vector<double> x = r.doubles((size_t)N * C, 2), w = r.doubles(C), bias = r.doubles(C);
            std::vector<double> d = r.doubles((size_t)N * C), out((size_t)N * C), mean(N), rstd(N);
            std::vector<double> dx = r.doubles((size_t)N * C), dw = r.doubles(C), db = r.doubles(C);
            std::vector<float> xf = to_float(x), wf = to_float(w), bf = to_float(bias), df = to_float(d);
            std::vector<float> outf((size_t)N * C), meanf(N), rstdf(N), dxf = to_float(dx), dwf = to_float(dw),
                dbf = to_float(db);
            layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), bias.data(), B, T, C);
            FastKernels::layernorm_forward(outf.data(), meanf.data(), rstdf.data(), xf.data(), wf.data(), bf.data(), B,
                                           T, C);
            check_close(outf, out, Tol{1e-4, 1e-4}, "layernorm");
            layernorm_backward(dx.data(), dw.data(), db.data(), d.data(), x.data(), w.data(), mean.data(), rstd.data(),
                               B, T, C);
            FastKernels::layernorm_backward(dxf.data(), dwf.data(), dbf.data(), df.data(), xf.data(), wf.data(),
                                            meanf.data(), rstdf.data(), B, T, C);
            check_close(dxf, dx, Tol{1e-4, 1e-4}, "layernorm dx");
            check_close(dwf, dw, Tol{1e-4, 1e-4}, "layernorm dw");
            check_close(dbf, db, Tol{1e-4, 1e-4}, "layernorm db");
        }
}

TEST_CASE("matmul_backward in float (fast gemm) vs double") {
    TestRng r(3);
    for (int OC : {1, 17, 64, 100, 768})
        for (int T : {1, 7, 37}) {
            int B = 2, C = 13;
            std::vector<double> dout = r.doubles((size_t)B * T * OC), inp = r.doubles((size_t)B * T * C);
            std::vector<double> w = r.doubles((size_t)OC * C), dinp = r.doubles((size_t)B * T * C);
            std::vector<double> dw = r.doubles((size_t)OC * C), db = r.doubles(OC);
            std::vector<float> doutf = to_float(dout), inpf = to_float(inp), wf = to_float(w), dinpf = to_float(dinp),
                               dwf = to_float(dw), dbf = to_float(db);
            matmul_backward(dinp.data(), dw.data(), db.data(), dout.data(), inp.data(), w.data(), B, T, C, OC);
            FastKernels::matmul_backward(dinpf.data(), dwf.data(), dbf.data(), doutf.data(), inpf.data(), wf.data(), B,
                                         T, C, OC);
            check_close(dinpf, dinp, Tol{1e-4, 1e-4}, "dinp");
            check_close(dwf, dw, Tol{1e-4, 1e-4}, "dweight");
            check_close(dbf, db, Tol{1e-4, 1e-4}, "dbias");
        }
}

TEST_CASE("attention forward and backward, fast vs reference") {
    TestRng r(4);
    struct S { int B, T, C, NH; };
    for (S s : {S{2, 1, 8, 1}, S{2, 7, 12, 2}, S{1, 37, 20, 4}, S{3, 37, 36, 3}, S{2, 64, 64, 4}}) {
        INFO("B " << s.B << " T " << s.T << " C " << s.C << " NH " << s.NH);
        size_t BT = (size_t)s.B * s.T, TT = (size_t)s.B * s.NH * s.T * s.T;
        std::vector<double> qkv = r.doubles(BT * 3 * s.C, 2), d = r.doubles(BT * s.C);
        std::vector<double> out(BT * s.C), pre(TT), att(TT), dpre(TT), datt(TT), dqkv = r.doubles(BT * 3 * s.C);
        std::vector<float> qkvf = to_float(qkv), df = to_float(d), outf(BT * s.C), pref(TT, 7.f), attf(TT, 7.f),
                           dpref(TT, 7.f), dattf(TT, 7.f), dqkvf = to_float(dqkv);
        attention_forward(out.data(), pre.data(), att.data(), qkv.data(), s.B, s.T, s.C, s.NH);
        FastKernels::attention_forward(outf.data(), pref.data(), attf.data(), qkvf.data(), s.B, s.T, s.C, s.NH);
        check_close(outf, out, Tol{1e-5, 1e-4}, "attention out");
        check_close(pref, pre, Tol{1e-5, 1e-4}, "preatt");
        check_close(attf, att, Tol{1e-6, 1e-4}, "att");
        attention_backward(dqkv.data(), dpre.data(), datt.data(), d.data(), qkv.data(), att.data(), s.B, s.T, s.C,
                           s.NH);
        FastKernels::attention_backward(dqkvf.data(), dpref.data(), dattf.data(), df.data(), qkvf.data(), attf.data(),
                                        s.B, s.T, s.C, s.NH);
        check_close(dqkvf, dqkv, Tol{1e-5, 1e-4}, "attention dinp");
    }
}

TEST_CASE("crossentropy forward, fast vs reference") {
    TestRng r(5);
    for (int V : {1, 11, 37, 1000}) {
        int Vp = (V + 63) / 64 * 64, B = 2, T = 7;
        std::vector<double> z = r.doubles((size_t)B * T * Vp, 30), loss(B * T), p((size_t)B * T * Vp);
        std::vector<float> zf = to_float(z), lossf(B * T), pf((size_t)B * T * Vp);
        std::vector<int> tgt(B * T);
        for (int& t : tgt) t = r.below(V);
        crossentropy_forward(loss.data(), p.data(), z.data(), tgt.data(), B, T, V, Vp);
        FastKernels::crossentropy_forward(lossf.data(), pf.data(), zf.data(), tgt.data(), B, T, V, Vp);
        check_close(lossf, loss, Tol{1e-5, 1e-5}, "loss");
        check_close(pf, p, Tol{1e-9, 1e-5}, "probs");
    }
}

TEST_CASE("dense ffn and mot forward and backward, fast vs reference") {
    TestRng r(6);
    for (int T : {1, 7}) {
        int B = 4, C = 20, dff = 24, E = 3, G = 2, f = 12, S = B / G;
        size_t BT = (size_t)B * T;
        // dense
        std::vector<double> x = r.doubles(BT * C), fcw = r.doubles((size_t)dff * C), fcb = r.doubles(dff);
        std::vector<double> pw = r.doubles((size_t)C * dff), pb = r.doubles(C), d = r.doubles(BT * C);
        std::vector<double> out(BT * C), h(BT * dff), hg(BT * dff), dh(BT * dff), dhg(BT * dff), dx(BT * C);
        std::vector<double> dfcw((size_t)dff * C), dfcb(dff), dpw((size_t)C * dff), dpb(C);
        std::vector<float> xf = to_float(x), fcwf = to_float(fcw), fcbf = to_float(fcb), pwf = to_float(pw),
                           pbf = to_float(pb), df = to_float(d);
        std::vector<float> outf(BT * C), hf(BT * dff), hgf(BT * dff), dhf(BT * dff), dhgf(BT * dff), dxf(BT * C);
        std::vector<float> dfcwf((size_t)dff * C), dfcbf(dff), dpwf((size_t)C * dff), dpbf(C);
        ffn_forward(out.data(), h.data(), hg.data(), x.data(), fcw.data(), fcb.data(), pw.data(), pb.data(), B, T, C, dff);
        ffn_forward<FastKernels>(outf.data(), hf.data(), hgf.data(), xf.data(), fcwf.data(), fcbf.data(), pwf.data(),
                                 pbf.data(), B, T, C, dff);
        check_close(outf, out, Tol{1e-4, 1e-4}, "ffn out");
        ffn_backward(dx.data(), dfcw.data(), dfcb.data(), dpw.data(), dpb.data(), dh.data(), dhg.data(), d.data(),
                     x.data(), h.data(), hg.data(), fcw.data(), pw.data(), B, T, C, dff);
        ffn_backward<FastKernels>(dxf.data(), dfcwf.data(), dfcbf.data(), dpwf.data(), dpbf.data(), dhf.data(),
                                  dhgf.data(), df.data(), xf.data(), hf.data(), hgf.data(), fcwf.data(), pwf.data(), B,
                                  T, C, dff);
        check_close(dxf, dx, Tol{1e-4, 1e-4}, "ffn dinp");
        check_close(dfcwf, dfcw, Tol{1e-4, 1e-4}, "dfcw");
        check_close(dfcbf, dfcb, Tol{1e-4, 1e-4}, "dfcb");
        check_close(dpwf, dpw, Tol{1e-4, 1e-4}, "dfcprojw");
        check_close(dpbf, dpb, Tol{1e-4, 1e-4}, "dfcprojb");
        // mot
        size_t nu = (size_t)S * T * E * C, np = (size_t)S * T * E * f;
        std::vector<double> wc = r.doubles((size_t)E * C), w1 = r.doubles((size_t)E * f * C),
                            w2 = r.doubles((size_t)E * C * f);
        std::vector<double> z(BT * E), m(BT * E), u(nu), p(np), a(np), y(nu), dm(BT * E), dz(BT * E), du(nu),
            dp(np), da(np), dy(nu), dwc((size_t)E * C), dw1((size_t)E * f * C), dw2((size_t)E * C * f);
        std::vector<float> wcf = to_float(wc), w1f = to_float(w1), w2f = to_float(w2);
        std::vector<float> zf(BT * E), mf(BT * E), uf(nu), pf(np), af(np), yf(nu), dmf(BT * E), dzf(BT * E),
            duf(nu), dpf(np), daf(np), dyf(nu), dwcf((size_t)E * C), dw1f((size_t)E * f * C),
            dw2f((size_t)E * C * f);
        std::fill(dx.begin(), dx.end(), 0.0);
        std::fill(dxf.begin(), dxf.end(), 0.0f);
        mot_forward(out.data(), z.data(), m.data(), u.data(), p.data(), a.data(), y.data(), x.data(), wc.data(),
                    w1.data(), w2.data(), B, T, C, E, G, f, 1.0);
        FastKernels::mot_forward(outf.data(), zf.data(), mf.data(), uf.data(), pf.data(), af.data(), yf.data(),
                                 xf.data(), wcf.data(), w1f.data(), w2f.data(), B, T, C, E, G, f, 1.0f);
        check_close(outf, out, Tol{1e-4, 1e-4}, "mot out");
        mot_backward(dx.data(), dwc.data(), dw1.data(), dw2.data(), dz.data(), dm.data(), du.data(), dp.data(),
                     da.data(), dy.data(), d.data(), x.data(), m.data(), u.data(), p.data(), a.data(), y.data(),
                     wc.data(), w1.data(), w2.data(), B, T, C, E, G, f, 1.0);
        FastKernels::mot_backward(dxf.data(), dwcf.data(), dw1f.data(), dw2f.data(), dzf.data(), dmf.data(),
                                  duf.data(), dpf.data(), daf.data(), dyf.data(), df.data(), xf.data(), mf.data(),
                                  uf.data(), pf.data(), af.data(), yf.data(), wcf.data(), w1f.data(), w2f.data(), B, T,
                                  C, E, G, f, 1.0f);
        check_close(dxf, dx, Tol{1e-3, 1e-3}, "mot dinp");
        check_close(dwcf, dwc, Tol{1e-3, 1e-3}, "dwc");
        check_close(dw1f, dw1, Tol{1e-3, 1e-3}, "dw1");
        check_close(dw2f, dw2, Tol{1e-3, 1e-3}, "dw2");
    }
}

TEST_CASE("mot: the batched GEMMs of cpu/fast/mot.h equal the per-group loops of cpu/mot.h, in double") {
    // every output, activation and gradient, scratch included (each is a
    // defined quantity: dM after merge and emit, dZ, dU, dP, dA, dY)
    struct S { int B, T, C, E, G, f; double tau; };
    for (S s : {S{4, 3, 7, 3, 2, 5, 1.0},    // odd sizes
                S{3, 2, 5, 4, 1, 3, 1.0},    // G = 1: a dense FFN of width E*f
                S{6, 2, 5, 3, 6, 4, 0.7},    // G = B: one group per position
                S{6, 3, 9, 1, 3, 6, 1.0},    // E = 1
                S{8, 5, 11, 5, 4, 7, 2.5}})  // tau != 1
    {
        INFO("B " << s.B << " T " << s.T << " C " << s.C << " E " << s.E << " G " << s.G << " f " << s.f << " tau "
                  << s.tau);
        TestRng r(100 + s.B * 10 + s.G);
        const int B = s.B, T = s.T, C = s.C, E = s.E, G = s.G, f = s.f;
        const size_t BT = (size_t)B * T, nu = (size_t)(B / G) * T * E * C, np = (size_t)(B / G) * T * E * f;
        std::vector<double> x = r.doubles(BT * C), d = r.doubles(BT * C), wc = r.doubles((size_t)E * C),
                            w1 = r.doubles((size_t)E * f * C), w2 = r.doubles((size_t)E * C * f);
        struct Run {  // one call of forward + backward, every buffer its own
            std::vector<double> out, z, m, u, p, a, y, dx, dwc, dw1, dw2, dz, dm, du, dp, da, dy;
        };
        Run plain, fast;
        for (Run* q : {&plain, &fast}) {
            q->out.assign(BT * C, 0); q->z.assign(BT * E, 0); q->m = q->z; q->u.assign(nu, 0); q->y = q->u;
            q->p.assign(np, 0); q->a = q->p;
            q->dx.assign(BT * C, 0.5);  // the backward adds into dinp and the parameter gradients
            q->dwc.assign(wc.size(), 0.25); q->dw1.assign(w1.size(), -0.5); q->dw2.assign(w2.size(), 0.125);
            q->dz.assign(BT * E, NAN); q->dm = q->dz; q->du.assign(nu, NAN); q->dy = q->du;  // overwritten
            q->dp.assign(np, NAN); q->da = q->dp;
        }
        auto run = [&](Run& q, auto forward, auto backward) {
            forward(q.out.data(), q.z.data(), q.m.data(), q.u.data(), q.p.data(), q.a.data(), q.y.data(), x.data(),
                    wc.data(), w1.data(), w2.data(), B, T, C, E, G, f, s.tau, false);
            backward(q.dx.data(), q.dwc.data(), q.dw1.data(), q.dw2.data(), q.dz.data(), q.dm.data(), q.du.data(),
                     q.dp.data(), q.da.data(), q.dy.data(), d.data(), x.data(), q.m.data(), q.u.data(), q.p.data(),
                     q.a.data(), q.y.data(), wc.data(), w1.data(), w2.data(), B, T, C, E, G, f, s.tau);
        };
        run(plain, mot_forward<double>, mot_backward<double>);
        run(fast, fast::mot_forward<double>, fast::mot_backward<double>);
        auto named = [](Run& q) {
            return std::vector<std::pair<const char*, std::vector<double>*>>{
                {"out", &q.out}, {"z", &q.z},     {"m", &q.m},     {"u", &q.u},     {"p", &q.p},   {"a", &q.a},
                {"y", &q.y},     {"dinp", &q.dx}, {"dwc", &q.dwc}, {"dw1", &q.dw1}, {"dw2", &q.dw2},
                {"dz", &q.dz},   {"dm", &q.dm},   {"du", &q.du},   {"dp", &q.dp},   {"da", &q.da}, {"dy", &q.dy}};
        };
        auto want = named(plain), got = named(fast);
        for (size_t i = 0; i < want.size(); i++) {
            // |got - want| < 1e-12 max(1, |want|): about the last bits of double for values of order 1
            check_close(*got[i].second, *want[i].second, Tol{0.5e-12, 0.5e-12}, want[i].first);
        }
        double mag = 0;  // the layer did something
        for (double v : plain.out) mag = std::max(mag, std::fabs(v));
        CHECK(mag > 1e-3);
    }
}

// one step: forward, zero_grad, backward, clip, AdamW; returns the loss and
// the step's gradients in *grads (taken before the update, which consumes them)
template <typename Kernels>
static double train_step(GPT<float, Kernels>* m, const std::vector<int>& inp, const std::vector<int>& tgt, int B,
                         int T, int step, std::vector<float>* grads) {
    gpt_forward(m, inp.data(), tgt.data(), B, T);
    gpt_zero_grad(m);
    gpt_backward(m);
    *grads = m->grads_memory;
    gpt_update(m, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, step, clip_scale(gpt_grad_norm(m), 1.0));
    return m->mean_loss;
}

TEST_CASE("whole model: a float step with fast kernels matches the reference path") {
    Config c = odd_config();
    int B = 4, T = 7;
    TestRng r(7);
    std::vector<int> inp = r.tokens(B * T, c.V), tgt = r.tokens(B * T, c.V);
    GPT<float, FastKernels> fast;
    GPT<float, PlainKernels> ref;
    auto build = [&](auto* m) {
        gpt_build(m, c);
        gpt_init_weights(m, 99);
        for (float& p : m->params_memory) p *= 5;  // wider than the init, so layers are not near-linear
    };
    build(&fast);
    build(&ref);
    for (int step = 0; step < 3; step++) {
        std::vector<float> gref, gfast;
        double lr = train_step(&ref, inp, tgt, B, T, step, &gref);
        double lf = train_step(&fast, inp, tgt, B, T, step, &gfast);
        CHECK(lf == doctest::Approx(lr).epsilon(1e-5));
        // the fast set ran its own forms, not the loops: their rounding shows
        CHECK(gfast != gref);
        // Some gradients are zero in exact arithmetic (the key bias: softmax
        // ignores a per-row constant) and rounding noise in float, so the
        // absolute tolerance is relative to the largest gradient.
        check_close(gfast, gref, Tol{1e-4 * max_abs(gref), 1e-3}, "gradients");
        // AdamW turns such noise into steps of up to lr each way: 2 lr per step
        check_close(fast.params_memory, ref.params_memory, Tol{2e-3 * (step + 1), 1e-4}, "parameters after the update");
    }
}

// gpt_backward zeroes only the activation gradients it accumulates into; the
// scratch it skips is left from the last call and must not leak in.
template <typename Kernels>
static void check_dirty_scratch() {
    Config c = odd_config();
    int B = 4, T = 7;
    TestRng r(8);
    std::vector<int> inp = r.tokens(B * T, c.V), tgt = r.tokens(B * T, c.V);
    GPT<float, Kernels> m;
    gpt_build(&m, c);
    gpt_init_weights(&m, 5);
    gpt_forward(&m, inp.data(), tgt.data(), B, T);
    gpt_zero_grad(&m);
    gpt_backward(&m);
    std::vector<float> first = m.grads_memory;
    for (float& x : m.grad_acts_memory) x = NAN;  // every activation gradient dirty
    gpt_zero_grad(&m);
    gpt_backward(&m);
    CHECK(m.grads_memory == first);
}

TEST_CASE("whole model: backward on dirty scratch gives the same gradients") {
    check_dirty_scratch<FastKernels>();
    check_dirty_scratch<PlainKernels>();
}
