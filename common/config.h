// The model's configuration (docs/design.md sections 2, 3 and 5), shared by the CPU
// and GPU paths, and the checks a configuration and a batch must pass.
//
// The program never relies on Config's initial values: the program's options
// (train/options.h) are the one set of defaults, and tests spell out every
// field. Errors here
// speak of the model (layers, width, experts); the program maps them to its
// options.
#pragma once
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "error.h"

// The kind of a block's feed-forward layer, as checkpoints store it;
// common/ffn_kinds.h describes each (its names, checks, tensors, FLOPs).
enum LayerKind { DENSE = 0, MOT = 1, TOKEN_CHOICE = 2 };
// How a TOKEN_CHOICE layer routes (cpu/token_choice.h): ROUTER_SOFTMAX, a
// softmax over the experts, the k most probable, gate p; ROUTER_THRESHOLD,
// expert e fires when s = z_e + bc_e >= 0 (the k largest s that do), gate
// sigmoid(s / router_tau); ROUTER_THRESHOLD_ONE, the same with gate 1.
enum RouterKind { ROUTER_SOFTMAX = 0, ROUTER_THRESHOLD = 1, ROUTER_THRESHOLD_ONE = 2 };
inline const char* router_name(int r) {
    return r == ROUTER_SOFTMAX ? "softmax" : r == ROUTER_THRESHOLD ? "threshold" : "threshold-one";
}
constexpr int MAX_LAYERS = 224;  // checkpoint header slots 32..255 hold one kind per layer

// A MOT layer's own hyperparameters (docs/design.md section 3); its experts
// are the Config's E and f.
struct MotConfig {
    int G = 0;      // group size: tokens mixed together
    float tau = 1;  // temperature of the softmax over the group
};

// A TOKEN_CHOICE layer's own hyperparameters; its experts are the Config's
// E and f.
struct TokenChoiceConfig {
    int topk = 1;                   // experts each token chooses (k)
    float capacity_factor = 1.25f;  // cf; an expert takes min(N, ceil(cf k N / E)) of N tokens
    int router = ROUTER_SOFTMAX;    // RouterKind
    float router_tau = 1;           // ROUTER_THRESHOLD: the gate's temperature
};

// The sizes a stored model may have (a checkpoint's header, a safetensors
// file's metadata, an llm.c file's header), the options' bounds
// (train/options.h): a damaged or hostile field is refused by name, never
// allocated.
struct SizeBound { int lo, hi; };
constexpr SizeBound BOUND_VOCAB{2, 1 << 24}, BOUND_SEQ{1, 1 << 20}, BOUND_HEADS{1, 1 << 16},
    BOUND_WIDTH{1, 1 << 16}, BOUND_DFF{0, 1 << 20}, BOUND_EXPERTS{0, 1 << 16}, BOUND_GROUP{0, 1 << 16},
    BOUND_EXPERT_WIDTH{0, 1 << 20};

struct Config {
    int V = 0;      // vocabulary size (logits beyond V never enter the softmax)
    int Vp = 0;     // V padded up to a multiple of 64: the rows of wte
    int maxT = 0;   // longest sequence: the rows of wpe
    int L = 0;      // layers (transformer blocks)
    int NH = 0;     // attention heads
    int C = 0;      // d_model, the width of the residual stream
    int dff = 0;    // hidden width of a DENSE feed-forward layer
    // The experts of MOT and TOKEN_CHOICE layers, one shape for both kinds: a model that has
    // both holds one set of expert dimensions (one slot each in the checkpoint header), and
    // --transition turns a MoT model's experts into token choice's as they are.
    int E = 0;  // experts
    int f = 0;  // expert hidden width
    MotConfig mot;         // MOT layers' own hyperparameters
    TokenChoiceConfig tc;  // TOKEN_CHOICE layers' own hyperparameters
    int activation = 0;      // 0 = gelu (tanh approximation)
    std::vector<int> kinds;  // (L) LayerKind of each block's feed-forward layer
    // Expert parallelism (--expert-parallel): this process holds E / expert_shards of each MOT and
    // TOKEN_CHOICE layer's experts and exchanges mixed tokens (MOT) or each expert's buffer of routed
    // tokens (TOKEN_CHOICE) with the other members of its expert group. A run's layout,
    // not the model's: checkpoints and exports hold every expert, with expert_shards 1.
    int expert_shards = 1;
    // What the members exchange (cpu/fast/expert_parallel.h): the mixed tokens (false), or the
    // group's input tokens, each owner mixing for its own experts (true)
    bool expert_inputs = false;
};

inline int pad_vocab(int V) { return (V + 63) / 64 * 64; }

// How many layers are of the given kind.
inline int count_kind(const Config& c, int kind) {
    int n = 0;
    for (int k : c.kinds) n += k == kind;
    return n;
}

// True when some layer is of the given kind.
inline bool has_kind(const Config& c, int kind) { return count_kind(c, kind) > 0; }

// True when a batch must hold whole groups, a multiple of G rows: some layer
// is MOT, which mixes tokens across the rows of a batch.
inline bool batch_in_groups(const Config& c) { return has_kind(c, MOT); }

// Stops with `what` unless ok: the form of every check of a config, here
// and in each kind's validate() (common/ffn_kinds.h).
inline void config_need(bool ok, const std::string& what) {
    if (!ok) fail(what);
}

// The checks of a config that concern no feed-forward kind; config_validate
// (common/ffn_kinds.h) makes these, then each kind's own. Names the bad field.
inline void config_validate_shape(const Config& c) {
    auto need = config_need;
    need(c.V > 0, strf("the vocabulary size must be positive (got %d)", c.V));
    need(c.Vp >= c.V, strf("the padded vocabulary %d is smaller than the vocabulary %d", c.Vp, c.V));
    need(c.maxT > 0, strf("the maximum sequence length must be positive (got %d)", c.maxT));
    need(c.L > 0 && c.L <= MAX_LAYERS, strf("the number of layers must be in 1..%d (got %d)", MAX_LAYERS, c.L));
    need(c.C > 0, strf("the model width must be positive (got %d)", c.C));
    need(c.NH > 0 && c.C % c.NH == 0, strf("the model width %d is not divisible by the %d heads", c.C, c.NH));
    need((int)c.kinds.size() == c.L, strf("%zu layer kinds for %d layers", c.kinds.size(), c.L));
}

// The checks every batch must pass before it touches memory: its shape
// against the model, and every token id against the vocabulary.
inline void batch_validate(const Config& c, const int* inputs, const int* targets, int B, int T) {
    if (T < 1 || T > c.maxT)
        fail(strf("sequence length %d is outside 1..%d, the model's maximum sequence length", T, c.maxT));
    if (B < 1) fail(strf("the batch must hold at least one sequence (got %d)", B));
    if (batch_in_groups(c) && B % c.mot.G != 0)
        fail(strf("a batch of %d sequences is not a multiple of the group size %d: MoT mixes tokens in groups of "
                  "G batch rows", B, c.mot.G));
    for (size_t i = 0; i < (size_t)B * T; i++) {
        if (inputs[i] < 0 || inputs[i] >= c.V)
            fail(strf("token id %d at position %zu is outside the vocabulary 0..%d", inputs[i], i, c.V - 1));
        if (targets && (targets[i] < 0 || targets[i] >= c.V))
            fail(strf("target id %d at position %zu is outside the vocabulary 0..%d", targets[i], i, c.V - 1));
    }
}
