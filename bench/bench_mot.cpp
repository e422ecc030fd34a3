// bench/bench_mot.cpp: MoT with many small experts against the dense FFN at
// the same FLOPs per token, on the CPU path in fp32: where a training step's
// time goes, and the MoT / dense step ratios.
//
//   make build/bench_mot && ./build/bench_mot [steps]      (make bench runs it)
//
// Models (L 4, C 128, NH 4, T 64, B 32, V 4096, d_ff 512): dense; MoT E 32,
// G 32, f 512; MoT E 256, G 32, f 64 (granularity 8). Expert FLOPs match the
// dense FFN's (f = d_ff G / E); MoT adds the controller, merge and emit
// (6 C E per token), counted in the step line's FLOP ratio. GPT-2-small
// widths (C 768, d_ff 3072; E 32 and 256, G 32), one FFN layer only, at B 32,
// T 128.
//
// For each model: the median training step (forward, backward, gradient norm,
// AdamW with the clip folded in, as train_mot runs them); then each part of
// one FFN layer called alone on buffers of the model's shapes, forward and
// backward: time per step (x L layers), GFLOP/s against the CPU's fp32 peak
// (train/peak.h), or for the memory-bound parts GB/s against the bandwidth
// measured here (four arrays read and written in place, as AdamW does). The optimizer streams every
// parameter: its bytes (the norm's read, then one read and one write of each
// of parameters, gradients, m and v) over its time is its bandwidth.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "common/layout.h"
#include "common/rng.h"
#include "cpu/fast/kernels.h"
#include "cpu/ffn.h"
#include "cpu/gpt.h"
#include "train/peak.h"

static double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// median seconds of reps calls of f, after one warm-up call
static double time_median(int reps, const std::function<void()>& f) {
    f();
    std::vector<double> t;
    for (int i = 0; i < reps; i++) {
        double t0 = now();
        f();
        t.push_back(now() - t0);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

static std::vector<float> rnd(Rng* rng, size_t n, float scale) {
    std::vector<float> v(n);
    for (float& x : v) x = scale * (2.0f * rng_uniform(rng) - 1.0f);
    return v;
}

// Memory bandwidth as the optimizer streams it: four 64 MB arrays each read
// and written in place, counting 8 x 64 MB per pass.
static double bandwidth_gbs() {
    const size_t n = 16u << 20;
    std::vector<float> a(n, 0.0f), b(n, 1.0f), c(n, 2.0f), d(n, 3.0f);
    double t = time_median(5, [&] {
        #pragma omp parallel for simd
        for (size_t i = 0; i < n; i++) {
            a[i] += 0.5f * c[i];
            b[i] *= 0.9f;
            c[i] += 1.0f;
            d[i] = 0.0f * d[i];
        }
    });
    return 8.0 * n * sizeof(float) / t / 1e9;
}

struct Shape {
    const char* name;
    int C, NH, T, B, dff, E, G, f;  // E 0: dense
};

static Config model_config(const Shape& s) {
    Config c;
    c.V = 4096, c.Vp = pad_vocab(c.V), c.maxT = s.T, c.L = 4, c.NH = s.NH, c.C = s.C, c.dff = s.dff;
    c.E = s.E ? s.E : 8, c.mot.G = s.G ? s.G : 4, c.f = s.f ? s.f : 64, c.mot.tau = 1.0f, c.tc.topk = 1,
    c.tc.capacity_factor = 1.25f;
    c.activation = 0;
    c.kinds.assign(c.L, s.E ? MOT : DENSE);
    return c;
}

// A model of the shape with its batch: one training step (forward,
// backward, norm, AdamW) per call of step().
struct Trainer {
    Config c;
    GPT<float, FastKernels> model;
    std::vector<int> x, y;
    int B, T, t = 0;
    Trainer(const Shape& s) : c(model_config(s)), B(s.B), T(s.T) {
        gpt_build(&model, c);
        gpt_init_weights(&model, 1);
        Rng rng = rng_seed(7);
        x.resize((size_t)B * T), y.resize(x.size());
        for (size_t i = 0; i < x.size(); i++) x[i] = (int)(rng_u64(&rng) % c.V), y[i] = (int)(rng_u64(&rng) % c.V);
    }
    void step() {
        gpt_forward(&model, x.data(), y.data(), B, T);
        gpt_backward(&model);
        double norm = gpt_grad_norm(&model);
        gpt_update(&model, 1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, t++, clip_scale(norm, 1.0));
    }
};

// The median step of each model, the models' steps interleaved (dense, MoT,
// MoT, dense, ...) so that a slow spell of a shared machine falls on all alike.
static std::vector<double> step_seconds(const std::vector<Shape>& shapes, int steps) {
    std::vector<Trainer*> trainers;
    for (const Shape& s : shapes) trainers.push_back(new Trainer(s));
    for (Trainer* tr : trainers) tr->step();  // warm-up
    std::vector<std::vector<double>> t(shapes.size());
    for (int i = 0; i < steps; i++)
        for (size_t k = 0; k < trainers.size(); k++) {
            double t0 = now();
            trainers[k]->step();
            t[k].push_back(now() - t0);
        }
    std::vector<double> med;
    for (auto& v : t) {
        std::sort(v.begin(), v.end());
        med.push_back(v[v.size() / 2]);
    }
    for (Trainer* tr : trainers) delete tr;
    return med;
}

struct Part {
    std::string name;
    double seconds;  // per training step (all layers), forward + backward
    double flops;    // per step; 0: memory-bound, bytes instead
    double bytes;
};

// One FFN layer's parts, forward and backward, each alone, times `layers`.
static std::vector<Part> ffn_parts(const Shape& s, int layers, int reps) {
    Rng rng = rng_seed(3);
    const size_t BT = (size_t)s.B * s.T, C = s.C;
    std::vector<float> x = rnd(&rng, BT * C, 1.0f), dout = rnd(&rng, BT * C, 1.0f), out(BT * C), dx(BT * C);
    std::vector<Part> parts;
    auto add = [&](const char* name, double flops, double bytes, const std::function<void()>& fwd,
                   const std::function<void()>& bwd) {
        parts.push_back({name, layers * (time_median(reps, fwd) + time_median(reps, bwd)), layers * flops,
                         layers * bytes});
    };
    if (!s.E) {
        const size_t dff = s.dff;
        std::vector<float> fcw = rnd(&rng, dff * C, 0.05f), fcb = rnd(&rng, dff, 0.1f), pw = rnd(&rng, C * dff, 0.05f),
                           pb = rnd(&rng, C, 0.1f), dfcw(fcw.size()), dfcb(dff), dpw(pw.size()), dpb(C);
        std::vector<float> fch(BT * dff), fchg(BT * dff), dfch(BT * dff), dfchg(BT * dff);
        add("dense FFN (2 GEMMs, gelu)", 3 * 2.0 * 2 * BT * C * dff, 0,
            [&] { ffn_forward<FastKernels>(out.data(), fch.data(), fchg.data(), x.data(), fcw.data(), fcb.data(),
                                           pw.data(), pb.data(), s.B, s.T, s.C, s.dff); },
            [&] {
                std::fill(dfch.begin(), dfch.end(), 0.0f), std::fill(dfchg.begin(), dfchg.end(), 0.0f);
                ffn_backward<FastKernels>(dx.data(), dfcw.data(), dfcb.data(), dpw.data(), dpb.data(), dfch.data(),
                                          dfchg.data(), dout.data(), x.data(), fch.data(), fchg.data(), fcw.data(),
                                          pw.data(), s.B, s.T, s.C, s.dff);
            });
        return parts;
    }
    const int E = s.E, G = s.G, f = s.f, ST = s.B / G * s.T;
    const size_t nE = BT * E, nU = (size_t)ST * E * C, nP = (size_t)ST * E * f;
    std::vector<float> wc = rnd(&rng, (size_t)E * C, 0.05f), w1 = rnd(&rng, (size_t)E * f * C, 0.05f),
                       w2 = rnd(&rng, (size_t)E * C * f, 0.05f), dwc(wc.size()), dw1(w1.size()), dw2(w2.size());
    std::vector<float> z(nE), m(nE), u(nU), p(nP), a(nP), y(nU), dz(nE), dm(nE), du(nU), dp(nP), da(nP), dy(nU);
    fast::mot_forward(out.data(), z.data(), m.data(), u.data(), p.data(), a.data(), y.data(), x.data(), wc.data(),
                      w1.data(), w2.data(), s.B, s.T, s.C, E, G, f, 1.0f);
    add("controller + group softmax", 3 * 2.0 * BT * C * E, 0,
        [&] { fast::mot_controller(z.data(), m.data(), x.data(), wc.data(), s.B, s.T, s.C, E, G, 1.0f, false); },
        [&] { fast::mot_controller_backward(dx.data(), dwc.data(), dz.data(), dm.data(), m.data(), x.data(),
                                            wc.data(), s.B, s.T, s.C, E, G, 1.0f); });
    add("merge", 3 * 2.0 * BT * C * E, 0, [&] { fast::mot_merge(u.data(), m.data(), x.data(), s.B, s.T, s.C, E, G); },
        [&] { fast::mot_merge_backward(dx.data(), dm.data(), du.data(), x.data(), m.data(), s.B, s.T, s.C, E, G); });
    add("experts (GEMMs, gelu)", 3 * 2.0 * 2 * ST * E * (double)C * f, 0,
        [&] { fast::mot_experts(p.data(), a.data(), y.data(), u.data(), w1.data(), w2.data(), ST, s.C, E, f); },
        [&] { fast::mot_experts_backward(du.data(), dp.data(), da.data(), dw1.data(), dw2.data(), dy.data(), u.data(),
                                         p.data(), a.data(), w1.data(), w2.data(), ST, s.C, E, f); });
    add("emit", 3 * 2.0 * BT * C * E, 0, [&] { fast::mot_emit(out.data(), m.data(), y.data(), s.B, s.T, s.C, E, G); },
        [&] { fast::mot_emit_backward(dy.data(), dm.data(), dout.data(), m.data(), y.data(), s.B, s.T, s.C, E, G); });
    return parts;
}

// The optimizer over n parameters: the norm, then the fused AdamW.
static Part optimizer_part(size_t n, int reps) {
    Rng rng = rng_seed(4);
    std::vector<float> p = rnd(&rng, n, 0.02f), g = rnd(&rng, n, 1.0f), m(n), v(n);
    int t = 0;
    double sec = time_median(reps, [&] {
        double norm = std::sqrt(grad_norm_squared(g.data(), n));
        adamw_update(p.data(), g.data(), m.data(), v.data(), n, 1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, ++t,
                     clip_scale(norm, 1.0));
        std::fill(g.begin(), g.end(), 0.5f);  // the next step's gradient (timed too: the backward's first write)
    });
    return {"optimizer (norm + AdamW)", sec, 0, 4.0 * n * (1 + 8)};
}

static void print_parts(const std::vector<Part>& parts, double step, double peak, double bw) {
    std::printf("  %-28s %9s %7s %12s\n", "part", "ms/step", "share", "rate");
    for (const Part& p : parts) {
        std::string rate = p.flops > 0 ? strf("%6.1f GFLOP/s (%4.1f%% of peak)", p.flops / p.seconds / 1e9,
                                               100 * p.flops / p.seconds / peak)
                                       : strf("%6.1f GB/s (%4.1f%% of bandwidth)", p.bytes / p.seconds / 1e9,
                                              100 * p.bytes / p.seconds / 1e9 / bw);
        std::printf("  %-28s %9.1f %6.1f%% %s\n", p.name.c_str(), 1e3 * p.seconds, step > 0 ? 100 * p.seconds / step : 0,
                    rate.c_str());
    }
}

int main(int argc, char** argv) {
    int steps = argc > 1 ? std::atoi(argv[1]) : 15;
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    std::string how;
    double peak = cpu_peak_flops(threads, &how), bw = bandwidth_gbs();
    std::printf("bench_mot: %d threads; fp32 peak %s; bandwidth %.1f GB/s (4 arrays in place)\n", threads, how.c_str(),
                bw);
    std::printf("steps: median of %d after one warm-up, the models' steps interleaved; parts: median of 5 calls each, "
                "times the 4 layers\n\n",
                steps);

    const std::vector<Shape> shapes = {{"dense d_ff 512", 128, 4, 64, 32, 512, 0, 0, 0},
                                       {"MoT E 32 G 32 f 512", 128, 4, 64, 32, 512, 32, 32, 512},
                                       {"MoT E 256 G 32 f 64", 128, 4, 64, 32, 512, 256, 32, 64}};
    std::vector<double> steps_s = step_seconds(shapes, steps);
    std::vector<std::string> ratios;
    // a step's FLOPs (common/layout.h) over its time: the MoT / dense step
    // ratio is the FLOP ratio (MoT's controller, merge and emit) times the
    // ratio of the rates (how much slower MoT's FLOPs run)
    auto step_flops = [](const Shape& s) { return model_flops_per_token(model_config(s), s.T) * s.B * s.T; };
    const double dense_rate = step_flops(shapes[0]) / steps_s[0];
    for (size_t k = 0; k < shapes.size(); k++) {
        const Shape& s = shapes[k];
        size_t params = num_params(model_config(s));
        double step = steps_s[k], flops = step_flops(s) / step_flops(shapes[0]), rate = step_flops(s) / step;
        std::printf("%s: %.2fM parameters, %.2fx dense's FLOPs, step %.1f ms (%.2fx dense), %.1f GFLOP/s\n", s.name,
                    params / 1e6, flops, 1e3 * step, step / steps_s[0], rate / 1e9);
        std::vector<Part> parts = ffn_parts(s, 4, 5);
        parts.push_back(optimizer_part(params, 5));
        print_parts(parts, step, peak, bw);
        std::printf("\n");
        if (s.E)
            ratios.push_back(strf("%s: MoT / dense step %.2f = FLOPs %.2f x dense's rate / MoT's %.2f", s.name,
                                  step / steps_s[0], flops, dense_rate / rate));
    }

    std::printf("GPT-2-small widths, one FFN layer, forward + backward, B 32, T 128:\n");
    const Shape gpt2[] = {{"dense d_ff 3072", 768, 12, 128, 32, 3072, 0, 0, 0},
                          {"MoT E 32 G 32 f 3072", 768, 12, 128, 32, 3072, 32, 32, 3072},
                          {"MoT E 256 G 32 f 384", 768, 12, 128, 32, 3072, 256, 32, 384}};
    double dense_layer = 0;
    for (const Shape& s : gpt2) {
        std::vector<Part> parts = ffn_parts(s, 1, 3);
        double layer = 0;
        for (const Part& p : parts) layer += p.seconds;
        if (!s.E) dense_layer = layer;
        std::printf("%s: layer %.1f ms (%.2fx dense)\n", s.name, 1e3 * layer, layer / dense_layer);
        print_parts(parts, layer, peak, bw);
        if (s.E) ratios.push_back(strf("GPT-2-small %s: MoT / dense FFN layer %.2f", s.name, layer / dense_layer));
    }
    std::printf("\nsummary\n");
    for (const std::string& r : ratios) std::printf("  %s\n", r.c_str());
    return 0;
}
