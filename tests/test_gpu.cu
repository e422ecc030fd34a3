// tests/test_gpu.cu: the GPU path (gpu/*.cuh) against the CPU reference
// (cpu/*.h, float), layer by layer, the whole model, and 10 AdamW steps.
//
//   nvcc -std=c++17 -O2 -arch=native -Xcompiler -fopenmp -I. tests/test_gpu.cu -o test_gpu -lcublas
//
// Without a usable GPU every test case is reported as skipped, with the reason
// (no driver, a driver older than the CUDA runtime, no device, ...) printed
// first and carried in each case's description, and the binary exits 0.
// Two cases run ./train_mot --device cuda (tests/train_checks.h): two runs of
// one command and a resumed run must match byte for byte.
//
// Error measure, per tensor: rel = max_i |gpu_i - cpu_i| / max(max_i |cpu_i|, 1e-30),
// i.e. the largest elementwise difference relative to the tensor's largest
// magnitude (elements near zero in a tensor of large values are held to the
// tensor's scale, not their own). Every check needs rel < 1e-4, fp32 with TF32
// off. NaN anywhere counts as infinite error. Inputs are fresh random values
// from common/rng.h with fixed seeds.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "common/rng.h"
#include "cpu/gpt.h"
#include "train/model.h"
#include "tests/train_checks.h"

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

static std::vector<float> rand_vec(Rng* rng, size_t n, float scale = 1.0f) {
    std::vector<float> v(n);
    for (float& x : v) x = scale * (2.0f * rng_uniform(rng) - 1.0f);
    return v;
}

static std::vector<int> rand_tokens(Rng* rng, size_t n, int V) {
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

static double rel_err(const float* gpu, const float* cpu, size_t n) {
    double maxdiff = 0, maxref = 0;
    for (size_t i = 0; i < n; i++) {
        double d = std::fabs((double)gpu[i] - (double)cpu[i]);
        if (std::isnan(gpu[i]) || std::isnan(cpu[i]) || std::isinf(gpu[i])) return INFINITY;
        maxdiff = std::max(maxdiff, d);
        maxref = std::max(maxref, std::fabs((double)cpu[i]));
    }
    return maxdiff / std::max(maxref, 1e-30);
}

static void check_close(const std::vector<float>& gpu, const std::vector<float>& cpu, const std::string& what) {
    REQUIRE(gpu.size() == cpu.size());
    double e = rel_err(gpu.data(), cpu.data(), cpu.size());
    CHECK_MESSAGE(e < TOL, what << ": relative error " << e);
}

static void check_close(const DevF& gpu, const std::vector<float>& cpu, const std::string& what) {
    check_close(gpu.get(), cpu, what);
}
// check_all(tag, {{"out", &d_out, &out}, ...}): check_close on every pair
struct Pair { const char* name; const DevF* gpu; const std::vector<float>* cpu; };
static void check_all(const std::string& tag, std::initializer_list<Pair> pairs) {
    for (const Pair& q : pairs) check_close(*q.gpu, *q.cpu, q.name + tag);
}

GPU_TEST("gpu gemm: all transposes, padded leading dimensions, strided batches") {
    Rng rng = rng_seed(1);
    struct Shape { int M, N, K, batch; };
    for (Shape s : {Shape{1, 1, 1, 1}, Shape{7, 5, 3, 2}, Shape{37, 19, 64, 3}, Shape{128, 96, 33, 1}})
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                int rowsA = ta ? s.K : s.M, colsA = ta ? s.M : s.K;
                int rowsB = tb ? s.N : s.K, colsB = tb ? s.K : s.N;
                long long lda = colsA + 2, ldb = colsB + 3, ldc = s.N + 1;
                long long sA = rowsA * lda + 5, sB = rowsB * ldb + 1, sC = s.M * ldc + 3;
                std::vector<float> A = rand_vec(&rng, sA * s.batch), B = rand_vec(&rng, sB * s.batch);
                std::vector<float> C = rand_vec(&rng, sC * s.batch);
                DevF dA(A), dB(B), dC(C);
                gemm(ta != 0, tb != 0, s.M, s.N, s.K, 0.7f, A.data(), lda, sA, B.data(), ldb, sB, 0.3f,
                     C.data(), ldc, sC, s.batch);
                gpu::gemm(ta != 0, tb != 0, s.M, s.N, s.K, 0.7f, dA.p, lda, sA, dB.p, ldb, sB, 0.3f,
                          dC.p, ldc, sC, s.batch);
                check_close(dC, C, strf("gemm M%d N%d K%d batch%d ta%d tb%d", s.M, s.N, s.K, s.batch, ta, tb));
            }
}

GPU_TEST("gpu matmul forward and backward") {
    Rng rng = rng_seed(2);
    struct Shape { int B, T, C, OC; };
    for (Shape s : {Shape{2, 7, 16, 24}, Shape{3, 37, 64, 96}, Shape{1, 64, 128, 48}, Shape{1, 1, 5, 3},
                    Shape{8, 512, 64, 768}})  // the last: many row chunks in the bias sum
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            size_t BT = (size_t)s.B * s.T;
            std::vector<float> inp = rand_vec(&rng, BT * s.C), w = rand_vec(&rng, (size_t)s.OC * s.C);
            std::vector<float> bias = rand_vec(&rng, s.OC), out(BT * s.OC);
            DevF d_inp(inp), d_w(w), d_bias(bias), d_out(out.size());
            const float* b = with_bias ? bias.data() : nullptr;
            matmul_forward(out.data(), inp.data(), w.data(), b, s.B, s.T, s.C, s.OC);
            gpu::matmul_forward(d_out.p, d_inp.p, d_w.p, with_bias ? d_bias.p : nullptr, s.B, s.T, s.C, s.OC);
            std::string tag = strf(" B%d T%d C%d OC%d bias%d", s.B, s.T, s.C, s.OC, with_bias);
            check_close(d_out, out, "matmul out" + tag);
            std::vector<float> dout = rand_vec(&rng, BT * s.OC);  // gradients start nonzero: += is tested
            std::vector<float> dinp = rand_vec(&rng, BT * s.C), dw = rand_vec(&rng, w.size()), db = rand_vec(&rng, s.OC);
            DevF d_dout(dout), d_dinp(dinp), d_dw(dw), d_db(db);
            matmul_backward(dinp.data(), dw.data(), with_bias ? db.data() : nullptr, dout.data(), inp.data(),
                            w.data(), s.B, s.T, s.C, s.OC);
            gpu::matmul_backward(d_dinp.p, d_dw.p, with_bias ? d_db.p : nullptr, d_dout.p, d_inp.p, d_w.p,
                                 s.B, s.T, s.C, s.OC);
            check_all(tag, {{"matmul dinp", &d_dinp, &dinp}, {"matmul dweight", &d_dw, &dw}, {"matmul dbias", &d_db, &db}});
        }
}

GPU_TEST("gpu encoder forward and backward") {
    Rng rng = rng_seed(3);
    struct Shape { int B, T, C, V, maxT; };
    for (Shape s : {Shape{2, 7, 16, 10, 9}, Shape{3, 37, 48, 5, 40}, Shape{4, 64, 100, 300, 64}}) {
        size_t BT = (size_t)s.B * s.T;
        std::vector<int> tok = rand_tokens(&rng, BT, s.V);  // small V: many repeated rows
        std::vector<float> wte = rand_vec(&rng, (size_t)s.V * s.C), wpe = rand_vec(&rng, (size_t)s.maxT * s.C);
        std::vector<float> out(BT * s.C);
        DevI d_tok(tok);
        DevF d_wte(wte), d_wpe(wpe), d_out(out.size());
        encoder_forward(out.data(), tok.data(), wte.data(), wpe.data(), s.B, s.T, s.C);
        gpu::encoder_forward(d_out.p, d_tok.p, d_wte.p, d_wpe.p, s.B, s.T, s.C);
        std::string tag = strf(" B%d T%d C%d", s.B, s.T, s.C);
        check_close(d_out, out, "encoder out" + tag);
        std::vector<float> dout = rand_vec(&rng, out.size());
        std::vector<float> dwte = rand_vec(&rng, wte.size()), dwpe = rand_vec(&rng, wpe.size());
        DevF d_dout(dout), d_dwte(dwte), d_dwpe(dwpe);
        encoder_backward(dwte.data(), dwpe.data(), dout.data(), tok.data(), s.B, s.T, s.C);
        std::vector<int> packed;
        int n = gpu::token_buckets_build(&packed, tok.data(), BT);
        DevI d_buckets(packed);
        gpu::encoder_backward(d_dwte.p, d_dwpe.p, d_dout.p, gpu::token_buckets(d_buckets.p, n), s.B, s.T, s.C);
        check_all(tag, {{"encoder dwte", &d_dwte, &dwte}, {"encoder dwpe", &d_dwpe, &dwpe}});
        // each sum is added in the CPU's order, so the two agree bit for bit
        CHECK_MESSAGE(d_dwte.get() == dwte, "encoder dwte not bitwise equal to the CPU's" << tag);
        CHECK_MESSAGE(d_dwpe.get() == dwpe, "encoder dwpe not bitwise equal to the CPU's" << tag);
    }
}

GPU_TEST("gpu layernorm forward and backward") {
    Rng rng = rng_seed(4);
    struct Shape { int B, T, C; };
    for (Shape s : {Shape{2, 7, 16}, Shape{3, 37, 100}, Shape{2, 33, 768}, Shape{1, 1, 1}, Shape{8, 256, 768}}) {
        size_t BT = (size_t)s.B * s.T;
        std::vector<float> inp = rand_vec(&rng, BT * s.C, 2.0f), w = rand_vec(&rng, s.C), b = rand_vec(&rng, s.C);
        for (size_t i = 0; i < inp.size(); i++) inp[i] += 0.5f;  // nonzero mean
        std::vector<float> out(BT * s.C), mean(BT), rstd(BT);
        DevF d_inp(inp), d_w(w), d_b(b), d_out(out.size()), d_mean(BT), d_rstd(BT);
        layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), w.data(), b.data(), s.B, s.T, s.C);
        gpu::layernorm_forward(d_out.p, d_mean.p, d_rstd.p, d_inp.p, d_w.p, d_b.p, s.B, s.T, s.C);
        std::string tag = strf(" B%d T%d C%d", s.B, s.T, s.C);
        check_all(tag, {{"layernorm out", &d_out, &out}, {"layernorm mean", &d_mean, &mean},
                        {"layernorm rstd", &d_rstd, &rstd}});
        std::vector<float> dout = rand_vec(&rng, out.size());
        std::vector<float> dinp = rand_vec(&rng, inp.size()), dw = rand_vec(&rng, s.C), db = rand_vec(&rng, s.C);
        DevF d_dout(dout), d_dinp(dinp), d_dw(dw), d_db(db);
        layernorm_backward(dinp.data(), dw.data(), db.data(), dout.data(), inp.data(), w.data(), mean.data(),
                           rstd.data(), s.B, s.T, s.C);
        gpu::layernorm_backward(d_dinp.p, d_dw.p, d_db.p, d_dout.p, d_inp.p, d_w.p, d_mean.p, d_rstd.p,
                                s.B, s.T, s.C);
        check_all(tag, {{"layernorm dinp", &d_dinp, &dinp}, {"layernorm dweight", &d_dw, &dw},
                        {"layernorm dbias", &d_db, &db}});
    }
}

GPU_TEST("gpu gelu and residual forward and backward") {
    Rng rng = rng_seed(5);
    for (size_t n : {(size_t)1, (size_t)259, (size_t)37 * 7 * 3, (size_t)100003}) {
        std::vector<float> x = rand_vec(&rng, n, 4.0f), x2 = rand_vec(&rng, n), out(n);
        DevF d_x(x), d_x2(x2), d_out(n);
        gelu_forward(out.data(), x.data(), n);
        gpu::gelu_forward(d_out.p, d_x.p, n);
        check_close(d_out, out, strf("gelu out n%zu", n));
        std::vector<float> dout = rand_vec(&rng, n), dinp = rand_vec(&rng, n);
        DevF d_dout(dout), d_dinp(dinp);
        gelu_backward(dinp.data(), x.data(), dout.data(), n);
        gpu::gelu_backward(d_dinp.p, d_x.p, d_dout.p, n);
        check_close(d_dinp, dinp, strf("gelu dinp n%zu", n));
        residual_forward(out.data(), x.data(), x2.data(), n);
        gpu::residual_forward(d_out.p, d_x.p, d_x2.p, n);
        check_close(d_out, out, strf("residual out n%zu", n));
        std::vector<float> d1 = rand_vec(&rng, n), d2 = rand_vec(&rng, n);
        DevF d_d1(d1), d_d2(d2);
        residual_backward(d1.data(), d2.data(), dout.data(), n);
        gpu::residual_backward(d_d1.p, d_d2.p, d_dout.p, n);
        check_all(strf(" n%zu", n), {{"residual dinp1", &d_d1, &d1}, {"residual dinp2", &d_d2, &d2}});
    }
}

GPU_TEST("gpu attention forward and backward") {
    Rng rng = rng_seed(6);
    struct Shape { int B, T, C, NH; };
    for (Shape s : {Shape{2, 7, 16, 2}, Shape{1, 37, 64, 4}, Shape{3, 33, 32, 1}, Shape{2, 64, 96, 3}, Shape{1, 1, 8, 2}}) {
        size_t BT = (size_t)s.B * s.T, att_n = (size_t)s.B * s.NH * s.T * s.T;
        std::vector<float> inp = rand_vec(&rng, BT * 3 * s.C, 2.0f);
        std::vector<float> out(BT * s.C), preatt(att_n), att(att_n);
        DevF d_inp(inp), d_out(out.size()), d_preatt(att_n), d_att(att_n);
        attention_forward(out.data(), preatt.data(), att.data(), inp.data(), s.B, s.T, s.C, s.NH);
        gpu::attention_forward(d_out.p, d_preatt.p, d_att.p, d_inp.p, s.B, s.T, s.C, s.NH);
        std::string tag = strf(" B%d T%d C%d NH%d", s.B, s.T, s.C, s.NH);
        check_all(tag, {{"attention out", &d_out, &out}, {"attention preatt", &d_preatt, &preatt},
                        {"attention att", &d_att, &att}});
        std::vector<float> dout = rand_vec(&rng, out.size()), dinp = rand_vec(&rng, inp.size());
        std::vector<float> dpreatt(att_n, 0.0f), datt(att_n, 0.0f);
        DevF d_dout(dout), d_dinp(dinp), d_dpreatt(att_n), d_datt(att_n);
        attention_backward(dinp.data(), dpreatt.data(), datt.data(), dout.data(), inp.data(), att.data(),
                           s.B, s.T, s.C, s.NH);
        gpu::attention_backward(d_dinp.p, d_dpreatt.p, d_datt.p, d_dout.p, d_inp.p, d_att.p, s.B, s.T, s.C, s.NH);
        check_all(tag, {{"attention dinp", &d_dinp, &dinp}, {"attention dpreatt", &d_dpreatt, &dpreatt}});
    }
}

GPU_TEST("gpu crossentropy forward and backward, padded vocabulary") {
    Rng rng = rng_seed(7);
    struct Shape { int B, T, V, Vp; };
    for (Shape s : {Shape{2, 7, 100, 128}, Shape{1, 37, 257, 320}, Shape{2, 5, 1000, 1024}, Shape{3, 3, 64, 64}}) {
        size_t BT = (size_t)s.B * s.T;
        std::vector<float> logits = rand_vec(&rng, BT * s.Vp, 5.0f);
        std::vector<int> targets = rand_tokens(&rng, BT, s.V);
        std::vector<float> losses(BT), probs(BT * s.Vp);
        DevF d_logits(logits), d_losses(BT), d_probs(probs.size());
        DevI d_targets(targets);
        crossentropy_forward(losses.data(), probs.data(), logits.data(), targets.data(), s.B, s.T, s.V, s.Vp);
        gpu::crossentropy_forward(d_losses.p, d_probs.p, d_logits.p, d_targets.p, s.B, s.T, s.V, s.Vp);
        std::string tag = strf(" B%d T%d V%d Vp%d", s.B, s.T, s.V, s.Vp);
        check_close(d_losses, losses, "crossentropy losses" + tag);
        check_close(d_probs, probs, "crossentropy probs" + tag);
        std::vector<float> dlosses = rand_vec(&rng, BT), dlogits = rand_vec(&rng, logits.size());
        DevF d_dlosses(dlosses), d_dlogits(dlogits);
        crossentropy_backward(dlogits.data(), dlosses.data(), probs.data(), targets.data(), s.B, s.T, s.V, s.Vp);
        gpu::crossentropy_backward(d_dlogits.p, d_dlosses.p, d_probs.p, d_targets.p, s.B, s.T, s.V, s.Vp);
        std::vector<float> got = d_dlogits.get();
        check_close(got, dlogits, "crossentropy dlogits" + tag);
        // the padded logits keep exactly their old gradient (no contribution)
        bool pad_untouched = true;
        for (size_t i = 0; i < BT; i++)
            for (int v = s.V; v < s.Vp; v++) pad_untouched &= got[i * s.Vp + v] == dlogits[i * s.Vp + v];
        CHECK_MESSAGE(pad_untouched, "padded logits got a gradient" << tag);
    }
}

GPU_TEST("gpu ffn forward and backward") {
    Rng rng = rng_seed(8);
    struct Shape { int B, T, C, dff; };
    for (Shape s : {Shape{2, 7, 16, 64}, Shape{2, 37, 32, 128}, Shape{1, 5, 48, 40}}) {
        size_t BT = (size_t)s.B * s.T;
        std::vector<float> inp = rand_vec(&rng, BT * s.C);
        std::vector<float> fcw = rand_vec(&rng, (size_t)s.dff * s.C, 0.3f), fcb = rand_vec(&rng, s.dff, 0.3f);
        std::vector<float> pw = rand_vec(&rng, (size_t)s.C * s.dff, 0.3f), pb = rand_vec(&rng, s.C, 0.3f);
        std::vector<float> out(BT * s.C), fch(BT * s.dff), fchg(BT * s.dff);
        DevF d_inp(inp), d_fcw(fcw), d_fcb(fcb), d_pw(pw), d_pb(pb), d_out(out.size()), d_fch(fch.size()),
            d_fchg(fchg.size());
        ffn_forward(out.data(), fch.data(), fchg.data(), inp.data(), fcw.data(), fcb.data(), pw.data(), pb.data(),
                    s.B, s.T, s.C, s.dff);
        gpu::ffn_forward(d_out.p, d_fch.p, d_fchg.p, d_inp.p, d_fcw.p, d_fcb.p, d_pw.p, d_pb.p, s.B, s.T, s.C, s.dff);
        std::string tag = strf(" B%d T%d C%d dff%d", s.B, s.T, s.C, s.dff);
        check_all(tag, {{"ffn out", &d_out, &out}, {"ffn fch", &d_fch, &fch}, {"ffn fch_gelu", &d_fchg, &fchg}});
        std::vector<float> dout = rand_vec(&rng, out.size()), dinp = rand_vec(&rng, inp.size());
        std::vector<float> dfcw = rand_vec(&rng, fcw.size()), dfcb = rand_vec(&rng, fcb.size());
        std::vector<float> dpw = rand_vec(&rng, pw.size()), dpb = rand_vec(&rng, pb.size());
        std::vector<float> dfch(fch.size(), 0.0f), dfchg(fch.size(), 0.0f);
        DevF d_dout(dout), d_dinp(dinp), d_dfcw(dfcw), d_dfcb(dfcb), d_dpw(dpw), d_dpb(dpb), d_dfch(fch.size()),
            d_dfchg(fch.size());
        ffn_backward(dinp.data(), dfcw.data(), dfcb.data(), dpw.data(), dpb.data(), dfch.data(), dfchg.data(),
                     dout.data(), inp.data(), fch.data(), fchg.data(), fcw.data(), pw.data(), s.B, s.T, s.C, s.dff);
        gpu::ffn_backward(d_dinp.p, d_dfcw.p, d_dfcb.p, d_dpw.p, d_dpb.p, d_dfch.p, d_dfchg.p, d_dout.p, d_inp.p,
                          d_fch.p, d_fchg.p, d_fcw.p, d_pw.p, s.B, s.T, s.C, s.dff);
        check_all(tag, {{"ffn dinp", &d_dinp, &dinp}, {"ffn dfcw", &d_dfcw, &dfcw}, {"ffn dfcb", &d_dfcb, &dfcb},
                        {"ffn dfcprojw", &d_dpw, &dpw}, {"ffn dfcprojb", &d_dpb, &dpb}});
    }
}

GPU_TEST("gpu mot forward and backward: G = 1, G = B, E = 1, E = 64, odd T, tau != 1") {
    Rng rng = rng_seed(9);
    struct Shape { int B, T, C, E, G, f; float tau; };
    for (Shape s : {Shape{4, 7, 16, 4, 2, 8, 1.0f}, Shape{3, 5, 32, 8, 1, 16, 1.0f},      // G = 1
                    Shape{4, 37, 32, 8, 4, 16, 0.7f},                                  // G = B
                    Shape{4, 7, 16, 1, 2, 32, 1.0f},                                   // E = 1
                    Shape{8, 5, 32, 64, 4, 8, 1.3f},                                   // E = 64
                    Shape{8, 3, 24, 64, 8, 4, 2.0f},                                   // E = 64, G = B
                    Shape{6, 33, 48, 16, 3, 24, 0.5f}}) {
        const int S = s.B / s.G;
        size_t BT = (size_t)s.B * s.T, ST = (size_t)S * s.T;
        size_t nE = BT * s.E, nU = ST * s.E * s.C, nP = ST * s.E * s.f;
        std::vector<float> inp = rand_vec(&rng, BT * s.C);
        std::vector<float> wc = rand_vec(&rng, (size_t)s.E * s.C, 0.5f);
        std::vector<float> w1 = rand_vec(&rng, (size_t)s.E * s.f * s.C, 0.3f);
        std::vector<float> w2 = rand_vec(&rng, (size_t)s.E * s.C * s.f, 0.3f);
        std::vector<float> out(BT * s.C), z(nE), m(nE), u(nU), p(nP), a(nP), y(nU);
        DevF d_inp(inp), d_wc(wc), d_w1(w1), d_w2(w2), d_out(out.size()), d_z(nE), d_m(nE), d_u(nU), d_p(nP),
            d_a(nP), d_y(nU);
        mot_forward(out.data(), z.data(), m.data(), u.data(), p.data(), a.data(), y.data(), inp.data(), wc.data(),
                    w1.data(), w2.data(), s.B, s.T, s.C, s.E, s.G, s.f, s.tau);
        gpu::mot_forward(d_out.p, d_z.p, d_m.p, d_u.p, d_p.p, d_a.p, d_y.p, d_inp.p, d_wc.p, d_w1.p, d_w2.p,
                         s.B, s.T, s.C, s.E, s.G, s.f, s.tau);
        std::string tag = strf(" B%d T%d C%d E%d G%d f%d tau%g", s.B, s.T, s.C, s.E, s.G, s.f, s.tau);
        check_all(tag, {{"mot out", &d_out, &out}, {"mot z", &d_z, &z}, {"mot m", &d_m, &m}, {"mot u", &d_u, &u},
                        {"mot p", &d_p, &p}, {"mot a", &d_a, &a}, {"mot y", &d_y, &y}});
        std::vector<float> dout = rand_vec(&rng, out.size()), dinp = rand_vec(&rng, inp.size());
        std::vector<float> dwc = rand_vec(&rng, wc.size()), dw1 = rand_vec(&rng, w1.size());
        std::vector<float> dw2 = rand_vec(&rng, w2.size());
        std::vector<float> dz(nE, 0.0f), dm(nE, 0.0f), du(nU, 0.0f), dp(nP, 0.0f), da(nP, 0.0f), dy(nU, 0.0f);
        DevF d_dout(dout), d_dinp(dinp), d_dwc(dwc), d_dw1(dw1), d_dw2(dw2), d_dz(nE), d_dm(nE), d_du(nU),
            d_dp(nP), d_da(nP), d_dy(nU);
        mot_backward(dinp.data(), dwc.data(), dw1.data(), dw2.data(), dz.data(), dm.data(), du.data(), dp.data(),
                     da.data(), dy.data(), dout.data(), inp.data(), m.data(), u.data(), p.data(), a.data(), y.data(),
                     wc.data(), w1.data(), w2.data(), s.B, s.T, s.C, s.E, s.G, s.f, s.tau);
        gpu::mot_backward(d_dinp.p, d_dwc.p, d_dw1.p, d_dw2.p, d_dz.p, d_dm.p, d_du.p, d_dp.p, d_da.p, d_dy.p,
                          d_dout.p, d_inp.p, d_m.p, d_u.p, d_p.p, d_a.p, d_y.p, d_wc.p, d_w1.p, d_w2.p,
                          s.B, s.T, s.C, s.E, s.G, s.f, s.tau);
        // G = 1: M = 1 exactly, so dz = 0 exactly on both paths
        check_all(tag, {{"mot dinp", &d_dinp, &dinp}, {"mot dwc", &d_dwc, &dwc}, {"mot dw1", &d_dw1, &dw1},
                        {"mot dw2", &d_dw2, &dw2}, {"mot dy", &d_dy, &dy}, {"mot dm", &d_dm, &dm},
                        {"mot du", &d_du, &du}, {"mot dz", &d_dz, &dz}});
    }
}

GPU_TEST("gpu grad norm, clip and adamw") {
    Rng rng = rng_seed(10);
    for (size_t n : {(size_t)1, (size_t)1000, (size_t)1000003}) {
        std::vector<float> g = rand_vec(&rng, n);
        DevF d_g(g);
        double cpu_sq = grad_norm_squared(g.data(), n), gpu_sq = gpu::grad_norm_squared(d_g.p, n);
        CHECK_MESSAGE(std::fabs(gpu_sq - cpu_sq) <= 1e-9 * cpu_sq, "grad norm^2 n" << n << ": " << gpu_sq << " vs " << cpu_sq);
        double norm = std::sqrt(cpu_sq);
        grad_clip(g.data(), n, norm, 0.5 * norm);
        gpu::grad_clip(d_g.p, n, norm, 0.5 * norm);
        check_close(d_g, g, strf("grad clip n%zu", n));
        gpu::grad_clip(d_g.p, n, norm, 2.0 * norm);  // below the threshold: unchanged
        check_close(d_g, g, strf("grad clip (inactive) n%zu", n));
        std::vector<float> p = rand_vec(&rng, n), m(n, 0.0f), v(n, 0.0f);
        DevF d_p(p), d_m(n), d_v(n);
        for (int t = 1; t <= 3; t++) {
            std::vector<float> gt = rand_vec(&rng, n, 0.01f);
            CUDA_CHECK(cudaMemcpy(d_g.p, gt.data(), n * sizeof(float), cudaMemcpyHostToDevice));
            adamw_update(p.data(), gt.data(), m.data(), v.data(), n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, t);
            gpu::adamw_update(d_p.p, d_g.p, d_m.p, d_v.p, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, t);
        }
        check_all(strf(" n%zu", n), {{"adamw params", &d_p, &p}, {"adamw m", &d_m, &m}, {"adamw v", &d_v, &v}});
    }
}

// A small model: V 257 (Vp 320), maxT 64, C 64, NH 4, dff 256, E 8, G 4, f 128.
static Config small_config(std::vector<int> kinds, float tau = 1.0f, int G = 4) {
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

static std::vector<ModelCase> model_cases() {
    return {{"dense", small_config({DENSE, DENSE}), 4, 37},
            {"mot", small_config({MOT, MOT}), 4, 37},
            {"mixed tau 0.8", small_config({DENSE, MOT, MOT}, 0.8f), 8, 7},
            {"mot G=1", small_config({MOT}, 1.0f, 1), 3, 16},
            {"mot G=B", small_config({MOT, DENSE}, 1.5f, 8), 8, 33}};
}

// The same model on both paths: CPU weights from gpt_init_weights(seed), copied to the GPU.
static void build_both(GPT<float>* cpu, gpu::GPT* gm, const Config& c, uint64_t seed) {
    gpt_build(cpu, c);
    gpt_init_weights(cpu, seed);
    gpu::gpt_build(gm, c);
    gpu::gpu_gpt_load_params(gm, cpu->params_memory.data());
}

// Compares every parameter-shaped block (params or grads), tensor by tensor.
static void check_tensors(const Config& c, const std::vector<float>& gpu, const std::vector<float>& cpu,
                          const std::string& what) {
    for (const TensorSpec& s : param_specs(c)) {
        double e = rel_err(gpu.data() + s.offset, cpu.data() + s.offset, s.numel);
        CHECK_MESSAGE(e < TOL, what << " " << s.name << ": relative error " << e);
    }
}

GPU_TEST("gpu model: loss, logits and every parameter gradient") {
    for (const ModelCase& mc : model_cases()) {
        INFO("model " << mc.name);
        GPT<float> cpu;
        gpu::GPT gm;
        build_both(&cpu, &gm, mc.cfg, 1234);
        std::vector<float> back(gm.num_params);
        gpu::gpu_gpt_get_params(&gm, back.data());
        CHECK(back == cpu.params_memory);
        Rng rng = rng_seed(99);
        size_t BT = (size_t)mc.B * mc.T;
        std::vector<int> inputs = rand_tokens(&rng, BT, mc.cfg.V), targets = rand_tokens(&rng, BT, mc.cfg.V);
        gpt_forward(&cpu, inputs.data(), targets.data(), mc.B, mc.T);
        gpu::gpt_forward(&gm, inputs.data(), targets.data(), mc.B, mc.T);
        double loss_err = std::fabs(gm.mean_loss - cpu.mean_loss) / std::fabs(cpu.mean_loss);
        CHECK_MESSAGE(loss_err < TOL, mc.name << " loss " << gm.mean_loss << " vs " << cpu.mean_loss);
        std::vector<float> logits(BT * mc.cfg.Vp);
        CUDA_CHECK(cudaMemcpy(logits.data(), gm.acts.logits, logits.size() * sizeof(float), cudaMemcpyDeviceToHost));
        check_close(logits, std::vector<float>(cpu.acts.logits, cpu.acts.logits + logits.size()),
                    std::string(mc.name) + " logits");
        gpt_zero_grad(&cpu); gpu::gpt_zero_grad(&gm);
        gpt_backward(&cpu, 1.0);
        gpu::gpt_backward(&gm, 1.0);
        std::vector<float> grads(gm.num_params);
        gpu::gpu_gpt_get_grads(&gm, grads.data());
        check_tensors(mc.cfg, grads, cpu.grads_memory, std::string(mc.name) + " grad");
        // a second backward with loss_scale 0.5 accumulates on top: 1.5x
        gpt_backward(&cpu, 0.5);
        gpu::gpt_backward(&gm, 0.5);
        gpu::gpu_gpt_get_grads(&gm, grads.data());
        check_tensors(mc.cfg, grads, cpu.grads_memory, std::string(mc.name) + " accumulated grad");
        double cpu_norm = gpt_clip_grads(&cpu, 0.0), gpu_norm = gpu::gpt_clip_grads(&gm, 0.0);
        CHECK_MESSAGE(std::fabs(gpu_norm - cpu_norm) < TOL * cpu_norm, mc.name << " grad norm " << gpu_norm << " vs " << cpu_norm);
        // forward without targets leaves the loss alone and backward refuses
        gpu::gpt_forward(&gm, inputs.data(), nullptr, mc.B, mc.T);
        CHECK_THROWS(gpu::gpt_backward(&gm, 1.0));
    }
}

GPU_TEST("gpu model: bad batches are rejected before any launch") {
    Config c = small_config({MOT});
    gpu::GPT gm;
    gpu::gpt_build(&gm, c);
    std::vector<int> tok(4 * 8, 1);
    tok[5] = c.V;  // out of vocabulary
    CHECK_THROWS(gpu::gpt_forward(&gm, tok.data(), nullptr, 4, 8));
    tok[5] = 0;
    CHECK_THROWS(gpu::gpt_forward(&gm, tok.data(), nullptr, 3, 8));   // 3 % G != 0
    CHECK_THROWS(gpu::gpt_forward(&gm, tok.data(), nullptr, 1, 65));  // T > maxT
    CHECK_NOTHROW(gpu::gpt_forward(&gm, tok.data(), nullptr, 4, 8));
}

// Ten training steps (forward, zero_grad, backward, clip, AdamW) on both paths
// with the same batches; parameters, moments and every step's loss must agree.
// AdamW eps is 1e-5 here, not 1e-8: Adam divides by sqrt(v) + eps, so a
// gradient element near zero has its fp32 rounding noise amplified by up to
// lr/eps, which at eps 1e-8 can exceed the tolerance for a handful of such
// elements without any bug. The optimizer kernel itself is checked at eps 1e-8
// on identical inputs in "gpu grad norm, clip and adamw".
GPU_TEST("gpu model: 10 AdamW steps") {
    for (const ModelCase& mc : model_cases()) {
        INFO("model " << mc.name);
        GPT<float> cpu;
        gpu::GPT gm;
        build_both(&cpu, &gm, mc.cfg, 77);
        Rng rng = rng_seed(5);
        size_t BT = (size_t)mc.B * mc.T;
        for (int step = 0; step < 10; step++) {
            std::vector<int> inputs = rand_tokens(&rng, BT, mc.cfg.V), targets = rand_tokens(&rng, BT, mc.cfg.V);
            gpt_forward(&cpu, inputs.data(), targets.data(), mc.B, mc.T);
            gpu::gpt_forward(&gm, inputs.data(), targets.data(), mc.B, mc.T);
            CHECK_MESSAGE(std::fabs(gm.mean_loss - cpu.mean_loss) < TOL * cpu.mean_loss,
                          mc.name << " step " << step << " loss " << gm.mean_loss << " vs " << cpu.mean_loss);
            gpt_zero_grad(&cpu); gpu::gpt_zero_grad(&gm);
            gpt_backward(&cpu);
            gpu::gpt_backward(&gm);
            double cpu_norm = gpt_clip_grads(&cpu, 1.0), gpu_norm = gpu::gpt_clip_grads(&gm, 1.0);
            CHECK_MESSAGE(std::fabs(gpu_norm - cpu_norm) < TOL * cpu_norm,
                          mc.name << " step " << step << " grad norm " << gpu_norm << " vs " << cpu_norm);
            gpt_update(&cpu, 1e-3f, 0.9f, 0.95f, 1e-5f, 0.1f, step);
            gpu::gpt_update(&gm, 1e-3f, 0.9f, 0.95f, 1e-5f, 0.1f, step);
        }
        std::vector<float> params(gm.num_params), m(gm.num_params), v(gm.num_params);
        gpu::gpu_gpt_get_params(&gm, params.data());
        gpu::gpu_gpt_get_moments(&gm, m.data(), v.data());
        check_tensors(mc.cfg, params, cpu.params_memory, std::string(mc.name) + " params after 10 steps");
        check_tensors(mc.cfg, m, cpu.m_memory, std::string(mc.name) + " adam m after 10 steps");
        check_tensors(mc.cfg, v, cpu.v_memory, std::string(mc.name) + " adam v after 10 steps");
    }
}

// One forward + backward of both models on the same batch; returns the GPU
// loss. Checks the loss, the logits and every parameter gradient within tol.
static double check_model_step(GPT<float>* cpu, gpu::GPT* gm, const std::vector<int>& inputs,
                               const std::vector<int>& targets, int B, int T, double tol, const std::string& what) {
    const Config& c = cpu->cfg;
    gpt_forward(cpu, inputs.data(), targets.data(), B, T);
    gpu::gpt_forward(gm, inputs.data(), targets.data(), B, T);
    double loss_err = std::fabs(gm->mean_loss - cpu->mean_loss) / std::fabs(cpu->mean_loss);
    CHECK_MESSAGE(loss_err < tol, what << " loss " << gm->mean_loss << " vs " << cpu->mean_loss);
    std::vector<float> logits((size_t)B * T * c.Vp);
    CUDA_CHECK(cudaMemcpy(logits.data(), gm->acts.logits, logits.size() * sizeof(float), cudaMemcpyDeviceToHost));
    double e = rel_err(logits.data(), cpu->acts.logits, logits.size());
    CHECK_MESSAGE(e < tol, what << " logits: relative error " << e);
    gpt_zero_grad(cpu);
    gpu::gpt_zero_grad(gm);
    gpt_backward(cpu, 1.0);
    gpu::gpt_backward(gm, 1.0);
    std::vector<float> grads(gm->num_params);
    gpu::gpu_gpt_get_grads(gm, grads.data());
    for (const TensorSpec& sp : param_specs(c)) {
        double ge = rel_err(grads.data() + sp.offset, cpu->grads_memory.data() + sp.offset, sp.numel);
        CHECK_MESSAGE(ge < tol, what << " grad " << sp.name << ": relative error " << ge);
    }
    return gm->mean_loss;
}

// GPT-2-small widths and lengths (V 50257, C 768, NH 12, T 1024, d_ff 3072),
// two layers, the second MoT (E 8, G 4, f 1536), B 8: sizes at which an
// index that overflows, a grid that is too small or a reduction that loses
// precision would show. fp32, TF32 off.
GPU_TEST("gpu model at GPT-2-small shapes: loss, logits and every parameter gradient") {
    Config c;
    c.V = 50257, c.Vp = pad_vocab(c.V), c.maxT = 1024, c.L = 2, c.NH = 12, c.C = 768, c.dff = 3072;
    c.E = 8, c.G = 4, c.f = c.dff * c.G / c.E, c.tau = 1.0f, c.kinds = {DENSE, MOT};
    const int B = 8, T = 1024;
    GPT<float> cpu;
    gpu::GPT gm;
    build_both(&cpu, &gm, c, 2024);
    Rng rng = rng_seed(7);
    std::vector<int> inputs = rand_tokens(&rng, (size_t)B * T, c.V), targets = rand_tokens(&rng, (size_t)B * T, c.V);
    check_model_step(&cpu, &gm, inputs, targets, B, T, TOL, "gpt2-small shapes");
}

// Forward and backward at one batch shape, then another (the activations are
// freed and carved again), then the first again: every time against the CPU.
GPU_TEST("gpu model: the batch shape changes between calls") {
    Config c = small_config({MOT, DENSE});
    GPT<float> cpu;
    gpu::GPT gm;
    build_both(&cpu, &gm, c, 31);
    Rng rng = rng_seed(32);
    struct Shape { int B, T; };
    for (Shape s : {Shape{4, 37}, Shape{8, 7}, Shape{12, 64}, Shape{4, 37}}) {
        size_t BT = (size_t)s.B * s.T;
        std::vector<int> inputs = rand_tokens(&rng, BT, c.V), targets = rand_tokens(&rng, BT, c.V);
        check_model_step(&cpu, &gm, inputs, targets, s.B, s.T, TOL, strf("B%d T%d", s.B, s.T));
        CHECK((gm.B == s.B && gm.T == s.T));
    }
}

// A run resumed on the GPU: the CPU trains 3 steps; the GPU model takes its
// parameters and AdamW moments from the host, and both train 3 more.
GPU_TEST("gpu model: AdamW moments loaded from the host continue a run") {
    Config c = small_config({DENSE, MOT});
    const int B = 4, T = 37;
    GPT<float> cpu;
    gpt_build(&cpu, c);
    gpt_init_weights(&cpu, 41);
    Rng rng = rng_seed(42);
    auto batch = [&](std::vector<int>* x, std::vector<int>* y) {
        *x = rand_tokens(&rng, (size_t)B * T, c.V);
        *y = rand_tokens(&rng, (size_t)B * T, c.V);
    };
    std::vector<int> x, y;
    for (int step = 0; step < 3; step++) {
        batch(&x, &y);
        gpt_forward(&cpu, x.data(), y.data(), B, T);
        gpt_zero_grad(&cpu);
        gpt_backward(&cpu);
        gpt_update(&cpu, 1e-3f, 0.9f, 0.95f, 1e-5f, 0.1f, step);
    }
    gpu::GPT gm;
    gpu::gpt_build(&gm, c);
    gpu::gpu_gpt_load_params(&gm, cpu.params_memory.data());
    gpu::gpu_gpt_load_moments(&gm, cpu.m_memory.data(), cpu.v_memory.data());
    std::vector<float> m(gm.num_params), v(gm.num_params);
    gpu::gpu_gpt_get_moments(&gm, m.data(), v.data());
    CHECK(m == cpu.m_memory);
    CHECK(v == cpu.v_memory);
    CHECK(std::any_of(m.begin(), m.end(), [](float a) { return a != 0.0f; }));  // the moments are not trivial
    for (int step = 3; step < 6; step++) {
        batch(&x, &y);
        check_model_step(&cpu, &gm, x, y, B, T, TOL, strf("step %d", step));
        gpt_update(&cpu, 1e-3f, 0.9f, 0.95f, 1e-5f, 0.1f, step);
        gpu::gpt_update(&gm, 1e-3f, 0.9f, 0.95f, 1e-5f, 0.1f, step);
    }
    std::vector<float> params(gm.num_params);
    gpu::gpu_gpt_get_params(&gm, params.data());
    gpu::gpu_gpt_get_moments(&gm, m.data(), v.data());
    check_tensors(c, params, cpu.params_memory, "params after the resumed steps");
    check_tensors(c, m, cpu.m_memory, "adam m after the resumed steps");
    check_tensors(c, v, cpu.v_memory, "adam v after the resumed steps");
}

// TF32 tensor cores round matmul inputs to a 10-bit mantissa: the model still
// agrees with the fp32 CPU reference to about 1e-3; checked at 1e-2. Also
// that TF32 is really used: the results differ from the fp32 GPU run.
GPU_TEST("gpu model: TF32 tensor cores agree with the fp32 reference within 1e-2") {
    for (const ModelCase& mc : {model_cases()[1], model_cases()[2]}) {
        INFO("model " << mc.name);
        GPT<float> cpu;
        gpu::GPT gm;
        build_both(&cpu, &gm, mc.cfg, 51);
        Rng rng = rng_seed(52);
        size_t BT = (size_t)mc.B * mc.T;
        std::vector<int> x = rand_tokens(&rng, BT, mc.cfg.V), y = rand_tokens(&rng, BT, mc.cfg.V);
        gpu::gpt_forward(&gm, x.data(), y.data(), mc.B, mc.T);
        double fp32_loss = gm.mean_loss;
        gpu_set_tf32(true);
        double tf32_loss = check_model_step(&cpu, &gm, x, y, mc.B, mc.T, 1e-2, std::string(mc.name) + " tf32");
        gpu_set_tf32(false);
        CHECK_MESSAGE(tf32_loss != fp32_loss, "TF32 on gave the fp32 loss exactly: tensor cores not used?");
    }
}

// Forward and backward twice on the same batch: the loss and every gradient
// repeat bit for bit (no atomics, fixed reduction orders).
GPU_TEST("gpu model: forward and backward repeat bit for bit") {
    for (const ModelCase& mc : model_cases()) {
        INFO("model " << mc.name);
        GPT<float> cpu;
        gpu::GPT gm;
        build_both(&cpu, &gm, mc.cfg, 61);
        Rng rng = rng_seed(62);
        size_t BT = (size_t)mc.B * mc.T;
        // few distinct tokens: many positions share each wte row
        std::vector<int> x = rand_tokens(&rng, BT, 5), y = rand_tokens(&rng, BT, mc.cfg.V);
        std::vector<float> g[2];
        double loss[2];
        for (int r = 0; r < 2; r++) {
            gpu::gpt_forward(&gm, x.data(), y.data(), mc.B, mc.T);
            gpu::gpt_zero_grad(&gm);
            gpu::gpt_backward(&gm, 1.0);
            loss[r] = gm.mean_loss;
            g[r].resize(gm.num_params);
            gpu::gpu_gpt_get_grads(&gm, g[r].data());
        }
        CHECK(loss[0] == loss[1]);
        CHECK(g[0] == g[1]);
    }
}

// Out of memory: a model far larger than the card is refused by --device cuda
// with the sizes, taken to the CPU by auto; a failing allocation names itself.
GPU_TEST("gpu memory: too large a model is a clear error under cuda and the CPU under auto") {
    Config c = small_config({MOT});
    size_t total = 0;
    gpu_free_memory(&total);
    std::string why;
    // activations of B*T rows grow without bound: pick a batch far beyond the card
    int B = 1 << 18, T = 64;  // about 340 GiB of activations
    CHECK(gpu::gpt_device_bytes(c, B, T) > total);
    try {
        choose_gpu("cuda", c, B, T, &why);
        FAIL("choose_gpu(cuda) accepted a model larger than the GPU");
    } catch (const std::exception& e) {
        std::string msg = e.what();
        INFO(msg);
        CHECK(msg.find("--device cuda") != std::string::npos);
        CHECK(msg.find("GiB are free") != std::string::npos);
    }
    CHECK(!choose_gpu("auto", c, B, T, &why));
    CHECK(why.find("GiB") != std::string::npos);
    CHECK(choose_gpu("auto", c, 4, 8, &why));  // a batch that fits
    float* p = nullptr;
    try {
        gpu_malloc(&p, total, "a test buffer", "a smaller --batch");  // 4x the card's bytes
        FAIL("allocating 4x the GPU's memory succeeded");
    } catch (const std::exception& e) {
        std::string msg = e.what();
        INFO(msg);
        CHECK(msg.find("GPU out of memory: a test buffer needs") != std::string::npos);
        CHECK(msg.find("a smaller --batch") != std::string::npos);
    }
    CHECK(p == nullptr);
    CHECK(cudaGetLastError() == cudaSuccess);  // the failure left no sticky error
    float* q = nullptr;
    CHECK_NOTHROW(gpu_malloc(&q, 1024, "a small buffer"));  // the GPU still works
    cudaFree(q);
}

// The program itself on the GPU (tests/train_checks.h): the same command twice
// gives the same log and checkpoint; 10 steps + resume + 10 equals 20 steps.
GPU_TEST("gpu training: two runs of one command are reproducible") { check_repeat("build/tg", "cuda"); }
GPU_TEST("gpu training: resume is bit-exact (shuffled)") { check_resume("build/tg", "cuda", 1); }

GPU_TEST("gpu device queries and tf32 switch") {
    size_t total = 0, free_bytes = gpu_free_memory(&total);
    CHECK((!gpu_device_name().empty() && free_bytes > 0 && free_bytes <= total));
    gpu_set_tf32(true);
    CHECK(gpu_tf32());
    std::string how;
    double tf32_peak = gpu_peak_flops(true, &how);
    gpu_set_tf32(false);
    CHECK(!gpu_tf32());
    double fp32_peak = gpu_peak_flops(false, &how);
    INFO(how);
    // any GPU of the last decade: 1 to 500 TFLOP/s fp32, tensor cores at least as fast
    CHECK((fp32_peak > 1e12 && fp32_peak < 5e14));
    CHECK(tf32_peak >= fp32_peak);
}
