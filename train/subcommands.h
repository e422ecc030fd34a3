// The subcommands: sample (text from a checkpoint), eval (its loss on a
// data set), plot (loss curves of runs).
#pragma once
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common/checkpoint.h"
#include "common/fileio.h"
#include "common/llmc.h"
#include "common/rng.h"
#include "data/dataloader.h"
#include "tokenizer/bpe.h"
#include "train/model.h"
#include "train/options.h"
#include "train/plot.h"
#include "train/report.h"

inline std::string default_tokenizer(const std::string& given) {
    if (!given.empty()) return given;
    std::string d = std::string(DEFAULT_DATA_DIR) + "/tokenizer.bin";
    return file_exists(d) ? d : "";
}

// Fails unless everything printed reached standard output. A full disk
// (> /dev/full) or a pipe whose reader is gone (with SIGPIPE ignored) would
// otherwise lose the samples or the loss, and the exit status would still
// say they were written.
inline void check_stdout(const char* what) {
    errno = 0;
    bool flushed = std::fflush(stdout) == 0;
    int e = errno;
    if (flushed && !std::ferror(stdout)) return;
    fail(strf("standard output: %s could not be written (%s)", what, e ? std::strerror(e) : "a write failed"));
}

inline int sample_main(const SampleOptions& s) {
    Config c;
    std::vector<float> params;
    if (llmc_is_model_file(s.load)) llmc_model_load(s.load, &c, &params);
    else checkpoint_load(s.load, &c, &params);
    std::string tok_path = default_tokenizer(s.tokenizer);
    Tokenizer tok;
    if (!tok_path.empty()) tok = tokenizer_load(tok_path);
    // the default data set's tokenizer only decodes a model of its vocabulary
    if (s.tokenizer.empty() && !tok_path.empty() && tok.vocab_size != c.V) tok_path.clear();
    if (!tok_path.empty() && tok.vocab_size != c.V)
        fail(strf("%s has %d tokens, the model's vocabulary has %d: give the tokenizer the model was trained with",
                  tok_path.c_str(), tok.vocab_size, c.V));
    std::vector<int> prompt = {tok_path.empty() ? c.V - 1 : tok.eot};
    if (!s.prompt.empty()) {
        if (tok_path.empty()) fail("--prompt needs --tokenizer to encode it");
        if (!tok.cannot_encode.empty()) fail("--prompt: " + tok.cannot_encode);
        std::vector<int> ids = bpe_encode(tok, s.prompt);
        prompt.insert(prompt.end(), ids.begin(), ids.end());
    }
    // the window slides over the generated tokens; a prompt must fit in it, with the end-of-text token
    // that starts it and room for the first new token
    if ((int)prompt.size() >= c.maxT)
        fail(strf("--prompt: %zu tokens, and the model's context is %d: a prompt of at most %d tokens fits (the "
                  "end-of-text token before it and the first new token take the rest); shorten it",
                  prompt.size() - 1, c.maxT, c.maxT - 2));
    if ((int)prompt.size() + s.length > c.maxT)
        std::printf("note: the model's context is %d tokens; past it, each sample continues from its last %d tokens\n",
                    c.maxT, std::max(1, c.maxT / 2));
    if (s.mot_discrete && !mixes_batch(c)) fail(strf("--mot-discrete: %s has no MoT layer", s.load.c_str()));
    Model model;
    model_build(&model, c, "cpu", 0, 0, params.data());
    model_set_mot_discrete(&model, s.mot_discrete);
    Rng rng = rng_seed(s.seed);
    print_samples(&model, tok_path.empty() ? nullptr : &tok, prompt, s.prompt, s.num, s.length, s.temperature,
                  s.top_k, &rng);
    check_stdout("the samples");
    return 0;
}

inline int eval_main(const EvalOptions& e) {
    Config c;
    std::vector<float> params;
    if (llmc_is_model_file(e.load)) llmc_model_load(e.load, &c, &params);
    else checkpoint_load(e.load, &c, &params);
    std::string pattern = e.data;
    if (pattern.empty()) {
        pattern = std::string(DEFAULT_DATA_DIR) + "/tinyshakespeare_val_*.bin";
        bool found = true;
        try {
            glob_files(pattern);
        } catch (const std::exception&) {
            found = false;
        }
        // ./prepare alone writes to data/cache, not where this looks
        if (!found)
            fail(strf("eval without --data reads the default data set's validation shards, %s, and there are none: "
                      "./train_mot prepares them on its first run (./train_mot --steps 0 --val-every 0 does that and "
                      "trains nothing), as does ./prepare --out %s; or give --data",
                      pattern.c_str(), DEFAULT_DATA_DIR));
    }
    if (e.mot_discrete && !mixes_batch(c)) fail(strf("--mot-discrete: %s has no MoT layer", e.load.c_str()));
    if (e.decode && mixes_batch(c))
        fail(strf("--decode: %s has MoT layers, which mix %d sequences at once: a sequence cannot be decoded alone",
                  e.load.c_str(), c.G));
    if (mixes_batch(c) && e.B % c.G != 0)
        fail(strf("--batch %d is not divisible by the model's group size %d: MoT mixes tokens in groups of G batch "
                  "rows",
                  e.B, c.G));
    DataLoader loader;
    dataloader_init(&loader, pattern, e.B, e.T, false, 0, c.V);
    const int64_t n = dataloader_pass_batches(&loader, e.batches, "--batches", pattern);
    Model model;
    model_build(&model, c, e.decode ? "cpu" : e.device, e.B, e.T, params.data());
    model_set_mot_discrete(&model, e.mot_discrete);
    double loss = 0;
    if (e.decode) {
        std::vector<int> x((size_t)e.B * e.T), y(x.size());
        for (int64_t i = 0; i < n; i++) {
            dataloader_next(&loader, x.data(), y.data());
            loss += gpt_decode_loss(&model.cpu, x.data(), y.data(), e.B, e.T) / (double)n;
        }
    } else {
        loss = evaluate(&model, &loader, n);
    }
    std::printf("%s on %s: loss %.4f over %lld batches of %d x %d tokens (device %s%s)\n", e.load.c_str(),
                pattern.c_str(), loss, (long long)n, e.B, e.T, device_name(model).c_str(),
                e.mot_discrete ? ", discrete MoT" : e.decode ? ", each sequence decoded alone" : "");
    check_stdout("the loss");
    return 0;
}

inline int plot_main(const PlotOptions& p) {
    plot_logs(p.logs, p.out, p.title);
    std::printf("wrote %s\n", p.out.c_str());
    check_stdout("the plot's file name");
    return 0;
}
