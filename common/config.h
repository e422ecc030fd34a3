// Model configuration and the parameter layout shared by the CPU and GPU paths.
//
// Every parameter lives in one allocation, carved into named tensors in the
// checkpoint order of DESIGN.md section 3. visit_params() is the one place that
// order is written down: carving, the checkpoint, weight decay and the tests
// all go through it.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "error.h"

enum LayerKind { DENSE = 0, MOT = 1, TOKEN_CHOICE = 2 };
constexpr int MAX_LAYERS = 224;  // header slots 32..255 hold one kind per layer

struct Config {
    int V = 257;       // vocabulary size (logits beyond V never enter the softmax)
    int Vp = 320;      // V padded up to a multiple of 64, rows of wte
    int maxT = 256;    // longest sequence, rows of wpe
    int L = 4;         // layers
    int NH = 4;        // attention heads
    int C = 128;       // d_model
    int dff = 512;     // hidden width of a dense FFN
    int E = 8;         // MoT experts
    int G = 4;         // MoT group size: tokens mixed together
    int f = 256;       // MoT expert hidden width; flop-matched default dff*G/E
    float tau = 1.0f;  // MoT softmax temperature
    int activation = 0;  // 0 = gelu (tanh approximation)
    std::vector<int> kinds = std::vector<int>(4, MOT);  // (L) LayerKind per layer
};

inline int pad_vocab(int V) { return (V + 63) / 64 * 64; }

// Checks that a config describes a model we can build; names the bad field.
inline void config_validate(const Config& c) {
    auto need = [](bool ok, const std::string& what) { if (!ok) fail(what); };
    need(c.V > 0, strf("vocab size must be positive (got %d)", c.V));
    need(c.Vp >= c.V, strf("padded vocab %d is smaller than vocab %d", c.Vp, c.V));
    need(c.maxT > 0, strf("max sequence length must be positive (got %d)", c.maxT));
    need(c.L > 0 && c.L <= MAX_LAYERS, strf("--layers must be in 1..%d (got %d)", MAX_LAYERS, c.L));
    need(c.C > 0, strf("--d-model must be positive (got %d)", c.C));
    need(c.NH > 0 && c.C % c.NH == 0,
         strf("--d-model %d must be divisible by --heads %d", c.C, c.NH));
    need((int)c.kinds.size() == c.L, strf("%zu layer kinds for %d layers", c.kinds.size(), c.L));
    bool any_dense = false, any_mot = false;
    for (int k : c.kinds) {
        need(k == DENSE || k == MOT, strf("unsupported layer kind %d", k));
        any_dense |= k == DENSE;
        any_mot |= k != DENSE;
    }
    if (any_dense) need(c.dff > 0, strf("--d-ff must be positive (got %d)", c.dff));
    if (any_mot) {
        need(c.E > 0, strf("--experts must be positive (got %d)", c.E));
        need(c.G > 0, strf("--group must be positive (got %d)", c.G));
        need(c.f > 0, strf("--expert-size must be positive (got %d)", c.f));
        need(c.tau > 0, strf("--temperature must be positive (got %g)", c.tau));
    }
}

// Parameter pointers of one transformer block. Only the FFN kind's own
// tensors are set; the others stay null.
template <typename real>
struct LayerWeights {
    real *ln1w, *ln1b;          // (C), (C)
    real *qkvw, *qkvb;          // (3C, C), (3C)
    real *attprojw, *attprojb;  // (C, C), (C)
    real *ln2w, *ln2b;          // (C), (C)
    real *fcw = nullptr, *fcb = nullptr;          // DENSE: (dff, C), (dff)
    real *fcprojw = nullptr, *fcprojb = nullptr;  // DENSE: (C, dff), (C)
    real *wc = nullptr;  // MOT controller (E, C)
    real *w1 = nullptr;  // MOT expert input weights (E, f, C)
    real *w2 = nullptr;  // MOT expert output weights (E, C, f)
};

template <typename real>
struct Weights {
    real* wte;  // (Vp, C) token embedding, also the tied LM head
    real* wpe;  // (maxT, C) position embedding
    std::vector<LayerWeights<real>> layer;  // (L)
    real *lnfw, *lnfb;  // (C), (C) final LayerNorm
};

// Calls fn(name, slot, numel, ndim) for every parameter tensor in checkpoint
// order. `slot` is a reference to the pointer in w, so carving is one visit.
template <typename real, typename Fn>
void visit_params(Weights<real>& w, const Config& c, Fn fn) {
    size_t C = c.C;
    w.layer.resize(c.L);
    fn("wte", w.wte, (size_t)c.Vp * C, 2);
    fn("wpe", w.wpe, (size_t)c.maxT * C, 2);
    for (int l = 0; l < c.L; l++) {
        LayerWeights<real>& lw = w.layer[l];
        std::string p = "h" + std::to_string(l) + ".";
        fn(p + "ln1w", lw.ln1w, C, 1);
        fn(p + "ln1b", lw.ln1b, C, 1);
        fn(p + "qkvw", lw.qkvw, 3 * C * C, 2);
        fn(p + "qkvb", lw.qkvb, 3 * C, 1);
        fn(p + "attprojw", lw.attprojw, C * C, 2);
        fn(p + "attprojb", lw.attprojb, C, 1);
        fn(p + "ln2w", lw.ln2w, C, 1);
        fn(p + "ln2b", lw.ln2b, C, 1);
        if (c.kinds[l] == DENSE) {
            fn(p + "fcw", lw.fcw, (size_t)c.dff * C, 2);
            fn(p + "fcb", lw.fcb, (size_t)c.dff, 1);
            fn(p + "fcprojw", lw.fcprojw, C * c.dff, 2);
            fn(p + "fcprojb", lw.fcprojb, C, 1);
        } else {
            fn(p + "wc", lw.wc, (size_t)c.E * C, 2);
            fn(p + "w1", lw.w1, (size_t)c.E * c.f * C, 3);
            fn(p + "w2", lw.w2, (size_t)c.E * C * c.f, 3);
        }
    }
    fn("lnfw", w.lnfw, C, 1);
    fn("lnfb", w.lnfb, C, 1);
}

// Points every tensor of w into one block starting at base (host or device).
template <typename real>
Weights<real> carve_weights(real* base, const Config& c) {
    Weights<real> w;
    real* p = base;
    visit_params(w, c, [&](const std::string&, real*& slot, size_t n, int) { slot = p; p += n; });
    return w;
}

struct TensorSpec {
    std::string name;
    size_t offset, numel;  // in elements, into the one parameter block
    int ndim;              // weight decay applies to ndim >= 2
};

inline std::vector<TensorSpec> param_specs(const Config& c) {
    std::vector<TensorSpec> specs;
    Weights<float> w;
    size_t offset = 0;
    visit_params(w, c, [&](const std::string& name, float*&, size_t n, int ndim) {
        specs.push_back({name, offset, n, ndim});
        offset += n;
    });
    return specs;
}

inline size_t num_params(const Config& c) {
    size_t n = 0;
    for (const TensorSpec& s : param_specs(c)) n += s.numel;
    return n;
}
