// tests/test_layers.cpp: every CPU layer's backward against finite differences
// of its forward, in double (docs/design.md sections 2.2, 3 and 12), plus the optimizer pieces
// and gemm (its plain loops, in double) against a naive loop.
//   g++ -std=c++17 -O2 -march=native -fopenmp -Wall -Wextra -I. tests/test_layers.cpp -o /tmp/test_layers
//
// Layer checks use the scalar L = sum(out * R) for a fixed random R, so the
// backward pass is called with dout = R. Every input and every parameter is
// checked (relative error < 1e-6, see gradcheck.h for the measure). Backward
// functions accumulate (+=) into dinp and parameter grads: each layer is also
// run with random nonzero gradient buffers G0 and must return G0 + grad.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "cpu/adamw.h"
#include "cpu/attention.h"
#include "cpu/crossentropy.h"
#include "cpu/encoder.h"
#include "cpu/ffn.h"
#include "cpu/gelu.h"
#include "cpu/layernorm.h"
#include "cpu/matmul.h"
#include "cpu/mot.h"
#include "cpu/residual.h"
#include "tests/close.h"
#include "tests/gradcheck.h"
#include "tests/rng.h"

using Vec = std::vector<double>;
static const double NaN = std::numeric_limits<double>::quiet_NaN();

// Runs backward() with every buffer of `bufs` zeroed and returns the results
// (the gradients). Then runs it again with the buffers holding random values
// G0 and checks that each buffer ends up as G0 + gradient: backward adds.
static std::vector<Vec> grads_and_check_accumulation(const char* layer, const std::vector<Vec*>& bufs,
                                                     const std::function<void()>& backward) {
    for (Vec* b : bufs) std::fill(b->begin(), b->end(), 0.0);
    backward();
    std::vector<Vec> fresh;
    for (Vec* b : bufs) fresh.push_back(*b);

    TestRng r(12345);
    std::vector<Vec> g0;
    for (Vec* b : bufs) {
        g0.push_back(r.doubles(b->size(), 3.0));
        *b = g0.back();
    }
    backward();
    for (size_t k = 0; k < bufs.size(); k++) {
        for (size_t i = 0; i < g0[k].size(); i++) g0[k][i] += fresh[k][i];  // want: G0 + gradient
        check_close(*bufs[k], g0[k], Tol{0.5e-12, 0.5e-12},  // |got - want| < 1e-12 max(1, |want|)
                    std::string(layer) + ": gradient buffer " + std::to_string(k) + " must be G0 + gradient");
        *bufs[k] = fresh[k];
    }
    return fresh;
}

TEST_CASE("encoder backward matches finite differences for wte and wpe, and accumulates") {
    const int B = 3, T = 4, C = 5, V = 7, Vp = 10, maxT = 6;
    TestRng r(1);
    std::vector<int> tok(B * T);
    for (int& t : tok) t = r.below(V);
    tok[5] = tok[0];  // a token used twice: its wte row must sum both gradients
    tok[11] = tok[0];
    Vec wte = r.doubles((size_t)Vp * C), wpe = r.doubles((size_t)maxT * C);
    Vec out(B * T * C), R = r.doubles(out.size());
    auto loss = [&] {
        encoder_forward(out.data(), tok.data(), wte.data(), wpe.data(), B, T, C);
        return dot(out, R);
    };
    loss();
    Vec dwte(wte.size()), dwpe(wpe.size());
    grads_and_check_accumulation("encoder", {&dwte, &dwpe}, [&] {
        encoder_backward(dwte.data(), dwpe.data(), R.data(), tok.data(), B, T, C);
    });
    CHECK_GRAD("wte", loss, wte, dwte);
    CHECK_GRAD("wpe", loss, wpe, dwpe);
}

TEST_CASE("layernorm backward matches finite differences for input, weight and bias, and accumulates") {
    const int B = 2, T = 3, C = 7;
    TestRng r(2);
    Vec inp(B * T * C);
    for (int i = 0; i < B * T; i++)  // rows with different means and spreads
        for (int c = 0; c < C; c++) inp[i * C + c] = 0.5 * (i - 2) + (0.5 + 0.3 * i) * r.sym();
    Vec w = r.doubles(C, 0.5, 1.0), b = r.doubles(C);
    Vec out(inp.size()), mean(B * T), rstd(B * T), R = r.doubles(out.size());
    auto loss = [&] {
        layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), w.data(), b.data(), B, T, C);
        return dot(out, R);
    };
    loss();
    Vec dinp(inp.size()), dw(C), db(C);
    grads_and_check_accumulation("layernorm", {&dinp, &dw, &db}, [&] {
        layernorm_backward(dinp.data(), dw.data(), db.data(), R.data(), inp.data(), w.data(), mean.data(),
                           rstd.data(), B, T, C);
    });
    CHECK_GRAD("inp", loss, inp, dinp);
    CHECK_GRAD("weight", loss, w, dw);
    CHECK_GRAD("bias", loss, b, db);
}

TEST_CASE("matmul backward matches finite differences, with and without bias, and accumulates") {
    const int B = 2, T = 3, C = 5, OC = 4;
    for (bool with_bias : {true, false}) {
        CAPTURE(with_bias);
        TestRng r(3 + with_bias);
        Vec inp = r.doubles(B * T * C), w = r.doubles(OC * C), b = r.doubles(OC);
        Vec out(B * T * OC), R = r.doubles(out.size());
        auto loss = [&] {
            matmul_forward(out.data(), inp.data(), w.data(), with_bias ? b.data() : nullptr, B, T, C, OC);
            return dot(out, R);
        };
        loss();
        Vec dinp(inp.size()), dw(w.size()), db(OC);
        std::vector<Vec*> bufs = {&dinp, &dw};
        if (with_bias) bufs.push_back(&db);
        grads_and_check_accumulation("matmul", bufs, [&] {
            matmul_backward(dinp.data(), dw.data(), with_bias ? db.data() : nullptr, R.data(), inp.data(),
                            w.data(), B, T, C, OC);
        });
        CHECK_GRAD("inp", loss, inp, dinp);
        CHECK_GRAD("weight", loss, w, dw);
        if (with_bias) CHECK_GRAD("bias", loss, b, db);
    }
}

TEST_CASE("attention backward matches finite differences (T not a power of 2, several heads), and accumulates") {
    struct Shape { int B, T, C, NH; };
    for (Shape s : {Shape{2, 5, 8, 2}, Shape{1, 7, 9, 3}}) {
        CAPTURE(s.B); CAPTURE(s.T); CAPTURE(s.C); CAPTURE(s.NH);
        TestRng r(4 + s.T);
        Vec inp = r.doubles((size_t)s.B * s.T * 3 * s.C, 1.5);
        Vec out((size_t)s.B * s.T * s.C), R = r.doubles(out.size());
        Vec preatt((size_t)s.B * s.NH * s.T * s.T), att(preatt.size());
        auto loss = [&] {
            attention_forward(out.data(), preatt.data(), att.data(), inp.data(), s.B, s.T, s.C, s.NH);
            return dot(out, R);
        };
        loss();
        Vec dinp(inp.size()), dpreatt(preatt.size()), datt(att.size());
        grads_and_check_accumulation("attention", {&dinp}, [&] {
            std::fill(dpreatt.begin(), dpreatt.end(), NaN);  // scratch: must be written before read
            std::fill(datt.begin(), datt.end(), NaN);
            attention_backward(dinp.data(), dpreatt.data(), datt.data(), R.data(), inp.data(), att.data(),
                               s.B, s.T, s.C, s.NH);
        });
        CHECK_GRAD("qkv", loss, inp, dinp);
    }
}

TEST_CASE("gelu backward matches finite differences, and accumulates") {
    const size_t N = 60;
    TestRng r(5);
    Vec inp = r.doubles(N, 4.0);  // covers the tails and the curved middle
    Vec out(N), R = r.doubles(N);
    auto loss = [&] { gelu_forward(out.data(), inp.data(), N); return dot(out, R); };
    loss();
    Vec dinp(N);
    grads_and_check_accumulation("gelu", {&dinp}, [&] { gelu_backward(dinp.data(), inp.data(), R.data(), N); });
    CHECK_GRAD("inp", loss, inp, dinp);
}

TEST_CASE("gelu is the tanh approximation of docs/design.md section 2.2") {
    for (double x : {-3.0, -0.7, 0.0, 0.3, 1.0, 2.5}) {
        double want = 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
        CHECK(gelu(x) == doctest::Approx(want).epsilon(1e-14));
    }
}

TEST_CASE("residual backward matches finite differences for both inputs, and accumulates") {
    const size_t N = 20;
    TestRng r(6);
    Vec a = r.doubles(N), b = r.doubles(N), out(N), R = r.doubles(N);
    auto loss = [&] { residual_forward(out.data(), a.data(), b.data(), N); return dot(out, R); };
    loss();
    Vec da(N), db(N);
    grads_and_check_accumulation("residual", {&da, &db}, [&] {
        residual_backward(da.data(), db.data(), R.data(), N);
    });
    CHECK_GRAD("inp1", loss, a, da);
    CHECK_GRAD("inp2", loss, b, db);
}

TEST_CASE("dense ffn backward matches finite differences for input and all four parameters, and accumulates") {
    const int B = 2, T = 3, C = 5, dff = 7;
    TestRng r(7);
    Vec inp = r.doubles(B * T * C), fcw = r.doubles(dff * C, 0.7), fcb = r.doubles(dff, 0.5);
    Vec fcprojw = r.doubles(C * dff, 0.7), fcprojb = r.doubles(C);
    Vec out(B * T * C), fch(B * T * dff), fch_gelu(fch.size()), R = r.doubles(out.size());
    auto loss = [&] {
        ffn_forward(out.data(), fch.data(), fch_gelu.data(), inp.data(), fcw.data(), fcb.data(), fcprojw.data(),
                    fcprojb.data(), B, T, C, dff);
        return dot(out, R);
    };
    loss();
    Vec dinp(inp.size()), dfcw(fcw.size()), dfcb(dff), dfcprojw(fcprojw.size()), dfcprojb(C);
    Vec dfch(fch.size()), dfch_gelu(fch.size());
    grads_and_check_accumulation("ffn", {&dinp, &dfcw, &dfcb, &dfcprojw, &dfcprojb}, [&] {
        std::fill(dfch.begin(), dfch.end(), 0.0);  // documented: zeroed by the caller
        std::fill(dfch_gelu.begin(), dfch_gelu.end(), 0.0);
        ffn_backward(dinp.data(), dfcw.data(), dfcb.data(), dfcprojw.data(), dfcprojb.data(), dfch.data(),
                     dfch_gelu.data(), R.data(), inp.data(), fch.data(), fch_gelu.data(), fcw.data(),
                     fcprojw.data(), B, T, C, dff);
    });
    CHECK_GRAD("inp", loss, inp, dinp);
    CHECK_GRAD("fcw", loss, fcw, dfcw);
    CHECK_GRAD("fcb", loss, fcb, dfcb);
    CHECK_GRAD("fcprojw", loss, fcprojw, dfcprojw);
    CHECK_GRAD("fcprojb", loss, fcprojb, dfcprojb);
}

struct MotShape { int B, T, C, E, G, f; double tau; const char* what; };

TEST_CASE("mot backward matches finite differences for input, wc, w1, w2 over several shapes, and accumulates") {
    const MotShape shapes[] = {
        {3, 2, 5, 3, 1, 4, 1.0, "G = 1"},
        {4, 3, 6, 3, 4, 5, 1.0, "G = B (one group per position), f odd"},
        {6, 2, 4, 3, 3, 3, 1.0, "1 < G < B (S = 2), f odd"},
        {4, 2, 5, 1, 2, 4, 1.0, "E = 1"},
        {4, 3, 6, 4, 2, 3, 0.5, "tau = 0.5, f odd"},
        {6, 1, 4, 2, 2, 6, 2.5, "tau = 2.5, T = 1, S = 3"},
    };
    for (const MotShape& s : shapes) {
        CAPTURE(s.what);
        const int S = s.B / s.G, BT = s.B * s.T;
        TestRng r(100 + s.B * 7 + s.G * 3 + s.E);
        // controller weights large enough that the mixing weights are far from uniform
        Vec inp = r.doubles((size_t)BT * s.C), wc = r.doubles((size_t)s.E * s.C, 1.0);
        Vec w1 = r.doubles((size_t)s.E * s.f * s.C, 0.8), w2 = r.doubles((size_t)s.E * s.C * s.f, 0.8);
        Vec out((size_t)BT * s.C), R = r.doubles(out.size());
        Vec z((size_t)BT * s.E), m(z.size()), u((size_t)S * s.T * s.E * s.C), p((size_t)S * s.T * s.E * s.f);
        Vec a(p.size()), y(u.size());
        auto loss = [&] {
            mot_forward(out.data(), z.data(), m.data(), u.data(), p.data(), a.data(), y.data(), inp.data(),
                        wc.data(), w1.data(), w2.data(), s.B, s.T, s.C, s.E, s.G, s.f, s.tau);
            return dot(out, R);
        };
        loss();
        Vec dinp(inp.size()), dwc(wc.size()), dw1(w1.size()), dw2(w2.size());
        Vec dz(z.size()), dm(m.size()), du(u.size()), dp(p.size()), da(a.size()), dy(y.size());
        grads_and_check_accumulation("mot", {&dinp, &dwc, &dw1, &dw2}, [&] {
            for (Vec* v : {&dz, &dm, &du, &dp, &da, &dy}) std::fill(v->begin(), v->end(), NaN);  // scratch
            mot_backward(dinp.data(), dwc.data(), dw1.data(), dw2.data(), dz.data(), dm.data(), du.data(),
                         dp.data(), da.data(), dy.data(), R.data(), inp.data(), m.data(), u.data(), p.data(),
                         a.data(), y.data(), wc.data(), w1.data(), w2.data(), s.B, s.T, s.C, s.E, s.G, s.f,
                         s.tau);
        });
        CHECK_GRAD("inp", loss, inp, dinp);
        if (s.G > 1) {
            CHECK_GRAD("wc", loss, wc, dwc);
        } else {  // one member per group: M = 1 whatever wc is, so wc gets no gradient
            GradCheckResult g = gradcheck(loss, wc.data(), wc.size(), dwc.data());
            CHECK(g.worst < 1e-6);
            for (double d : dwc) CHECK(d == 0.0);
        }
        CHECK_GRAD("w1", loss, w1, dw1);
        CHECK_GRAD("w2", loss, w2, dw2);
    }
}

TEST_CASE("crossentropy backward matches finite differences; padded logits get no probability and no gradient") {
    const int B = 2, T = 3, V = 5, Vp = 8;
    TestRng r(8);
    Vec logits = r.doubles((size_t)B * T * Vp, 2.0);
    for (int i = 0; i < B * T; i++)
        for (int v = V; v < Vp; v++) logits[(size_t)i * Vp + v] = 40.0 + v;  // would dominate if counted
    std::vector<int> targets(B * T);
    for (int& t : targets) t = r.below(V);
    Vec losses(B * T), probs(logits.size()), R = r.doubles(B * T);
    auto loss = [&] {
        crossentropy_forward(losses.data(), probs.data(), logits.data(), targets.data(), B, T, V, Vp);
        return dot(losses, R);
    };
    loss();
    for (int i = 0; i < B * T; i++) {  // forward vs the plain formula over the first V logits
        const double* z = logits.data() + (size_t)i * Vp;
        double sum = 0;
        for (int v = 0; v < V; v++) sum += std::exp(z[v]);
        CHECK(losses[i] == doctest::Approx(-std::log(std::exp(z[targets[i]]) / sum)).epsilon(1e-13));
        for (int v = 0; v < V; v++) CHECK(probs[(size_t)i * Vp + v] == doctest::Approx(std::exp(z[v]) / sum).epsilon(1e-13));
        for (int v = V; v < Vp; v++) CHECK(probs[(size_t)i * Vp + v] == 0.0);
    }
    Vec dlogits(logits.size());
    grads_and_check_accumulation("crossentropy", {&dlogits}, [&] {
        crossentropy_backward(dlogits.data(), R.data(), probs.data(), targets.data(), B, T, V, Vp);
    });
    for (int i = 0; i < B * T; i++)
        for (int v = V; v < Vp; v++) CHECK(dlogits[(size_t)i * Vp + v] == 0.0);
    CHECK_GRAD("logits", loss, logits, dlogits);
}

TEST_CASE("distillation: distill_backward and crossentropy_backward give the gradient of (1 - w) CE + w KL(q || p)") {
    const int B = 2, T = 3, V = 5, Vp = 8;
    TestRng r(18);
    Vec logits = r.doubles((size_t)B * T * Vp, 2.0), teacher_logits = r.doubles(logits.size(), 2.0);
    std::vector<int> targets(B * T);
    for (int& t : targets) t = r.below(V);
    Vec losses(B * T), probs(logits.size()), q(logits.size()), qlosses(B * T), R = r.doubles(B * T);
    crossentropy_forward(qlosses.data(), q.data(), teacher_logits.data(), targets.data(), B, T, V, Vp);
    for (double w : {0.5, 1.0}) {
        // the objective, sum_i R_i [(1 - w) CE_i + w sum_v q log(q / p)], from the probabilities as written
        auto loss = [&] {
            crossentropy_forward(losses.data(), probs.data(), logits.data(), targets.data(), B, T, V, Vp);
            double total = 0;
            for (int i = 0; i < B * T; i++) {
                double kl = 0;
                for (int v = 0; v < V; v++) {
                    size_t j = (size_t)i * Vp + v;
                    kl += q[j] * (std::log(q[j]) - std::log(probs[j]));
                }
                total += R[i] * ((1 - w) * losses[i] + w * kl);
            }
            return total;
        };
        loss();
        Vec dlogits(logits.size());
        grads_and_check_accumulation("distill", {&dlogits}, [&] {
            distill_backward(dlogits.data(), R.data(), q.data(), targets.data(), w, B, T, V, Vp);
            crossentropy_backward(dlogits.data(), R.data(), probs.data(), targets.data(), B, T, V, Vp);
        });
        for (int i = 0; i < B * T; i++)
            for (int v = V; v < Vp; v++) CHECK(dlogits[(size_t)i * Vp + v] == 0.0);
        CHECK_GRAD("logits", loss, logits, dlogits);
    }
}

TEST_CASE("grad_norm_squared and clip_scale follow the clipping formula") {
    TestRng r(9);
    for (double scale : {0.01, 3.0}) {
        Vec g = r.doubles(37, scale);
        double want = 0;
        for (double x : g) want += x * x;
        double nsq = grad_norm_squared(g.data(), g.size());
        CHECK(nsq == doctest::Approx(want).epsilon(1e-14));
        double norm = std::sqrt(nsq);
        for (double clip : {0.0, -1.0, 0.5 * norm, norm, 2.0 * norm}) {
            CAPTURE(scale); CAPTURE(clip);
            double factor = (clip > 0 && norm > clip) ? clip / norm : 1.0;
            CHECK(clip_scale(norm, clip) == doctest::Approx(factor).epsilon(1e-7));
            Vec c = g;
            for (double& x : c) x *= clip_scale(norm, clip);
            if (clip > 0 && norm > clip)  // clipped to norm clip (to float precision: the factor is a float)
                CHECK(std::sqrt(grad_norm_squared(c.data(), c.size())) == doctest::Approx(clip).epsilon(1e-7));
        }
    }
    CHECK(clip_scale(5.0, 1.0) == 0.2f);  // float path: norm 5 clipped to 1
    CHECK(clip_scale(0.5, 1.0) == 1.0f);  // below the threshold: exactly 1, the gradient unchanged
}

// The AdamW step of docs/design.md section 4.3 written out for one scalar, in double.
static void adamw_scalar(double& p, double g, double& m, double& v, double lr, double b1, double b2, double eps,
                         double wd, int t) {
    m = b1 * m + (1 - b1) * g;
    v = b2 * v + (1 - b2) * g * g;
    double mhat = m / (1 - std::pow(b1, t)), vhat = v / (1 - std::pow(b2, t));
    p = p - lr * (mhat / (std::sqrt(vhat) + eps) + wd * p);
}

TEST_CASE("adamw_update matches the scalar AdamW formula over several steps, in double and float, and "
          "zeroes the gradients") {
    const size_t n = 9;
    const float lr = 0.01f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f;
    for (float wd : {0.0f, 0.1f}) {
        CAPTURE(wd);
        TestRng r(10);
        Vec p = r.doubles(n), m(n, 0.0), v(n, 0.0);
        std::vector<float> pf(p.begin(), p.end()), mf(n, 0.0f), vf(n, 0.0f);
        Vec pr = p, mr = m, vr = v;  // reference state
        for (int t = 1; t <= 5; t++) {
            Vec g = r.doubles(n, t == 3 ? 100.0 : 0.5);
            g[0] = 0.0;  // a parameter that never sees a gradient: only weight decay moves it
            std::vector<float> gf(g.begin(), g.end());
            const Vec g0 = g;
            // grad_scale 0.5 halves the gradient the update sees (clipping)
            adamw_update(p.data(), g.data(), m.data(), v.data(), n, lr, b1, b2, eps, wd, t, 0.5);
            adamw_update(pf.data(), gf.data(), mf.data(), vf.data(), n, lr, b1, b2, eps, wd, t, 0.5f);
            for (size_t i = 0; i < n; i++)  // the float-rounded hyperparameters are what the function gets
                adamw_scalar(pr[i], 0.5 * g0[i], mr[i], vr[i], lr, b1, b2, eps, wd, t);
            CHECK(g == Vec(n, 0.0));  // the update consumes the gradients: zero for the next step
            CHECK(gf == std::vector<float>(n, 0.0f));
            for (size_t i = 0; i < n; i++) {
                CAPTURE(t); CAPTURE(i);
                CHECK(p[i] == doctest::Approx(pr[i]).epsilon(1e-13));
                CHECK(m[i] == doctest::Approx(mr[i]).epsilon(1e-13));
                CHECK(v[i] == doctest::Approx(vr[i]).epsilon(1e-13));
                // float: p moves by ~lr per step; its rounding is ~1e-7 of |p|
                CHECK(std::fabs(pf[i] - pr[i]) <= 1e-6 * std::max(1.0, std::fabs(pr[i])));
            }
        }
        if (wd == 0.0f) CHECK(p[0] == pr[0]);
    }
}

// C = alpha op(A) op(B) + beta C by the definition, one element at a time.
static void naive_gemm(bool tA, bool tB, int M, int N, int K, double alpha, const Vec& A, long lda, long sA,
                       const Vec& Bm, long ldb, long sB, double beta, Vec& C, long ldc, long sC, int batch) {
    for (int bi = 0; bi < batch; bi++)
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double acc = 0;
                for (int k = 0; k < K; k++)
                    acc += (tA ? A[bi * sA + k * lda + i] : A[bi * sA + i * lda + k]) *
                           (tB ? Bm[bi * sB + j * ldb + k] : Bm[bi * sB + k * ldb + j]);
                double& c = C[bi * sC + i * ldc + j];
                c = alpha * acc + (beta == 0 ? 0.0 : beta * c);
            }
}

TEST_CASE("gemm matches a naive loop for all transposes, strides and batches") {
    const int M = 5, N = 3, K = 4, batch = 3;
    TestRng r(11);
    for (int tA = 0; tA < 2; tA++)
        for (int tB = 0; tB < 2; tB++)
            for (double beta : {0.0, 0.5}) {
                CAPTURE(tA); CAPTURE(tB); CAPTURE(beta);
                long lda = (tA ? M : K) + 2, ldb = (tB ? K : N) + 1, ldc = N + 3;
                long sA = (tA ? K : M) * lda + 5, sB = (tB ? N : K) * ldb + 2, sC = M * ldc + 4;
                Vec A = r.doubles(sA * batch), Bm = r.doubles(sB * batch), C = r.doubles(sC * batch);
                if (beta == 0)  // beta == 0 must never read C
                    for (int bi = 0; bi < batch; bi++)
                        for (int i = 0; i < M; i++)
                            for (int j = 0; j < N; j++) C[bi * sC + i * ldc + j] = NaN;
                Vec want = C, got = C;
                naive_gemm(tA, tB, M, N, K, 1.5, A, lda, sA, Bm, ldb, sB, beta, want, ldc, sC, batch);
                gemm(tA, tB, M, N, K, 1.5, A.data(), lda, sA, Bm.data(), ldb, sB, beta, got.data(), ldc, sC, batch);
                check_close(got, want, Tol{0.5e-13, 0.5e-13}, "gemm");  // < 1e-13 max(1, |want|)
                long touched = 0;  // the padding (finite: only C itself holds NaN) exactly as it was
                for (size_t i = 0; i < C.size(); i++)
                    if ((long)(i % sC) >= M * ldc || (long)(i % sC) % ldc >= N) touched += got[i] != C[i];
                CHECK(touched == 0);
            }
    // the unbatched overload
    Vec A = r.doubles(M * K), Bm = r.doubles(K * N), C(M * N, NaN), want(M * N);
    gemm(false, false, M, N, K, 1.0, A.data(), K, Bm.data(), N, 0.0, C.data(), N);
    naive_gemm(false, false, M, N, K, 1.0, A, K, 0, Bm, N, 0, 0.0, want, N, 0, 1);
    check_close(C, want, Tol{0.5e-13, 0.5e-13}, "unbatched gemm");  // < 1e-13 max(1, |want|)
}
