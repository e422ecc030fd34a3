// bench/bench_train.cpp: full CPU training steps (forward + backward + clip +
// AdamW) of the bench model, dense vs MoT, in fp32 on the CPU path.
//   bench model: L 4, C 256, NH 4, T 128, B 16, V 4096 (Vp 4096);
//   dense dff 1024; MoT E 32, G 8, f 256 (flop-matched), all layers one kind.
// Prints tokens/s, achieved GFLOP/s from model_flops_per_token (common/layout.h),
// the fraction of the stated fp32 peak, the MoT/dense step-time ratio, a
// per-layer-kind time breakdown (cpu/profile.h), and resident memory.
//   make build/bench_train && ./build/bench_train [steps]
// Each model runs twice in the same process: with the reference layer loops
// (layers_use_reference(), cpu/fused.h: "ref") and with the fast float
// kernels ("fast"); the GEMM is the fast sgemm in both. Ratios between rows
// come from one run on a noisy shared machine.
//   ./build/bench_train --reference   the reference gemm too (slow)
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <omp.h>

#include "train/peak.h"
#include "common/rng.h"
#include "cpu/gpt.h"

static double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// kB from /proc/self/status, e.g. "VmRSS" or "VmHWM"
static long proc_kb(const char* key) {
    FILE* fp = std::fopen("/proc/self/status", "r");
    if (!fp) return -1;
    char line[256];
    long kb = -1;
    size_t n = std::strlen(key);
    while (std::fgets(line, sizeof line, fp))
        if (std::strncmp(line, key, n) == 0 && line[n] == ':') kb = std::atol(line + n + 1);
    std::fclose(fp);
    return kb;
}
// Resets VmHWM (the peak RSS) to the current RSS, so each model's peak is its own.
static void reset_peak_rss() {
    if (FILE* fp = std::fopen("/proc/self/clear_refs", "w")) {
        std::fputs("5", fp);
        std::fclose(fp);
    }
}
static long maxrss_kb() {
    rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

static Config bench_config(int kind) {
    Config c;
    c.V = 4096;
    c.Vp = 4096;
    c.maxT = 128;
    c.L = 4;
    c.NH = 4;
    c.C = 256;
    c.dff = 1024;
    c.E = 32;
    c.G = 8;
    c.f = 256;
    c.kinds.assign(c.L, kind);
    return c;
}

struct Result {
    const char* name;
    double step_s = 0, tok_s = 0, gflops = 0, frac = 0;
    double fwd_s = 0, bwd_s = 0, zero_s = 0, clip_s = 0, adam_s = 0;
    double prof[2][PROF_NKINDS] = {};
    long rss_before = 0, rss_after = 0, hwm = 0, params = 0;
    double loss0 = 0, loss1 = 0;
};

static Result bench_model(const char* name, int kind, bool ref_layers, int B, int T, int steps, double peak) {
    Result r;
    r.name = name;
    layers_use_reference() = ref_layers;
    reset_peak_rss();
    Config c = bench_config(kind);
    GPT<float> model;
    gpt_build(&model, c);
    gpt_init_weights(&model, 1234);
    r.params = (long)num_params(c);
    std::vector<int> inputs(B * T), targets(B * T);
    Rng rng = rng_seed(7);
    for (int i = 0; i < B * T; i++) {
        inputs[i] = (int)(rng_u64(&rng) % c.V);
        targets[i] = (int)(rng_u64(&rng) % c.V);
    }
    Result* rp = &r;
    auto step = [&](int s) {
        double t0 = now();
        gpt_forward(&model, inputs.data(), targets.data(), B, T);
        double t1 = now();
        gpt_zero_grad(&model);
        double t2 = now();
        gpt_backward(&model);
        double t3 = now();
        gpt_clip_grads(&model, 1.0);
        double t4 = now();
        gpt_update(&model, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, s);
        double t5 = now();
        rp->fwd_s = t1 - t0, rp->zero_s = t2 - t1, rp->bwd_s = t3 - t2, rp->clip_s = t4 - t3, rp->adam_s = t5 - t4;
        return t5 - t0;
    };
    // warm up: allocations, thread pool, packing buffers, page faults
    for (int s = 0; s < 2; s++) step(s);
    r.loss0 = model.mean_loss;
    r.rss_before = proc_kb("VmRSS");
    std::vector<double> times, fwd, bwd, zero, clip, adam;
    for (int s = 0; s < steps; s++) {
        times.push_back(step(2 + s));
        fwd.push_back(r.fwd_s), bwd.push_back(r.bwd_s), zero.push_back(r.zero_s);
        clip.push_back(r.clip_s), adam.push_back(r.adam_s);
    }
    r.loss1 = model.mean_loss;
    r.rss_after = proc_kb("VmRSS");
    r.hwm = proc_kb("VmHWM");
    // profile: a few more steps with the per-kind timers on (mean per step);
    // the medians below are of the unprofiled steps
    const int prof_steps = 3;
    Profile& p = gpt_profile();
    p = Profile();
    p.on = true;
    for (int s = 0; s < prof_steps; s++) step(2 + steps + s);
    p.on = false;
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < PROF_NKINDS; i++) r.prof[k][i] = p.seconds[k][i] / prof_steps;
    std::printf("%-9s step times (ms):", name);
    for (double t : times) std::printf(" %.0f", t * 1e3);
    std::printf("\n");
    r.step_s = median(times);
    r.fwd_s = median(fwd), r.bwd_s = median(bwd), r.zero_s = median(zero), r.clip_s = median(clip), r.adam_s = median(adam);
    r.tok_s = B * T / r.step_s;
    r.gflops = model_flops_per_token(c, T) * B * T / r.step_s / 1e9;
    r.frac = r.gflops * 1e9 / peak;

    return r;
}

// One FFN layer of each kind at the bench shape (fast kernels, forward +
// backward), timed whole and with only its big GEMMs: dense fc and fcproj,
// MoT's six batched expert products (w1 and w2, forward and backward). The
// two sets of GEMMs do the same FLOPs; what is left of the layer's time is
// its other work: gelu, biases, and for MoT the controller, the softmax over
// the group and the merge / emit products, which stream the (S,T,E,C) mixed
// tokens (E/G = 4 times the size of the layer's input) through memory.
struct FfnParts {
    double dense_all = 0, dense_gemm = 0, mot_all = 0, mot_gemm = 0, gemm_flop = 0;
};
static FfnParts ffn_parts(int B, int T) {
    const Config c = bench_config(MOT);
    const int C = c.C, E = c.E, G = c.G, f = c.f, dff = c.dff, ST = B / G * T;
    const long long EC = (long long)E * C, Ef = (long long)E * f, fC = (long long)f * C;
    const size_t BTC = (size_t)B * T * C, BTE = (size_t)B * T * E, BTH = (size_t)B * T * dff;
    const size_t STEC = (size_t)ST * EC, STEf = (size_t)ST * Ef;
    Rng rng = rng_seed(3);
    auto rnd = [&](size_t n) {
        std::vector<float> v(n);
        for (float& x : v) x = 2.0f * rng_uniform(&rng) - 1.0f;
        return v;
    };
    std::vector<float> inp = rnd(BTC), dout = rnd(BTC), out(BTC), dinp(BTC);
    // dense
    std::vector<float> fcw = rnd((size_t)dff * C), fcb = rnd(dff), pw = rnd((size_t)C * dff), pb = rnd(C);
    std::vector<float> dfcw(fcw.size()), dfcb(dff), dpw(pw.size()), dpb(C), fch(BTH), fchg(BTH), dfch(BTH), dfchg(BTH);
    // MoT
    std::vector<float> wc = rnd((size_t)E * C), w1 = rnd((size_t)E * fC), w2 = rnd((size_t)E * fC);
    std::vector<float> dwc(wc.size()), dw1(w1.size()), dw2(w2.size());
    std::vector<float> z(BTE), m(BTE), u(STEC), p(STEf), a(STEf), y(STEC);
    std::vector<float> dz(BTE), dm(BTE), du(STEC), dp(STEf), da(STEf), dy(STEC);

    auto time = [](auto&& fn) {  // median of 9 after 2 warm-up calls
        std::vector<double> t;
        for (int r = 0; r < 11; r++) {
            double t0 = now();
            fn();
            if (r >= 2) t.push_back(now() - t0);
        }
        return median(t);
    };
    FfnParts r;
    r.gemm_flop = 3.0 * 2 * 2 * (double)B * T * C * dff;  // fc and fcproj: forward + 2 backward products each
    r.dense_all = time([&] {
        ffn_forward(out.data(), fch.data(), fchg.data(), inp.data(), fcw.data(), fcb.data(), pw.data(), pb.data(), B,
                    T, C, dff);
        ffn_backward(dinp.data(), dfcw.data(), dfcb.data(), dpw.data(), dpb.data(), dfch.data(), dfchg.data(),
                     dout.data(), inp.data(), fch.data(), fchg.data(), fcw.data(), pw.data(), B, T, C, dff);
    });
    r.dense_gemm = time([&] {
        matmul_forward(fch.data(), inp.data(), fcw.data(), fcb.data(), B, T, C, dff);
        matmul_forward(out.data(), fchg.data(), pw.data(), pb.data(), B, T, dff, C);
        matmul_backward(dfchg.data(), dpw.data(), dpb.data(), dout.data(), fchg.data(), pw.data(), B, T, dff, C);
        matmul_backward(dinp.data(), dfcw.data(), dfcb.data(), dfch.data(), inp.data(), fcw.data(), B, T, C, dff);
    });
    r.mot_all = time([&] {
        mot_forward(out.data(), z.data(), m.data(), u.data(), p.data(), a.data(), y.data(), inp.data(), wc.data(),
                    w1.data(), w2.data(), B, T, C, E, G, f, 1.0f);
        mot_backward(dinp.data(), dwc.data(), dw1.data(), dw2.data(), dz.data(), dm.data(), du.data(), dp.data(),
                     da.data(), dy.data(), dout.data(), inp.data(), m.data(), u.data(), p.data(), a.data(), y.data(),
                     wc.data(), w1.data(), w2.data(), B, T, C, E, G, f, 1.0f);
    });
    r.mot_gemm = time([&] {  // the expert products of cpu/mot.h, batched over the E experts
        gemm(false, true, ST, f, C, 1.0f, u.data(), EC, C, w1.data(), C, fC, 0.0f, p.data(), Ef, f, E);
        gemm(false, true, ST, C, f, 1.0f, a.data(), Ef, f, w2.data(), f, fC, 0.0f, y.data(), EC, C, E);
        gemm(false, false, ST, f, C, 1.0f, dy.data(), EC, C, w2.data(), f, fC, 0.0f, da.data(), Ef, f, E);
        gemm(true, false, C, f, ST, 1.0f, dy.data(), EC, C, a.data(), Ef, f, 1.0f, dw2.data(), f, fC, E);
        gemm(true, false, f, C, ST, 1.0f, dp.data(), Ef, f, u.data(), EC, C, 1.0f, dw1.data(), C, fC, E);
        gemm(false, false, ST, C, f, 1.0f, dp.data(), Ef, f, w1.data(), C, fC, 0.0f, du.data(), EC, C, E);
    });
    return r;
}

int main(int argc, char** argv) {
    int steps = 10;
    for (int i = 1; i < argc; i++) {
        if (std::strcmp(argv[i], "--reference") == 0)
            gemm_use_reference() = true;
        else
            steps = std::max(1, std::atoi(argv[i]));
    }
    const int B = 16, T = 128;
    int threads = omp_get_max_threads();
    std::string how;
    double peak = cpu_peak_flops(threads, &how);
    std::printf("bench_train: L 4, C 256, NH 4, T %d, B %d, V 4096; dense dff 1024; MoT E 32, G 8, f 256\n", T, B);
    std::printf("fp32 peak: %s\n", how.c_str());
    std::printf("median of %d steps after 2 warm-up steps; a step = forward + zero_grad + backward + clip + AdamW%s\n\n",
                steps, gemm_use_reference() ? "  [REFERENCE gemm]" : "");

    Result all[4];
    all[0] = bench_model("dense ref", DENSE, true, B, T, steps, peak);
    all[1] = bench_model("mot ref", MOT, true, B, T, steps, peak);
    all[2] = bench_model("dense", DENSE, false, B, T, steps, peak);
    all[3] = bench_model("mot", MOT, false, B, T, steps, peak);
    layers_use_reference() = false;
    Result* res = all + 2;  // the details below are of the fast kernels
    for (int i = 0; i < 2; i++) {
        const Result& r = res[i];
        Config c = bench_config(i == 0 ? DENSE : MOT);
        std::printf("%-5s  %ld params, %.4f GFLOP/token x %d tokens = %.2f GFLOP/step; loss %.4f -> %.4f\n", r.name,
                    r.params, model_flops_per_token(c, T) / 1e9, B * T, model_flops_per_token(c, T) * B * T / 1e9,
                    r.loss0, r.loss1);
    }

    std::printf("\nper-step time by layer kind, fast kernels (ms, mean of 3 profiled steps; [ref] = reference loops)\n");
    std::printf("%-18s %9s %9s %9s %9s   %9s %9s\n", "", "dense fwd", "dense bwd", "mot fwd", "mot bwd", "mot fwd[ref]",
                "bwd[ref]");
    for (int k = 0; k < PROF_NKINDS; k++) {
        if (k == PROF_ZERO) continue;
        std::printf("%-18s %9.2f %9.2f %9.2f %9.2f   %9.2f %9.2f\n", prof_name(k), res[0].prof[0][k] * 1e3,
                    res[0].prof[1][k] * 1e3, res[1].prof[0][k] * 1e3, res[1].prof[1][k] * 1e3,
                    all[1].prof[0][k] * 1e3, all[1].prof[1][k] * 1e3);
    }
    std::printf("%-18s %9s %9.2f %9s %9.2f\n", "zero dacts", "", res[0].prof[1][PROF_ZERO] * 1e3, "",
                res[1].prof[1][PROF_ZERO] * 1e3);
    std::printf("%-18s %9.2f %9s %9.2f %9s   (gpt_zero_grad)\n", "zero grads", res[0].zero_s * 1e3, "",
                res[1].zero_s * 1e3, "");
    std::printf("%-18s %9s %9.2f %9s %9.2f   (grad norm + clip)\n", "clip", "", res[0].clip_s * 1e3, "",
                res[1].clip_s * 1e3);
    std::printf("%-18s %9s %9.2f %9s %9.2f\n", "adamw", "", res[0].adam_s * 1e3, "", res[1].adam_s * 1e3);
    std::printf("%-18s %9.2f %9.2f %9.2f %9.2f   (median step: forward, backward)\n", "total", res[0].fwd_s * 1e3,
                res[0].bwd_s * 1e3, res[1].fwd_s * 1e3, res[1].bwd_s * 1e3);
    for (int i = 0; i < 2; i++) {
        double gemm_ms = 0, all_ms = 0;
        for (int k = 0; k < 2; k++) {
            gemm_ms += (res[i].prof[k][PROF_MATMUL] + res[i].prof[k][PROF_LMHEAD]) * 1e3;
            for (int j = 0; j < PROF_NKINDS; j++) all_ms += res[i].prof[k][j] * 1e3;
        }
        std::printf("%-5s  linear layers + lm head (pure GEMM + bias): %.1f of %.1f ms profiled fwd+bwd\n",
                    res[i].name, gemm_ms, all_ms);
    }

    FfnParts fp = ffn_parts(B, T);
    std::printf("\none FFN layer, forward + backward, fast kernels (ms, median of 9; the GEMMs of both kinds do %.2f "
                "GFLOP)\n", fp.gemm_flop / 1e9);
    std::printf("%-6s %8s %22s %18s\n", "", "layer", "its GEMMs (GFLOP/s)", "rest of the layer");
    std::printf("%-6s %8.2f %10.2f (%6.1f) %18.2f\n", "dense", fp.dense_all * 1e3, fp.dense_gemm * 1e3,
                fp.gemm_flop / fp.dense_gemm / 1e9, (fp.dense_all - fp.dense_gemm) * 1e3);
    std::printf("%-6s %8.2f %10.2f (%6.1f) %18.2f   (controller, group softmax, merge, emit, gelu)\n", "mot",
                fp.mot_all * 1e3, fp.mot_gemm * 1e3, fp.gemm_flop / fp.mot_gemm / 1e9,
                (fp.mot_all - fp.mot_gemm) * 1e3);
    double extra_opt = (res[1].zero_s + res[1].clip_s + res[1].adam_s) - (res[0].zero_s + res[0].clip_s + res[0].adam_s);
    std::printf("MoT - dense per step: %.1f ms (median steps); optimizer (zero + clip + AdamW over %.1fx the "
                "parameters) %.1f ms more (medians), FFN layers %.1f ms more (profiled steps)\n",
                (res[1].step_s - res[0].step_s) * 1e3,
                (double)res[1].params / res[0].params, extra_opt * 1e3,
                (res[1].prof[0][PROF_MOT] + res[1].prof[1][PROF_MOT] - res[0].prof[0][PROF_FFN] -
                 res[0].prof[1][PROF_FFN]) * 1e3);

    std::printf("\nresident memory (kB): VmRSS after warm-up -> after %d more steps (growth), VmHWM of the model\n",
                steps);
    for (const Result& r : all)
        std::printf("%-9s  VmRSS %ld -> %ld (%+ld)   peak VmHWM %ld\n", r.name, r.rss_before, r.rss_after,
                    r.rss_after - r.rss_before, r.hwm);
    std::printf("process ru_maxrss %ld kB (the largest of them)\n", maxrss_kb());

    std::printf("\n%-10s %10s %10s %10s %10s %10s\n", "model", "step ms", "tokens/s", "GFLOP/s", "of peak", "peak MB");
    for (const Result& r : all)
        std::printf("%-10s %10.1f %10.0f %10.1f %9.1f%% %10.1f\n", r.name, r.step_s * 1e3, r.tok_s, r.gflops,
                    100 * r.frac, r.hwm / 1024.0);
    std::printf("MoT / dense step time: %.3f (fast), %.3f (ref)\n", res[1].step_s / res[0].step_s,
                all[1].step_s / all[0].step_s);
    std::printf("fast / ref step time: dense %.3f, mot %.3f\n", all[2].step_s / all[0].step_s,
                all[3].step_s / all[1].step_s);
    return 0;
}
