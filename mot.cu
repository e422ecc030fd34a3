// train_mot: trains a GPT whose feed-forward layers are Mixture of Tokens.
//
// One program for both devices: compiled by nvcc it can train on the GPU
// (gpu/), compiled as plain C++ (g++ -x c++) the GPU parts are left out and it
// trains on the CPU (cpu/). The options are DESIGN.md section 5's contract.
//
//   ./train_mot                          prepare tinyshakespeare, train, sample
//   ./train_mot sample --load CKPT       generate text from a checkpoint
//   ./train_mot eval --load CKPT         loss of a checkpoint on a data set
//   ./train_mot plot LOG... -o loss.png  loss curves of one or several runs
//   ./train_mot --help                   every option with its default
#include <CLI/CLI.hpp>
#include <chrono>
#include <csignal>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "common/checkpoint.h"
#include "common/config.h"
#include "common/jsonl.h"
#include "common/model.h"
#include "common/plot.h"
#include "common/rng.h"
#include "common/schedule.h"
#include "common/train_state.h"
#include "data/dataloader.h"
#include "data/prepare.h"
#include "tokenizer/bpe.h"

const char* DEFAULT_DATA_DIR = "data/cache/tinyshakespeare";

struct Options {
    // data
    std::string data, val_data, tokenizer;
    int vocab = 50257;  // for shards given without a tokenizer: GPT-2's
    int B = 16, T = 64, total_batch = 0;
    int shuffle = 1;
    // model
    int layers = 4, heads = 4, d_model = 128, d_ff = 0;
    std::string ffn = "mot", mot_layers = "all";
    int experts = 8, group = 4, expert_size = 0;
    float temperature = 1.0f;
    // optimization
    int steps = 1500, warmup = 50;
    float lr = 3e-3f, lr_min_frac = 0.1f, wd = 0.1f, grad_clip = 1.0f;
    uint64_t seed = 1337;
    bool skip_nonfinite = false;
    // device, files
    std::string device = "auto", load, save, log, checkpoint_dir;
    bool tf32 = false, resume = false;
    int checkpoint_every = 0, keep_checkpoints = 3;
    // evaluation and samples
    int val_every = 250, val_batches = 16, sample_every = 500, sample_len = 128;
};

// --mot-layers: "all", "second-half" or a comma list of layer indices.
static std::vector<int> layer_kinds(const Options& o) {
    std::vector<int> kinds(o.layers, DENSE);
    if (o.ffn == "dense") return kinds;
    if (o.mot_layers == "all") return std::vector<int>(o.layers, MOT);
    if (o.mot_layers == "second-half") {
        for (int l = o.layers / 2; l < o.layers; l++) kinds[l] = MOT;
        return kinds;
    }
    size_t pos = 0;
    while (true) {
        size_t comma = o.mot_layers.find(',', pos);
        std::string item = o.mot_layers.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        char* end = nullptr;
        long l = std::strtol(item.c_str(), &end, 10);
        if (item.empty() || *end != '\0' || l < 0 || l >= o.layers)
            fail(strf("--mot-layers: '%s' is not a layer index in 0..%d (use all, second-half or a list like 1,3)",
                      item.c_str(), o.layers - 1));
        kinds[l] = MOT;
        if (comma == std::string::npos) return kinds;
        pos = comma + 1;
    }
}

static Config config_from_options(const Options& o, int vocab) {
    Config c;
    c.V = vocab;
    c.Vp = pad_vocab(vocab);
    c.maxT = o.T;
    c.L = o.layers;
    c.NH = o.heads;
    c.C = o.d_model;
    c.dff = o.d_ff > 0 ? o.d_ff : 4 * o.d_model;
    c.E = o.experts;
    c.G = o.group;
    c.tau = o.temperature;
    c.kinds = layer_kinds(o);
    if (o.expert_size > 0) {
        c.f = o.expert_size;
    } else {
        // flop-matched: E experts of width f see S*T mixed tokens, a dense FFN
        // of width dff sees B*T = G*S*T tokens, so E*f = G*dff
        if ((long)c.dff * c.G % c.E != 0)
            fail(strf("--d-ff %d * --group %d is not divisible by --experts %d: give --expert-size", c.dff, c.G, c.E));
        c.f = c.dff * c.G / c.E;
    }
    config_validate(c);
    return c;
}

static double now_ms() {
    using namespace std::chrono;
    return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

// Mean loss over n batches of the loader, from its start.
static double evaluate(Model* model, DataLoader* loader, int n) {
    std::vector<int> x((size_t)loader->B * loader->T), y(x.size());
    dataloader_reset(loader);
    double sum = 0;
    for (int i = 0; i < n; i++) {
        dataloader_next(loader, x.data(), y.data());
        sum += model_forward(model, x.data(), y.data(), loader->B, loader->T);
    }
    return sum / n;
}

// Bytes of text per token in the shards: converts a loss in nats per token
// into bits per byte, comparable across tokenizers (and to the 4.78 bits per
// byte of tinyshakespeare's byte unigram entropy).
static double bytes_per_token(const Tokenizer& tok, const std::string& pattern) {
    double bytes = 0, tokens = 0;
    for (const std::string& f : glob_files(pattern)) {
        std::vector<uint16_t> ids = read_shard(f);
        for (uint16_t id : ids)
            if (id < tok.token_bytes.size()) bytes += tok.token_bytes[id].size();
        tokens += ids.size();
    }
    return tokens > 0 ? bytes / tokens : 0;
}

static std::string decode(const Tokenizer* tok, const std::vector<int>& ids) {
    if (!tok) {
        std::string s;
        for (int id : ids) s += std::to_string(id) + " ";
        return s + "(token ids: no tokenizer to decode with)";
    }
    return bpe_decode(*tok, ids.data(), ids.size());
}

// Prints n_show samples, each the prompt's text followed by the generated text.
static void print_samples(Model* model, const Tokenizer* tok, const std::vector<int>& prompt,
                          const std::string& prompt_text, int n_show, int len, float temperature, int top_k, Rng* rng) {
    const Config& c = model->cfg;
    bool any_mot = false;
    for (int k : c.kinds) any_mot |= k == MOT;
    int n_seq = std::max(any_mot ? c.G : 1, n_show);
    if (any_mot) n_seq = (n_seq + c.G - 1) / c.G * c.G;  // whole groups: MoT mixes them
    std::vector<std::vector<int>> rows = model_generate(model, prompt, n_seq, len, temperature, top_k, rng);
    for (int i = 0; i < n_show; i++)
        std::printf("---- sample %d ----\n%s%s\n", i + 1, prompt_text.c_str(), decode(tok, rows[i]).c_str());
    std::printf("------------------\n");
}

static volatile std::sig_atomic_t interrupted = 0;
static void on_sigint(int) { interrupted = 1; }

static int train(Options o) {
    // ---- data: the default data set is prepared on first use and cached
    std::string train_pattern = o.data, val_pattern = o.val_data, tok_path = o.tokenizer;
    if (train_pattern.empty()) {
        PrepareConfig pc;
        pc.inputs = {find_default_text()};
        pc.out_dir = DEFAULT_DATA_DIR;
        PrepareResult d = prepare_data(pc);
        train_pattern = d.train_pattern;
        if (val_pattern.empty()) val_pattern = d.val_pattern;
        if (tok_path.empty()) tok_path = d.tokenizer_path;
    }
    Tokenizer tok;
    if (!tok_path.empty()) tok = tokenizer_load(tok_path);
    const Tokenizer* tokp = tok_path.empty() ? nullptr : &tok;

    // ---- model: from --load, from the newest checkpoint with --resume, or new
    TrainState state;
    std::string load = o.load;
    if (o.resume) {
        if (o.checkpoint_dir.empty()) fail("--resume needs --checkpoint-dir");
        std::vector<int64_t> steps = checkpoint_steps(o.checkpoint_dir);
        if (steps.empty()) fail(strf("--resume: no complete checkpoint in %s", o.checkpoint_dir.c_str()));
        load = checkpoint_name(o.checkpoint_dir, steps.back(), "ckpt");
    }
    Config c;
    std::vector<float> params;
    if (!load.empty()) {
        checkpoint_load(load, &c, &params);
        std::printf("loaded %s\n", load.c_str());
    } else {
        c = config_from_options(o, tokp ? tok.vocab_size : o.vocab);
        GPT<float> init;
        gpt_build(&init, c);
        gpt_init_weights(&init, o.seed);
        params.swap(init.params_memory);
    }
    if (tokp && tok.vocab_size > c.V)
        fail(strf("%s has %d tokens, more than the model's vocabulary of %d", tok_path.c_str(), tok.vocab_size, c.V));
    const int B = o.B, T = o.T;
    if (T > c.maxT) fail(strf("--seq %d is above the model's maximum sequence length %d", T, c.maxT));
    bool any_mot = false;
    for (int k : c.kinds) any_mot |= k == MOT;
    if (any_mot && B % c.G != 0)
        fail(strf("--batch %d is not divisible by --group %d: MoT mixes tokens in groups of G batch rows", B, c.G));
    int accum = 1;  // micro-batches per optimizer step
    if (o.total_batch > 0) {
        if (o.total_batch % (B * T) != 0)
            fail(strf("--total-batch %d is not a multiple of --batch * --seq = %d tokens", o.total_batch, B * T));
        accum = o.total_batch / (B * T);
    }

    DataLoader train_loader, val_loader;
    dataloader_init(&train_loader, train_pattern, B, T, o.shuffle != 0, o.seed, c.V);
    bool have_val = !val_pattern.empty() && o.val_every > 0;
    if (have_val) dataloader_init(&val_loader, val_pattern, B, T, false, o.seed, c.V);
    Rng sample_rng = rng_seed(o.seed + 1);
    double val_bpt = have_val && tokp ? bytes_per_token(tok, val_pattern) : 0;

#ifdef __CUDACC__
    if (o.device != "cpu" && gpu_available()) gpu_set_tf32(o.tf32);
#endif
    Model model;
    model_build(&model, c, o.device, B, T, params.data());
    std::vector<float>().swap(params);
    if (o.resume) {
        state = train_state_load(checkpoint_name(o.checkpoint_dir, checkpoint_steps(o.checkpoint_dir).back(), "state"),
                                 num_params(c));
        if (state.B != B || state.T != T || state.shuffle != o.shuffle)
            fail(strf("--resume: the checkpoint was trained with --batch %lld --seq %lld --shuffle %lld; give the same",
                      (long long)state.B, (long long)state.T, (long long)state.shuffle));
        model_set_moments(&model, state.m, state.v);
        dataloader_set_state(&train_loader, state.loader);
        sample_rng.state = state.rng;
        std::printf("resuming at step %lld\n", (long long)state.step);
        if (state.total_steps != o.steps)
            std::printf("note: the run was planned for %lld steps, now --steps %d: the learning-rate schedule "
                        "changes from here, so the run differs from one planned for %d steps throughout\n",
                        (long long)state.total_steps, o.steps, o.steps);
    }

    int n_mot = 0;
    for (int k : c.kinds) n_mot += k == MOT;
    std::string peak_how;
    double peak = device_peak_flops(model, &peak_how);
    double flops_per_step = model_flops_per_token(c, T) * B * T * accum;
    std::printf("model: L %d, C %d, NH %d, V %d, %d MoT layers (E %d, G %d, f %d, tau %g), %d dense (d_ff %d), "
                "%.2fM parameters\n",
                c.L, c.C, c.NH, c.V, n_mot, c.E, c.G, c.f, c.tau, c.L - n_mot, c.dff, num_params(c) / 1e6);
    std::printf("train: %d x %d tokens x %d micro-batches = %d tokens/step, %d steps, lr %g, device %s\n", B, T, accum,
                B * T * accum, o.steps, o.lr, device_name(model).c_str());
    std::printf("peak for MFU: %s\n", peak_how.c_str());

    JsonlLog log;
    jsonl_open(&log, o.log, o.resume);
    std::vector<int> eot_prompt = {tokp ? tok.eot : c.V - 1};
    std::vector<int> x((size_t)B * T), y((size_t)B * T);
    std::signal(SIGINT, on_sigint);
    auto save_checkpoint = [&](int step, const std::string& dir) {
        const float* p = model_params(&model);
        if (!all_finite(p, num_params(c))) fail(strf("step %d: parameters are not finite; no checkpoint written", step));
        state.step = step;
        state.loader = dataloader_get_state(&train_loader);
        state.rng = sample_rng.state;
        state.B = B, state.T = T, state.shuffle = o.shuffle, state.total_steps = o.steps;
        model_get_moments(&model, &state.m, &state.v);
        checkpoint_dir_save(dir, c, p, state, o.keep_checkpoints);
        std::printf("checkpoint: %s\n", checkpoint_name(dir, step, "ckpt").c_str());
    };

    for (int step = (int)state.step; step <= o.steps; step++) {
        bool last = step == o.steps;
        if (have_val && (step % o.val_every == 0 || last)) {
            double vl = evaluate(&model, &val_loader, o.val_batches);
            if (val_bpt > 0) {
                double bpb = vl / std::log(2.0) / val_bpt;
                std::printf("step %5d | val loss %.4f | %.3f bits per byte\n", step, vl, bpb);
                jsonl_write(&log, step, {{"val_loss", vl}, {"val_bits_per_byte", bpb}});
            } else {
                std::printf("step %5d | val loss %.4f\n", step, vl);
                jsonl_write(&log, step, {{"val_loss", vl}});
            }
        }
        if (o.sample_len > 0 && o.sample_every > 0 && step > 0 && (step % o.sample_every == 0 || last))
            print_samples(&model, tokp, eot_prompt, "", 1, o.sample_len, 1.0f, 0, &sample_rng);
        if (last) break;

        double t0 = now_ms();
        double loss = 0;
        model_zero_grad(&model);
        for (int micro = 0; micro < accum; micro++) {
            dataloader_next(&train_loader, x.data(), y.data());
            loss += model_forward(&model, x.data(), y.data(), B, T) / accum;
            model_backward(&model, 1.0 / accum);
        }
        double norm = model_clip_grads(&model, o.grad_clip);
        float lr = lr_at(step, o.steps, o.lr, o.warmup, o.lr_min_frac);
        bool finite = std::isfinite(loss) && std::isfinite(norm);
        if (!finite && !o.skip_nonfinite)
            fail(strf("step %d: the %s is not finite (loss %g, grad norm %g); stopping. Lower --lr, or "
                      "--skip-nonfinite to skip such updates",
                      step + 1, std::isfinite(loss) ? "gradient" : "loss", loss, norm));
        if (finite) model_update(&model, lr, o.wd, step);
        else std::printf("step %d: non-finite loss or gradient, update skipped (%lld so far)\n", step + 1,
                         (long long)++state.skipped);
        double ms = now_ms() - t0;
        double tok_s = B * T * accum / (ms / 1000.0);
        double mfu = flops_per_step / (ms / 1000.0) / peak;
        std::printf("step %5d/%d | loss %.4f | norm %.4f | lr %.2e | %.1f ms | %.0f tok/s | MFU %.1f%%\n", step + 1,
                    o.steps, loss, norm, lr, ms, tok_s, 100 * mfu);
        std::fflush(stdout);
        jsonl_write(&log, step + 1, {{"loss", loss}, {"lr", lr}, {"grad_norm", norm}, {"ms", ms},
                                     {"tok_per_s", tok_s}, {"mfu", mfu}});
        bool periodic = !o.checkpoint_dir.empty() && o.checkpoint_every > 0 && (step + 1) % o.checkpoint_every == 0;
        if (periodic || interrupted) save_checkpoint(step + 1, o.checkpoint_dir.empty() ? "checkpoints" : o.checkpoint_dir);
        if (interrupted) {
            std::printf("interrupted: saved, stopping\n");
            jsonl_close(&log);
            return 130;
        }
    }
    jsonl_close(&log);
    if (!o.save.empty()) {
        const float* p = model_params(&model);
        if (!all_finite(p, num_params(c))) fail("parameters are not finite; --save not written");
        checkpoint_save(o.save, c, p);
        std::printf("saved %s\n", o.save.c_str());
    }
    return 0;
}

// ---- sample: text from a checkpoint
struct SampleOptions {
    std::string load, tokenizer, prompt;
    int length = 200, top_k = 0, num = 1;
    float temperature = 1.0f;
    uint64_t seed = 1337;
};

static std::string default_tokenizer(const std::string& given) {
    if (!given.empty()) return given;
    std::string d = std::string(DEFAULT_DATA_DIR) + "/tokenizer.bin";
    return file_exists(d) ? d : "";
}

static int sample_main(const SampleOptions& s) {
    Config c;
    std::vector<float> params;
    checkpoint_load(s.load, &c, &params);
    std::string tok_path = default_tokenizer(s.tokenizer);
    Tokenizer tok;
    if (!tok_path.empty()) tok = tokenizer_load(tok_path);
    // the default data set's tokenizer only decodes a model of its vocabulary
    if (s.tokenizer.empty() && !tok_path.empty() && tok.vocab_size != c.V) tok_path.clear();
    if (!tok_path.empty() && tok.vocab_size > c.V)
        fail(strf("%s has %d tokens, more than the model's vocabulary of %d", tok_path.c_str(), tok.vocab_size, c.V));
    std::vector<int> prompt = {tok_path.empty() ? c.V - 1 : tok.eot};
    if (!s.prompt.empty()) {
        if (tok_path.empty()) fail("--prompt needs --tokenizer to encode it");
        std::vector<int> ids = bpe_encode(tok, s.prompt);
        prompt.insert(prompt.end(), ids.begin(), ids.end());
    }
    Model model;
    model_build(&model, c, "cpu", 0, 0, params.data());
    Rng rng = rng_seed(s.seed);
    print_samples(&model, tok_path.empty() ? nullptr : &tok, prompt, s.prompt, s.num, s.length, s.temperature, s.top_k, &rng);
    return 0;
}

// ---- eval: loss of a checkpoint on a data set
struct EvalOptions {
    std::string load, data, device = "auto";
    int B = 16, T = 64, batches = 0;
};

static int eval_main(const EvalOptions& e) {
    Config c;
    std::vector<float> params;
    checkpoint_load(e.load, &c, &params);
    std::string pattern = e.data;
    if (pattern.empty()) {
        std::string d = std::string(DEFAULT_DATA_DIR) + "/tinyshakespeare_val_*.bin";
        pattern = d;
    }
    DataLoader loader;
    dataloader_init(&loader, pattern, e.B, e.T, false, 0, c.V);
    Model model;
    model_build(&model, c, e.device, e.B, e.T, params.data());
    int n = e.batches > 0 ? e.batches : (int)dataloader_batches_per_epoch(&loader);
    double loss = evaluate(&model, &loader, n);
    std::printf("%s on %s: loss %.4f over %d batches of %d x %d tokens (device %s)\n", e.load.c_str(),
                pattern.c_str(), loss, n, e.B, e.T, device_name(model).c_str());
    return 0;
}

int main(int argc, char** argv) {
    Options o;
    CLI::App app{"train_mot: train a GPT with Mixture-of-Tokens feed-forward layers"};
    app.option_defaults()->always_capture_default()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    app.get_formatter()->column_width(34);
    app.require_subcommand(0, 1);

    app.add_option("--data", o.data, "training token shards (file or glob); default: tinyshakespeare, prepared on first run");
    app.add_option("--val-data", o.val_data, "validation token shards (file or glob)");
    app.add_option("--tokenizer", o.tokenizer, "tokenizer file: decodes samples, sets the vocabulary");
    app.add_option("--vocab", o.vocab, "vocabulary size for shards given without a tokenizer")->check(CLI::Range(2, 65536));
    app.add_option("--device", o.device, "cpu, cuda or auto (the GPU when one works)")->check(CLI::IsMember({"cpu", "cuda", "auto"}));
    app.add_flag("--tf32", o.tf32, "GPU: allow TF32 tensor cores for fp32 matmuls");
    app.add_option("--batch", o.B, "sequences per micro-batch (B)")->check(CLI::Range(1, 1 << 20));
    app.add_option("--seq", o.T, "tokens per sequence (T)")->check(CLI::Range(1, 1 << 20));
    app.add_option("--total-batch", o.total_batch, "tokens per optimizer step, by gradient accumulation (0: one micro-batch)")->check(CLI::Range(0, 1 << 30));
    app.add_option("--steps", o.steps, "optimizer steps")->check(CLI::Range(0, 1 << 30));
    app.add_option("--lr", o.lr, "peak learning rate")->check(CLI::Range(0.0, 10.0));
    app.add_option("--warmup", o.warmup, "linear warmup steps")->check(CLI::Range(0, 1 << 30));
    app.add_option("--lr-min-frac", o.lr_min_frac, "final lr as a fraction of --lr (cosine decay)")->check(CLI::Range(0.0, 1.0));
    app.add_option("--wd", o.wd, "AdamW weight decay (matrices only)")->check(CLI::Range(0.0, 10.0));
    app.add_option("--grad-clip", o.grad_clip, "clip the global gradient norm to this (0: off)")->check(CLI::Range(0.0, 1e9));
    app.add_flag("--skip-nonfinite", o.skip_nonfinite, "skip an update whose loss or gradient is NaN/Inf instead of stopping");
    app.add_option("--seed", o.seed, "random seed: weights, shuffling, samples");
    app.add_option("--shuffle", o.shuffle, "1: shuffled batches, 0: sequential (DESIGN.md section 4)")->check(CLI::Range(0, 1));
    app.add_option("--layers", o.layers, "transformer blocks (L)")->check(CLI::Range(1, MAX_LAYERS));
    app.add_option("--heads", o.heads, "attention heads (NH)")->check(CLI::Range(1, 1 << 16));
    app.add_option("--d-model", o.d_model, "model width (C)")->check(CLI::Range(1, 1 << 16));
    app.add_option("--d-ff", o.d_ff, "dense FFN width (0: 4 * d-model)")->check(CLI::Range(0, 1 << 20));
    app.add_option("--ffn", o.ffn, "feed-forward kind: dense or mot")->check(CLI::IsMember({"dense", "mot"}));
    app.add_option("--mot-layers", o.mot_layers, "with --ffn mot: all, second-half, or a list like 1,3");
    app.add_option("--experts", o.experts, "MoT experts (E)")->check(CLI::Range(1, 1 << 16));
    app.add_option("--group", o.group, "MoT group size (G): batch rows mixed together")->check(CLI::Range(1, 1 << 16));
    app.add_option("--expert-size", o.expert_size, "MoT expert width f (0: flop-matched d-ff * G / E)")->check(CLI::Range(0, 1 << 20));
    app.add_option("--temperature", o.temperature, "MoT softmax temperature (tau)")->check(CLI::Range(1e-6, 1e6));
    app.add_option("--load", o.load, "start from this checkpoint (its header sets the model shape)");
    app.add_option("--save", o.save, "write the final model to this checkpoint");
    app.add_option("--log", o.log, "write one JSON object per step to this file");
    app.add_option("--checkpoint-dir", o.checkpoint_dir, "directory for periodic checkpoints (model + training state)");
    app.add_option("--checkpoint-every", o.checkpoint_every, "write a checkpoint every N steps (0: never)")->check(CLI::Range(0, 1 << 30));
    app.add_option("--keep-checkpoints", o.keep_checkpoints, "keep the newest N checkpoints in the directory (0: all)")->check(CLI::Range(0, 1 << 20));
    app.add_flag("--resume", o.resume, "continue from the newest complete checkpoint in --checkpoint-dir");
    app.add_option("--val-every", o.val_every, "validate every N steps and at the end (0: never)")->check(CLI::Range(0, 1 << 30));
    app.add_option("--val-batches", o.val_batches, "batches per validation")->check(CLI::Range(1, 1 << 20));
    app.add_option("--sample-every", o.sample_every, "print a sample every N steps and at the end (0: never)")->check(CLI::Range(0, 1 << 30));
    app.add_option("--sample-len", o.sample_len, "tokens per sample")->check(CLI::Range(1, 1 << 20));

    SampleOptions so;
    CLI::App* sample = app.add_subcommand("sample", "generate text from a checkpoint");
    sample->add_option("--load", so.load, "checkpoint")->required();
    sample->add_option("--tokenizer", so.tokenizer, "tokenizer file (default: the default data set's)");
    sample->add_option("--prompt", so.prompt, "text to continue");
    sample->add_option("--length", so.length, "new tokens per sample")->check(CLI::Range(1, 1 << 20));
    sample->add_option("--temperature", so.temperature, "sampling temperature (0: greedy)")->check(CLI::Range(0.0, 100.0));
    sample->add_option("--top-k", so.top_k, "sample among the k most likely tokens (0: all)")->check(CLI::Range(0, 1 << 20));
    sample->add_option("--num", so.num, "samples to print")->check(CLI::Range(1, 1 << 16));
    sample->add_option("--seed", so.seed, "random seed");

    EvalOptions eo;
    CLI::App* eval = app.add_subcommand("eval", "loss of a checkpoint on a data set");
    eval->add_option("--load", eo.load, "checkpoint")->required();
    eval->add_option("--data", eo.data, "token shards (default: tinyshakespeare's validation split)");
    eval->add_option("--batch", eo.B, "sequences per batch")->check(CLI::Range(1, 1 << 20));
    eval->add_option("--seq", eo.T, "tokens per sequence")->check(CLI::Range(1, 1 << 20));
    eval->add_option("--batches", eo.batches, "batches to average (0: one pass over the data)")->check(CLI::Range(0, 1 << 30));
    eval->add_option("--device", eo.device, "cpu, cuda or auto")->check(CLI::IsMember({"cpu", "cuda", "auto"}));

    std::vector<std::string> plot_logs_in;
    std::string plot_out = "loss.png", plot_title = "mot: loss";
    CLI::App* plot = app.add_subcommand("plot", "draw train and validation loss of runs on one PNG (gnuplot)");
    plot->add_option("logs", plot_logs_in, "JSONL logs written by --log")->required();
    plot->add_option("-o,--out", plot_out, "PNG to write");
    plot->add_option("--title", plot_title, "plot title");

    CLI11_PARSE(app, argc, argv);
    try {
        if (*sample) return sample_main(so);
        if (*eval) return eval_main(eo);
        if (*plot) {
            plot_logs(plot_logs_in, plot_out, plot_title);
            std::printf("wrote %s\n", plot_out.c_str());
            return 0;
        }
        return train(o);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
