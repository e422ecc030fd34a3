// What a run reports, and how: the loss on held-out data (in nats per token
// and bits per byte of text), decoded samples, and each step's line and log
// row. The training loop (train/run.h, train/step.h) computes; the functions
// here print and log what it computed.
#pragma once
#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/rng.h"
#include "data/dataloader.h"
#include "data/shard.h"
#include "tokenizer/bpe.h"
#include "train/log.h"
#include "train/model.h"

// Mean loss over n batches of the loader, from its start. Split over ranks,
// rank r of R evaluates batches r, r + R, ... and returns their part of the
// mean: the parts summed over the ranks are the mean. A set *stop (a stop
// signal's flag) ends it before the next batch; the result is then partial.
// n is 64-bit: one pass over large shards in small batches has more than
// 2^31 of them.
inline double evaluate(Model* model, DataLoader* loader, int64_t n, int rank = 0, int ranks = 1,
                       const volatile std::sig_atomic_t* stop = nullptr) {
    std::vector<int> x((size_t)loader->B * loader->T), y(x.size());
    dataloader_reset(loader);
    double sum = 0;
    // under expert parallelism every forward is a collective: each rank runs
    // the same number, those past n on its last batch again, uncounted, and a
    // signal waits for the end
    const bool lockstep = model_in_lockstep(*model);
    const int64_t rounds = lockstep ? (n + ranks - 1) / ranks * ranks : n;
    for (int64_t i = 0; i < rounds && !(stop && *stop && !lockstep); i++) {
        if (i % ranks != rank) {
            if (i < n) dataloader_skip(loader);
            continue;
        }
        if (i < n) dataloader_next(loader, x.data(), y.data());
        double loss = model_forward(model, x.data(), y.data(), loader->B, loader->T);
        if (i < n) sum += loss;
    }
    return sum / (double)n;
}

// Bytes of text per token in the shards: converts a loss in nats per token
// into bits per byte, comparable across tokenizers (and to the 4.78 bits per
// byte of tinyshakespeare's byte unigram entropy).
inline double bytes_per_token(const Tokenizer& tok, const std::string& pattern) {
    double bytes = 0, tokens = 0;
    for (const std::string& f : glob_files(pattern)) {
        std::vector<uint16_t> ids = read_shard(f);
        for (uint16_t id : ids)
            if (id < tok.token_bytes.size()) bytes += tok.token_bytes[id].size();
        tokens += ids.size();
    }
    return tokens > 0 ? bytes / tokens : 0;
}

inline std::string decode(const Tokenizer* tok, const std::vector<int>& ids) {
    if (!tok) {
        std::string s;
        for (int id : ids) s += std::to_string(id) + " ";
        return s + "(token ids: no tokenizer to decode with)";
    }
    return bpe_decode(*tok, ids.data(), ids.size());
}

// How print_samples draws: the defaults are the training run's own samples
// (one, from the end-of-text token alone, at temperature 1 over every token).
struct SampleSettings {
    std::string prompt_text;   // the prompt as text, printed before each sample's generated text
    int count = 1;             // samples printed
    int length = 0;            // tokens generated for each
    float temperature = 1.0f;  // softmax temperature of the draws
    int top_k = 0;             // draw among the k likeliest tokens; 0: among all
};

// Prints how.count samples, each the prompt's text followed by the generated
// text; a set *stop (a stop signal's flag) cuts them short, which is said.
inline void print_samples(Model* model, const Tokenizer* tok, const std::vector<int>& prompt, const SampleSettings& how,
                          Rng* rng, const volatile std::sig_atomic_t* stop = nullptr) {
    const Config& c = model->cfg;
    bool any_mot = has_kind(c, MOT);
    int n_seq = std::max(any_mot ? c.mot.G : 1, how.count);
    if (any_mot) n_seq = (n_seq + c.mot.G - 1) / c.mot.G * c.mot.G;  // whole groups: MoT mixes them
    std::vector<std::vector<int>> rows =
        model_generate(model, prompt, n_seq, how.length, how.temperature, how.top_k, rng, stop);
    for (int i = 0; i < how.count; i++) {
        // the text's raw bytes, NUL and all: printf("%s") would stop at a NUL
        std::string text = how.prompt_text + decode(tok, rows[i]);
        std::printf("---- sample %d ----\n", i + 1);
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::printf("\n");
    }
    if ((int)rows[0].size() < how.length) std::printf("(cut short by a stop signal after %zu tokens)\n", rows[0].size());
    std::printf("------------------\n");
}

// The validation loss after `step` steps, printed and logged, with its bits
// per byte of text when the bytes per token are known (above 0).
inline void report_validation(JsonlLog* log, int step, double loss, double bytes_per_token) {
    if (bytes_per_token > 0) {
        double bpb = loss / std::log(2.0) / bytes_per_token;
        std::printf("step %5d | val loss %.4f | %.3f bits per byte\n", step, loss, bpb);
        jsonl_write(log, step, {{"val_loss", loss}, {"val_bits_per_byte", bpb}});
    } else {
        std::printf("step %5d | val loss %.4f\n", step, loss);
        jsonl_write(log, step, {{"val_loss", loss}});
    }
}

// What one optimizer step did: step_end (train/step.h) returns it,
// report_skip and report_step say it.
struct StepResult {
    int step = 0;                 // optimizer steps done, this one included: the line's and the log's step
    double loss = 0;              // cross-entropy, mean over the step's micro-batches on every rank
    double aux_loss = 0;          // TOKEN_CHOICE layers' load-balancing loss, mean as the loss
    double grad_norm = 0;         // of the whole gradient, before clipping
    float lr = 0;                 // the learning rate of the update
    bool skipped = false;         // the loss or gradient was not finite: no update
    long long skipped_total = 0;  // updates skipped so far in the run (before a resume too)
    int skipped_in_a_row = 0;     // updates skipped in a row up to this one (0 after an update)
    double ms = 0;                // the step's time, micro-batches to update
    double tok_per_s = 0;         // tokens of the step over all ranks per second
    double mfu = 0;               // model FLOPs utilization of the ranks' summed peak
    int threads = 0;              // CPU threads the step ran with
    int tuned_from = 0, tuned_to = 0;  // the thread tuner's count before and after timing this step
    int ranks = 1;
    const char* exchange = "";    // several ranks: how the gradients went between them, in comm_ms
    double comm_ms = 0;
    double expert_ms = -1;  // --expert-parallel: the step's time in the expert exchange (-1: none)
    double expert_mb = 0;   // and the megabytes this rank sent in it
    std::vector<RouterStats> routing;  // per TOKEN_CHOICE layer, over the step's micro-batches on every rank
    std::vector<double> rate_err;      // --router-balance: per TOKEN_CHOICE layer, mean over the experts of
                                       // |firing rate - target| / target
};

// A skipped update, said. A run whose last max_skips updates were all
// skipped is not recovering: it stops here, after the line, before the
// step's own.
inline void report_skip(const StepResult& s, int max_skips) {
    std::printf("step %d: non-finite loss or gradient, update skipped (%lld so far)\n", s.step, s.skipped_total);
    if (s.skipped_in_a_row >= max_skips)
        fail(strf("step %d: %d updates in a row had a non-finite loss or gradient (--max-skips %d): the "
                  "run is not recovering; stopping. Lower --lr, or resume from an earlier checkpoint",
                  s.step, s.skipped_in_a_row, max_skips));
}

// The step's line (of steps in the run) and its log row; a change of the
// CPU thread count first. TOKEN_CHOICE layers add the routing, means over
// the layers on the line (the aux loss for a softmax router, else the
// experts per token; the share of choices dropped) and each layer's on
// the row.
inline void report_step(JsonlLog* log, const StepResult& s, int steps, int router) {
    if (s.tuned_to != s.tuned_from)
        std::printf("threads: %d -> %d (steps ran faster so: %s)\n", s.tuned_from, s.tuned_to,
                    s.tuned_to < s.tuned_from ? "other work shares the cores" : "the cores are free again");
    std::string sparse;
    if (!s.routing.empty()) {
        double dropped = 0, per_token = 0;
        for (const RouterStats& st : s.routing)
            dropped += st.dropped / s.routing.size(), per_token += st.per_token / s.routing.size();
        sparse = router == ROUTER_SOFTMAX ? strf(" aux %.4f | dropped %.1f%% |", s.aux_loss, 100 * dropped)
                                          : strf(" experts/token %.2f | dropped %.1f%% |", per_token, 100 * dropped);
    }
    std::string experts = s.expert_ms >= 0 ? strf(", expert exchange %.1f ms", s.expert_ms) : std::string();
    std::string comm = s.ranks > 1 ? strf(" (%s %.1f ms%s)", s.exchange, s.comm_ms, experts.c_str()) : std::string();
    std::printf("step %5d/%d | loss %.4f |%s norm %.4f | lr %.2e | %.1f ms%s | %.0f tok/s | MFU %.1f%%\n", s.step,
                steps, s.loss, sparse.c_str(), s.grad_norm, s.lr, s.ms, comm.c_str(), s.tok_per_s, 100 * s.mfu);
    std::fflush(stdout);
    std::vector<std::pair<std::string, double>> fields = {{"loss", s.loss}, {"lr", s.lr}, {"grad_norm", s.grad_norm}};
    if (!s.routing.empty()) fields.push_back({"aux_loss", s.aux_loss});
    for (const RouterStats& st : s.routing) {
        fields.push_back({strf("dropped_%d", st.layer), st.dropped});
        fields.push_back({strf("load_min_%d", st.layer), st.min_share});
        fields.push_back({strf("load_max_%d", st.layer), st.max_share});
        fields.push_back({strf("experts_%d", st.layer), st.per_token});
    }
    for (size_t i = 0; i < s.rate_err.size(); i++)
        fields.push_back({strf("rate_err_%d", s.routing[i].layer), s.rate_err[i]});
    fields.push_back({"ms", s.ms});
    fields.push_back({"tok_per_s", s.tok_per_s});
    fields.push_back({"mfu", s.mfu});
    fields.push_back({"threads", (double)s.threads});
    if (s.ranks > 1) fields.push_back({"allreduce_ms", s.comm_ms});
    if (s.expert_ms >= 0) {
        fields.push_back({"expert_exchange_ms", s.expert_ms});
        fields.push_back({"expert_exchange_mb", s.expert_mb});
    }
    jsonl_write(log, s.step, fields);
}
