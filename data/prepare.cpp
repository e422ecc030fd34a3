// prepare: text files -> tokenizer.bin + token shards (see data/prepare.h).
//
//   prepare [--vocab N] [--val-fraction X] [--out DIR] [--shard-tokens N] [--name NAME] [FILES...]
//
// With no files it uses tinyshakespeare.txt from the data folder (MOT_DATA,
// else data/; common/data_path.h). Re-running with the same inputs and
// settings reuses the cached output.
#include <CLI/CLI.hpp>

#include <cstdio>

#include "data/prepare.h"

// The pattern to give train_mot's --data for shards named PATTERN's way
// (DIR/NAME_train_*.bin): the folder and the name as they are, with any glob
// characters in them escaped (a file play[1].txt makes play[1]_train_*.bin,
// which as a pattern would match play1_train_... only), the shard number a
// wildcard.
static std::string data_pattern(const std::string& pattern) {
    const std::string wild = "*.bin";
    if (pattern.size() < wild.size() || pattern.compare(pattern.size() - wild.size(), wild.size(), wild) != 0)
        return pattern;
    return glob_escape(pattern.substr(0, pattern.size() - wild.size())) + wild;
}

int main(int argc, char** argv) {
    // Ctrl-C, SIGTERM or SIGHUP remove the half-built data set (before any other thread starts)
    prepare_stop_on_signals();
    PrepareConfig cfg;
    CLI::App app{"prepare: train a BPE tokenizer on text files and write token shards"};
    app.add_option("files", cfg.inputs, "input text files (default: tinyshakespeare)");
    app.add_option("--vocab", cfg.vocab_size, "vocabulary size, 257..65536 (256 bytes + merges + end-of-text)")
        ->capture_default_str();
    app.add_option("--val-fraction", cfg.val_fraction, "fraction of the text held out for validation")
        ->capture_default_str();
    app.add_option("--out", cfg.out_dir, "output directory")->capture_default_str();
    app.add_option("--shard-tokens", cfg.shard_tokens, "at most this many tokens per shard")->capture_default_str();
    app.add_option("--name", cfg.name, "shard name prefix (default: from the input file or folder name)");
    CLI11_PARSE(app, argc, argv);
    try {
        // an empty name given is a mistake, not a request for the default one
        if (app.count("--name") && cfg.name.empty())
            fail("prepare: --name '': give a name for the shards, or leave --name out to take it from the input");
        if (cfg.inputs.empty()) cfg.inputs.push_back(find_default_text());
        PrepareResult r = prepare_data(cfg);
        std::printf("tokenizer: %s\ntrain: %s\nval: %s\n", r.tokenizer_path.c_str(), data_pattern(r.train_pattern).c_str(),
                    r.val_pattern.empty() ? "(none)" : data_pattern(r.val_pattern).c_str());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
