// bench/bench_train.cpp: full CPU training steps (forward + backward + clip +
// AdamW) of the bench model, dense vs MoT, in fp32 on the CPU path.
//   bench model: L 4, C 256, NH 4, T 128, B 16, V 4096 (Vp 4096);
//   dense dff 1024; MoT E 32, G 8, f 256 (flop-matched), all layers one kind.
// Prints tokens/s, achieved GFLOP/s from model_flops_per_token (common/layout.h),
// the fraction of the stated fp32 peak, the MoT/dense step-time ratio, where a
// step's time goes by layer, and resident memory.
//   make build/bench_train && ./build/bench_train [steps] [reference steps]
// Each model runs twice in the same process: with the reference loops of cpu/
// ("ref": GPT<float, PlainKernels>; the GEMM too is the plain loop, so these
// steps take seconds and run fewer times) and with the fast kernels of
// cpu/fast/ (GPT<float, FastKernels>, the training path). Ratios between
// rows come from one run on a noisy shared machine.
//   ./build/bench_train 10 1    10 fast steps, 1 reference step (the default)
//   ./build/bench_train 10 0    no reference rows
//
// The per-layer breakdown calls each layer function (layernorm, matmul,
// attention, ffn or mot, crossentropy, the optimizer, ...) alone on buffers
// of the bench model's shapes, forward and backward, and multiplies by its
// calls per step: timed from outside, so the training step runs as it is.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <omp.h>

#include "train/peak.h"
#include "common/rng.h"
#include "cpu/fast/kernels.h"
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
    c.mot.G = 8;
    c.f = 256;
    c.kinds.assign(c.L, kind);
    return c;
}

// median seconds of `reps` calls of fn, after one warm-up call
template <typename F>
static double time_median(F&& fn, int reps) {
    fn();
    std::vector<double> t;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        fn();
        t.push_back(now() - t0);
    }
    return median(t);
}

struct Result {
    const char* name;
    double step_s = 0, tok_s = 0, gflops = 0, frac = 0;
    double fwd_s = 0, bwd_s = 0, zero_s = 0, clip_s = 0, adam_s = 0;
    long rss_before = 0, rss_after = 0, hwm = 0, params = 0;
    double loss0 = 0, loss1 = 0;
};

// Median of `steps` training steps after `warmup` ones, on the kernel set
// Kernels (cpu/kernels.h).
template <typename Kernels>
static Result bench_model(const char* name, int kind, int B, int T, int warmup, int steps, double peak) {
    Result r;
    r.name = name;
    reset_peak_rss();
    Config c = bench_config(kind);
    GPT<float, Kernels> model;
    gpt_build(&model, c);
    gpt_init_weights(&model, 1234);
    r.params = (long)num_params(c);
    std::vector<int> inputs(B * T), targets(B * T);
    Rng rng = rng_seed(7);
    for (int i = 0; i < B * T; i++) {
        inputs[i] = (int)(rng_u64(&rng) % c.V);
        targets[i] = (int)(rng_u64(&rng) % c.V);
    }
    auto step = [&](int s) {
        double t0 = now();
        gpt_forward(&model, inputs.data(), targets.data(), B, T);
        double t1 = now();
        gpt_backward(&model);  // the gradients are zero: the last update left them so
        double t3 = now();
        double norm = gpt_grad_norm(&model);
        double t4 = now();
        gpt_update(&model, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, s, clip_scale(norm, 1.0));
        double t5 = now();
        r.fwd_s = t1 - t0, r.zero_s = 0, r.bwd_s = t3 - t1, r.clip_s = t4 - t3, r.adam_s = t5 - t4;
        return t5 - t0;
    };
    gpt_ensure_acts(&model, B, T);  // the activations' memory, before any is measured
    // warm up: thread pool, packing buffers, page faults
    for (int s = 0; s < warmup; s++) step(s);
    r.loss0 = model.mean_loss;
    r.rss_before = proc_kb("VmRSS");
    std::vector<double> times, fwd, bwd, zero, clip, adam;
    for (int s = 0; s < steps; s++) {
        times.push_back(step(warmup + s));
        fwd.push_back(r.fwd_s), bwd.push_back(r.bwd_s), zero.push_back(r.zero_s);
        clip.push_back(r.clip_s), adam.push_back(r.adam_s);
    }
    r.loss1 = model.mean_loss;
    r.rss_after = proc_kb("VmRSS");
    r.hwm = proc_kb("VmHWM");
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

// One layer function of the step: seconds per call (median), calls per step.
struct Part {
    const char* name;
    int calls;
    double fwd = 0, bwd = 0;
};

// Every layer function of a training step of the bench model of this kind,
// called alone on random buffers of its shapes (fast kernels), forward and
// backward. The optimizer (the grad norm, then AdamW over every tensor with
// the clip folded in, as gpt_grad_norm and gpt_update run them) is one part,
// in the bwd column.
static std::vector<Part> layer_parts(int kind, int B, int T) {
    using K = FastKernels;  // the kernels of the training path
    const Config c = bench_config(kind);
    const int C = c.C, NH = c.NH, L = c.L, V = c.V, Vp = c.Vp, dff = c.dff, E = c.E, G = c.mot.G, f = c.f;
    const size_t BT = (size_t)B * T, BTC = BT * C, TT = (size_t)B * NH * T * T;
    const size_t nu = (size_t)(B / G) * T * E * C, np = (size_t)(B / G) * T * E * f;
    Rng rng = rng_seed(5);
    auto rnd = [&](size_t n, float scale = 1.0f) {
        std::vector<float> v(n);
        for (float& x : v) x = scale * (2.0f * rng_uniform(&rng) - 1.0f);
        return v;
    };
    const int reps = 5;
    std::vector<Part> parts;
    auto add = [&](const char* name, int calls, auto&& fwd, auto&& bwd) {
        Part p{name, calls};
        p.fwd = time_median(fwd, reps);
        p.bwd = time_median(bwd, reps);
        parts.push_back(p);
    };
    std::vector<float> x = rnd(BTC), x2 = rnd(BTC), dout = rnd(BTC), out(BTC), dx(BTC), dx2(BTC);
    std::vector<int> tok(BT), tgt(BT);
    for (size_t i = 0; i < BT; i++) tok[i] = (int)(rng_u64(&rng) % V), tgt[i] = (int)(rng_u64(&rng) % V);

    std::vector<float> wte = rnd((size_t)Vp * C, 0.02f), wpe = rnd((size_t)c.maxT * C, 0.02f);
    std::vector<float> dwte(wte.size()), dwpe(wpe.size());
    add("encoder", 1, [&] { encoder_forward(out.data(), tok.data(), wte.data(), wpe.data(), B, T, C); },
        [&] { encoder_backward(dwte.data(), dwpe.data(), dout.data(), tok.data(), B, T, C); });

    std::vector<float> lw = rnd(C), lb = rnd(C), dlw(C), dlb(C), mean(BT), rstd(BT);
    add("layernorm", 2 * L + 1,
        [&] { K::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), lw.data(), lb.data(), B, T, C); },
        [&] { K::layernorm_backward(dx.data(), dlw.data(), dlb.data(), dout.data(), x.data(), lw.data(), mean.data(),
                                    rstd.data(), B, T, C); });

    std::vector<float> qkvw = rnd((size_t)3 * C * C, 0.02f), qkvb = rnd(3 * C), qkv = rnd(BT * 3 * C), dqkv(BT * 3 * C);
    std::vector<float> dqkvw(qkvw.size()), dqkvb(3 * C), dout3 = rnd(BT * 3 * C), qkv_out(BT * 3 * C);
    add("matmul qkv", L, [&] { K::matmul_forward(qkv_out.data(), x.data(), qkvw.data(), qkvb.data(), B, T, C, 3 * C); },
        [&] { K::matmul_backward(dx.data(), dqkvw.data(), dqkvb.data(), dout3.data(), x.data(), qkvw.data(), B, T, C,
                                 3 * C); });

    std::vector<float> preatt(TT), att(TT), dpreatt(TT), datt(TT);
    add("attention", L, [&] { K::attention_forward(out.data(), preatt.data(), att.data(), qkv.data(), B, T, C, NH); },
        [&] { K::attention_backward(dqkv.data(), dpreatt.data(), datt.data(), dout.data(), qkv.data(), att.data(), B, T,
                                    C, NH); });

    std::vector<float> pw = rnd((size_t)C * C, 0.02f), pb = rnd(C), dpw(pw.size()), dpb(C);
    add("matmul attproj", L, [&] { K::matmul_forward(out.data(), x.data(), pw.data(), pb.data(), B, T, C, C); },
        [&] { K::matmul_backward(dx.data(), dpw.data(), dpb.data(), dout.data(), x.data(), pw.data(), B, T, C, C); });

    add("residual", 2 * L, [&] { residual_forward(out.data(), x.data(), x2.data(), BTC); },
        [&] { residual_backward(dx.data(), dx2.data(), dout.data(), BTC); });

    if (kind == DENSE) {
        std::vector<float> fcw = rnd((size_t)dff * C, 0.02f), fcb = rnd(dff), fpw = rnd((size_t)C * dff, 0.02f),
                           fpb = rnd(C), dfcw(fcw.size()), dfcb(dff), dfpw(fpw.size()), dfpb(C);
        std::vector<float> h(BT * dff), hg(BT * dff), dh(BT * dff), dhg(BT * dff);
        add("dense ffn", L,
            [&] { ffn_forward<K>(out.data(), h.data(), hg.data(), x.data(), fcw.data(), fcb.data(), fpw.data(),
                                 fpb.data(), B, T, C, dff); },
            [&] { ffn_backward<K>(dx.data(), dfcw.data(), dfcb.data(), dfpw.data(), dfpb.data(), dh.data(), dhg.data(),
                                  dout.data(), x.data(), h.data(), hg.data(), fcw.data(), fpw.data(), B, T, C, dff); });
    } else {
        std::vector<float> wc = rnd((size_t)E * C, 0.02f), w1 = rnd((size_t)E * f * C, 0.02f),
                           w2 = rnd((size_t)E * C * f, 0.02f), dwc(wc.size()), dw1(w1.size()), dw2(w2.size());
        std::vector<float> z(BT * E), m(BT * E), u(nu), p(np), a(np), y(nu), dz(BT * E), dm(BT * E), du(nu),
            dp(np), da(np), dy(nu);
        add("mot ffn", L,
            [&] { K::mot_forward(out.data(), z.data(), m.data(), u.data(), p.data(), a.data(), y.data(), x.data(),
                                 wc.data(), w1.data(), w2.data(), B, T, C, E, G, f, c.mot.tau); },
            [&] { K::mot_backward(dx.data(), dwc.data(), dw1.data(), dw2.data(), dz.data(), dm.data(), du.data(),
                                  dp.data(), da.data(), dy.data(), dout.data(), x.data(), m.data(), u.data(), p.data(),
                                  a.data(), y.data(), wc.data(), w1.data(), w2.data(), B, T, C, E, G, f, c.mot.tau); });
    }

    std::vector<float> logits = rnd(BT * Vp, 4.0f), probs(BT * Vp), dlogits(BT * Vp), losses(BT), dlosses(BT, 1.0f);
    add("lm head", 1,
        [&] { K::matmul_forward(logits.data(), x.data(), wte.data(), (const float*)nullptr, B, T, C, Vp); },
        [&] { K::matmul_backward(dx.data(), dwte.data(), (float*)nullptr, dlogits.data(), x.data(), wte.data(), B, T, C,
                                 Vp); });
    add("crossentropy", 1,
        [&] { K::crossentropy_forward(losses.data(), probs.data(), logits.data(), tgt.data(), B, T, V, Vp); },
        [&] { K::crossentropy_backward(dlogits.data(), dlosses.data(), probs.data(), tgt.data(), B, T, V, Vp); });

    const size_t n = num_params(c);
    const std::vector<TensorSpec> specs = param_specs(c);
    std::vector<float> params = rnd(n, 0.02f), grads = rnd(n), mom(n), vel(n);
    int t = 0;
    add("optimizer", 1, [] {}, [&] {  // the norm (one read), then AdamW with the clip folded in (one pass)
        double norm = std::sqrt(grad_norm_squared(grads.data(), n));
        for (const TensorSpec& s : specs)
            adamw_update(params.data() + s.offset, grads.data() + s.offset, mom.data() + s.offset,
                         vel.data() + s.offset, s.numel, 1e-3f, 0.9f, 0.95f, 1e-8f, s.ndim >= 2 ? 0.1f : 0.0f, ++t,
                         clip_scale(norm, 0.5 * norm));
    });
    return parts;
}

// The parts' time per step and share of the measured (median) step.
static void print_parts(const Result& r, const std::vector<Part>& parts) {
    std::printf("%-16s %6s %9s %9s %10s %7s\n", r.name, "calls", "fwd ms", "bwd ms", "ms/step", "share");
    double sum = 0;
    for (const Part& p : parts) {
        double ms = p.calls * (p.fwd + p.bwd) * 1e3;
        sum += ms;
        std::printf("%-16s %6d %9.2f %9.2f %10.1f %6.1f%%\n", p.name, p.calls, p.fwd * 1e3, p.bwd * 1e3, ms,
                    100 * ms / (r.step_s * 1e3));
    }
    double step = r.step_s * 1e3;
    std::printf("%-16s %6s %9s %9s %10.1f %6.1f%%   (step - parts: zeroing activation gradients; caches)\n", "rest",
                "", "", "", step - sum, 100 * (step - sum) / step);
    std::printf("%-16s %6s %9s %9s %10.1f\n\n", "step (median)", "", "", "", step);
}

// ms of one forward + backward call of the part called `name`
static double call_ms(const std::vector<Part>& parts, const char* name) {
    for (const Part& p : parts)
        if (std::strcmp(p.name, name) == 0) return (p.fwd + p.bwd) * 1e3;
    return 0;
}

// The big GEMMs of one FFN layer of each kind at the bench shape (fast
// kernels, forward + backward): dense fc and fcproj, MoT's six batched expert
// products (w1 and w2, forward and backward). The two sets do the same
// FLOPs; what is left of the layer's time (layer_parts) is its other work:
// gelu, biases, and for MoT the controller, the softmax over the group and
// the merge / emit products, which stream the (S,T,E,C) mixed tokens (E/G = 4
// times the size of the layer's input) through memory.
struct FfnGemms {
    double dense = 0, mot = 0, flop = 0;
};
static FfnGemms ffn_gemms(int B, int T) {
    using K = FastKernels;
    const Config c = bench_config(MOT);
    const int C = c.C, E = c.E, G = c.mot.G, f = c.f, dff = c.dff, ST = B / G * T;
    const long long EC = (long long)E * C, Ef = (long long)E * f, fC = (long long)f * C;
    const size_t BTC = (size_t)B * T * C, BTH = (size_t)B * T * dff, STEC = (size_t)ST * EC, STEf = (size_t)ST * Ef;
    Rng rng = rng_seed(3);
    auto rnd = [&](size_t n) {
        std::vector<float> v(n);
        for (float& x : v) x = 2.0f * rng_uniform(&rng) - 1.0f;
        return v;
    };
    std::vector<float> inp = rnd(BTC), dout = rnd(BTC), out(BTC), dinp(BTC);
    std::vector<float> fcw = rnd((size_t)dff * C), fcb = rnd(dff), pw = rnd((size_t)C * dff), pb = rnd(C);
    std::vector<float> dfcw(fcw.size()), dfcb(dff), dpw(pw.size()), dpb(C), fch(BTH), fchg(BTH), dfch(BTH), dfchg(BTH);
    std::vector<float> w1 = rnd((size_t)E * fC), w2 = rnd((size_t)E * fC), dw1(w1.size()), dw2(w2.size());
    std::vector<float> u = rnd(STEC), a = rnd(STEf), dp = rnd(STEf), dy = rnd(STEC), p(STEf), y(STEC), du(STEC),
        da(STEf);
    FfnGemms r;
    r.flop = 3.0 * 2 * 2 * (double)B * T * C * dff;  // fc and fcproj: forward + 2 backward products each
    r.dense = time_median([&] {
        K::matmul_forward(fch.data(), inp.data(), fcw.data(), fcb.data(), B, T, C, dff);
        K::matmul_forward(out.data(), fchg.data(), pw.data(), pb.data(), B, T, dff, C);
        K::matmul_backward(dfchg.data(), dpw.data(), dpb.data(), dout.data(), fchg.data(), pw.data(), B, T, dff, C);
        K::matmul_backward(dinp.data(), dfcw.data(), dfcb.data(), dfch.data(), inp.data(), fcw.data(), B, T, C, dff);
    }, 9);
    r.mot = time_median([&] {  // the expert products of cpu/fast/mot.h, batched over the E experts
        fast::gemm(false, true, ST, f, C, 1.0f, u.data(), EC, C, w1.data(), C, fC, 0.0f, p.data(), Ef, f, E);
        fast::gemm(false, true, ST, C, f, 1.0f, a.data(), Ef, f, w2.data(), f, fC, 0.0f, y.data(), EC, C, E);
        fast::gemm(false, false, ST, f, C, 1.0f, dy.data(), EC, C, w2.data(), f, fC, 0.0f, da.data(), Ef, f, E);
        fast::gemm(true, false, C, f, ST, 1.0f, dy.data(), EC, C, a.data(), Ef, f, 1.0f, dw2.data(), f, fC, E);
        fast::gemm(true, false, f, C, ST, 1.0f, dp.data(), Ef, f, u.data(), EC, C, 1.0f, dw1.data(), C, fC, E);
        fast::gemm(false, false, ST, C, f, 1.0f, dp.data(), Ef, f, w1.data(), C, fC, 0.0f, du.data(), EC, C, E);
    }, 9);
    return r;
}

int main(int argc, char** argv) {
    int steps = argc > 1 ? std::max(1, std::atoi(argv[1])) : 10;
    int ref_steps = argc > 2 ? std::max(0, std::atoi(argv[2])) : 1;
    const int B = 16, T = 128;
    int threads = omp_get_max_threads();
    std::string how;
    double peak = cpu_peak_flops(threads, &how);
    std::printf("bench_train: L 4, C 256, NH 4, T %d, B %d, V 4096; dense dff 1024; MoT E 32, G 8, f 256\n", T, B);
    std::printf("fp32 peak: %s\n", how.c_str());
    std::printf("median of %d steps after 2 warm-up steps (reference loops: %d, no warm-up); a step = forward + "
                "zero_grad + backward + clip + AdamW\n\n", steps, ref_steps);

    std::vector<Result> all;
    if (ref_steps > 0) {
        all.push_back(bench_model<PlainKernels>("dense ref", DENSE, B, T, 0, ref_steps, peak));
        all.push_back(bench_model<PlainKernels>("mot ref", MOT, B, T, 0, ref_steps, peak));
    }
    all.push_back(bench_model<FastKernels>("dense", DENSE, B, T, 2, steps, peak));
    all.push_back(bench_model<FastKernels>("mot", MOT, B, T, 2, steps, peak));
    const Result* res = &all[all.size() - 2];  // the details below are of the fast kernels
    for (int i = 0; i < 2; i++) {
        const Result& r = res[i];
        Config c = bench_config(i == 0 ? DENSE : MOT);
        std::printf("%-5s  %ld params, %.4f GFLOP/token x %d tokens = %.2f GFLOP/step; loss %.4f -> %.4f\n", r.name,
                    r.params, model_flops_per_token(c, T) / 1e9, B * T, model_flops_per_token(c, T) * B * T / 1e9,
                    r.loss0, r.loss1);
    }

    std::printf("\nwhere a step goes, fast kernels: each layer function alone on buffers of the bench shapes "
                "(ms per call, median of 5), times its calls per step, against the median step\n");
    std::vector<Part> dense_parts = layer_parts(DENSE, B, T), mot_parts = layer_parts(MOT, B, T);
    print_parts(res[0], dense_parts);
    print_parts(res[1], mot_parts);

    FfnGemms fg = ffn_gemms(B, T);
    const double dense_ms = call_ms(dense_parts, "dense ffn"), mot_ms = call_ms(mot_parts, "mot ffn");
    std::printf("one FFN layer, forward + backward, fast kernels (ms; its GEMMs: median of 9, %.2f GFLOP for both "
                "kinds)\n", fg.flop / 1e9);
    std::printf("%-6s %8s %22s %18s\n", "", "layer", "its GEMMs (GFLOP/s)", "rest of the layer");
    std::printf("%-6s %8.2f %10.2f (%6.1f) %18.2f\n", "dense", dense_ms, fg.dense * 1e3, fg.flop / fg.dense / 1e9,
                dense_ms - fg.dense * 1e3);
    std::printf("%-6s %8.2f %10.2f (%6.1f) %18.2f   (controller, group softmax, merge, emit, gelu)\n", "mot", mot_ms,
                fg.mot * 1e3, fg.flop / fg.mot / 1e9, mot_ms - fg.mot * 1e3);
    double extra_opt = (res[1].zero_s + res[1].clip_s + res[1].adam_s) - (res[0].zero_s + res[0].clip_s + res[0].adam_s);
    std::printf("MoT - dense per step: %.1f ms (median steps); optimizer (zero + clip + AdamW over %.1fx the "
                "parameters) %.1f ms more (medians), FFN layers %.1f ms more (layer parts)\n",
                (res[1].step_s - res[0].step_s) * 1e3, (double)res[1].params / res[0].params, extra_opt * 1e3,
                bench_config(MOT).L * (mot_ms - dense_ms));

    std::printf("\nresident memory (kB): VmRSS after warm-up -> after the timed steps (growth), VmHWM of the model\n");
    for (const Result& r : all)
        std::printf("%-9s  VmRSS %ld -> %ld (%+ld)   peak VmHWM %ld\n", r.name, r.rss_before, r.rss_after,
                    r.rss_after - r.rss_before, r.hwm);
    std::printf("process ru_maxrss %ld kB (the largest of them)\n", maxrss_kb());

    std::printf("\n%-10s %10s %10s %10s %10s %10s\n", "model", "step ms", "tokens/s", "GFLOP/s", "of peak", "peak MB");
    for (const Result& r : all)
        std::printf("%-10s %10.1f %10.0f %10.1f %9.1f%% %10.1f\n", r.name, r.step_s * 1e3, r.tok_s, r.gflops,
                    100 * r.frac, r.hwm / 1024.0);
    std::printf("MoT / dense step time: %.3f (fast)", res[1].step_s / res[0].step_s);
    if (ref_steps > 0) std::printf(", %.3f (ref)", all[1].step_s / all[0].step_s);
    std::printf("\n");
    if (ref_steps > 0)
        std::printf("fast / ref step time: dense %.3f, mot %.3f\n", all[2].step_s / all[0].step_s,
                    all[3].step_s / all[1].step_s);
    return 0;
}
