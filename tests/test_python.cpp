// tests/test_python.cpp: the PyTorch twin (python/mot.py) against the engine.
// For a small model of each kind, trained a few steps and exported, the
// engine's logits and losses of one batch (eval --dump) and the twin's on the
// same tokens, through python/compare.py. Every case is skipped, with the
// reason, where no python3 with torch is found (MOT_PYTHON, else python3,
// else /usr/bin/python3).
//   make NVCC= train_mot build/test_python && ./build/test_python
//
// Tolerances (compare.py's measure: max |twin - engine| / max |engine| per
// tensor, the mean loss relative):
//  - f32 export, and bf16 export against the engine evaluating the same bf16
//    file: 1e-5. Both sides hold the same weights; the twin computes in
//    float64, so this measures the engine's float32 arithmetic.
//  - the bf16 twin against the f32 engine: what rounding the weights to bf16
//    may move. Each rounded weight moves by at most 2^-9 of itself (8
//    significant bits, round to nearest). To first order a chain of D rounded
//    tensors moves a signal by at most D 2^-9 of its size when no product
//    cancels; D counts the rounded tensors on the longest path from the
//    tokens to the logits: wte, per layer ln_1, c_attn, c_proj, ln_2 and the
//    feed-forward layer's matrices in series (dense 2; MoT and token choice 3,
//    the controller or router with w1 and w2), ln_f, the LM head. The loss
//    moves by at most twice the largest logit change, held to the same bound.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "tests/program.h"
#include "tests/train_checks.h"

// The first of MOT_PYTHON, python3 and /usr/bin/python3 that imports torch.
static std::string find_python(std::string* reason) {
    std::vector<std::string> tried;
    const char* env = std::getenv("MOT_PYTHON");
    for (std::string py : {std::string(env && *env ? env : ""), std::string("python3"), std::string("/usr/bin/python3")}) {
        if (py.empty()) continue;
        tried.push_back(py);
        if (capture(sh_quote(py) + " -c 'import torch'").rc == 0) return py;
    }
    *reason = "no python3 with torch (tried";
    for (const std::string& p : tried) *reason += " " + p;
    *reason += "; install python3-torch or set MOT_PYTHON)";
    return "";
}

static std::string skip_reason;
static const std::string python = find_python(&skip_reason);
static const bool has_torch = !python.empty();
static const bool banner = [] {
    if (!has_torch) std::printf("test_python: every case is skipped, %s\n", skip_reason.c_str());
    return true;
}();
#define PY_TEST(name) TEST_CASE(name * doctest::skip(!has_torch) * doctest::description(skip_reason.c_str()))

static const std::string DATA = " --data build/py_train.bin --val-data build/py_val.bin";
static const std::string MODEL =
    " --vocab 257 --heads 2 --d-model 16 --experts 4 --group 2 --batch 4 --seq 8 --device cpu --sample-every 0"
    " --val-every 0 --steps 6 --lr 1e-2";

// python/compare.py MODEL DUMP at tol; its output shown with the result.
static Run compare(const std::string& model, const std::string& dump, double tol, const std::string& extra = "") {
    char t[32];
    std::snprintf(t, sizeof t, "%.6g", tol);
    Run r = run_cmd(sh_quote(python) + " python/compare.py " + model + " " + dump + " --tol " + t + extra);
    MESSAGE(r.out);
    return r;
}

// eval --dump of the first batch of build/py_val.bin by the model in file.
static void dump(const std::string& file, const std::string& out, const std::string& extra = "") {
    Run r = run("eval --load " + file + " --data build/py_val.bin --batch 4 --seq 8 --batches 1 --device cpu --dump " +
                out + extra);
    INFO(r.out);
    REQUIRE(r.rc == 0);
}

// Trains a model with the options `train`, exports it as f32 and bf16, and
// checks the twin against the engine: f32 and bf16 within 1e-5, the bf16
// twin against the f32 engine within the bf16 bound of D rounded tensors.
static void check_kind(const std::string& name, const std::string& train, int depth) {
    make_train_data("build/py");
    std::string p = "build/py_" + name;
    Run r = run(DATA + MODEL + train + " --save " + p + ".ckpt");
    INFO(r.out);
    REQUIRE(r.rc == 0);
    for (const char* dt : {"f32", "bf16"}) {
        Run e = run(std::string("export --load ") + p + ".ckpt -o " + p + "_" + dt + ".safetensors --dtype " + dt);
        INFO(e.out);
        REQUIRE(e.rc == 0);
        dump(p + "_" + dt + ".safetensors", p + "_" + dt + "_dump.safetensors");
    }
    SUBCASE("f32: the twin and the engine agree within 1e-5") {
        CHECK(compare(p + "_f32.safetensors", p + "_f32_dump.safetensors", 1e-5).rc == 0);
    }
    SUBCASE("bf16: the twin and the engine on the same bf16 weights agree within 1e-5") {
        CHECK(compare(p + "_bf16.safetensors", p + "_bf16_dump.safetensors", 1e-5).rc == 0);
    }
    SUBCASE("bf16 twin against the f32 engine: within D 2^-9") {
        double bound = depth * std::ldexp(1.0, -9);
        MESSAGE(name << ": D = " << depth << ", bound " << bound);
        CHECK(compare(p + "_bf16.safetensors", p + "_f32_dump.safetensors", bound).rc == 0);
    }
}

// D for L layers whose feed-forward matrices in series are ffn each: wte,
// ln_f and the head, and per layer ln_1, c_attn, c_proj, ln_2 and the FFN.
static int depth(const std::vector<int>& ffn) {
    int d = 3;
    for (int m : ffn) d += 4 + m;
    return d;
}

PY_TEST("dense") { check_kind("dense", " --layers 2 --ffn dense", depth({2, 2})); }

PY_TEST("MoT") { check_kind("mot", " --layers 2 --ffn mot --temperature 0.5", depth({3, 3})); }

PY_TEST("token choice, softmax router, top-2 with dropped choices") {
    check_kind("tc_softmax", " --layers 2 --ffn token-choice --topk 2 --capacity-factor 0.75 --aux-loss 0.1",
               depth({3, 3}));
}

PY_TEST("token choice, threshold router") {
    check_kind("tc_threshold",
               " --layers 2 --ffn token-choice --router threshold --router-temperature 0.5 --topk 2"
               " --capacity-factor 0.75",
               depth({3, 3}));
}

PY_TEST("token choice, threshold-one router") {
    check_kind("tc_threshold_one", " --layers 2 --ffn token-choice --router threshold-one --topk 2", depth({3, 3}));
}

PY_TEST("mixed: dense, MoT, dense") {
    check_kind("mixed", " --layers 3 --ffn mot --mot-layers 1", depth({2, 3, 2}));
}

PY_TEST("mixed: dense and a MoT layer turned into a threshold router by transition tuning") {
    // its thresholds -bc come from calibration on the MoT model's logits, not from zero
    make_train_data("build/py");
    Run m = run(DATA + MODEL + " --layers 2 --ffn mot --mot-layers 1 --save build/py_tr_mot.ckpt");
    INFO(m.out);
    REQUIRE(m.rc == 0);
    check_kind("transition", " --layers 2 --ffn mot --mot-layers 1 --load build/py_tr_mot.ckpt --transition token-choice"
               " --router threshold --topk 2 --capacity-factor 1",
               depth({2, 3}));
}

PY_TEST("discrete MoT: the twin's one-hot mixing agrees with eval --mot-discrete") {
    make_train_data("build/py");
    Run r = run(DATA + MODEL + " --layers 2 --ffn mot --save build/py_disc.ckpt");
    INFO(r.out);
    REQUIRE(r.rc == 0);
    Run e = run("export --load build/py_disc.ckpt -o build/py_disc.safetensors");
    INFO(e.out);
    REQUIRE(e.rc == 0);
    dump("build/py_disc.safetensors", "build/py_disc_dump.safetensors", " --mot-discrete");
    CHECK(compare("build/py_disc.safetensors", "build/py_disc_dump.safetensors", 1e-5, " --mot-discrete").rc == 0);
    // and the measure sees the difference between the two mixings
    CHECK(compare("build/py_disc.safetensors", "build/py_disc_dump.safetensors", 1e-5).rc == 1);
}

PY_TEST("compare.py fails on a model that is not the one the engine ran, and on a bad dump") {
    make_train_data("build/py");
    for (const char* s : {"1", "2"}) {
        Run r = run(DATA + MODEL + " --layers 2 --ffn dense --seed " + s + " --save build/py_seed" + s + ".ckpt");
        INFO(r.out);
        REQUIRE(r.rc == 0);
        Run e = run(std::string("export --load build/py_seed") + s + ".ckpt -o build/py_seed" + s + ".safetensors");
        REQUIRE(e.rc == 0);
    }
    dump("build/py_seed1.safetensors", "build/py_seed1_dump.safetensors");
    CHECK(compare("build/py_seed1.safetensors", "build/py_seed1_dump.safetensors", 1e-5).rc == 0);
    Run other = compare("build/py_seed2.safetensors", "build/py_seed1_dump.safetensors", 1e-5);
    CHECK(other.rc == 1);
    CHECK(other.out.find("DIFFER") != std::string::npos);
    Run bad = compare("build/py_seed1.safetensors", "build/py_seed1.safetensors", 1e-5);
    CHECK(bad.rc == 2);
    CHECK(bad.out.find("no tensor 'tokens'") != std::string::npos);
}
