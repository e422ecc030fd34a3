// tests/test_gpu_layers.cu: every GPU layer (gpu/*.cuh) against the CPU
// reference (cpu/*.h, float), forward and backward, at odd shapes.
//
//   make build/test_gpu_layers && ./build/test_gpu_layers
//
// Without a usable GPU every test case is reported as skipped, with the reason
// (no driver, a driver older than the CUDA runtime, no device, ...) printed
// first and carried in each case's description, and the binary exits 0.
// tests/gpu_harness.h has the error measure; tests/rng.h the inputs.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "common/bf16_kernels.h"
#include "tests/attention_ref.h"
#include "tests/bf16_agree.h"
#include "tests/gpu_harness.h"

GPU_TEST("gpu gemm: all transposes, padded leading dimensions, strided batches") {
    TestRng rng(1);
    struct Shape { int M, N, K, batch; };
    for (Shape s : {Shape{1, 1, 1, 1}, Shape{7, 5, 3, 2}, Shape{37, 19, 64, 3}, Shape{128, 96, 33, 1}})
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                int rowsA = ta ? s.K : s.M, colsA = ta ? s.M : s.K;
                int rowsB = tb ? s.N : s.K, colsB = tb ? s.K : s.N;
                long long lda = colsA + 2, ldb = colsB + 3, ldc = s.N + 1;
                long long sA = rowsA * lda + 5, sB = rowsB * ldb + 1, sC = s.M * ldc + 3;
                std::vector<float> A = rng.floats(sA * s.batch), B = rng.floats(sB * s.batch);
                std::vector<float> C = rng.floats(sC * s.batch);
                DevF dA(A), dB(B), dC(C);
                gemm(ta != 0, tb != 0, s.M, s.N, s.K, 0.7f, A.data(), lda, sA, B.data(), ldb, sB, 0.3f,
                     C.data(), ldc, sC, s.batch);
                gpu::gemm(ta != 0, tb != 0, s.M, s.N, s.K, 0.7f, dA.p, lda, sA, dB.p, ldb, sB, 0.3f,
                          dC.p, ldc, sC, s.batch);
                check_gpu(dC, C, strf("gemm M%d N%d K%d batch%d ta%d tb%d", s.M, s.N, s.K, s.batch, ta, tb));
            }
}

GPU_TEST("gpu column-sum scratch: a request after a failed growth gets a buffer") {
    REQUIRE(column_scratch(1024) != nullptr);
    bool threw = false;
    try {
        column_scratch((size_t)1 << 50);  // 4 PiB: no GPU has it
    } catch (const std::runtime_error& e) {
        threw = true;
        CHECK(std::string(e.what()).find("column-sum scratch") != std::string::npos);
    }
    CHECK(threw);
    // the failed growth freed the old buffer: a smaller request must allocate
    // again, not be handed the null pointer the failure left
    float* p = column_scratch(16);
    REQUIRE(p != nullptr);
    CHECK(cudaMemset(p, 0, 16 * sizeof(float)) == cudaSuccess);
    CUDA_CHECK(cudaDeviceSynchronize());
}

// Under --precision bf16 the linear layer's operands are bf16 values and its
// products run on bf16 tensor cores (gpu/matmul.cuh, matmul_forward_bf16):
// on such operands every product is exact in fp32, so the results are the
// fp32 reference's up to the order of summation, checked as the fp32 layer is.
GPU_TEST("gpu matmul forward and backward, fp32 and on bf16 tensor cores (bf16 operands)") {
    TestRng rng(2);
    struct Shape { int B, T, C, OC; };
    for (int bf16 = 0; bf16 < 2; bf16++) {
        auto operand = [&](size_t n) {  // under bf16 rounded: the layer's contract
            std::vector<float> v = rng.floats(n);
            if (bf16)
                for (float& x : v) x = bf16_round(x);
            return v;
        };
        for (Shape s : {Shape{2, 7, 16, 24}, Shape{3, 37, 64, 96}, Shape{1, 64, 128, 48}, Shape{1, 1, 5, 3},
                        Shape{8, 512, 64, 768}})  // the last: many row chunks in the bias sum
            for (int with_bias = 0; with_bias < 2; with_bias++) {
                size_t BT = (size_t)s.B * s.T;
                std::vector<float> inp = operand(BT * s.C), w = operand((size_t)s.OC * s.C);
                std::vector<float> bias = rng.floats(s.OC), out(BT * s.OC);
                DevF d_inp(inp), d_w(w), d_bias(bias), d_out(out.size());
                const float* b = with_bias ? bias.data() : nullptr;
                float* d_b = with_bias ? d_bias.p : nullptr;
                matmul_forward(out.data(), inp.data(), w.data(), b, s.B, s.T, s.C, s.OC);
                if (bf16) gpu::matmul_forward_bf16(d_out.p, d_inp.p, d_w.p, d_b, s.B, s.T, s.C, s.OC);
                else gpu::matmul_forward(d_out.p, d_inp.p, d_w.p, d_b, s.B, s.T, s.C, s.OC);
                std::string tag = strf("%s B%d T%d C%d OC%d bias%d", bf16 ? " (bf16 tensor cores)" : "", s.B, s.T, s.C,
                                       s.OC, with_bias);
                check_gpu(d_out, out, "matmul out" + tag);
                std::vector<float> dout = operand(BT * s.OC);  // gradients start nonzero: += is tested
                std::vector<float> dinp = rng.floats(BT * s.C), dw = rng.floats(w.size()), db = rng.floats(s.OC);
                DevF d_dout(dout), d_dinp(dinp), d_dw(dw), d_db(db);
                matmul_backward(dinp.data(), dw.data(), with_bias ? db.data() : nullptr, dout.data(), inp.data(),
                                w.data(), s.B, s.T, s.C, s.OC);
                float* d_dbias = with_bias ? d_db.p : nullptr;
                if (bf16)
                    gpu::matmul_backward_bf16(d_dinp.p, d_dw.p, d_dbias, d_dout.p, d_inp.p, d_w.p, s.B, s.T, s.C, s.OC);
                else
                    gpu::matmul_backward(d_dinp.p, d_dw.p, d_dbias, d_dout.p, d_inp.p, d_w.p, s.B, s.T, s.C, s.OC);
                check_all(tag, {{"matmul dinp", &d_dinp, &dinp}, {"matmul dweight", &d_dw, &dw}, {"matmul dbias", &d_db, &db}});
            }
    }
}

GPU_TEST("gpu encoder forward and backward") {
    TestRng rng(3);
    struct Shape { int B, T, C, V, maxT; };
    for (Shape s : {Shape{2, 7, 16, 10, 9}, Shape{3, 37, 48, 5, 40}, Shape{4, 64, 100, 300, 64}}) {
        size_t BT = (size_t)s.B * s.T;
        std::vector<int> tok = rng.tokens(BT, s.V);  // small V: many repeated rows
        std::vector<float> wte = rng.floats((size_t)s.V * s.C), wpe = rng.floats((size_t)s.maxT * s.C);
        std::vector<float> out(BT * s.C);
        DevI d_tok(tok);
        DevF d_wte(wte), d_wpe(wpe), d_out(out.size());
        encoder_forward(out.data(), tok.data(), wte.data(), wpe.data(), s.B, s.T, s.C);
        gpu::encoder_forward(d_out.p, d_tok.p, d_wte.p, d_wpe.p, s.B, s.T, s.C);
        std::string tag = strf(" B%d T%d C%d", s.B, s.T, s.C);
        check_gpu(d_out, out, "encoder out" + tag);
        std::vector<float> dout = rng.floats(out.size());
        std::vector<float> dwte = rng.floats(wte.size()), dwpe = rng.floats(wpe.size());
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
    TestRng rng(4);
    struct Shape { int B, T, C; };
    for (Shape s : {Shape{2, 7, 16}, Shape{3, 37, 100}, Shape{2, 33, 768}, Shape{1, 1, 1}, Shape{8, 256, 768}}) {
        size_t BT = (size_t)s.B * s.T;
        std::vector<float> inp = rng.floats(BT * s.C, 2.0f), w = rng.floats(s.C), b = rng.floats(s.C);
        for (size_t i = 0; i < inp.size(); i++) inp[i] += 0.5f;  // nonzero mean
        std::vector<float> out(BT * s.C), mean(BT), rstd(BT);
        DevF d_inp(inp), d_w(w), d_b(b), d_out(out.size()), d_mean(BT), d_rstd(BT);
        layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), w.data(), b.data(), s.B, s.T, s.C);
        gpu::layernorm_forward(d_out.p, d_mean.p, d_rstd.p, d_inp.p, d_w.p, d_b.p, s.B, s.T, s.C);
        std::string tag = strf(" B%d T%d C%d", s.B, s.T, s.C);
        check_all(tag, {{"layernorm out", &d_out, &out}, {"layernorm mean", &d_mean, &mean},
                        {"layernorm rstd", &d_rstd, &rstd}});
        std::vector<float> dout = rng.floats(out.size());
        std::vector<float> dinp = rng.floats(inp.size()), dw = rng.floats(s.C), db = rng.floats(s.C);
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
    TestRng rng(5);
    for (size_t n : {(size_t)1, (size_t)259, (size_t)37 * 7 * 3, (size_t)100003}) {
        std::vector<float> x = rng.floats(n, 4.0f), x2 = rng.floats(n), out(n);
        DevF d_x(x), d_x2(x2), d_out(n);
        gelu_forward(out.data(), x.data(), n);
        gpu::gelu_forward(d_out.p, d_x.p, n);
        check_gpu(d_out, out, strf("gelu out n%zu", n));
        std::vector<float> dout = rng.floats(n), dinp = rng.floats(n);
        DevF d_dout(dout), d_dinp(dinp);
        gelu_backward(dinp.data(), x.data(), dout.data(), n);
        gpu::gelu_backward(d_dinp.p, d_x.p, d_dout.p, n);
        check_gpu(d_dinp, dinp, strf("gelu dinp n%zu", n));
        residual_forward(out.data(), x.data(), x2.data(), n);
        gpu::residual_forward(d_out.p, d_x.p, d_x2.p, n);
        check_gpu(d_out, out, strf("residual out n%zu", n));
        std::vector<float> d1 = rng.floats(n), d2 = rng.floats(n);
        DevF d_d1(d1), d_d2(d2);
        residual_backward(d1.data(), d2.data(), dout.data(), n);
        gpu::residual_backward(d_d1.p, d_d2.p, d_dout.p, n);
        check_all(strf(" n%zu", n), {{"residual dinp1", &d_d1, &d1}, {"residual dinp2", &d_d2, &d2}});
    }
}

GPU_TEST("gpu attention forward and backward") {
    TestRng rng(6);
    struct Shape { int B, T, C, NH; };
    for (Shape s : {Shape{2, 7, 16, 2}, Shape{1, 37, 64, 4}, Shape{3, 33, 32, 1}, Shape{2, 64, 96, 3}, Shape{1, 1, 8, 2}}) {
        size_t BT = (size_t)s.B * s.T, att_n = (size_t)s.B * s.NH * s.T * s.T;
        std::vector<float> inp = rng.floats(BT * 3 * s.C, 2.0f);
        std::vector<float> out(BT * s.C), preatt(att_n), att(att_n);
        DevF d_inp(inp), d_out(out.size()), d_preatt(att_n), d_att(att_n);
        attention_forward(out.data(), preatt.data(), att.data(), inp.data(), s.B, s.T, s.C, s.NH);
        gpu::attention_forward(d_out.p, d_preatt.p, d_att.p, d_inp.p, s.B, s.T, s.C, s.NH);
        std::string tag = strf(" B%d T%d C%d NH%d", s.B, s.T, s.C, s.NH);
        check_all(tag, {{"attention out", &d_out, &out}, {"attention preatt", &d_preatt, &preatt},
                        {"attention att", &d_att, &att}});
        std::vector<float> dout = rng.floats(out.size()), dinp = rng.floats(inp.size());
        std::vector<float> dpreatt(att_n, 0.0f), datt(att_n, 0.0f);
        DevF d_dout(dout), d_dinp(dinp), d_dpreatt(att_n), d_datt(att_n);
        attention_backward(dinp.data(), dpreatt.data(), datt.data(), dout.data(), inp.data(), att.data(),
                           s.B, s.T, s.C, s.NH);
        gpu::attention_backward(d_dinp.p, d_dpreatt.p, d_datt.p, d_dout.p, d_inp.p, d_att.p, s.B, s.T, s.C, s.NH);
        check_all(tag, {{"attention dinp", &d_dinp, &dinp}, {"attention dpreatt", &d_dpreatt, &dpreatt}});
    }
}

// Under bf16 (bf16_probs) on bf16 inputs: the probabilities and the scores'
// gradient are rounded in the softmax kernels and the products run on bf16
// tensor cores. The rounded tensors against the CPU's loops with the same
// flag as bf16 tensors (check_bf16_tensor: a float that lands on the other
// side of a rounding boundary moves one bf16 step); the products against
// the same products in double from the GPU's own rounded operand, as fp32.
GPU_TEST("gpu attention under bf16: rounded probabilities, bf16 tensor cores, against the CPU's loops") {
    TestRng rng(16);
    auto bf16_floats = [&](size_t n, float scale) {
        std::vector<float> v = rng.floats(n, scale);
        for (float& x : v) x = bf16_round(x);
        return v;
    };
    struct Shape { int B, T, C, NH; };
    for (Shape s : {Shape{2, 7, 16, 2}, Shape{1, 37, 64, 4}, Shape{2, 64, 96, 3}, Shape{1, 1, 8, 2}}) {
        size_t BT = (size_t)s.B * s.T, att_n = (size_t)s.B * s.NH * s.T * s.T;
        std::vector<float> inp = bf16_floats(BT * 3 * s.C, 2.0f);
        std::vector<float> out(BT * s.C), preatt(att_n), att(att_n);
        DevF d_inp(inp), d_out(out.size()), d_preatt(att_n), d_att(att_n);
        attention_forward(out.data(), preatt.data(), att.data(), inp.data(), s.B, s.T, s.C, s.NH, true);
        gpu::attention_forward(d_out.p, d_preatt.p, d_att.p, d_inp.p, s.B, s.T, s.C, s.NH, true);
        std::string tag = strf(" (bf16) B%d T%d C%d NH%d", s.B, s.T, s.C, s.NH);
        check_gpu(d_preatt, preatt, "attention preatt" + tag);
        const std::vector<float> gpu_att = d_att.get();
        check_bf16_tensor(gpu_att, att, TOL, "attention att" + tag);
        check_gpu(d_out, mix_from(gpu_att, inp, s.B, s.T, s.C, s.NH), "attention out" + tag);
        std::vector<float> dout = bf16_floats(out.size(), 1.0f), dinp = rng.floats(inp.size());
        std::vector<float> dpreatt(att_n, 0.0f), datt(att_n, 0.0f);
        DevF d_dout(dout), d_dinp(dinp), d_dpreatt(att_n), d_datt(att_n);
        const std::vector<float> dinp_init = dinp;
        attention_backward(dinp.data(), dpreatt.data(), datt.data(), dout.data(), inp.data(), gpu_att.data(),
                           s.B, s.T, s.C, s.NH, true);
        gpu::attention_backward(d_dinp.p, d_dpreatt.p, d_datt.p, d_dout.p, d_inp.p, d_att.p, s.B, s.T, s.C, s.NH,
                                true);
        check_gpu(d_datt, datt, "attention datt" + tag);
        const std::vector<float> gpu_dpre = d_dpreatt.get();
        check_bf16_tensor(gpu_dpre, dpreatt, TOL, "attention dpreatt" + tag);
        // dv from the CPU (it does not depend on dpreatt), dq and dk from the GPU's dpreatt
        std::vector<float> want = qk_grads_from(dinp_init, gpu_dpre, inp, s.B, s.T, s.C, s.NH);
        for (size_t i = 0; i < BT; i++)
            for (int j = 2 * s.C; j < 3 * s.C; j++) want[i * 3 * s.C + j] = dinp[i * 3 * s.C + j];
        check_gpu(d_dinp, want, "attention dinp" + tag);
    }
}

GPU_TEST("gpu crossentropy forward and backward, with distillation, padded vocabulary") {
    TestRng rng(7);
    struct Shape { int B, T, V, Vp; };
    for (Shape s : {Shape{2, 7, 100, 128}, Shape{1, 37, 257, 320}, Shape{2, 5, 1000, 1024}, Shape{3, 3, 64, 64}}) {
        size_t BT = (size_t)s.B * s.T;
        std::vector<float> logits = rng.floats(BT * s.Vp, 5.0f);
        std::vector<int> targets = rng.tokens(BT, s.V);
        std::vector<float> losses(BT), probs(BT * s.Vp);
        DevF d_logits(logits), d_losses(BT), d_probs(probs.size());
        DevI d_targets(targets);
        crossentropy_forward(losses.data(), probs.data(), logits.data(), targets.data(), s.B, s.T, s.V, s.Vp);
        gpu::crossentropy_forward(d_losses.p, d_probs.p, d_logits.p, d_targets.p, s.B, s.T, s.V, s.Vp);
        std::string tag = strf(" B%d T%d V%d Vp%d", s.B, s.T, s.V, s.Vp);
        check_gpu(d_losses, losses, "crossentropy losses" + tag);
        check_gpu(d_probs, probs, "crossentropy probs" + tag);
        std::vector<float> dlosses = rng.floats(BT), dlogits = rng.floats(logits.size());
        DevF d_dlosses(dlosses), d_dlogits(dlogits);
        crossentropy_backward(dlogits.data(), dlosses.data(), probs.data(), targets.data(), s.B, s.T, s.V, s.Vp);
        gpu::crossentropy_backward(d_dlogits.p, d_dlosses.p, d_probs.p, d_targets.p, s.B, s.T, s.V, s.Vp);
        std::vector<float> got = d_dlogits.get();
        check_close(got, dlogits, scaled_tol(TOL, dlogits), "crossentropy dlogits" + tag);
        // the padded logits keep exactly their old gradient (no contribution)
        bool pad_untouched = true;
        for (size_t i = 0; i < BT; i++)
            for (int v = s.V; v < s.Vp; v++) pad_untouched &= got[i * s.Vp + v] == dlogits[i * s.Vp + v];
        CHECK_MESSAGE(pad_untouched, "padded logits got a gradient" << tag);
        // the distillation part, from another row's probabilities as the teacher's
        std::vector<float> teacher(probs.size());
        for (size_t i = 0; i < BT; i++)
            std::copy(probs.begin() + ((i + 1) % BT) * s.Vp, probs.begin() + ((i + 1) % BT + 1) * s.Vp,
                      teacher.begin() + i * s.Vp);
        DevF d_teacher(teacher);
        distill_backward(dlogits.data(), dlosses.data(), teacher.data(), targets.data(), 0.7f, s.B, s.T, s.V, s.Vp);
        gpu::distill_backward(d_dlogits.p, d_dlosses.p, d_teacher.p, d_targets.p, 0.7f, s.B, s.T, s.V, s.Vp);
        got = d_dlogits.get();
        check_close(got, dlogits, scaled_tol(TOL, dlogits), "distill dlogits" + tag);
        pad_untouched = true;
        for (size_t i = 0; i < BT; i++)
            for (int v = s.V; v < s.Vp; v++) pad_untouched &= got[i * s.Vp + v] == dlogits[i * s.Vp + v];
        CHECK_MESSAGE(pad_untouched, "padded logits got a distillation gradient" << tag);
    }
}

GPU_TEST("gpu ffn forward and backward") {
    TestRng rng(8);
    struct Shape { int B, T, C, dff; };
    for (Shape s : {Shape{2, 7, 16, 64}, Shape{2, 37, 32, 128}, Shape{1, 5, 48, 40}}) {
        size_t BT = (size_t)s.B * s.T;
        std::vector<float> inp = rng.floats(BT * s.C);
        std::vector<float> fcw = rng.floats((size_t)s.dff * s.C, 0.3f), fcb = rng.floats(s.dff, 0.3f);
        std::vector<float> pw = rng.floats((size_t)s.C * s.dff, 0.3f), pb = rng.floats(s.C, 0.3f);
        std::vector<float> out(BT * s.C), fch(BT * s.dff), fchg(BT * s.dff);
        DevF d_inp(inp), d_fcw(fcw), d_fcb(fcb), d_pw(pw), d_pb(pb), d_out(out.size()), d_fch(fch.size()),
            d_fchg(fchg.size());
        ffn_forward(out.data(), fch.data(), fchg.data(), inp.data(), fcw.data(), fcb.data(), pw.data(), pb.data(),
                    s.B, s.T, s.C, s.dff);
        gpu::ffn_forward(d_out.p, d_fch.p, d_fchg.p, d_inp.p, d_fcw.p, d_fcb.p, d_pw.p, d_pb.p, s.B, s.T, s.C, s.dff);
        std::string tag = strf(" B%d T%d C%d dff%d", s.B, s.T, s.C, s.dff);
        check_all(tag, {{"ffn out", &d_out, &out}, {"ffn fch", &d_fch, &fch}, {"ffn fch_gelu", &d_fchg, &fchg}});
        std::vector<float> dout = rng.floats(out.size()), dinp = rng.floats(inp.size());
        std::vector<float> dfcw = rng.floats(fcw.size()), dfcb = rng.floats(fcb.size());
        std::vector<float> dpw = rng.floats(pw.size()), dpb = rng.floats(pb.size());
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
    TestRng rng(9);
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
        std::vector<float> inp = rng.floats(BT * s.C);
        std::vector<float> wc = rng.floats((size_t)s.E * s.C, 0.5f);
        std::vector<float> w1 = rng.floats((size_t)s.E * s.f * s.C, 0.3f);
        std::vector<float> w2 = rng.floats((size_t)s.E * s.C * s.f, 0.3f);
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
        std::vector<float> dout = rng.floats(out.size()), dinp = rng.floats(inp.size());
        std::vector<float> dwc = rng.floats(wc.size()), dw1 = rng.floats(w1.size());
        std::vector<float> dw2 = rng.floats(w2.size());
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

GPU_TEST("gpu discrete mot: one-hot mixing at the argmax over the group, as on the CPU") {
    TestRng rng(19);
    const int B = 8, T = 5, C = 24, E = 6, G = 4, f = 12, S = B / G;
    size_t BT = (size_t)B * T, ST = (size_t)S * T, nE = BT * E, nU = ST * E * C, nP = ST * E * f;
    std::vector<float> inp = rng.floats(BT * C), wc = rng.floats((size_t)E * C, 2.0f);
    std::vector<float> w1 = rng.floats((size_t)E * f * C, 0.3f), w2 = rng.floats((size_t)E * C * f, 0.3f);
    std::vector<float> out(BT * C), z(nE), m(nE), u(nU), p(nP), a(nP), y(nU);
    DevF d_inp(inp), d_wc(wc), d_w1(w1), d_w2(w2), d_out(out.size()), d_z(nE), d_m(nE), d_u(nU), d_p(nP), d_a(nP),
        d_y(nU);
    mot_forward(out.data(), z.data(), m.data(), u.data(), p.data(), a.data(), y.data(), inp.data(), wc.data(),
                w1.data(), w2.data(), B, T, C, E, G, f, 1.0f, true);
    gpu::mot_forward(d_out.p, d_z.p, d_m.p, d_u.p, d_p.p, d_a.p, d_y.p, d_inp.p, d_wc.p, d_w1.p, d_w2.p, B, T, C, E,
                     G, f, 1.0f, true);
    CHECK(d_m.get() == m);  // the same one-hot weights
    check_all(" discrete", {{"mot out", &d_out, &out}, {"mot u", &d_u, &u}, {"mot y", &d_y, &y}});
}

// A token-choice layer's inputs with every routing decision apart by more
// than 1e-3 on the CPU, so that float rounding cannot route differently.
// Threshold routers: the shifted logits apart from each other and from 0.
struct TcCase {
    int N, C, E, f, k, cap;
    std::vector<float> inp, wc, w1, w2, bc;
};

static TcCase tc_case(int N, int C, int E, int f, int k, double cf, uint64_t seed, TcRouter rt = {}) {
    for (;; seed++) {
        TestRng rng(seed);
        TcCase t{N, C, E, f, k, (int)std::ceil(cf * k * N / E), rng.floats((size_t)N * C),
                 rng.floats((size_t)E * C, 1.5f), rng.floats((size_t)E * f * C, 0.3f), rng.floats((size_t)E * C * f, 0.3f),
                 rng.floats((size_t)E, 0.5f)};
        bool soft = rt.kind == ROUTER_SOFTMAX;
        std::vector<float> z((size_t)N * E);
        matmul_forward(z.data(), t.inp.data(), t.wc.data(), soft ? (const float*)nullptr : t.bc.data(), N, 1, C, E);
        // logits apart: so are the probabilities, in order
        if (routing_margin(z.data(), N, E, k, soft) > 1e-3) return t;
    }
}

GPU_TEST("gpu token-choice forward and backward: k 1 and 2, drops, odd sizes, threshold routers") {
    struct Shape { int N, C, E, f, k; double cf; TcRouter rt; };
    // the last: the most experts --experts allows (the load-balancing sum once
    // kept E floats in shared memory, beyond the limit above about 12K experts)
    for (Shape s : {Shape{37, 16, 4, 24, 1, 1.25, {}}, Shape{64, 32, 8, 16, 2, 0.5, {}}, Shape{33, 24, 5, 12, 3, 2.0, {}},
                    Shape{1, 8, 2, 4, 1, 1.0, {}}, Shape{300, 48, 16, 20, 2, 1.0, {}},
                    Shape{300, 48, 16, 20, 4, 0.5, {ROUTER_THRESHOLD, 0.3f}},
                    Shape{65, 24, 8, 12, 3, 1.0, {ROUTER_THRESHOLD_ONE, 1.0f}}, Shape{6, 8, 65536, 1, 1, 1.25, {}}}) {
        TcCase t = tc_case(s.N, s.C, s.E, s.f, s.k, s.cf, 40 + s.N, s.rt);
        const TcRouter rt = s.rt;
        const int N = s.N, C = s.C, E = s.E, f = s.f, k = s.k, cap = t.cap;
        size_t nE = (size_t)N * E, nk = (size_t)N * k, nX = (size_t)E * cap * C, nP = (size_t)E * cap * f;
        std::vector<float> out((size_t)N * C), z(nE), pr(nE), load(E), first(E), aux(1), xin(nX), pre(nP), act(nP),
            yout(nX);
        std::vector<int> route(nk), slot(nk);
        DevF d_inp(t.inp), d_wc(t.wc), d_w1(t.w1), d_w2(t.w2), d_out(out.size()), d_z(nE), d_pr(nE), d_load(E),
            d_first(E), d_aux(1), d_xin(nX), d_pre(nP), d_act(nP), d_yout(nX);
        DevI d_route(nk), d_slot(nk);
        token_choice_forward(out.data(), z.data(), pr.data(), route.data(), slot.data(), load.data(), first.data(),
                             aux.data(), xin.data(), pre.data(), act.data(), yout.data(), t.inp.data(), t.wc.data(),
                             t.w1.data(), t.w2.data(), N, C, E, f, k, cap, t.bc.data(), rt);
        DevF d_bc(t.bc);
        gpu::token_choice_forward(d_out.p, d_z.p, d_pr.p, d_route.p, d_slot.p, d_load.p, d_first.p, d_aux.p, d_xin.p,
                                  d_pre.p, d_act.p, d_yout.p, d_inp.p, d_wc.p, d_w1.p, d_w2.p, N, C, E, f, k, cap, d_bc.p,
                                  rt);
        std::string tag = strf(" N%d C%d E%d f%d k%d cap%d router %d", N, C, E, f, k, cap, rt.kind);
        REQUIRE_MESSAGE(d_route.get() == route, "routing differs" << tag);
        CHECK_MESSAGE(d_slot.get() == slot, "dispatch differs" << tag);
        CHECK(d_load.get() == load);
        CHECK(d_first.get() == first);
        check_all(tag, {{"tc out", &d_out, &out}, {"tc probs", &d_pr, &pr}, {"tc aux", &d_aux, &aux},
                        {"tc xin", &d_xin, &xin}, {"tc yout", &d_yout, &yout}});
        TestRng rng(11);
        std::vector<float> dout = rng.floats(out.size()), daux = {0.37f}, dinp = rng.floats(t.inp.size());
        std::vector<float> dwc = rng.floats(t.wc.size()), dw1 = rng.floats(t.w1.size()), dw2 = rng.floats(t.w2.size());
        std::vector<float> dz(nE), dpr(nE), dxin(nX), dpre(nP), dact(nP), dyout(nX), dbc = rng.floats(E);
        DevF d_dout(dout), d_daux(daux), d_dinp(dinp), d_dwc(dwc), d_dw1(dw1), d_dw2(dw2), d_dz(nE), d_dpr(nE),
            d_dxin(nX), d_dpre(nP), d_dact(nP), d_dyout(nX), d_dbc(dbc);
        token_choice_backward(dinp.data(), dwc.data(), dw1.data(), dw2.data(), dz.data(), dpr.data(), dxin.data(),
                              dpre.data(), dact.data(), dyout.data(), daux.data(), dout.data(), t.inp.data(),
                              pr.data(), route.data(), slot.data(), first.data(), xin.data(), pre.data(), act.data(),
                              yout.data(), t.wc.data(), t.w1.data(), t.w2.data(), N, C, E, f, k, cap, dbc.data(), rt);
        gpu::token_choice_backward(d_dinp.p, d_dwc.p, d_dw1.p, d_dw2.p, d_dz.p, d_dpr.p, d_dxin.p, d_dpre.p, d_dact.p,
                                   d_dyout.p, d_daux.p, d_dout.p, d_inp.p, d_pr.p, d_route.p, d_slot.p, d_first.p,
                                   d_xin.p, d_pre.p, d_act.p, d_yout.p, d_wc.p, d_w1.p, d_w2.p, N, C, E, f, k, cap,
                                   d_dbc.p, rt);
        check_all(tag, {{"tc dinp", &d_dinp, &dinp}, {"tc dwc", &d_dwc, &dwc}, {"tc dbc", &d_dbc, &dbc}, {"tc dw1", &d_dw1, &dw1},
                        {"tc dw2", &d_dw2, &dw2}, {"tc dz", &d_dz, &dz}, {"tc dyout", &d_dyout, &dyout},
                        {"tc dxin", &d_dxin, &dxin}});
    }
}

GPU_TEST("gpu grad norm, clipped adamw (one tensor and every tensor in one launch), zeroed gradients") {
    TestRng rng(10);
    for (size_t n : {(size_t)1, (size_t)1000, (size_t)1000003}) {
        std::vector<float> g = rng.floats(n);
        DevF d_g(g);
        double cpu_sq = grad_norm_squared(g.data(), n), gpu_sq = gpu::grad_norm_squared(d_g.p, n);
        CHECK_MESSAGE(std::fabs(gpu_sq - cpu_sq) <= 1e-9 * cpu_sq, "grad norm^2 n" << n << ": " << gpu_sq << " vs " << cpu_sq);
        std::vector<float> p = rng.floats(n), m(n, 0.0f), v(n, 0.0f);
        DevF d_p(p), d_m(n), d_v(n);
        for (int t = 1; t <= 3; t++) {
            std::vector<float> gt = rng.floats(n, 0.01f);
            CUDA_CHECK(cudaMemcpy(d_g.p, gt.data(), n * sizeof(float), cudaMemcpyHostToDevice));
            float scale = t == 2 ? 0.5f : 1.0f;  // a clipped step
            adamw_update(p.data(), gt.data(), m.data(), v.data(), n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, t, scale);
            gpu::adamw_update(d_p.p, d_g.p, d_m.p, d_v.p, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, t, scale);
        }
        check_all(strf(" n%zu", n), {{"adamw params", &d_p, &p}, {"adamw m", &d_m, &m}, {"adamw v", &d_v, &v}});
        CHECK(d_g.get() == std::vector<float>(n, 0.0f));  // consumed
    }
    // the chunked launch over tensors: decay only where a chunk says so
    const size_t n = 200003;
    std::vector<gpu::AdamwChunk> chunks = {{0, 0, 70000, 1}, {70000, 70000, 65536, 0}, {135536, 135536, 64467, 1}};
    gpu::AdamwChunk* d_chunks = nullptr;
    gpu_malloc(&d_chunks, chunks.size(), "test chunks");
    CUDA_CHECK(cudaMemcpy(d_chunks, chunks.data(), chunks.size() * sizeof(gpu::AdamwChunk), cudaMemcpyHostToDevice));
    std::vector<float> p = rng.floats(n), g = rng.floats(n), m = rng.floats(n, 0.1f), v = rng.floats(n, 0.1f, 0.2f);
    DevF d_p(p), d_g(g), d_m(m), d_v(v);
    for (const gpu::AdamwChunk& ch : chunks)
        adamw_update(p.data() + ch.offset, g.data() + ch.offset, m.data() + ch.moment_offset, v.data() + ch.moment_offset,
                     (size_t)ch.n, 1e-3f, 0.9f, 0.95f, 1e-8f, ch.decay ? 0.1f : 0.0f, 4, 0.25f);
    gpu::adamw_update_chunks(d_p.p, d_g.p, d_m.p, d_v.p, d_chunks, (int)chunks.size(), 1e-3f, 0.9f, 0.95f, 1e-8f,
                             0.1f, 4, 0.25f);
    cudaFree(d_chunks);
    check_all(" chunks", {{"adamw params", &d_p, &p}, {"adamw m", &d_m, &m}, {"adamw v", &d_v, &v}});
    CHECK(d_g.get() == std::vector<float>(n, 0.0f));
}

// ---------------------------------------------------------------------------
// --precision bf16 (common/bf16_kernels.h): the GPU computes what the CPU
// emulates, held to tests/bf16_agree.h's bounds.

GPU_TEST("gpu bf16 rounding: the bits of common/bf16.h for ties, carries, NaN, infinities, subnormals, any float") {
    std::vector<float> x;
    // ties below and above an even and an odd bf16, both signs; the carry into the exponent
    for (uint32_t u : {0x3f808000u, 0x3f818000u, 0x3f807fffu, 0x3f808001u, 0x3fff8000u, 0x7f7f8000u, 0x7f7f7fffu,
                       0x00008000u, 0x00018000u, 0x00000001u, 0x007fffffu, 0x7f800000u, 0x7fc00001u, 0x7f800001u,
                       0x7fbfffffu, 0x00000000u})
        for (uint32_t sign : {0u, 0x80000000u}) x.push_back(float_of_bits(u | sign));
    TestRng r(17);
    for (int i = 0; i < 1 << 20; i++) x.push_back(float_of_bits((uint32_t)(r.next() >> 32)));  // every class of float
    DevF d(x);
    gpu::bf16_round_copy(d.p, d.p, x.size());
    std::vector<float> got = d.get();
    size_t wrong = 0;
    for (size_t i = 0; i < x.size(); i++)
        if (bits_of_float(got[i]) != bits_of_float(bf16_round(x[i])) && wrong++ < 5)
            FAIL_CHECK("bits " << std::hex << bits_of_float(x[i]) << ": gpu " << bits_of_float(got[i]) << ", cpu " << bits_of_float(bf16_round(x[i])));
    CHECK(wrong == 0);
}

// Under bf16, each block of every model case on the GPU against the CPU's
// emulation, from the same block input (the CPU's, copied) on the same
// rounded weights: the block's output and its input's gradient are bf16
// tensors (check_bf16_tensor), the block's parameter gradients within
// BF16_GRAD_L2. The linear layers run on bf16 tensor cores here
// (gpu/kernels.cuh, Bf16OperandKernels), so this also shows that they are
// exact on bf16 operands.
GPU_TEST("gpu bf16: every block of every model case against the CPU's emulation, forward and backward") {
    using GpuBf16 = Bf16Kernels<gpu::Bf16OperandKernels>;
    for (const ModelCase& mc : model_cases()) {
        INFO("model " << mc.name);
        const Config& c = mc.cfg;
        GPT<float, FastKernels> cpu;
        gpu::GPT gm;
        build_both(&cpu, &gm, c, 1234);
        cpu.bf16 = gm.bf16 = true;
        TestRng rng(99);
        std::vector<int> inputs, targets;
        routable_batch(&cpu, rng, mc.B, mc.T, &inputs, &targets);  // the CPU's forward, in bf16
        gpt_zero_grad(&cpu);
        gpt_backward(&cpu);
        gpu::gpt_forward(&gm, inputs.data(), targets.data(), mc.B, mc.T);  // carves, rounds the weights
        const size_t BTC = (size_t)mc.B * mc.T * c.C;
        for (int l = 0; l < c.L; l++) {
            std::string tag = std::string(mc.name) + " block " + std::to_string(l);
            const float* in = l == 0 ? cpu.acts.encoded : cpu.acts.layer[l - 1].res3;
            const float* dinp_want = l == 0 ? cpu.grad_acts.encoded : cpu.grad_acts.layer[l - 1].res3;
            DevF d_in(std::vector<float>(in, in + BTC)), d_dinp(BTC);
            LayerActs<float>& la = gm.acts.layer[l];
            gpu::block_forward<GpuBf16>(la, d_in.p, gm.params_bf16.layer[l], c.kinds[l], mc.B, mc.T, c);
            std::vector<float> out(BTC);
            CUDA_CHECK(cudaMemcpy(out.data(), la.res3, BTC * sizeof(float), cudaMemcpyDeviceToHost));
            check_bf16_tensor(out, std::vector<float>(cpu.acts.layer[l].res3, cpu.acts.layer[l].res3 + BTC), TOL,
                              tag + " output");
            gpu::gpt_zero_grad(&gm);
            gpu::gpt_zero_grad_acts(&gm);
            const float* dout = cpu.grad_acts.layer[l].res3;
            CUDA_CHECK(cudaMemcpy(gm.grad_acts.layer[l].res3, dout, BTC * sizeof(float), cudaMemcpyHostToDevice));
            if (c.kinds[l] == TOKEN_CHOICE)
                CUDA_CHECK(cudaMemcpy(gm.grad_acts.layer[l].aux, cpu.grad_acts.layer[l].aux, sizeof(float),
                                      cudaMemcpyHostToDevice));
            gpu::block_backward<GpuBf16>(d_dinp.p, gm.grads.layer[l], gm.grad_acts.layer[l], d_in.p,
                                         gm.params_bf16.layer[l], la, c.kinds[l], mc.B, mc.T, c);
            check_bf16_tensor(d_dinp.get(), std::vector<float>(dinp_want, dinp_want + BTC), TOL, tag + " dinp");
            std::vector<float> grads(gm.num_params), got, want;
            gpu::gpu_gpt_get_grads(&gm, grads.data());
            const std::string prefix = "h" + std::to_string(l) + ".";
            for (const TensorSpec& ts : param_specs(c))
                if (ts.name.rfind(prefix, 0) == 0) {
                    got.insert(got.end(), grads.begin() + ts.offset, grads.begin() + ts.offset + ts.numel);
                    want.insert(want.end(), cpu.grads_memory.begin() + ts.offset,
                                cpu.grads_memory.begin() + ts.offset + ts.numel);
                }
            double l2 = relative_l2(got, want);
            CHECK_MESSAGE(l2 <= BF16_GRAD_L2, tag << " parameter gradients: relative L2 " << l2);
        }
    }
}
