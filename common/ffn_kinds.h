// The table of feed-forward kinds, shared by the CPU and GPU paths. A kind
// (DENSE, MOT, TOKEN_CHOICE) is declared once, here: its names (the --ffn
// option's, the safetensors metadata's), the checks of its configuration,
// its parameters with their shapes and initialisation and their safetensors
// names, its activations and scratch, its FLOPs, its line in the run's
// summary, and its own hyperparameters as each file stores them. Its
// arithmetic is one file per path (cpu/<kind>.h, gpu/<kind>.cuh, listed in
// cpu/ffn_kinds.h and gpu/ffn_kinds.cuh), found by the kind's tag type
// (README, "Adding a feed-forward kind"). common/layout.h lays the kinds'
// tensors out.
//
// Shapes: B batch, T positions, C d_model, E experts, f expert width,
// S = B/G groups per position.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "config.h"
#include "exchange.h"
#include "tensors.h"

// One struct per kind, each a FfnKind:
//   kind           its LayerKind, the int a checkpoint stores
//   option         its name as --ffn spells it
//   stored         its name in a safetensors file's "kinds" metadata
//   validate(c)    the checks of the fields it reads (config_need), made
//                  when some layer is of the kind
//   params(w, c, prefix, fn)  its tensors in checkpoint order:
//                  fn(name, slot, numel, ndim, init)
//   exports(w, c, fn)  their safetensors names and shapes, after "h.N.":
//                  fn(slot, name, shape)
//   acts(a, c, B, T, fn, decoding)  its activations: fn(slot, numel, grad_use)
//   int_acts(a, c, B, T, fn, decoding)  its integer activations (indices,
//                  which have no gradient): fn(slot, numel)
//   aux_loss       whether it adds a loss of its own to the objective, a.aux[0]
//   linear_layers(c, fn)  the linear layers (the paths' matmul_forward) it
//                  runs, fn(in, out) each: the GPU's bf16 operand copies are
//                  sized from them with the block's (gpu/gpt.cuh)
//   flops(c)       its forward FLOPs per token
//   summary(c, n)  its part of the run's "model:" line, for its n layers
//   its own hyperparameters (a struct of Config: c.mot, c.tc), as each file
//   stores them:
//   header_write(c, h), header_read(h, k, file)  in the checkpoint header's
//                  slots (common/checkpoint.h), read back checked into k
//   metadata_write(c, fn), metadata_read(r, k)  as safetensors metadata:
//                  fn(key, value) with an int, float or string value;
//                  r.integer(key, lo, hi), r.real(key, lo), r.text(key)
//                  (common/model_file.h)
//   log_fields(c, fn)  in the log's first row: fn(key, value)
// FfnKind's defaults are a kind with none of these: no checks, no tensors,
// no FLOPs, no hyperparameters.
struct FfnKind {
    static constexpr bool aux_loss = false;
    static void validate(const Config&) {}
    template <typename real, typename Fn>
    static void params(LayerWeights<real>&, const Config&, const std::string&, Fn) {}
    template <typename real, typename Fn>
    static void exports(LayerWeights<real>&, const Config&, Fn) {}
    template <typename real, typename Fn>
    static void acts(LayerActs<real>&, const Config&, int, int, Fn, bool) {}
    template <typename real, typename Fn>
    static void int_acts(LayerActs<real>&, const Config&, int, int, Fn, bool) {}
    static double flops(const Config&) { return 0; }
    template <typename Fn>
    static void linear_layers(const Config&, Fn) {}
    static void header_write(const Config&, int32_t*) {}
    static void header_read(const int32_t*, Config*, const char*) {}
    template <typename Fn>
    static void metadata_write(const Config&, Fn) {}
    template <typename Reader>
    static void metadata_read(const Reader&, Config*) {}
    template <typename Fn>
    static void log_fields(const Config&, Fn) {}
};

// DENSE: out = gelu(x fcw^T + fcb) fcprojw^T + fcprojb
struct DenseFfn : FfnKind {
    static constexpr int kind = DENSE;
    static constexpr const char* option = "dense";
    static constexpr const char* stored = "dense";
    static void validate(const Config& c) {
        config_need(c.dff > 0, strf("the dense FFN width must be positive (got %d)", c.dff));
    }
    template <typename real, typename Fn>
    static void params(LayerWeights<real>& w, const Config& c, const std::string& p, Fn fn) {
        size_t C = c.C, dff = c.dff;
        fn(p + "fcw", w.fcw, dff * C, 2, INIT_NORMAL);
        fn(p + "fcb", w.fcb, dff, 1, INIT_ZERO);
        fn(p + "fcprojw", w.fcprojw, C * dff, 2, INIT_RESIDUAL);
        fn(p + "fcprojb", w.fcprojb, C, 1, INIT_ZERO);
    }
    template <typename real, typename Fn>
    static void exports(LayerWeights<real>& w, const Config& c, Fn fn) {
        const int64_t C = c.C, dff = c.dff;
        fn(w.fcw, "mlp.c_fc.weight", std::vector<int64_t>{dff, C});
        fn(w.fcb, "mlp.c_fc.bias", std::vector<int64_t>{dff});
        fn(w.fcprojw, "mlp.c_proj.weight", std::vector<int64_t>{C, dff});
        fn(w.fcprojb, "mlp.c_proj.bias", std::vector<int64_t>{C});
    }
    template <typename real, typename Fn>
    static void acts(LayerActs<real>& a, const Config& c, int B, int T, Fn fn, bool) {
        size_t BT = (size_t)B * T;
        fn(a.fch, BT * c.dff, GRAD_ADDS);
        fn(a.fch_gelu, BT * c.dff, GRAD_ADDS);
    }
    static double flops(const Config& c) { return 2.0 * 2 * c.C * c.dff; }  // two products of C x dff
    template <typename Fn>
    static void linear_layers(const Config& c, Fn fn) {
        fn((size_t)c.C, (size_t)c.dff);
        fn((size_t)c.dff, (size_t)c.C);
    }
    // the last part of the line, there even with no dense layer
    static std::string summary(const Config& c, int n) { return strf("%d dense (d_ff %d)", n, c.dff); }
};

// The checks of the fields MOT and TOKEN_CHOICE share.
inline void experts_validate(const Config& c) {
    config_need(c.E > 0, strf("the number of experts must be positive (got %d)", c.E));
    config_need(c.f > 0, strf("the expert width must be positive (got %d)", c.f));
}

// MOT (cpu/mot.h has the math): controller wc, experts w1, w2; the mixed
// tokens and expert activations are per group, S*T groups of G rows.
struct MotFfn : FfnKind {
    static constexpr int kind = MOT;
    static constexpr const char* option = "mot";
    static constexpr const char* stored = "mot";
    static void validate(const Config& c) {
        experts_validate(c);
        config_need(c.mot.G > 0, strf("the group size must be positive (got %d)", c.mot.G));
        config_need(std::isfinite(c.mot.tau) && c.mot.tau > 0,
                    strf("the MoT temperature must be positive (got %g)", c.mot.tau));
        config_need(c.expert_shards >= 1 && c.E % c.expert_shards == 0,
                    strf("expert parallelism over %d ranks must divide the %d experts", c.expert_shards, c.E));
    }
    // Under expert parallelism w1 and w2 hold this member's E/N experts (the
    // leading axis), wc all E.
    template <typename real, typename Fn>
    static void params(LayerWeights<real>& w, const Config& c, const std::string& p, Fn fn) {
        size_t C = c.C, E = c.E, El = c.E / c.expert_shards, f = c.f;
        fn(p + "wc", w.wc, E * C, 2, INIT_NORMAL);
        fn(p + "w1", w.w1, El * f * C, 3, INIT_NORMAL);
        fn(p + "w2", w.w2, El * C * f, 3, INIT_RESIDUAL);
    }
    template <typename real, typename Fn>
    static void exports(LayerWeights<real>& w, const Config& c, Fn fn) {
        const int64_t C = c.C, E = c.E, f = c.f;
        fn(w.wc, "mot.controller.weight", std::vector<int64_t>{E, C});
        fn(w.w1, "mot.w1", std::vector<int64_t>{E, f, C});
        fn(w.w2, "mot.w2", std::vector<int64_t>{E, C, f});
    }
    template <typename real, typename Fn>
    static void acts(LayerActs<real>& a, const Config& c, int B, int T, Fn fn, bool) {
        size_t BT = (size_t)B * T, ST = (size_t)(B / c.mot.G) * T, C = c.C, E = c.E, f = c.f;
        fn(a.z, BT * E, GRAD_OVERWRITES);
        fn(a.m, BT * E, GRAD_OVERWRITES);
        fn(a.u, ST * E * C, GRAD_OVERWRITES);
        fn(a.p, ST * E * f, GRAD_OVERWRITES);
        fn(a.a, ST * E * f, GRAD_OVERWRITES);
        fn(a.y, ST * E * C, GRAD_OVERWRITES);
        if (c.expert_shards > 1 && c.expert_inputs) {
            fn(a.xall, c.expert_shards * BT * C, GRAD_OVERWRITES);
            fn(a.oall, c.expert_shards * BT * C, GRAD_OVERWRITES);
        } else if (c.expert_shards > 1) {
            fn(a.ul, ST * E * C, GRAD_OVERWRITES);
            fn(a.yl, ST * E * C, GRAD_OVERWRITES);
            fn(a.xbuf, ST * E * C, GRAD_OVERWRITES);
        }
    }
    // controller 2CE, merge 2EC and emit 2EC per token (each token joins one
    // group, whose E mixed tokens it feeds and reads), experts 2*2*C*f*E/G
    // (each group runs E experts once for its G tokens)
    static double flops(const Config& c) { return 3 * 2.0 * c.C * c.E + 2.0 * 2 * c.C * c.f * (double)c.E / c.mot.G; }
    static std::string summary(const Config& c, int n) {
        return strf("%d MoT layers (E %d, G %d, f %d, tau %g)", n, c.E, c.mot.G, c.f, c.mot.tau);
    }
    // G in slot 10, tau (float bits) in slot 12, in every checkpoint
    static void header_write(const Config& c, int32_t* h) {
        h[10] = c.mot.G;
        std::memcpy(&h[12], &c.mot.tau, 4);
    }
    static void header_read(const int32_t* h, Config* k, const char* file) {
        if (h[10] < BOUND_GROUP.lo || h[10] > BOUND_GROUP.hi)
            fail(strf("%s: group size %d in header (must be %d..%d)", file, h[10], BOUND_GROUP.lo, BOUND_GROUP.hi));
        k->mot.G = h[10];
        std::memcpy(&k->mot.tau, &h[12], 4);
        if (!(k->mot.tau >= 1e-6f && k->mot.tau <= 1e6f))
            fail(strf("%s: MoT temperature %g in header (must be 1e-6..1e6)", file, (double)k->mot.tau));
    }
    template <typename Fn>
    static void metadata_write(const Config& c, Fn fn) {
        fn("group_size", c.mot.G);
        fn("temperature", c.mot.tau);
    }
    template <typename Reader>
    static void metadata_read(const Reader& r, Config* k) {
        k->mot.G = r.integer("group_size", BOUND_GROUP.lo, BOUND_GROUP.hi);
        k->mot.tau = r.real("temperature", 1e-6f);
    }
    template <typename Fn>
    static void log_fields(const Config& c, Fn fn) {
        fn("group", (double)c.mot.G);
        fn("temperature", (double)c.mot.tau);
    }
};

// TOKEN_CHOICE (cpu/token_choice.h has the math): a Switch-style sparse
// mixture of experts on MOT's tensors. Each expert holds up to cap tokens
// of the N = B*T of a micro-batch: cap = min(N, ceil(cf k N / E)); while
// decoding (one token per sequence) nothing is dropped, cap = N. A token
// chooses an expert at most once, so no expert ever takes more than N: a
// larger cap (cf above E/k) would only size buffers that stay empty (at cf
// 1e6, millions of rows per expert).
struct TokenChoiceFfn : FfnKind {
    static constexpr int kind = TOKEN_CHOICE;
    static constexpr const char* option = "token-choice";
    static constexpr const char* stored = "token_choice";
    static constexpr bool aux_loss = true;  // load balancing (docs/design.md)
    static void validate(const Config& c) {
        auto need = config_need;
        experts_validate(c);
        need(c.tc.topk >= 1 && c.tc.topk <= c.E,
             strf("each token chooses %d experts, which must be in 1..%d (the number of experts)", c.tc.topk, c.E));
        need(std::isfinite(c.tc.capacity_factor) && c.tc.capacity_factor > 0,
             strf("the capacity factor must be a positive number (got %g)", c.tc.capacity_factor));
        need(c.tc.router == ROUTER_SOFTMAX || c.tc.router == ROUTER_THRESHOLD || c.tc.router == ROUTER_THRESHOLD_ONE,
             strf("unsupported router kind %d", c.tc.router));
        need(std::isfinite(c.tc.router_tau) && c.tc.router_tau > 0,
             strf("the router temperature must be positive (got %g)", c.tc.router_tau));
        need(c.expert_shards >= 1 && c.E % c.expert_shards == 0,
             strf("expert parallelism over %d ranks must divide the %d experts", c.expert_shards, c.E));
    }
    static int capacity(const Config& c, int N, bool decoding) {
        if (decoding) return N;
        return (int)std::min<double>(N, std::ceil((double)c.tc.capacity_factor * c.tc.topk * N / c.E));
    }
    template <typename real, typename Fn>
    static void params(LayerWeights<real>& w, const Config& c, const std::string& p, Fn fn) {
        MotFfn::params(w, c, p, fn);  // the same tensors: transition tuning keeps them
        if (c.tc.router != ROUTER_SOFTMAX) fn(p + "bc", w.bc, (size_t)c.E, 1, INIT_ZERO);
    }
    template <typename real, typename Fn>
    static void exports(LayerWeights<real>& w, const Config& c, Fn fn) {
        const int64_t C = c.C, E = c.E, f = c.f;
        fn(w.wc, "moe.router.weight", std::vector<int64_t>{E, C});
        fn(w.bc, "moe.router.bias", std::vector<int64_t>{E});  // threshold routers only
        fn(w.w1, "moe.w1", std::vector<int64_t>{E, f, C});
        fn(w.w2, "moe.w2", std::vector<int64_t>{E, C, f});
    }
    template <typename real, typename Fn>
    static void acts(LayerActs<real>& a, const Config& c, int B, int T, Fn fn, bool decoding) {
        size_t N = (size_t)B * T, C = c.C, E = c.E, f = c.f;
        size_t rows = E * capacity(c, (int)N, decoding);
        fn(a.z, N * E, GRAD_OVERWRITES);
        fn(a.m, N * E, GRAD_OVERWRITES);
        fn(a.load, E, GRAD_OVERWRITES);
        fn(a.first, E, GRAD_OVERWRITES);
        fn(a.aux, (size_t)1, GRAD_ADDS);  // its gradient, the aux loss weight, is set by the model
        fn(a.u, rows * C, GRAD_OVERWRITES);
        fn(a.p, rows * f, GRAD_OVERWRITES);
        fn(a.a, rows * f, GRAD_OVERWRITES);
        fn(a.y, rows * C, GRAD_OVERWRITES);
        if (c.expert_shards > 1) {
            fn(a.ul, rows * C, GRAD_OVERWRITES);
            fn(a.yl, rows * C, GRAD_OVERWRITES);
        }
    }
    // the routing: indices, exact at any size (a float holds integers exactly only below 2^24)
    template <typename real, typename Fn>
    static void int_acts(LayerActs<real>& a, const Config& c, int B, int T, Fn fn, bool) {
        size_t N = (size_t)B * T, k = c.tc.topk;
        fn(a.route, N * k);
        fn(a.slot, N * k);
    }
    // router 2CE, and k experts of width f per token (dropped choices counted)
    static double flops(const Config& c) { return 2.0 * c.C * c.E + c.tc.topk * 2.0 * 2 * c.C * c.f; }
    static std::string summary(const Config& c, int n) {
        if (c.tc.router == ROUTER_SOFTMAX)
            return strf("%d token-choice layers (E %d, top-%d, f %d, capacity factor %g)", n, c.E, c.tc.topk, c.f,
                        c.tc.capacity_factor);
        return strf("%d token-choice layers (E %d, %s router, at most %d per token, f %d, capacity factor %g)", n, c.E,
                    router_name(c.tc.router), c.tc.topk, c.f, c.tc.capacity_factor);
    }
    // slots 14-17: k, cf, the router and its temperature (float bits), written when some layer is of this
    // kind; 0, as in files from before the kind, reads as the defaults (k 1, cf 1.25, softmax, 1)
    static void header_write(const Config& c, int32_t* h) {
        if (!has_kind(c, TOKEN_CHOICE)) return;
        h[14] = c.tc.topk;
        std::memcpy(&h[15], &c.tc.capacity_factor, 4);
        h[16] = c.tc.router;
        std::memcpy(&h[17], &c.tc.router_tau, 4);
    }
    static void header_read(const int32_t* h, Config* k, const char* file) {
        if (h[14] < 0) fail(strf("%s: top-k %d in header (must be 0 or positive)", file, h[14]));
        k->tc.topk = h[14] == 0 ? 1 : h[14];
        if (h[14] > 0 && h[14] > k->E)
            fail(strf("%s: top-k %d in header is above the %d experts", file, h[14], k->E));
        if (h[15] == 0) k->tc.capacity_factor = 1.25f;
        else std::memcpy(&k->tc.capacity_factor, &h[15], 4);
        if (!(k->tc.capacity_factor >= 1e-6f && k->tc.capacity_factor <= 1e6f))
            fail(strf("%s: capacity factor %g in header (must be a positive number, 1e-6..1e6)", file,
                      (double)k->tc.capacity_factor));
        if (h[16] < ROUTER_SOFTMAX || h[16] > ROUTER_THRESHOLD_ONE)
            fail(strf("%s: router kind %d in header (must be 0, 1 or 2)", file, h[16]));
        k->tc.router = h[16];
        if (h[17] == 0) k->tc.router_tau = 1;
        else std::memcpy(&k->tc.router_tau, &h[17], 4);
        if (!std::isnormal(k->tc.router_tau) || k->tc.router_tau <= 0)
            fail(strf("%s: router temperature %g in header (must be a positive, finite, normal number)", file,
                      (double)k->tc.router_tau));
    }
    template <typename Fn>
    static void metadata_write(const Config& c, Fn fn) {
        fn("top_k", c.tc.topk);
        fn("capacity_factor", c.tc.capacity_factor);
        fn("router", std::string(router_name(c.tc.router)));
        fn("router_temperature", c.tc.router_tau);
    }
    // the router temperature: lo 0, any positive, finite, normal float (as in a checkpoint)
    template <typename Reader>
    static void metadata_read(const Reader& r, Config* k) {
        k->tc.topk = r.integer("top_k", 1, 1 << 16);
        k->tc.capacity_factor = r.real("capacity_factor", 1e-6f);
        std::string router = r.text("router");
        if (router == "softmax") k->tc.router = ROUTER_SOFTMAX;
        else if (router == "threshold") k->tc.router = ROUTER_THRESHOLD;
        else if (router == "threshold-one") k->tc.router = ROUTER_THRESHOLD_ONE;
        else
            fail(strf("%s: metadata router \"%s\" (must be softmax, threshold or threshold-one)", r.file,
                      router.c_str()));
        k->tc.router_tau = r.real("router_temperature", 0);
    }
    template <typename Fn>
    static void log_fields(const Config& c, Fn fn) {
        fn("topk", (double)c.tc.topk);
        fn("capacity_factor", (double)c.tc.capacity_factor);
        fn("router", (double)c.tc.router);
        fn("router_temperature", (double)c.tc.router_tau);
    }
};

// What a TOKEN_CHOICE layer's routing needs besides its tensors.
struct TcRouter {
    int kind = ROUTER_SOFTMAX;  // RouterKind
    float tau = 1;              // ROUTER_THRESHOLD: the gate's temperature
};
inline TcRouter tc_router(const Config& c) { return {c.tc.router, c.tc.router_tau}; }

// The table of kinds: calls fn with every kind's tag, in the order of their
// LayerKind ints. Every list of kinds (the --ffn choices, the checks, the
// metadata names) follows this order.
template <typename Fn>
void for_each_ffn_kind(Fn fn) {
    fn(DenseFfn{});
    fn(MotFfn{});
    fn(TokenChoiceFfn{});
}

// Calls fn with the tag of a layer kind, e.g. fn(MotFfn{}) for MOT; stops
// with an error naming the int when no kind has it.
template <typename Fn>
void with_ffn_kind(int kind, Fn fn) {
    bool found = false;
    for_each_ffn_kind([&](auto k) {
        if (k.kind == kind && !found) found = true, fn(k);
    });
    if (!found) fail(strf("unsupported layer kind %d", kind));
}

// Whether a layer of this kind adds a loss of its own to the objective
// (FfnKind::aux_loss): its a.aux[0], which the model sums into aux_loss and
// weighs by aux_weight (--aux-loss).
inline bool kind_has_aux_loss(int kind) {
    bool on = false;
    with_ffn_kind(kind, [&](auto k) { on = k.aux_loss; });
    return on;
}

inline bool is_ffn_kind(int kind) {
    bool found = false;
    for_each_ffn_kind([&](auto k) { found = found || k.kind == kind; });
    return found;
}

// The kind whose name (as `stored` spells it when stored, else as `option`)
// is `name`; -1 when none is.
inline int ffn_kind_named(const std::string& name, bool stored) {
    int kind = -1;
    for_each_ffn_kind([&](auto k) {
        if (kind < 0 && name == (stored ? k.stored : k.option)) kind = k.kind;
    });
    return kind;
}

// The kinds' names (as stored, or as --ffn spells them), in table order,
// except `except`'s (-1: none).
inline std::vector<std::string> ffn_kind_names(bool stored, int except = -1) {
    std::vector<std::string> names;
    for_each_ffn_kind([&](auto k) {
        if (k.kind != except) names.push_back(stored ? k.stored : k.option);
    });
    return names;
}

// "a, b or c" (last = " or "), "a, b, c" (last = ", "): names in a sentence.
inline std::string name_list(const std::vector<std::string>& names, const char* last = " or ") {
    std::string s;
    for (size_t i = 0; i < names.size(); i++) s += (i == 0 ? "" : i + 1 == names.size() ? last : ", ") + names[i];
    return s;
}

// Checks that a config describes a model we can build; names the bad field.
// The checks of each kind some layer has, in table order.
inline void config_validate(const Config& c) {
    config_validate_shape(c);
    for (int k : c.kinds) config_need(is_ffn_kind(k), strf("unsupported layer kind %d", k));
    for_each_ffn_kind([&](auto k) {
        if (has_kind(c, k.kind)) k.validate(c);
    });
}

// How a forward pass runs a block's feed-forward layer besides training.
struct FfnMode {
    bool decoding = false;      // one token per sequence (a KV cache): TOKEN_CHOICE drops nothing
    bool mot_discrete = false;  // MOT: merge and emit with M one-hot at the argmax over the group
    // MOT and TOKEN_CHOICE under expert parallelism (Config::expert_shards > 1): the exchange of this
    // rank's expert group
    ExpertExchange* experts = nullptr;
};

// A layer holding 1/expert_shards of its experts runs only with the exchange
// of an expert group of that many members.
inline void need_expert_exchange(const Config& c, const FfnMode& mode, const char* layer) {
    if (!mode.experts || mode.experts->members != c.expert_shards)
        fail(strf("a %s layer holding 1/%d of its experts runs with the exchange of an expert group of %d", layer,
                  c.expert_shards, c.expert_shards));
}

