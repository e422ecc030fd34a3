// A very small wall-clock profile of the CPU training step, by layer kind.
// Off by default (one branch per timed call); bench/bench_train.cpp turns it
// on to show where a step's time goes. Not thread-safe: the orchestration in
// gpt.h calls layers from one thread, and each layer parallelizes inside.
#pragma once
#include <chrono>

enum ProfKind {
    PROF_ENCODER, PROF_LAYERNORM, PROF_MATMUL, PROF_ATTENTION, PROF_RESIDUAL, PROF_FFN, PROF_MOT,
    PROF_LMHEAD, PROF_LOSS, PROF_ZERO, PROF_NKINDS
};
inline const char* prof_name(int k) {
    static const char* names[PROF_NKINDS] = {"encoder", "layernorm", "matmul qkv/proj", "attention", "residual",
                                             "dense ffn", "mot ffn", "lm head", "loss", "zero dacts"};
    return names[k];
}

struct Profile {
    bool on = false;
    double seconds[2][PROF_NKINDS] = {};  // [0] forward, [1] backward
    int calls = 0;
};
inline Profile& gpt_profile() {
    static Profile p;
    return p;
}

// Times its own lifetime into gpt_profile() when the profile is on.
struct ProfScope {
    int pass, kind;
    std::chrono::steady_clock::time_point t0;
    ProfScope(int pass_, int kind_) : pass(pass_), kind(kind_) {
        if (gpt_profile().on) t0 = std::chrono::steady_clock::now();
    }
    ~ProfScope() {
        if (gpt_profile().on)
            gpt_profile().seconds[pass][kind] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
};
// PROF(0 forward / 1 backward, PROF_KIND, call): times one call
#define PROF(pass, kind, ...) do { ProfScope prof_scope_(pass, kind); __VA_ARGS__; } while (0)
