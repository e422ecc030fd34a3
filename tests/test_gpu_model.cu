// tests/test_gpu_model.cu: the whole GPU model (gpu/gpt.cuh) against the CPU
// reference: loss, logits and every gradient (with and without a --distill
// teacher) at small and GPT-2-small shapes,
// AdamW steps, batch-shape changes, moments loaded for a resume, TF32, bitwise
// repetition, out-of-memory handling; and ./train_mot --device cuda itself
// (tests/train_checks.h): two runs of one command and a resumed run must match
// byte for byte.
//
//   make build/test_gpu_model && ./build/test_gpu_model
//
// Without a usable GPU every test case is reported as skipped, with the reason.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "tests/bad_input.h"
#include "tests/bf16_agree.h"
#include "tests/gpu_harness.h"
#include "tests/train_checks.h"
#include "train/model.h"

GPU_TEST("gpu model: loss, logits and every parameter gradient") {
    for (const ModelCase& mc : model_cases()) {
        INFO("model " << mc.name);
        GPT<float, FastKernels> cpu;
        gpu::GPT gm;
        build_both(&cpu, &gm, mc.cfg, 1234);
        std::vector<float> back(gm.num_params);
        gpu::gpu_gpt_get_params(&gm, back.data());
        CHECK(back == cpu.params_memory);
        TestRng rng(99);
        size_t BT = (size_t)mc.B * mc.T;
        std::vector<int> inputs, targets;
        routable_batch(&cpu, rng, mc.B, mc.T, &inputs, &targets);  // the CPU's forward
        gpu::gpt_forward(&gm, inputs.data(), targets.data(), mc.B, mc.T);
        double loss_err = std::fabs(gm.mean_loss - cpu.mean_loss) / std::fabs(cpu.mean_loss);
        CHECK_MESSAGE(loss_err < TOL, mc.name << " loss " << gm.mean_loss << " vs " << cpu.mean_loss);
        check_aux(cpu, gm, TOL, mc.name);
        if (mc.cfg.tc.router == ROUTER_SOFTMAX && has_kind(mc.cfg, TOKEN_CHOICE)) CHECK(cpu.aux_loss > 0);
        std::vector<float> logits(BT * mc.cfg.Vp);
        CUDA_CHECK(cudaMemcpy(logits.data(), gm.acts.logits, logits.size() * sizeof(float), cudaMemcpyDeviceToHost));
        Span<float> want = span(cpu.acts.logits, logits.size());
        check_close(logits, want, scaled_tol(TOL, want), std::string(mc.name) + " logits");
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
        double cpu_norm = gpt_grad_norm(&cpu), gpu_norm = gpu::gpt_grad_norm(&gm);
        CHECK_MESSAGE(std::fabs(gpu_norm - cpu_norm) < TOL * cpu_norm, mc.name << " grad norm " << gpu_norm << " vs " << cpu_norm);
        // with a teacher (--distill): another row's probabilities as its distribution, weight 0.5
        const size_t Vp = mc.cfg.Vp;
        std::vector<float> teacher(BT * Vp);
        for (size_t i = 0; i < BT; i++)
            std::copy(cpu.acts.probs + ((i + 1) % BT) * Vp, cpu.acts.probs + ((i + 1) % BT + 1) * Vp,
                      teacher.begin() + i * Vp);
        DevF d_teacher(teacher);
        cpu.teacher = teacher.data(), cpu.distill_weight = 0.5;
        gm.teacher = d_teacher.p, gm.distill_weight = 0.5;
        gpt_zero_grad(&cpu); gpu::gpt_zero_grad(&gm);
        gpt_backward(&cpu, 1.0);
        gpu::gpt_backward(&gm, 1.0);
        gpu::gpu_gpt_get_grads(&gm, grads.data());
        check_tensors(mc.cfg, grads, cpu.grads_memory, std::string(mc.name) + " distilled grad");
        cpu.teacher = nullptr, gm.teacher = nullptr;
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
// on identical inputs in "gpu grad norm, clipped adamw ...".
GPU_TEST("gpu model: 10 AdamW steps") {
    for (const ModelCase& mc : model_cases()) {
        INFO("model " << mc.name);
        GPT<float, FastKernels> cpu;
        gpu::GPT gm;
        build_both(&cpu, &gm, mc.cfg, 77);
        TestRng rng(5);
        for (int step = 0; step < 10; step++) {
            std::vector<int> inputs, targets;
            routable_batch(&cpu, rng, mc.B, mc.T, &inputs, &targets);  // the CPU's forward
            gpu::gpt_forward(&gm, inputs.data(), targets.data(), mc.B, mc.T);
            CHECK_MESSAGE(std::fabs(gm.mean_loss - cpu.mean_loss) < TOL * cpu.mean_loss,
                          mc.name << " step " << step << " loss " << gm.mean_loss << " vs " << cpu.mean_loss);
            check_aux(cpu, gm, TOL, strf("%s step %d", mc.name, step));
            gpt_zero_grad(&cpu); gpu::gpt_zero_grad(&gm);
            gpt_backward(&cpu);
            gpu::gpt_backward(&gm);
            double cpu_norm = gpt_grad_norm(&cpu), gpu_norm = gpu::gpt_grad_norm(&gm);
            CHECK_MESSAGE(std::fabs(gpu_norm - cpu_norm) < TOL * cpu_norm,
                          mc.name << " step " << step << " grad norm " << gpu_norm << " vs " << cpu_norm);
            gpt_update(&cpu, 1e-3f, 0.9f, 0.95f, 1e-5f, 0.1f, step, clip_scale(cpu_norm, 1.0));
            gpu::gpt_update(&gm, 1e-3f, 0.9f, 0.95f, 1e-5f, 0.1f, step, clip_scale(gpu_norm, 1.0));
        }
        std::vector<float> params(gm.num_params), m(gm.num_params), v(gm.num_params);
        gpu::gpu_gpt_get_params(&gm, params.data());
        gpu::gpu_gpt_get_moments(&gm, m.data(), v.data());
        check_tensors(mc.cfg, params, cpu.params_memory, std::string(mc.name) + " params after 10 steps");
        check_tensors(mc.cfg, m, cpu.m_memory, std::string(mc.name) + " adam m after 10 steps");
        check_tensors(mc.cfg, v, cpu.v_memory, std::string(mc.name) + " adam v after 10 steps");
    }
}

// ZeRO-1 on one GPU (train/parallel.h): a rank's AdamW step covers its slice
// [lo, lo + S) and the tail [tail_lo, N) of the parameters, with the moments
// of its share packed from 0 (the tail's after the slice's), so the chunk
// table's moment offsets differ from its parameter offsets. Against the CPU's
// gpt_update_range on the same two ranges: parameters, moments, and the
// gradients (zero where updated, untouched elsewhere). The model's w1 has
// 2 x ADAMW_CHUNK elements, and the ranges cut tensors.
GPU_TEST("gpu model: a ZeRO-1 share's AdamW step (chunk table, packed moments) matches the CPU's") {
    Config c = small_config({DENSE, MOT}, 1.0f, 8);
    GPT<float, FastKernels> cpu;
    gpu::GPT gm;
    build_both(&cpu, &gm, c, 91);
    const size_t N = gm.num_params;
    const int R = N % 3 ? 3 : N % 5 ? 5 : 7;  // ranks: N % R leaves a tail
    REQUIRE(N % R != 0);
    TestRng rng(92);
    std::vector<int> x = rng.tokens((size_t)8 * 16, c.V), y = rng.tokens((size_t)8 * 16, c.V);
    gpt_forward(&cpu, x.data(), y.data(), 8, 16);
    gpu::gpt_forward(&gm, x.data(), y.data(), 8, 16);
    gpt_zero_grad(&cpu);
    gpu::gpt_zero_grad(&gm);
    gpt_backward(&cpu);
    gpu::gpt_backward(&gm);
    // the same gradients on both paths, so that only the update is compared
    gpu::gpu_gpt_get_grads(&gm, cpu.grads_memory.data());
    std::vector<float> grads0 = cpu.grads_memory;
    for (int rank = 0; rank < R; rank++) {
        INFO("rank " << rank << " of " << R);
        const size_t S = N / R, lo = rank * S, tail_lo = R * S, tail_n = N - tail_lo, share = S + tail_n;
        std::vector<gpu::AdamwChunk> chunks = gpu::adamw_chunk_table(c, lo, S, 0);
        std::vector<gpu::AdamwChunk> tail = gpu::adamw_chunk_table(c, tail_lo, tail_n, S);
        chunks.insert(chunks.end(), tail.begin(), tail.end());
        CHECK(std::any_of(chunks.begin(), chunks.end(),
                          [](const gpu::AdamwChunk& ch) { return ch.moment_offset != ch.offset; }));
        Dev<gpu::AdamwChunk> d_chunks(chunks);
        std::vector<float> mo = rng.floats(share, 0.01f), ve = rng.floats(share, 0.01f);
        for (float& a : ve) a = std::fabs(a);
        DevF d_m(mo), d_v(ve);
        gpu::gpu_gpt_load_params(&gm, cpu.params_memory.data());
        cpu.grads_memory = grads0;
        CUDA_CHECK(cudaMemcpy(gm.grads_memory, grads0.data(), N * sizeof(float), cudaMemcpyHostToDevice));
        for (int step = 0; step < 2; step++) {
            gpt_update_range(&cpu, lo, S, cpu.grads_memory.data() + lo, mo.data(), ve.data(), 1e-3f, 0.9f, 0.95f,
                             1e-5f, 0.1f, step, 0.7f);
            gpt_update_range(&cpu, tail_lo, tail_n, cpu.grads_memory.data() + tail_lo, mo.data() + S, ve.data() + S,
                             1e-3f, 0.9f, 0.95f, 1e-5f, 0.1f, step, 0.7f);
            gpu::gpt_update_range(&gm, d_chunks.p, (int)chunks.size(), d_m.p, d_v.p, 1e-3f, 0.9f, 0.95f, 1e-5f, 0.1f,
                                  step, 0.7f);
        }
        std::vector<float> params(N), grads(N);
        gpu::gpu_gpt_get_params(&gm, params.data());
        gpu::gpu_gpt_get_grads(&gm, grads.data());
        check_tensors(c, params, cpu.params_memory, "params after the share's update");
        check_close(d_m.get(), mo, scaled_tol(TOL, mo), "the share's m");
        check_close(d_v.get(), ve, scaled_tol(TOL, ve), "the share's v");
        CHECK(grads == cpu.grads_memory);  // zero in the share, the rest as they were
        CHECK(std::any_of(grads.begin(), grads.end(), [](float g) { return g != 0.0f; }));
    }
}

// One forward + backward of both models on the same batch; returns the GPU
// loss. Checks the loss, the logits and every parameter gradient within tol.
static double check_model_step(GPT<float, FastKernels>* cpu, gpu::GPT* gm, const std::vector<int>& inputs,
                               const std::vector<int>& targets, int B, int T, double tol,
                               const std::string& what) {
    const Config& c = cpu->cfg;
    gpt_forward(cpu, inputs.data(), targets.data(), B, T);
    gpu::gpt_forward(gm, inputs.data(), targets.data(), B, T);
    double loss_err = std::fabs(gm->mean_loss - cpu->mean_loss) / std::fabs(cpu->mean_loss);
    CHECK_MESSAGE(loss_err < tol, what << " loss " << gm->mean_loss << " vs " << cpu->mean_loss);
    check_aux(*cpu, *gm, tol, what);
    std::vector<float> logits((size_t)B * T * c.Vp);
    CUDA_CHECK(cudaMemcpy(logits.data(), gm->acts.logits, logits.size() * sizeof(float), cudaMemcpyDeviceToHost));
    Span<float> want = span(cpu->acts.logits, logits.size());
    check_close(logits, want, scaled_tol(tol, want), what + " logits");
    gpt_zero_grad(cpu);
    gpu::gpt_zero_grad(gm);
    gpt_backward(cpu, 1.0);
    gpu::gpt_backward(gm, 1.0);
    std::vector<float> grads(gm->num_params);
    gpu::gpu_gpt_get_grads(gm, grads.data());
    check_tensors(c, grads, cpu->grads_memory, what + " grad", tol);
    return gm->mean_loss;
}

// GPT-2-small widths and lengths (V 50257, C 768, NH 12, T 1024, d_ff 3072),
// two layers, the second MoT (E 8, G 4, f 1536), B 8: sizes at which an
// index that overflows, a grid that is too small or a reduction that loses
// precision would show. fp32, TF32 off.
GPU_TEST("gpu model at GPT-2-small shapes: loss, logits and every parameter gradient") {
    Config c = gpt2_small_config();
    const int B = 8, T = 1024;
    GPT<float, FastKernels> cpu;
    gpu::GPT gm;
    build_both(&cpu, &gm, c, 2024);
    TestRng rng(7);
    std::vector<int> inputs = rng.tokens((size_t)B * T, c.V), targets = rng.tokens((size_t)B * T, c.V);
    check_model_step(&cpu, &gm, inputs, targets, B, T, TOL, "gpt2-small shapes");
}

// Forward and backward at one batch shape, then another (the activations are
// freed and carved again), then the first again: every time against the CPU.
GPU_TEST("gpu model: the batch shape changes between calls") {
    Config c = small_config({MOT, DENSE});
    GPT<float, FastKernels> cpu;
    gpu::GPT gm;
    build_both(&cpu, &gm, c, 31);
    TestRng rng(32);
    struct Shape { int B, T; };
    for (Shape s : {Shape{4, 37}, Shape{8, 7}, Shape{12, 64}, Shape{4, 37}}) {
        size_t BT = (size_t)s.B * s.T;
        std::vector<int> inputs = rng.tokens(BT, c.V), targets = rng.tokens(BT, c.V);
        check_model_step(&cpu, &gm, inputs, targets, s.B, s.T, TOL, strf("B%d T%d", s.B, s.T));
        CHECK((gm.B == s.B && gm.T == s.T));
    }
}

// A run resumed on the GPU: the CPU trains 3 steps; the GPU model takes its
// parameters and AdamW moments from the host, and both train 3 more.
GPU_TEST("gpu model: AdamW moments loaded from the host continue a run") {
    Config c = small_config({DENSE, MOT});
    const int B = 4, T = 37;
    GPT<float, FastKernels> cpu;
    gpt_build(&cpu, c);
    gpt_init_weights(&cpu, 41);
    TestRng rng(42);
    auto batch = [&](std::vector<int>* x, std::vector<int>* y) {
        *x = rng.tokens((size_t)B * T, c.V);
        *y = rng.tokens((size_t)B * T, c.V);
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
        GPT<float, FastKernels> cpu;
        gpu::GPT gm;
        build_both(&cpu, &gm, mc.cfg, 51);
        TestRng rng(52);
        size_t BT = (size_t)mc.B * mc.T;
        std::vector<int> x = rng.tokens(BT, mc.cfg.V), y = rng.tokens(BT, mc.cfg.V);
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
        GPT<float, FastKernels> cpu;
        gpu::GPT gm;
        build_both(&cpu, &gm, mc.cfg, 61);
        TestRng rng(62);
        size_t BT = (size_t)mc.B * mc.T;
        // few distinct tokens: many positions share each wte row
        std::vector<int> x = rng.tokens(BT, 5), y = rng.tokens(BT, mc.cfg.V);
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

// The memory estimate that decides --device auto covers what a bf16 step
// takes: at V 16384 and B*T 16384 the bf16 copies of the logits' operands
// (slot 0 alone 512 MiB, gpu/matmul.cuh) are more than the estimate's
// reserve, so an estimate that left them out would be exceeded here.
GPU_TEST("gpu memory: a bf16 step stays within gpt_device_bytes(..., bf16)") {
    Config c = make_config(16384, 256, 2, 64, 256, 8, 4, 64, 1.0f, {DENSE, MOT});
    const int B = 64, T = 256;
    CHECK(gpu::bf16_operand_bytes(c, B, T) > gpu::GPU_RESERVE_BYTES);
    CHECK(gpu::gpt_device_bytes(c, B, T, true) ==
          gpu::gpt_device_bytes(c, B, T, false) + num_params(c) * sizeof(float) + gpu::bf16_operand_bytes(c, B, T));
    CUDA_CHECK(cudaDeviceSynchronize());
    const size_t free_before = gpu_free_memory();
    {
        GPT<float> init;
        build_random(&init, c, 7, 0.02);
        Model m;
        model_build(&m, c, "cuda", B, T, init.params_memory.data(), true);
        REQUIRE(m.on_gpu);
        REQUIRE(m.gpu.gpt.bf16);
        TestRng r(3);
        std::vector<int> inp = r.tokens((size_t)B * T, c.V), tgt = r.tokens((size_t)B * T, c.V);
        CHECK(std::isfinite(model_forward(&m, inp.data(), tgt.data(), B, T)));
        model_backward(&m, 1.0);
        model_update(&m, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0, 1.0f);
        CUDA_CHECK(cudaDeviceSynchronize());
        const size_t used = free_before - gpu_free_memory();
        INFO("used " << used / 1048576.0 << " MiB, estimated " << gpu::gpt_device_bytes(c, B, T, true) / 1048576.0);
        CHECK(used <= gpu::gpt_device_bytes(c, B, T, true));
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
    expect_throw([&] { choose_gpu("cuda", c, B, T, false, &why); }, {"--device cuda", "GiB are free"});
    CHECK(!choose_gpu("auto", c, B, T, false, &why));
    CHECK(why.find("GiB") != std::string::npos);
    CHECK(choose_gpu("auto", c, 4, 8, false, &why));  // a batch that fits
    float* p = nullptr;
    expect_throw([&] { gpu_malloc(&p, total, "a test buffer", "a smaller --batch"); },  // 4x the card's bytes
                 {"GPU out of memory: a test buffer needs", "a smaller --batch"});
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
GPU_TEST("gpu training: resume is bit-exact under --precision bf16") {
    check_resume("build/tg", "cuda", 1, " --precision bf16");
}

// --precision bf16, the whole model against the CPU's emulation
// (tests/bf16_agree.h): the loss within BF16_LOSS_TOL, the logits a bf16
// tensor, the gradients within BF16_GRAD_L2; the weights the passes read are
// the master weights rounded, the master weights stay fp32 and an AdamW step
// moves them as the CPU's does. Token choice is left to the block test of
// tests/test_gpu_layers.cu, which starts each block from the CPU's input: a
// bf16 step carried up from the blocks below can move a router logit past a
// routing decision's margin, and then the two models route one token
// differently.
GPU_TEST("gpu bf16 model: loss, logits, gradients and an AdamW step against the CPU's emulation") {
    for (const ModelCase& mc : model_cases()) {
        if (has_kind(mc.cfg, TOKEN_CHOICE)) continue;
        INFO("model " << mc.name);
        GPT<float, FastKernels> cpu;
        gpu::GPT gm;
        build_both(&cpu, &gm, mc.cfg, 1234);
        cpu.bf16 = gm.bf16 = true;
        TestRng rng(99);
        const size_t BT = (size_t)mc.B * mc.T;
        std::vector<int> inputs = rng.tokens(BT, mc.cfg.V), targets = rng.tokens(BT, mc.cfg.V);
        gpt_forward(&cpu, inputs.data(), targets.data(), mc.B, mc.T);
        gpu::gpt_forward(&gm, inputs.data(), targets.data(), mc.B, mc.T);
        std::vector<float> rounded(gm.num_params), master(gm.num_params);
        CUDA_CHECK(cudaMemcpy(rounded.data(), gm.params_bf16_memory, gm.num_params * sizeof(float),
                              cudaMemcpyDeviceToHost));
        gpu::gpu_gpt_get_params(&gm, master.data());
        CHECK(rounded == cpu.params_bf16_memory);
        CHECK(master == cpu.params_memory);
        double loss_err = std::fabs(gm.mean_loss - cpu.mean_loss) / cpu.mean_loss;
        CHECK_MESSAGE(loss_err <= BF16_LOSS_TOL, mc.name << " loss " << gm.mean_loss << " vs " << cpu.mean_loss);
        std::vector<float> logits(BT * mc.cfg.Vp);
        CUDA_CHECK(cudaMemcpy(logits.data(), gm.acts.logits, logits.size() * sizeof(float), cudaMemcpyDeviceToHost));
        check_bf16_tensor(logits, std::vector<float>(cpu.acts.logits, cpu.acts.logits + logits.size()), TOL,
                          std::string(mc.name) + " logits");
        gpt_zero_grad(&cpu);
        gpu::gpt_zero_grad(&gm);
        gpt_backward(&cpu);
        gpu::gpt_backward(&gm);
        std::vector<float> grads(gm.num_params);
        gpu::gpu_gpt_get_grads(&gm, grads.data());
        double l2 = relative_l2(grads, cpu.grads_memory);
        MESSAGE(mc.name << ": loss relative " << loss_err << ", gradients relative L2 " << l2);
        CHECK(l2 <= BF16_GRAD_L2);
        // AdamW moves the fp32 masters off the bf16 values; the next forward rounds them anew
        gpu::gpt_update(&gm, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0);
        gpu::gpu_gpt_get_params(&gm, master.data());
        size_t off_bf16 = 0;
        for (float x : master) off_bf16 += !is_bf16(x);
        CHECK(off_bf16 > master.size() / 2);
        gpu::gpt_forward(&gm, inputs.data(), targets.data(), mc.B, mc.T);
        CUDA_CHECK(cudaMemcpy(rounded.data(), gm.params_bf16_memory, gm.num_params * sizeof(float),
                              cudaMemcpyDeviceToHost));
        size_t wrong = 0;
        for (size_t i = 0; i < master.size(); i++) wrong += bits_of_float(rounded[i]) != bits_of_float(bf16_round(master[i]));
        CHECK(wrong == 0);
    }
}

GPU_TEST("gpu device queries and tf32 switch") {
    size_t total = 0, free_bytes = gpu_free_memory(&total);
    CHECK((!gpu_device_name().empty() && free_bytes > 0 && free_bytes <= total));
    gpu_set_tf32(true);
    CHECK(gpu_tf32());
    std::string how;
    double tf32_peak = gpu_peak_flops("tf32", &how);
    gpu_set_tf32(false);
    CHECK(!gpu_tf32());
    double bf16_peak = gpu_peak_flops("bf16", &how);
    double fp32_peak = gpu_peak_flops("fp32", &how);
    INFO(how);
    // any GPU of the last decade: 1 to 500 TFLOP/s fp32, tensor cores at least as fast, bf16's at least TF32's
    CHECK((fp32_peak > 1e12 && fp32_peak < 5e14));
    CHECK(tf32_peak >= fp32_peak);
    CHECK(bf16_peak >= tf32_peak);
}

GPU_TEST("gpu model: the threshold routers' rate controller (--router-balance) counts and moves bc as specified") {
    Config c = small_config({DENSE, TOKEN_CHOICE});
    c.tc.topk = c.E;
    c.tc.capacity_factor = 100.0f;  // nothing dropped
    c.tc.router = ROUTER_THRESHOLD;
    c.tc.router_tau = 0.5f;
    const int B = 4, T = 16, N = B * T, E = c.E;
    GPT<float> init;
    build_random(&init, c, 5, 0.3);
    Model m;
    model_build(&m, c, "cuda", B, T, init.params_memory.data());
    REQUIRE(m.on_gpu);
    TestRng r(12);
    std::vector<int> inp = r.tokens(N, c.V), tgt = r.tokens(N, c.V);
    model_forward(&m, inp.data(), tgt.data(), B, T);
    std::vector<float> z((size_t)N * E);
    CUDA_CHECK(cudaMemcpy(z.data(), m.gpu.gpt.acts.layer[1].z, z.size() * sizeof(float), cudaMemcpyDeviceToHost));
    std::vector<double> mine(E, 0.0), fires;
    token_choice_count_fires(mine.data(), z.data(), N, E);
    model_count_fires(&m, &fires);
    CHECK(fires == mine);
    model_backward(&m, 1.0);
    model_zero_router_bias_grads(&m);
    std::vector<float> g(num_params(c));
    gpu::gpu_gpt_get_grads(&m.gpu.gpt, g.data());
    const size_t bc_at = init.params.layer[1].bc - init.params_memory.data(),
                 wc_at = init.params.layer[1].wc - init.params_memory.data();
    for (int e = 0; e < E; e++) CHECK(g[bc_at + e] == 0.0f);
    std::vector<float> bc = model_router_bias(&m), before = bc;
    model_update(&m, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 0, 1.0f);
    const float eta = 0.75f;
    model_router_balance(&m, &bc, fires, (double)N, eta);
    std::vector<float> after(num_params(c)), mom, vel;
    gpu::gpu_gpt_get_params(&m.gpu.gpt, after.data());
    model_get_moments(&m, &mom, &vel);
    bool moved = false;
    for (int e = 0; e < E; e++) {
        float want = (float)((double)before[e] - eta * (mine[e] / N - 1.0 / c.mot.G));
        CHECK(after[bc_at + e] == want);
        moved |= want != before[e];
        CHECK(mom[bc_at + e] == 0.0f);
        CHECK(vel[bc_at + e] == 0.0f);
    }
    CHECK(moved);
    CHECK(!std::equal(after.begin() + wc_at, after.begin() + wc_at + (size_t)E * c.C,
                      init.params_memory.begin() + wc_at));  // AdamW ran
}
