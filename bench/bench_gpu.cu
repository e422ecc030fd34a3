// bench/bench_gpu.cu: training throughput of the GPU path at GPT-2-small shape,
// dense and MoT (E 32 and the granular E 256, G 32), in fp32, tf32 and bf16,
// the MoT layer against the dense FFN at matched expert FLOPs, and the small
// probe model of bench/bench_mot.cpp; ends with the MoT / dense step ratios.
//
//   nvcc -std=c++17 -O2 -arch=native -Xcompiler -fopenmp -I. bench/bench_gpu.cu -o bench_gpu -lcublas
//   ./bench_gpu [--steps N] [--quick]
//
// Model FLOPs per token, counted explicitly (not measured):
//   6 * (matmul parameters touched per token) + attention
//   matmul parameters per layer: qkv 3C^2, attproj C^2, then
//     DENSE  2 C dff                 (fc and fcproj)
//     MOT    3 C E + 2 C f E / G     (controller, merge and emit act like C*E
//                                     weights per token; each expert sees one
//                                     mixed token per G tokens)
//   plus the tied head C * V (the padded logits V..Vp are not counted)
//   attention: 12 L C T per token (QK^T and att V over the full T x T, as
//   computed; forward 4 C T per layer, backward twice that)
// Biases, LayerNorm, GELU, softmax and the optimizer are not counted.
// MFU compares to this device's peaks as train_mot computes them
// (gpu_peak_flops in gpu/common.cuh: SMs, lanes and clock read from the
// device): fp32 CUDA cores in fp32, TF32 tensor cores in tf32, bf16 tensor
// cores in bf16 (whose linear layers run on them: gpu/kernels.cuh).
//
// Where a step goes: one step of each GPT-2-small model (fp32 and bf16) with
// every layer call of the passes timed alone (the kernel set TimedKernels
// wraps the model's set: a cudaEvent pair around each call and a wait for
// it, so the calls do not overlap and the timed step is somewhat longer than
// an untimed one), the gradient norm and AdamW timed the same way; "other"
// is the rest of the step (under bf16 the rounding of the weights, zeroing,
// the encoder's backward, copies). The MoT layer's parts (controller, merge, experts,
// emit and their backward) are timed the same way in the layer benchmark.
//
// Exits non-zero when the model's loss at step 0 is not finite or not within
// 0.5 of ln V (the loss of a freshly initialized model, whose logits are all
// near zero): a throughput figure of a broken model means nothing.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "common/rng.h"
#include "gpu/gpt.cuh"

static double PEAK_FP32 = 0, PEAK_TF32 = 0, PEAK_BF16 = 0;  // set in main from the device

// p[i] = scale * uniform(-sqrt(3), sqrt(3)) from a hash of (seed, i): std = scale.
__global__ void fill_uniform_kernel(float* p, size_t n, float scale, unsigned long long seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        unsigned long long z = (i + 1) * 0x9E3779B97F4A7C15ull + seed;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        float u = (float)(z >> 40) * (1.0f / 16777216.0f);  // [0, 1)
        p[i] = scale * 1.7320508f * (2.0f * u - 1.0f);
    }
}

// p[i] = value
__global__ void fill_const_kernel(float* p, size_t n, float value) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        p[i] = value;
}

static void fill_uniform(float* p, size_t n, float scale, unsigned long long seed) {
    fill_uniform_kernel<<<grid_for(n, 256), 256>>>(p, n, scale, seed);
    CUDA_CHECK_LAUNCH();
}

// The init of docs/design.md section 2.3 (std 0.02, residual projections / sqrt(2L), LayerNorm
// weights 1, biases 0), drawn on the device: host init of ~2e9 MoT weights
// would take longer than the benchmark.
static void init_on_device(gpu::GPT* model) {
    const Config& c = model->cfg;
    unsigned long long seed = 1;
    for (const TensorSpec& s : param_specs(c)) {
        float* p = model->params_memory + s.offset;
        if (s.init == INIT_ZERO || s.init == INIT_ONE) {
            fill_const_kernel<<<grid_for(s.numel, 256), 256>>>(p, s.numel, s.init == INIT_ONE ? 1.0f : 0.0f);
            CUDA_CHECK_LAUNCH();
            continue;
        }
        float std = s.init == INIT_RESIDUAL ? 0.02f / std::sqrt(2.0f * c.L) : 0.02f;
        fill_uniform(p, s.numel, std, seed++);
    }
    CUDA_CHECK(cudaDeviceSynchronize());
}

// GPT-2-small (L 12, C 768, NH 12, V 50257, T up to 1024): dense d_ff 3072,
// or MoT with E experts of width f, G 32 (E 0: dense).
static Config gpt2_small(int E, int f) {
    Config c;
    c.V = 50257, c.Vp = 50304, c.maxT = 1024, c.L = 12, c.NH = 12, c.C = 768, c.dff = 3072;
    c.E = E ? E : 32, c.mot.G = 32, c.f = E ? f : 3072, c.mot.tau = 1.0f, c.tc.topk = 1, c.tc.capacity_factor = 1.25f,
    c.activation = 0;
    c.kinds.assign(c.L, E ? MOT : DENSE);
    return c;
}

// The small probe model of bench/bench_mot.cpp (L 4, C 128, NH 4, T 64, V 4096, d_ff 512), dense or MoT E, G 32, f.
static Config probe_model(int E, int f) {
    Config c = gpt2_small(E, f);
    c.V = 4096, c.Vp = pad_vocab(4096), c.maxT = 64, c.L = 4, c.NH = 4, c.C = 128, c.dff = 512;
    if (!E) c.f = 512;
    c.kinds.assign(c.L, E ? MOT : DENSE);
    return c;
}

// matmul parameters touched per token (see the header comment)
static double matmul_params_per_token(const Config& c) {
    double n = (double)c.C * c.V;
    for (int l = 0; l < c.L; l++) {
        n += 4.0 * c.C * c.C;
        if (c.kinds[l] == DENSE) n += 2.0 * c.C * c.dff;
        else n += 3.0 * c.C * c.E + 2.0 * c.C * c.f * c.E / c.mot.G;
    }
    return n;
}

static double flops_per_token(const Config& c, int T) {
    return 6.0 * matmul_params_per_token(c) + 12.0 * c.L * c.C * (double)T;
}

static double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Milliseconds per name over the calls timed since the last clear.
struct StepClock {
    static std::map<std::string, double>& ms() {
        static std::map<std::string, double> table;
        return table;
    }
    // Runs f, waits for it, and adds its time to `name`.
    template <typename F>
    static void time(const std::string& name, F f) {
        cudaEvent_t start, stop;
        CUDA_CHECK(cudaEventCreate(&start));
        CUDA_CHECK(cudaEventCreate(&stop));
        CUDA_CHECK(cudaEventRecord(start));
        f();
        CUDA_CHECK(cudaEventRecord(stop));
        CUDA_CHECK(cudaEventSynchronize(stop));
        float t = 0;
        CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
        ms()[name] += t;
        CUDA_CHECK(cudaEventDestroy(start));
        CUDA_CHECK(cudaEventDestroy(stop));
    }
};

// The kernel set Inner with each call timed under its function's name (see the top).
#define TIMED(fn) \
    template <typename... A> static void fn(A... a) { StepClock::time(#fn, [&] { Inner::fn(a...); }); }
template <typename Inner>
struct TimedKernels {
    TIMED(matmul_forward) TIMED(matmul_backward) TIMED(layernorm_forward) TIMED(layernorm_backward)
    TIMED(attention_forward) TIMED(attention_backward) TIMED(gelu_forward) TIMED(gelu_backward)
    TIMED(crossentropy_forward) TIMED(crossentropy_backward) TIMED(mot_forward) TIMED(mot_backward)
    TIMED(mot_ep_forward) TIMED(mot_ep_backward) TIMED(mot_ep_inputs_forward) TIMED(mot_ep_inputs_backward)
    TIMED(token_choice_forward) TIMED(token_choice_backward) TIMED(token_choice_ep_forward)
    TIMED(token_choice_ep_backward) TIMED(residual_forward) TIMED(residual_backward) TIMED(encoder_forward)
    TIMED(round_bf16)
};
#undef TIMED

// Prints StepClock's table as shares of total_ms, largest first, and clears it.
static void print_clock(double total_ms) {
    std::vector<std::pair<double, std::string>> parts;
    double sum = 0;
    for (const auto& [name, t] : StepClock::ms()) parts.push_back({t, name}), sum += t;
    parts.push_back({total_ms - sum, "other (zeroing, encoder backward, copies, bf16 weights)"});
    std::sort(parts.rbegin(), parts.rend());
    for (const auto& [t, name] : parts) std::printf("      %-44s %9.2f ms %6.1f%%\n", name.c_str(), t, 100 * t / total_ms);
    StepClock::ms().clear();
}

struct Row {
    std::string what;
    int B, T;
    std::string prec;  // fp32, tf32 or bf16 (gpu/kernels.cuh: its linear layers on bf16 tensor cores)
    double ms, tok_s, tflops, mfu;
};

static void print_row(const Row& r) {
    std::printf("%-24s %4d %5d %5s %10.1f %12.0f %9.1f %7.1f%%\n", r.what.c_str(), r.B, r.T, r.prec.c_str(),
                r.ms, r.tok_s, r.tflops, 100.0 * r.mfu);
}

// One step of the model with every layer call timed alone (see the top), in
// fp32 and in bf16, on the batch of bench_model.
static void step_breakdown(const char* name, gpu::GPT& model, const std::vector<int>& inputs,
                           const std::vector<int>& targets, int B, int T) {
    for (bool bf16 : {false, true}) {
        model.bf16 = bf16;
        for (int s = 0; s < 2; s++) {  // warm-up; stages the batch on the device
            gpu::gpt_forward(&model, inputs.data(), targets.data(), B, T);
            gpu::gpt_backward(&model, 1.0);
            gpu::gpt_update(&model, 1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, s, 1.0f);
        }
        StepClock::ms().clear();
        CUDA_CHECK(cudaDeviceSynchronize());
        double t0 = now_s();
        using Timed = TimedKernels<gpu::Kernels>;
        using TimedBf16 = Bf16Kernels<TimedKernels<gpu::Bf16OperandKernels>>;
        gpu::gpt_forward<Timed, TimedBf16>(&model, inputs.data(), targets.data(), B, T);
        gpu::gpt_backward<Timed, TimedBf16>(&model, 1.0);
        double norm = 0;
        StepClock::time("gradient norm", [&] { norm = gpu::gpt_grad_norm(&model); });
        StepClock::time("adamw", [&] {
            gpu::gpt_update(&model, 1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 2, clip_scale(norm, 1.0));
        });
        CUDA_CHECK(cudaDeviceSynchronize());
        double total = 1e3 * (now_s() - t0);
        std::printf("    %s, %s, B %d, T %d: one step with each call timed alone, %.1f ms\n", name,
                    bf16 ? "bf16" : "fp32", B, T, total);
        print_clock(total);
    }
    model.bf16 = false;
}

// Trains `steps` timed steps (after 2 warm-up steps) at (B,T) in fp32, tf32
// and bf16; bf16's MFU is against the bf16 rate its linear layers run at.
// breakdown: then step_breakdown on the same model and batch.
static void bench_model(const char* name, const Config& c, int B, int T, int steps, std::vector<Row>* rows,
                        bool breakdown = false) {
    gpu::GPT model;
    gpu::gpt_build(&model, c);
    init_on_device(&model);
    Rng rng = rng_seed(42);
    size_t BT = (size_t)B * T;
    std::vector<int> inputs(BT), targets(BT);
    for (size_t i = 0; i < BT; i++) {
        inputs[i] = (int)(rng_u64(&rng) % (uint64_t)c.V);
        targets[i] = (int)(rng_u64(&rng) % (uint64_t)c.V);
    }
    // the freshly initialized model's loss must be about ln V
    gpu::gpt_forward(&model, inputs.data(), targets.data(), B, T);
    double loss0 = model.mean_loss;
    std::printf("    (%s: loss at step 0 %.4f, ln V = %.4f)\n", name, loss0, std::log((double)c.V));
    if (!std::isfinite(loss0) || std::fabs(loss0 - std::log((double)c.V)) > 0.5)
        fail(strf("%s: the loss at step 0 is %g, not within 0.5 of ln V = %.4f: the model is broken", name, loss0,
                  std::log((double)c.V)));
    for (const char* prec : {"fp32", "tf32", "bf16"}) {
        const bool tf32 = std::string(prec) == "tf32";
        gpu_set_tf32(tf32);
        model.bf16 = std::string(prec) == "bf16";
        double t0 = 0, loss = 0;
        for (int s = -2; s < steps; s++) {
            if (s == 0) {
                CUDA_CHECK(cudaDeviceSynchronize());
                t0 = now_s();
            }
            gpu::gpt_forward(&model, inputs.data(), targets.data(), B, T);
            gpu::gpt_backward(&model, 1.0);  // the gradients are zero: the last update left them so
            double norm = gpu::gpt_grad_norm(&model);
            gpu::gpt_update(&model, 1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, s + 2, clip_scale(norm, 1.0));
            loss = model.mean_loss;
        }
        CUDA_CHECK(cudaDeviceSynchronize());
        double dt = (now_s() - t0) / steps;
        double tok_s = BT / dt, fl = flops_per_token(c, T) * tok_s;
        Row r{name, B, T, prec, 1e3 * dt, tok_s, fl / 1e12, fl / (model.bf16 ? PEAK_BF16 : tf32 ? PEAK_TF32 : PEAK_FP32)};
        rows->push_back(r);
        print_row(r);
        std::printf("    (loss after the timed steps %.4f)\n", loss);
        std::fflush(stdout);
    }
    gpu_set_tf32(false);
    model.bf16 = false;
    if (breakdown) step_breakdown(name, model, inputs, targets, B, T);
}

// Standalone FFN layer forward + backward at (B,T): dense (C, dff) against
// MoT (C, E, G, f); both flop-matched by f = dff G / E.
static void bench_layers(int B, int T, int iters, int E, int f, std::vector<Row>* rows) {
    Config c = gpt2_small(E, f);
    const int C = c.C, dff = c.dff, G = c.mot.G;
    const size_t BT = (size_t)B * T, ST = BT / G;
    std::vector<float*> bufs;
    auto alloc = [&](size_t n) {
        float* p = nullptr;
        CUDA_CHECK(cudaMalloc(&p, n * sizeof(float)));
        fill_uniform(p, n, 0.02f, 1000 + bufs.size());
        bufs.push_back(p);
        return p;
    };
    float *inp = alloc(BT * C), *dout = alloc(BT * C), *out = alloc(BT * C), *dinp = alloc(BT * C);
    // dense
    float *fcw = alloc((size_t)dff * C), *fcb = alloc(dff), *pw = alloc((size_t)C * dff), *pb = alloc(C);
    float *dfcw = alloc((size_t)dff * C), *dfcb = alloc(dff), *dpw = alloc((size_t)C * dff), *dpb = alloc(C);
    float *fch = alloc(BT * dff), *fchg = alloc(BT * dff), *dfch = alloc(BT * dff), *dfchg = alloc(BT * dff);
    // MoT
    float *wc = alloc((size_t)E * C), *w1 = alloc((size_t)E * f * C), *w2 = alloc((size_t)E * C * f);
    float *dwc = alloc((size_t)E * C), *dw1 = alloc((size_t)E * f * C), *dw2 = alloc((size_t)E * C * f);
    float *z = alloc(BT * E), *m = alloc(BT * E), *u = alloc(ST * E * C), *p = alloc(ST * E * f);
    float *a = alloc(ST * E * f), *y = alloc(ST * E * C);
    float *dz = alloc(BT * E), *dm = alloc(BT * E), *du = alloc(ST * E * C), *dp = alloc(ST * E * f);
    float *da = alloc(ST * E * f), *dy = alloc(ST * E * C);

    auto dense_step = [&]() {
        gpu::ffn_forward(out, fch, fchg, inp, fcw, fcb, pw, pb, B, T, C, dff);
        CUDA_CHECK(cudaMemset(dfch, 0, BT * dff * sizeof(float)));
        CUDA_CHECK(cudaMemset(dfchg, 0, BT * dff * sizeof(float)));
        gpu::ffn_backward(dinp, dfcw, dfcb, dpw, dpb, dfch, dfchg, dout, inp, fch, fchg, fcw, pw, B, T, C, dff);
    };
    auto mot_step = [&]() {
        gpu::mot_forward(out, z, m, u, p, a, y, inp, wc, w1, w2, B, T, C, E, G, f, c.mot.tau);
        gpu::mot_backward(dinp, dwc, dw1, dw2, dz, dm, du, dp, da, dy, dout, inp, m, u, p, a, y, wc, w1, w2,
                          B, T, C, E, G, f, c.mot.tau);
    };
    double dense_flops = 6.0 * BT * 2.0 * C * dff;
    double mot_flops = 6.0 * BT * (3.0 * C * E + 2.0 * C * f * E / G);
    cudaEvent_t start, stop;
    CUDA_CHECK(cudaEventCreate(&start));
    CUDA_CHECK(cudaEventCreate(&stop));
    for (int tf32 = 0; tf32 < 2; tf32++) {
        gpu_set_tf32(tf32 != 0);
        for (int which = 0; which < 2; which++) {
            auto step = [&]() { which == 0 ? dense_step() : mot_step(); };
            step();  // warm-up
            CUDA_CHECK(cudaEventRecord(start));
            for (int i = 0; i < iters; i++) step();
            CUDA_CHECK(cudaEventRecord(stop));
            CUDA_CHECK(cudaEventSynchronize(stop));
            float ms = 0;
            CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
            double dt = ms / 1e3 / iters, fl = which == 0 ? dense_flops : mot_flops;
            Row r{which == 0 ? "layer dense ffn f+b" : strf("layer mot E%d G%d f+b", E, G), B, T, tf32 ? "tf32" : "fp32", 1e3 * dt,
                  BT / dt, fl / dt / 1e12, fl / dt / (tf32 ? PEAK_TF32 : PEAK_FP32)};
            rows->push_back(r);
            print_row(r);
        }
    }
    gpu_set_tf32(false);
    CUDA_CHECK(cudaEventDestroy(start));
    CUDA_CHECK(cudaEventDestroy(stop));
    // the MoT layer by part (fp32), each part timed alone over `iters` steps
    StepClock::ms().clear();
    double t0 = now_s();
    for (int i = 0; i < iters; i++) {
        StepClock::time("controller", [&] { gpu::mot_controller(z, m, inp, wc, B, T, C, E, G, c.mot.tau, false); });
        StepClock::time("merge", [&] { gpu::mot_merge(u, m, inp, B, T, C, E, G); });
        StepClock::time("experts", [&] { gpu::mot_experts(p, a, y, u, w1, w2, (int)ST, C, E, f); });
        StepClock::time("emit", [&] { gpu::mot_emit(out, m, y, B, T, C, E, G); });
        StepClock::time("emit backward", [&] { gpu::mot_emit_backward(dy, dm, dout, m, y, B, T, C, E, G); });
        StepClock::time("experts backward", [&] {
            gpu::mot_experts_backward(du, dp, da, dw1, dw2, dy, u, p, a, w1, w2, (int)ST, C, E, f);
        });
        StepClock::time("merge backward", [&] { gpu::mot_merge_backward(dinp, dm, du, inp, m, B, T, C, E, G); });
        StepClock::time("controller backward",
                        [&] { gpu::mot_controller_backward(dinp, dwc, dz, dm, m, inp, wc, B, T, C, E, G, c.mot.tau); });
    }
    CUDA_CHECK(cudaDeviceSynchronize());
    std::printf("    layer mot E%d G%d by part, fp32, %d steps, each part timed alone:\n", E, G, iters);
    print_clock(1e3 * (now_s() - t0));
    for (float* b : bufs) CUDA_CHECK(cudaFree(b));
}

int main(int argc, char** argv) {
    int steps = 5;
    bool quick = false;
    for (int i = 1; i < argc; i++) {
        if (!std::strcmp(argv[i], "--steps") && i + 1 < argc) steps = std::atoi(argv[++i]);
        else if (!std::strcmp(argv[i], "--quick")) quick = true;
        else {
            std::fprintf(stderr, "usage: %s [--steps N] [--quick]\n", argv[0]);
            return 2;
        }
    }
    if (quick) steps = 2;
    try {
        if (!gpu_available()) {
            std::printf("bench_gpu: no CUDA device present, nothing to measure\n");
            return 0;
        }
        size_t total = 0, free_bytes = gpu_free_memory(&total);
        std::printf("device %s, %.1f of %.1f GiB free\n", gpu_device_name().c_str(), free_bytes / 1073741824.0,
                    total / 1073741824.0);
        std::string how_fp32, how_tf32, how_bf16;
        PEAK_FP32 = gpu_peak_flops("fp32", &how_fp32);
        PEAK_TF32 = gpu_peak_flops("tf32", &how_tf32);
        PEAK_BF16 = gpu_peak_flops("bf16", &how_bf16);
        std::printf("peak, fp32: %s\npeak, tf32: %s\npeak, bf16: %s\n", how_fp32.c_str(), how_tf32.c_str(),
                    how_bf16.c_str());
        Config dense = gpt2_small(0, 0), mot = gpt2_small(32, 3072), mot256 = gpt2_small(256, 384);
        // B = 32 (MoT needs B divisible by G = 32); the longest T <= 1024 at
        // which the models fit in 90% of free memory (in bf16, which needs the most).
        int B = 32, T = 1024;
        if (quick) T = 256;
        auto fits = [&](const Config& c, int t) { return gpu::gpt_device_bytes(c, B, t, true) < 0.9 * free_bytes; };
        while (T > 64 && !(fits(dense, T) && fits(mot, T) && fits(mot256, T))) T /= 2;
        std::printf("model shape: L 12, C 768, NH 12, V 50257 (Vp 50304), dff 3072; MoT E 32, G 32, f 3072 and "
                    "E 256, G 32, f 384\n");
        std::printf("batch B %d, T %d (%s), %d timed steps after 2 warm-up\n", B, T,
                    T == 1024 ? "full context" : "largest T that fits at B 32", steps);
        std::printf("model FLOPs per token: dense %.3g, MoT %.3g\n\n", flops_per_token(dense, T), flops_per_token(mot, T));

        std::vector<Row> rows;
        std::printf("%-24s %4s %5s %5s %10s %12s %9s %8s\n", "what", "B", "T", "prec", "ms/step", "tokens/s",
                    "TFLOP/s", "MFU");
        bench_layers(B, quick ? 256 : 1024, quick ? 3 : 10, 32, 3072, &rows);
        bench_layers(B, quick ? 256 : 1024, quick ? 3 : 10, 256, 384, &rows);
        bench_model("gpt2-small dense", dense, B, T, steps, &rows, true);
        bench_model("gpt2-small mot E32", mot, B, T, steps, &rows, true);
        bench_model("gpt2-small mot E256", mot256, B, T, steps, &rows, true);
        // the small probe model of bench_mot (CPU), B 32, T 64
        bench_model("probe dense", probe_model(0, 0), 32, 64, steps * 4, &rows);
        bench_model("probe mot E32 G32", probe_model(32, 512), 32, 64, steps * 4, &rows);
        bench_model("probe mot E256 G32", probe_model(256, 64), 32, 64, steps * 4, &rows);
        auto ms_of = [&](const std::string& what, const std::string& prec) {
            for (const Row& r : rows)
                if (r.what == what && r.prec == prec) return r.ms;
            return 0.0;
        };
        std::printf("\nMoT / dense step (fp32, tf32, bf16):\n");
        for (const char* m : {"gpt2-small mot E32", "gpt2-small mot E256", "probe mot E32 G32", "probe mot E256 G32"}) {
            std::string dense_name = std::string(m).rfind("probe", 0) == 0 ? "probe dense" : "gpt2-small dense";
            std::printf("  %-22s", m);
            for (const char* prec : {"fp32", "tf32", "bf16"}) std::printf(" %.2f", ms_of(m, prec) / ms_of(dense_name, prec));
            std::printf("\n");
        }

        std::printf("\nsummary (MFU against fp32 %.1f / TF32 %.1f / bf16 %.1f TFLOP/s):\n", PEAK_FP32 / 1e12,
                    PEAK_TF32 / 1e12, PEAK_BF16 / 1e12);
        std::printf("%-24s %4s %5s %5s %10s %12s %9s %8s\n", "what", "B", "T", "prec", "ms/step", "tokens/s",
                    "TFLOP/s", "MFU");
        for (const Row& r : rows) print_row(r);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
