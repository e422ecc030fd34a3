// bench/bench_expert_parallel.cpp: what expert parallelism (--expert-parallel
// N) would hold and move per rank, computed from the layout alone (nothing is
// run): memory for parameters, gradients and AdamW moments, the bytes the
// MoT and token-choice exchanges move per step, and the gradient
// all-reduce's bytes, against data parallelism.
//
//   make build/bench_expert_parallel && ./build/bench_expert_parallel      (make bench runs it)
//
// Models, each made by the program's own options (train/options.h,
// config_from_options: flop-matched expert width for --expert-size 0):
// train_mot's defaults (MoT E 256, G 32 on the default data set's
// vocabulary), and GPT-2 small's shape (L 12, NH 12, C 768, V 50257,
// T 1024, d_ff 3072) dense, MoT E 32 and E 256 (G 32) and token choice E 32
// top-1, each at a micro-batch of B 32 sequences of the model's T.
//
// Expert tensors: those the layout slices by experts under expert
// parallelism (common/layout.h, for_each_expert_slice: a MOT or
// TOKEN_CHOICE layer's expert weights w1 (E, f, C) and w2 (E, C, f)). No
// kind has expert biases. The controller / router wc (E, C) and a threshold router's bc (E)
// have an expert axis but every rank needs all of them to route its own
// tokens: they stay replicated with everything else.
//
// Memory per rank, fp32 as the trainer keeps it: parameters 4 bytes and
// gradients 4 bytes each of the parameters the rank holds, AdamW's m and v 8
// bytes each of those whose moments it keeps. A rank of an N-rank expert
// group holds the n_other parameters outside the experts and n_expert / N
// expert parameters. ZeRO-1 over R ranks (train/parallel.h): the moments of
// a body slice floor(n/R) plus the tail n mod R; under expert parallelism
// each part is sliced over the ranks that hold it (the rest over R, a rank's
// expert shard over its R/N data-parallel replicas), so with N = 1 it is
// train/parallel.h's rule on all n parameters at once.
//
// Exchange per rank, per layer and per micro-batch, in floats (docs/design.md
// section 3.2; U (S,T,E,C) is the layout's u activation, X (B,T,C) the
// layer's input, its ln2 activation, with B = G*S):
//   MoT, mixed tokens: forward U of the experts a rank does not own out
//     ((N-1)/N * S*T*E*C) and their outputs Y back (the same); backward dY
//     out and dU back (the same): 4 * (N-1)/N * S*T*E*C.
//   MoT, input tokens: forward each rank sends X (B*T*C) to each of the N-1
//     others; an owner computes Z, M for its experts on every rank's X (the
//     controller softmax runs over the group axis, separately per expert, so
//     a column of M needs only its expert's row of wc), U, Y, and its share
//     of the emit O = M Y (the sum over its experts), which goes back to the
//     sender: (N-1) * B*T*C; backward dO out, and each owner's share of dX
//     (M dU + dZ wc over its experts) back, the same:
//     4 * (N-1) * B*T*C = 4 * (N-1) * G*S*T*C.
//   So input tokens move less exactly when N*G < E, the same at N*G = E.
//   Token choice: each expert's fixed block of cap rows (the layout's u,
//     (E, cap, C), padding counted) goes to its owner and back, and the
//     gradients the same: 4 * (N-1)/N * E*cap*C.
// Gradient all-reduce per rank and step, a ring's bytes sent (received the
// same): 2 * (R'-1)/R' * 4n over R' ranks; ZeRO-1's reduce-scatter and
// all-gather move the same. Data parallelism: all n over R; expert
// parallelism: n_other over R, the rank's n_expert / N over its R/N replicas
// (nothing when N = R: the owner's gradients are complete after the exchange).
#include <algorithm>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/layout.h"
#include "data/prepare.h"
#include "train/options.h"

static const double GiB = 1073741824.0;
static const int RANKS = 8;                // R for ZeRO-1 and the all-reduce
static const int GROUP_SIZES[] = {1, 2, 4, 8};  // N

struct Model {
    std::string name;
    Config c;
    int B = 32, T = 0;
    size_t n = 0, n_expert = 0;   // parameters, of them in expert tensors
    int mot_layers = 0, tc_layers = 0;
    size_t u_mot = 0, u_tc = 0;   // floats of one layer's u: MoT (S,T,E,C), token choice (E,cap,C)
    size_t x = 0;                 // floats of one layer's input (B,T,C)
};

static Model make_model(const std::string& name, const Options& o, int vocab) {
    Model m;
    m.name = name;
    m.c = config_from_options(o, vocab);
    m.B = o.B, m.T = o.T;
    m.n = num_params(m.c);
    // the tensors the layout slices by experts (common/layout.h, for_each_expert_slice): with one
    // expert per member, a member's slice of each is 1/E of it
    Config member = m.c;
    member.expert_shards = std::max(1, m.c.E);
    for_each_expert_slice(member, 0, [&](size_t, size_t, size_t numel, bool sliced) {
        if (sliced) m.n_expert += numel * member.expert_shards;
    });
    if ((has_kind(m.c, MOT) || has_kind(m.c, TOKEN_CHOICE)) && m.n_expert == 0)
        fail(name + ": a sparse model whose layout slices no tensor by experts");
    Acts<float> a;
    visit_acts(a, m.c, m.B, m.T, [&](float*& slot, size_t numel, GradUse) {
        for (int l = 0; l < m.c.L; l++) {
            if (&slot == &a.layer[l].u) (m.c.kinds[l] == MOT ? m.u_mot : m.u_tc) = numel;
            if (&slot == &a.layer[l].ln2) m.x = numel;
        }
    });
    m.mot_layers = count_kind(m.c, MOT);
    m.tc_layers = count_kind(m.c, TOKEN_CHOICE);
    return m;
}

// Moments kept for n parameters sliced over r ranks (train/parallel.h's ZeRO-1).
static size_t zero_share(size_t n, size_t r) { return n / r + n % r; }

struct Memory {
    size_t params, grads, moments;  // bytes
    size_t total() const { return params + grads + moments; }
};

// One rank of an N-rank expert group; zero: ZeRO-1 over RANKS ranks.
static Memory memory(const Model& m, int N, bool zero) {
    size_t other = m.n - m.n_expert, shard = m.n_expert / N;
    size_t held = other + shard;
    size_t kept = !zero ? held : N == 1 ? zero_share(m.n, RANKS) : zero_share(other, RANKS) + zero_share(shard, RANKS / N);
    return {4 * held, 4 * held, 8 * kept};
}

// Whether an N-rank expert group can hold the model: N divides its experts
// (N 1, data parallelism, holds any).
static bool divides(const Model& m, int N) { return N == 1 || (m.n_expert > 0 && m.c.E % N == 0); }

static std::vector<int> group_sizes(const Model& m) {
    std::vector<int> out;
    for (int N : GROUP_SIZES)
        if (divides(m, N)) out.push_back(N);
    return out;
}

static double ring_bytes(double n, int r) { return r <= 1 ? 0 : 2.0 * (r - 1) / r * 4 * n; }

// The gradient all-reduce's bytes a rank sends per step: the parameters
// outside the experts over RANKS, its expert shard over its RANKS/N replicas.
static double allreduce_bytes(const Model& m, int N) {
    return ring_bytes((double)(m.n - m.n_expert), RANKS) + ring_bytes((double)m.n_expert / N, RANKS / N);
}

// One MoT layer's exchange, one direction, bytes a rank sends per micro-batch:
// mixed tokens (x_scheme false) or input tokens.
static double mot_layer_bytes(const Model& m, int N, bool x_scheme) {
    return x_scheme ? (N - 1) * (double)m.x * 4 : (double)(N - 1) / N * m.u_mot * 4;
}

static double tc_layer_bytes(const Model& m, int N) { return (double)(N - 1) / N * m.u_tc * 4; }

// The whole step's exchange (4 directions, every layer), MoT by the scheme
// that moves less.
static double exchange_bytes(const Model& m, int N) {
    double mot = std::min(mot_layer_bytes(m, N, false), mot_layer_bytes(m, N, true));
    return 4 * (m.mot_layers * mot + m.tc_layers * tc_layer_bytes(m, N));
}

static void run() {
    std::vector<Model> models;
    {
        Options o;  // train_mot's defaults, on the default data set's vocabulary
        models.push_back(make_model("default (MoT E 256, G 32)", o, PREPARE_DEFAULT_VOCAB));
        Options g;  // GPT-2 small
        g.layers = 12, g.heads = 12, g.d_model = 768, g.T = 1024, g.B = 32;
        g.ffn = "dense";
        models.push_back(make_model("GPT-2 small dense", g, 50257));
        g.ffn = "mot", g.experts = 32, g.group = 32;
        models.push_back(make_model("GPT-2 small MoT E 32, G 32", g, 50257));
        g.experts = 256;
        models.push_back(make_model("GPT-2 small MoT E 256, G 32", g, 50257));
        g.ffn = "token-choice", g.experts = 32, g.topk = 1;
        models.push_back(make_model("GPT-2 small token choice E 32, top-1", g, 50257));
    }

    std::printf("expert parallelism from the layout (nothing run); fp32; R = %d ranks for ZeRO-1 and the all-reduce\n\n",
                RANKS);
    std::printf("%-38s %5s %5s %3s %5s %5s %5s %14s %14s %14s\n", "model", "L", "C", "E", "G", "f", "T", "params",
                "in experts", "outside");
    for (const Model& m : models) {
        bool sparse = m.n_expert > 0;
        std::printf("%-38s %5d %5d %3s %5s %5s %5d %14zu %14zu %14zu\n", m.name.c_str(), m.c.L, m.c.C,
                    sparse ? std::to_string(m.c.E).c_str() : "-",
                    m.mot_layers ? std::to_string(m.c.mot.G).c_str() : "-",
                    sparse ? std::to_string(m.c.f).c_str() : "-", m.T, m.n, m.n_expert, m.n - m.n_expert);
    }

    std::printf("\nmemory per rank: parameters, gradients, AdamW moments (bytes), total (bytes, GiB);\n"
                "N: ranks in an expert group (1: data parallelism, every rank a full copy)\n");
    std::printf("%-38s %-16s %14s %14s %14s %14s %9s\n", "model", "layout", "params", "grads", "moments", "total",
                "GiB");
    for (const Model& m : models) {
        for (bool zero : {false, true})
            for (int N : group_sizes(m)) {
                Memory mem = memory(m, N, zero);
                std::string layout = strf("N %d%s", N, zero ? strf(", ZeRO-1 R %d", RANKS).c_str() : "");
                std::printf("%-38s %-16s %14zu %14zu %14zu %14zu %9.2f\n", m.name.c_str(), layout.c_str(), mem.params,
                            mem.grads, mem.moments, mem.total(), mem.total() / GiB);
            }
    }

    std::printf("\nper rank, total GiB (parameters + gradients + moments):\n");
    std::printf("%-38s %8s %8s %8s %8s   %8s %8s %8s %8s\n", "model", "N 1", "N 2", "N 4", "N 8", "Z1 N 1", "Z1 N 2",
                "Z1 N 4", "Z1 N 8");
    for (const Model& m : models) {
        std::printf("%-38s", m.name.c_str());
        for (bool zero : {false, true}) {
            if (zero) std::printf("  ");
            for (int N : GROUP_SIZES) {
                if (divides(m, N)) std::printf(" %8.2f", memory(m, N, zero).total() / GiB);
                else std::printf(" %8s", "-");
            }
        }
        std::printf("\n");
    }
    std::printf("(Z1: ZeRO-1 over R = %d ranks)\n", RANKS);

    std::printf("\nexchange per rank, one micro-batch of B sequences per rank a step, MB (1e6 bytes):\n"
                "  MoT mixed tokens U:  4 directions x (N-1)/N x S*T*E*C floats per layer (S = B/G)\n"
                "  MoT input tokens X:  4 directions x (N-1) x B*T*C floats per layer (less when N*G < E)\n"
                "  token choice:        4 directions x (N-1)/N x E*cap*C floats per layer (cap rows per expert)\n");
    std::printf("%-38s %-10s %3s %3s %14s %14s %14s %14s\n", "model", "exchange", "B", "N", "layer, 1 dir",
                "per step", "X: layer 1 dir", "X: per step");
    for (const Model& m : models) {
        for (int N : group_sizes(m)) {
            if (N == 1) continue;
            if (m.mot_layers) {
                double u1 = mot_layer_bytes(m, N, false), x1 = mot_layer_bytes(m, N, true);
                std::printf("%-38s %-10s %3d %3d %14.1f %14.1f %14.1f %14.1f%s\n", m.name.c_str(), "MoT", m.B, N,
                            u1 / 1e6, 4 * m.mot_layers * u1 / 1e6, x1 / 1e6, 4 * m.mot_layers * x1 / 1e6,
                            x1 < u1 ? "  X less" : x1 == u1 ? "  equal" : "");
            }
            if (m.tc_layers) {
                double u1 = tc_layer_bytes(m, N);
                std::printf("%-38s %-10s %3d %3d %14.1f %14.1f %14s %14s\n", m.name.c_str(), "tok-choice", m.B, N,
                            u1 / 1e6, 4 * m.tc_layers * u1 / 1e6, "-", "-");
            }
        }
    }

    std::printf("\ngradient all-reduce per rank and step (ring, bytes sent; ZeRO-1 the same), R = %d, MB:\n", RANKS);
    std::printf("%-38s %12s %12s %12s %12s\n", "model", "N 1 (DP)", "N 2", "N 4", "N 8");
    for (const Model& m : models) {
        std::printf("%-38s", m.name.c_str());
        for (int N : GROUP_SIZES) {
            if (divides(m, N)) std::printf(" %12.1f", allreduce_bytes(m, N) / 1e6);
            else std::printf(" %12s", "-");
        }
        std::printf("\n");
    }

    std::printf("\nall of it per rank and step, one micro-batch per rank (the exchange grows with the micro-batches, the "
                "all-reduce does not), R = %d, MB:\n", RANKS);
    std::printf("%-38s %12s %12s %12s %12s\n", "model", "N 1 (DP)", "N 2", "N 4", "N 8");
    for (const Model& m : models) {
        std::printf("%-38s", m.name.c_str());
        for (int N : GROUP_SIZES) {
            if (divides(m, N)) std::printf(" %12.1f", (exchange_bytes(m, N) + allreduce_bytes(m, N)) / 1e6);
            else std::printf(" %12s", "-");
        }
        std::printf("\n");
    }
}

int main() {
    try {
        run();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_expert_parallel: %s\n", e.what());
        return 1;
    }
    return 0;
}
