// The subcommands: sample (text from a model), eval (its loss on a data
// set), plot (loss curves of runs), export (a model as safetensors).
#pragma once
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common/checkpoint.h"
#include "common/model_file.h"
#include "common/safetensors.h"
#include "common/fileio.h"
#include "common/rng.h"
#include "data/dataloader.h"
#include "tokenizer/bpe.h"
#include "train/model.h"
#include "train/options.h"
#include "train/outputs.h"
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
    ModelFileInfo info;
    model_file_load(s.load, &c, &params, &info);
    // without --tokenizer: the one a safetensors file names, when it is there, else the default data set's
    std::string tok_path = s.tokenizer.empty() && !info.tokenizer.empty() && file_exists(info.tokenizer)
                               ? info.tokenizer
                               : default_tokenizer(s.tokenizer);
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
    if (s.mot_discrete && !has_kind(c, MOT)) fail(strf("--mot-discrete: %s has no MoT layer", s.load.c_str()));
    Model model;
    model_build(&model, c, "cpu", 0, 0, params.data());
    model_set_mot_discrete(&model, s.mot_discrete);
    Rng rng = rng_seed(s.seed);
    SampleSettings how;
    how.prompt_text = s.prompt;
    how.count = s.num;
    how.length = s.length;
    how.temperature = s.temperature;
    how.top_k = s.top_k;
    print_samples(&model, tok_path.empty() ? nullptr : &tok, prompt, how, &rng);
    check_stdout("the samples");
    return 0;
}

// eval --dump: the first batch of the loader, its inputs and targets, the
// logits (the first V of each row's Vp) and the per-token losses, with the
// batch's mean loss in the metadata, as safetensors, and whether MoT mixed
// with one-hot weights (mot_discrete "1" or "0"). Returns that mean.
inline double dump_first_batch(Model* model, DataLoader* loader, const std::string& path) {
    const Config& c = model->cfg;
    const int B = loader->B, T = loader->T, V = c.V;
    const size_t BT = (size_t)B * T;
    std::vector<int32_t> x(BT), y(BT);
    dataloader_reset(loader);
    dataloader_next(loader, x.data(), y.data());
    double loss = model_forward(model, x.data(), y.data(), B, T);
    std::vector<float> logits_p, losses;  // (B,T,Vp), (B,T)
    model_logits_losses(model, B, T, &logits_p, &losses);
    std::vector<float> logits(BT * V);  // (B,T,V)
    for (size_t i = 0; i < BT; i++)
        std::copy(logits_p.begin() + i * c.Vp, logits_p.begin() + i * c.Vp + V, logits.begin() + i * V);
    safetensors_write(path,
                      {{"tokens", "I32", {B, T}, x.data()},
                       {"targets", "I32", {B, T}, y.data()},
                       {"logits", "F32", {B, T, V}, logits.data()},
                       {"losses", "F32", {B, T}, losses.data()}},
                      {{"loss", strf("%.9g", loss)}, {"mot_discrete", model_mot_discrete(*model) ? "1" : "0"}});
    dataloader_reset(loader);
    return loss;
}

inline int eval_main(const EvalOptions& e) {
    Config c;
    std::vector<float> params;
    model_file_load(e.load, &c, &params);
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
    if (e.mot_discrete && !has_kind(c, MOT)) fail(strf("--mot-discrete: %s has no MoT layer", e.load.c_str()));
    if (e.decode && has_kind(c, MOT))
        fail(strf("--decode: %s has MoT layers, which mix %d sequences at once: a sequence cannot be decoded alone",
                  e.load.c_str(), c.mot.G));
    if (batch_in_groups(c) && e.B % c.mot.G != 0)
        fail(strf("--batch %d is not divisible by the model's group size %d: MoT mixes tokens in groups of G batch "
                  "rows",
                  e.B, c.mot.G));
    if (!e.dump.empty() && e.decode)
        fail("--dump writes the logits of a batch's forward pass; --decode computes the loss token by token and has "
             "none: give one of them");
    if (!e.dump.empty()) {
        check_writable_file(e.dump, "--dump");
        if (same_file(e.dump, e.load)) fail(strf("--dump %s is the model --load reads", e.dump.c_str()));
    }
    DataLoader loader;
    dataloader_init(&loader, pattern, e.B, e.T, false, 0, c.V);
    if (!e.dump.empty())
        for (const std::string& f : glob_files(pattern))
            if (same_file(e.dump, f)) fail(strf("--dump %s is a shard of --data %s", e.dump.c_str(), pattern.c_str()));
    const int64_t n = dataloader_pass_batches(&loader, e.batches, "--batches", pattern);
    Model model;
    model_build(&model, c, e.decode ? "cpu" : e.device, e.B, e.T, params.data());
    model_set_mot_discrete(&model, e.mot_discrete);
    if (!e.dump.empty()) {
        double first = dump_first_batch(&model, &loader, e.dump);
        std::printf("wrote %s: the first batch's logits and losses (its loss %.4f)\n", e.dump.c_str(), first);
    }
    double loss = 0;
    if (e.decode) {
        std::vector<int> x((size_t)e.B * e.T), y(x.size());
        for (int64_t i = 0; i < n; i++) {
            dataloader_next(&loader, x.data(), y.data());
            loss += model_decode_loss(&model, x.data(), y.data(), e.B, e.T) / (double)n;
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

// export: the model as safetensors (common/model_file.h). The metadata names
// the tokenizer: --tokenizer, else the one a safetensors --load names, else
// the default data set's when its vocabulary is the model's.
inline int export_main(const ExportOptions& x) {
    Config c;
    std::vector<float> params;
    ModelFileInfo info;
    model_file_load(x.load, &c, &params, &info);
    std::string tok_path = x.tokenizer;
    if (!tok_path.empty()) {
        Tokenizer tok = tokenizer_load(tok_path);
        if (tok.vocab_size != c.V)
            fail(strf("--tokenizer %s has %d tokens, the model's vocabulary has %d: give the tokenizer the model was "
                      "trained with",
                      tok_path.c_str(), tok.vocab_size, c.V));
    } else if (!info.tokenizer.empty()) {
        tok_path = info.tokenizer;
    } else if (!(tok_path = default_tokenizer("")).empty()) {
        if (tokenizer_load(tok_path).vocab_size != c.V) tok_path.clear();
    }
    check_writable_file(x.out, "-o");
    // the model is in memory by now, but the file it came from would be lost
    if (same_file(x.out, x.load))
        fail(strf("-o %s is the model --load %s reads: write the export to another file", x.out.c_str(),
                  x.load.c_str()));
    if (!tok_path.empty() && same_file(x.out, tok_path))
        fail(strf("-o %s is the tokenizer %s (%s), which the export names: write the export to another file",
                  x.out.c_str(), tok_path.c_str(),
                  !x.tokenizer.empty() ? "--tokenizer" : tok_path == info.tokenizer ? "named in --load's metadata"
                                                                                     : "the default data set's"));
    model_export(x.out, c, params.data(), x.dtype, tok_path);
    std::printf("wrote %s: %zu tensors, %zu parameters as %s%s\n", x.out.c_str(), export_tensors(c).size(),
                params.size(), x.dtype.c_str(),
                tok_path.empty() ? ", no tokenizer named" : (", tokenizer " + tok_path).c_str());
    check_stdout("the summary");
    return 0;
}

inline int plot_main(const PlotOptions& p) {
    plot_logs(p.logs, p.out, p.title);
    std::printf("wrote %s\n", p.out.c_str());
    check_stdout("the plot's file name");
    return 0;
}
