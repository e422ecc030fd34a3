// bench/bench_dist.cpp: data-parallel training (docs/design.md section 11) on this
// machine: tokens per second with 1 rank and with 2 ranks at the same global
// batch, the gradient all-reduce's time per step, and the optimizer memory
// per rank with and without ZeRO-1.
//
//   make train_mot build/bench_dist && ./build/bench_dist [steps]     (make bench runs it)
//
// Runs ./train_mot on the default data set from the repository root: one
// process with every core accumulating 2 micro-batches a step, against
// mpirun -np 2 with the cores split between the ranks (one micro-batch
// each), for a dense model, the default MoT model (E 256, G 32: 16x the
// parameters, so 16x the all-reduce) and a token-choice model (E 32, top-1,
// capacity factor 1.25); the two expert models also with --expert-parallel 2.
// Reads the step times and the
// all-reduce times from the logs; medians of the last 3/4 of the steps.
// Both configurations use the same cores, so on one machine 2 ranks can at
// best match 1 process: the all-reduce (here through shared memory) is what
// ranks add. Across GPUs or nodes the ranks add compute, and the table's
// all-reduce share is what that costs.
//
// Without MPI in the build or mpirun on the PATH it says so and exits 0.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench/runlog.h"
#include "common/config.h"
#include "common/layout.h"

static const char* PROG = std::getenv("MOT_TRAIN_MOT") ? std::getenv("MOT_TRAIN_MOT") : "./train_mot";

static std::string output_of(const std::string& cmd) {
    std::string out;
    FILE* p = popen((cmd + " 2>&1").c_str(), "r");
    if (!p) return out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    pclose(p);
    return out;
}

struct Measured {
    double ms = 0, allreduce_ms = 0, tok_s = 0, params = 0;
    double params_held = 0;               // of them on one rank (--expert-parallel: its experts)
    double expert_ms = 0, expert_mb = 0;  // --expert-parallel: the exchange's time and MB sent per step and rank
};

// One run of `steps` steps with `ranks` ranks (1: no mpirun) and its threads per rank.
static Measured measure(const std::string& model, int ranks, int threads, int zero, int steps, int ep = 1,
                        const std::string& exchange = "auto") {
    std::string log = "build/bench_dist.jsonl";
    std::remove(log.c_str());
    std::string args = model + " --steps " + std::to_string(steps) + " --threads " + std::to_string(threads) +
                       " --zero " + std::to_string(zero) + " --expert-parallel " + std::to_string(ep) +
                       " --expert-exchange " + exchange + " --log " + log;
    std::string cmd = ranks == 1 ? std::string(PROG) + args
                                 : "mpirun --allow-run-as-root --oversubscribe -np " + std::to_string(ranks) + " " +
                                       PROG + args;
    if (std::system((cmd + " > build/bench_dist.out 2>&1").c_str()) != 0) {
        std::fprintf(stderr, "bench_dist: '%s' failed; its output is in build/bench_dist.out\n", cmd.c_str());
        std::exit(1);
    }
    Measured m;
    m.ms = median(log_values(log, "ms", steps / 4));
    m.allreduce_ms = median(log_values(log, "allreduce_ms", steps / 4));
    m.tok_s = median(log_values(log, "tok_per_s", steps / 4));
    m.expert_ms = median(log_values(log, "expert_exchange_ms", steps / 4));
    m.expert_mb = median(log_values(log, "expert_exchange_mb", steps / 4));
    std::vector<double> p = log_values(log, "params", 0);
    m.params = p.empty() ? 0 : p[0];
    std::vector<double> held = log_values(log, "params_held", 0);
    m.params_held = held.empty() ? m.params : held[0];
    return m;
}

// Parameters, gradients and AdamW moments per rank, in GiB: 16 bytes a
// parameter; ZeRO-1 keeps the moments of N/R (+ the tail) parameters only.
static double optimizer_gib(double n, int ranks, bool zero) {
    double share = zero ? std::floor(n / ranks) + std::fmod(n, ranks) : n;
    return (8 * n + 8 * share) / 1073741824.0;
}

// GPT-2 small (L 12, C 768, V 50257, T 1024) with the given feed-forward layers.
static double gpt2_small_params(int kind, int E, int f) {
    Config c;
    c.V = 50257, c.Vp = pad_vocab(c.V), c.maxT = 1024, c.L = 12, c.NH = 12, c.C = 768, c.dff = 3072;
    c.E = E, c.mot.G = 32, c.f = f;
    c.kinds.assign(c.L, kind);
    return (double)num_params(c);
}

int main(int argc, char** argv) {
    int steps = argc > 1 ? std::atoi(argv[1]) : 24;
    if (access(PROG, X_OK) != 0) {
        std::fprintf(stderr, "bench_dist: %s not found: run from the repository root after make train_mot\n", PROG);
        return 1;
    }
    if (output_of(std::string(PROG) + " --version").find("MPI") == std::string::npos) {
        std::printf("bench_dist: skipped: %s was built without MPI (install libopenmpi-dev openmpi-bin, make train_mot)\n", PROG);
        return 0;
    }
    if (std::system("command -v mpirun > /dev/null 2>&1") != 0) {
        std::printf("bench_dist: skipped: mpirun is not on the PATH (apt-get install openmpi-bin)\n");
        return 0;
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int half = std::max(1L, cores / 2);
    // the default data set once, outside the timings
    if (std::system((std::string(PROG) + " --steps 0 --val-every 0 > /dev/null 2>&1").c_str()) != 0) {
        std::fprintf(stderr, "bench_dist: %s could not prepare the default data set\n", PROG);
        return 1;
    }
    const std::string common = " --val-every 0 --sample-every 0 --device cpu --batch 32 --total-batch 4096";
    const std::pair<const char*, std::string> models[] = {
        {"dense (d_ff 512)", " --ffn dense" + common},
        {"MoT E 256, G 32 (the default)", common},
        {"token choice E 32, top-1", " --ffn token-choice" + common},
    };
    std::printf("data parallel on %ld cores: 2 micro-batches of 32 x 64 tokens a step; %d steps a run (median of the "
                "last 3/4)\n", cores, steps);
    std::printf("%-30s %-36s %9s %9s %12s %9s %10s\n", "model", "ranks x threads", "ms/step", "tok/s", "exchange",
                "x 1 rank", "GiB/rank");
    for (const auto& [name, model] : models) {
        Measured one = measure(model, 1, (int)cores, 0, steps);
        std::printf("%-30s %-36s %9.1f %9.0f %12s %8.2fx %10.3f\n", name, strf("1 x %ld", cores).c_str(), one.ms,
                    one.tok_s, "-", 1.0, optimizer_gib(one.params, 1, false));
        for (int zero : {0, 1}) {
            Measured two = measure(model, 2, half, zero, steps);
            std::string label = strf("2 x %d%s", half, zero ? ", --zero 1" : "");
            std::printf("%-30s %-36s %9.1f %9.0f %6.1f ms %3.0f%% %8.2fx %10.3f\n", name, label.c_str(), two.ms,
                        two.tok_s, two.allreduce_ms, 100 * two.allreduce_ms / two.ms, two.tok_s / one.tok_s,
                        optimizer_gib(two.params, 2, zero));
        }
        // the experts shared by the 2 ranks: MoT with both exchanges, token choice with its one
        const bool tc = model.find("token-choice") != std::string::npos;
        for (const char* exchange : {"mixed", "inputs"}) {
            if (model.find("--ffn dense") != std::string::npos || (tc && exchange[0] == 'i')) break;
            Measured ep = measure(model, 2, half, 0, steps, 2, exchange);
            if (tc) exchange = "routed";
            std::printf("%-30s %-36s %9.1f %9.0f %6.1f ms %3.0f%% %8.2fx %10.3f\n", name,
                        strf("2 x %d, --expert-parallel 2, %s", half, exchange).c_str(), ep.ms, ep.tok_s,
                        ep.allreduce_ms + ep.expert_ms, 100 * (ep.allreduce_ms + ep.expert_ms) / ep.ms,
                        ep.tok_s / one.tok_s, optimizer_gib(ep.params_held, 1, false));
            std::printf("%-30s %-36s   of which the %s-token exchange %.1f ms (%.0f%% of the step), %.1f MB sent "
                        "per rank and step; the all-reduce %.1f ms\n",
                        "", "", exchange, ep.expert_ms, 100 * ep.expert_ms / ep.ms, ep.expert_mb, ep.allreduce_ms);
        }
        std::fflush(stdout);
    }
    // what ZeRO-1 saves at GPT-2 small's shape (computed from the parameter counts)
    std::printf("\nparameters, gradients and AdamW moments per rank at GPT-2 small's shape (L 12, C 768), GiB:\n");
    std::printf("%-34s %10s %8s %14s %14s %14s\n", "model", "params", "1 rank", "8 ranks", "8, --zero 1", "64, --zero 1");
    const std::pair<const char*, double> shapes[] = {
        {"dense (d_ff 3072)", gpt2_small_params(DENSE, 0, 0)},
        {"MoT E 32, G 32, f 3072", gpt2_small_params(MOT, 32, 3072)},
        {"MoT E 256, G 32, f 384", gpt2_small_params(MOT, 256, 384)},
    };
    for (const auto& [name, n] : shapes)
        std::printf("%-34s %9.0fM %8.2f %14.2f %14.2f %14.2f\n", name, n / 1e6, optimizer_gib(n, 1, false),
                    optimizer_gib(n, 8, false), optimizer_gib(n, 8, true), optimizer_gib(n, 64, true));
    return 0;
}
