// What a run reports besides the loss of each step: the loss on held-out
// data (in nats per token and bits per byte of text) and decoded samples.
#pragma once
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "common/rng.h"
#include "data/dataloader.h"
#include "data/shard.h"
#include "tokenizer/bpe.h"
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
    for (int64_t i = 0; i < n && !(stop && *stop); i++) {
        if (i % ranks != rank) {
            dataloader_skip(loader);
            continue;
        }
        dataloader_next(loader, x.data(), y.data());
        sum += model_forward(model, x.data(), y.data(), loader->B, loader->T);
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
    bool any_mot = mixes_batch(c);
    int n_seq = std::max(any_mot ? c.G : 1, how.count);
    if (any_mot) n_seq = (n_seq + c.G - 1) / c.G * c.G;  // whole groups: MoT mixes them
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
