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
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <csignal>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "common/checkpoint.h"
#include "common/config.h"
#include "common/jsonl.h"
#include "common/model.h"
#include "common/outputs.h"
#include "common/plot.h"
#include "common/rng.h"
#include "common/schedule.h"
#include "common/threads.h"
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
    int max_skips = 25;  // with --skip-nonfinite: consecutive skipped updates before giving up
    // device, files
    std::string device = "auto", load, save, log, checkpoint_dir;
    bool tf32 = false, resume = false;
    int checkpoint_every = 0, keep_checkpoints = 3;
    int threads = 0;  // CPU threads per step; 0: chosen by timing the steps (common/threads.h)
    // evaluation and samples
    int val_every = 250, val_batches = 16, sample_every = 500, sample_len = 128;
    std::vector<std::string> given;  // the options given on the command line
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
    // the checks config_validate makes, in terms of the options
    if (c.C % c.NH != 0) fail(strf("--d-model %d is not divisible by --heads %d", c.C, c.NH));
    try {
        config_validate(c);
    } catch (const std::exception& e) {
        fail(strf("the model options describe no model: %s", e.what()));
    }
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
    bool any_mot = mixes_batch(c);
    int n_seq = std::max(any_mot ? c.G : 1, n_show);
    if (any_mot) n_seq = (n_seq + c.G - 1) / c.G * c.G;  // whole groups: MoT mixes them
    std::vector<std::vector<int>> rows = model_generate(model, prompt, n_seq, len, temperature, top_k, rng);
    for (int i = 0; i < n_show; i++) {
        // the text's raw bytes, NUL and all: printf("%s") would stop at a NUL
        std::string text = prompt_text + decode(tok, rows[i]);
        std::printf("---- sample %d ----\n", i + 1);
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::printf("\n");
    }
    std::printf("------------------\n");
}

// SIGINT (Ctrl-C) and SIGTERM (what schedulers and docker stop send): the
// first asks the training loop to save a checkpoint and stop after the
// current step; a second one exits at once.
static volatile std::sig_atomic_t stop_signal = 0;
static void on_stop_signal(int sig) {
    if (stop_signal) _exit(128 + sig);
    stop_signal = sig;
}

static bool given(const Options& o, const std::string& name) {
    return std::find(o.given.begin(), o.given.end(), name) != o.given.end();
}

// With --load or --resume the checkpoint's header sets the model's shape:
// an option given on the command line that asks for another shape is
// ignored, and said to be.
static void note_ignored_model_options(const Options& o, const Config& c) {
    bool any_mot = mixes_batch(c);
    int dff = o.d_ff > 0 ? o.d_ff : 4 * o.d_model;
    struct { const char* name; bool differs; } opts[] = {
        {"--layers", o.layers != c.L}, {"--heads", o.heads != c.NH}, {"--d-model", o.d_model != c.C},
        {"--d-ff", dff != c.dff}, {"--vocab", o.vocab != c.V},
        {"--ffn", (o.ffn == "mot") != any_mot},
        {"--mot-layers", o.layers == c.L && layer_kinds(o) != c.kinds},
        {"--experts", any_mot && o.experts != c.E}, {"--group", any_mot && o.group != c.G},
        {"--expert-size", any_mot && o.expert_size > 0 && o.expert_size != c.f},
        {"--temperature", any_mot && o.temperature != c.tau}};
    for (const auto& opt : opts)
        if (given(o, opt.name) && opt.differs)
            std::printf("note: %s is ignored: the checkpoint's header sets the model's shape\n", opt.name);
}

// Identifies the training data for --resume: FNV-1a over each shard's file
// name (without its folder) and token count, in order.
static uint64_t data_fingerprint(const DataLoader& L) {
    uint64_t h = 1469598103934665603ull;
    auto mix = [&](const void* p, size_t n) {
        for (size_t i = 0; i < n; i++) h = (h ^ ((const unsigned char*)p)[i]) * 1099511628211ull;
    };
    for (size_t i = 0; i < L.files.size(); i++) {
        std::string base = L.files[i].substr(L.files[i].find_last_of('/') + 1);
        mix(base.data(), base.size() + 1);
        mix(&L.shard_tokens[i], sizeof(int64_t));
    }
    return h;
}

// --resume: the newest checkpoint pair in dir that loads and validates; a
// damaged one is skipped, saying which and why.
static int64_t find_resume_checkpoint(const std::string& dir, Config* c, std::vector<float>* params, TrainState* state) {
    std::vector<int64_t> steps = checkpoint_steps(dir);
    if (steps.empty()) fail(strf("--resume: no complete checkpoint in %s", dir.c_str()));
    std::string reasons;
    for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
        try {
            checkpoint_load(checkpoint_name(dir, *it, "ckpt"), c, params);
            *state = train_state_load(checkpoint_name(dir, *it, "state"), num_params(*c), *it);
            return *it;
        } catch (const std::exception& e) {
            std::printf("--resume: skipping the checkpoint of step %lld: %s\n", (long long)*it, e.what());
            reasons += strf("\n  step %lld: %s", (long long)*it, e.what());
        }
    }
    fail(strf("--resume: no valid checkpoint in %s:%s", dir.c_str(), reasons.c_str()));
}

// Writes the final model to --save; if that fails after all (the disk
// filled, the folder went away), writes it beside the requested path, then
// in the working folder, and fails saying where the model is: a trained
// model is never lost, and the run never reports a save it did not make.
static void save_final(const std::string& path, const Config& c, const float* params) {
    std::string first_error;
    try {
        checkpoint_save(path, c, params);
        std::printf("saved %s\n", path.c_str());
        return;
    } catch (const std::exception& e) {
        first_error = e.what();
    }
    std::string base = path.substr(path.find_last_of('/') + 1);
    for (const std::string& fallback : {strf("%s.rescue-%d", path.c_str(), (int)getpid()),
                                        strf("%s.rescue-%d", base.c_str(), (int)getpid())}) {
        try {
            checkpoint_save(fallback, c, params);
        } catch (const std::exception&) {
            continue;
        }
        fail(strf("--save %s failed (%s); the model was written to %s instead", path.c_str(), first_error.c_str(),
                  fallback.c_str()));
    }
    fail(strf("--save %s failed (%s), and so did writing the model beside it and in the working folder",
              path.c_str(), first_error.c_str()));
}

static int train(Options o) {
#ifdef _OPENMP
    if (o.threads > 0) omp_set_num_threads(o.threads);
#endif
    // ---- options that contradict each other, refused before any work
    if (o.resume && !o.load.empty())
        fail("--resume and --load: give one (--resume continues the newest checkpoint in --checkpoint-dir, "
             "--load starts a new run from a model)");
    if (o.resume && o.checkpoint_dir.empty()) fail("--resume needs --checkpoint-dir");
    if (o.checkpoint_every > 0 && o.checkpoint_dir.empty())
        fail(strf("--checkpoint-every %d needs --checkpoint-dir: the folder to write them to", o.checkpoint_every));
    const int B = o.B, T = o.T;
    const int64_t BT = (int64_t)B * T;  // every size product in 64 bits
    if (BT > INT32_MAX)
        fail(strf("--batch %d x --seq %d = %lld tokens per micro-batch, more than the 2^31 - 1 this program handles",
                  B, T, (long long)BT));
    int accum = 1;  // micro-batches per optimizer step
    if (o.total_batch > 0) {
        if (o.total_batch % BT != 0)
            fail(strf("--total-batch %d is not a multiple of --batch * --seq = %lld tokens", o.total_batch,
                      (long long)BT));
        accum = (int)(o.total_batch / BT);
    }
    // where the run writes: checked now, not after hours of training
    if (!o.save.empty()) check_writable_file(o.save, "--save");
    if (!o.log.empty()) check_writable_file(o.log, "--log");
    if (!o.checkpoint_dir.empty()) lock_checkpoint_dir(o.checkpoint_dir);

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

    // ---- model: from --load, from the newest valid checkpoint with --resume, or new
    TrainState state;
    Config c;
    std::vector<float> params;
    if (o.resume) {
        int64_t step = find_resume_checkpoint(o.checkpoint_dir, &c, &params, &state);
        std::printf("loaded %s\n", checkpoint_name(o.checkpoint_dir, step, "ckpt").c_str());
    } else if (!o.load.empty()) {
        checkpoint_load(o.load, &c, &params);
        std::printf("loaded %s\n", o.load.c_str());
    } else {
        c = config_from_options(o, tokp ? tok.vocab_size : o.vocab);
        check_host_memory(c, 0, 0, false);
        GPT<float> init;
        gpt_build(&init, c);
        gpt_init_weights(&init, o.seed);
        params.swap(init.params_memory);
    }
    if (o.resume || !o.load.empty()) note_ignored_model_options(o, c);
    if (tokp && tok.vocab_size != c.V)
        fail(strf("%s has %d tokens, the model's vocabulary has %d: samples could not be decoded; give the "
                  "tokenizer the model was trained with",
                  tok_path.c_str(), tok.vocab_size, c.V));
    if (T > c.maxT) fail(strf("--seq %d is above the model's maximum sequence length %d", T, c.maxT));
    if (mixes_batch(c) && B % c.G != 0)
        fail(strf("--batch %d is not divisible by --group %d: MoT mixes tokens in groups of G batch rows", B, c.G));

    // memory for the CPU model before reading any data (model_build checks the GPU's)
    if (o.device == "cpu" || !gpu_compiled()) check_host_memory(c, B, T, false);

    DataLoader train_loader, val_loader;
    dataloader_init(&train_loader, train_pattern, B, T, o.shuffle != 0, o.seed, c.V);
    bool have_val = !val_pattern.empty() && o.val_every > 0;
    if (have_val) dataloader_init(&val_loader, val_pattern, B, T, false, o.seed, c.V);
    Rng sample_rng = rng_seed(o.seed + 1);
    double val_bpt = have_val && tokp ? bytes_per_token(tok, val_pattern) : 0;
    const uint64_t data_id = data_fingerprint(train_loader);

    if (o.resume) {
        // the checkpoint fixes what the run is; options that contradict it are refused
        if (state.B != B || state.T != T || state.shuffle != o.shuffle)
            fail(strf("--resume: the checkpoint was trained with --batch %lld --seq %lld --shuffle %lld; give the same",
                      (long long)state.B, (long long)state.T, (long long)state.shuffle));
        if (state.accum != 0 && state.accum != accum)
            fail(strf("--resume: the checkpoint was trained with %lld micro-batches per step (--total-batch %lld), "
                      "now %d; give the same --total-batch",
                      (long long)state.accum, (long long)(state.accum * BT), accum));
        if (state.data_id != 0 && state.data_id != data_id)
            fail(strf("--resume: --data %s is not the data the checkpoint was trained on (other shard names or "
                      "sizes); give the same",
                      train_pattern.c_str()));
        if (o.steps < state.step)
            fail(strf("--resume: --steps %d is below the checkpoint's step %lld: there is nothing to train; give "
                      "--steps above it",
                      o.steps, (long long)state.step));
    }

#ifdef __CUDACC__
    if (o.device != "cpu" && gpu_available()) gpu_set_tf32(o.tf32);
#endif
    Model model;
    model_build(&model, c, o.device, B, T, params.data());
    std::vector<float>().swap(params);
    if (o.resume) {
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
    const int64_t tokens_per_step = BT * accum;
    double flops_per_step = model_flops_per_token(c, T) * (double)tokens_per_step;
    std::printf("model: L %d, C %d, NH %d, V %d, %d MoT layers (E %d, G %d, f %d, tau %g), %d dense (d_ff %d), "
                "%.2fM parameters\n",
                c.L, c.C, c.NH, c.V, n_mot, c.E, c.G, c.f, c.tau, c.L - n_mot, c.dff, num_params(c) / 1e6);
    std::printf("train: %d x %d tokens x %d micro-batches = %lld tokens/step, %d steps, lr %g, device %s\n", B, T,
                accum, (long long)tokens_per_step, o.steps, o.lr, device_name(model).c_str());
    std::printf("peak for MFU: %s\n", peak_how.c_str());

    JsonlLog log;
    jsonl_open(&log, o.log, o.resume, state.step);
    std::vector<int> eot_prompt = {tokp ? tok.eot : c.V - 1};
    std::vector<int> x((size_t)BT), y((size_t)BT);
    std::signal(SIGINT, on_stop_signal);
    std::signal(SIGTERM, on_stop_signal);
    auto save_checkpoint = [&](int step, const std::string& dir) {
        lock_checkpoint_dir(dir);
        state.step = step;
        state.loader = dataloader_get_state(&train_loader);
        state.rng = sample_rng.state;
        state.B = B, state.T = T, state.shuffle = o.shuffle, state.total_steps = o.steps;
        state.data_id = data_id, state.accum = accum;
        model_get_moments(&model, &state.m, &state.v);
        checkpoint_dir_save(dir, c, model_params(&model), state, o.keep_checkpoints);
        std::printf("checkpoint: %s\n", checkpoint_name(dir, step, "ckpt").c_str());
    };

    // CPU threads per step, chosen by timing the steps (common/threads.h)
    ThreadTuner tuner;
    int max_threads = 1;
#ifdef _OPENMP
    max_threads = omp_get_max_threads();
#endif
    tuner_init(&tuner, model.on_gpu || o.threads > 0 ? 1 : max_threads);  // --threads N: fixed, no tuning

    int consecutive_skips = 0;
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

        int threads = o.threads > 0 ? o.threads : tuner_next(&tuner);
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
        if (finite) {
            model_update(&model, lr, o.wd, step);
            consecutive_skips = 0;
        } else {
            std::printf("step %d: non-finite loss or gradient, update skipped (%lld so far)\n", step + 1,
                        (long long)++state.skipped);
            if (++consecutive_skips >= o.max_skips)
                fail(strf("step %d: %d updates in a row had a non-finite loss or gradient (--max-skips %d): the "
                          "run is not recovering; stopping. Lower --lr, or resume from an earlier checkpoint",
                          step + 1, consecutive_skips, o.max_skips));
        }
        double ms = now_ms() - t0;
        int threads_before = tuner.current;
        tuner_record(&tuner, ms);
        if (tuner.current != threads_before)
            std::printf("threads: %d -> %d (steps ran faster so: %s)\n", threads_before, tuner.current,
                        tuner.current < threads_before ? "other work shares the cores" : "the cores are free again");
        double tok_s = (double)tokens_per_step / (ms / 1000.0);
        double mfu = flops_per_step / (ms / 1000.0) / peak;
        std::printf("step %5d/%d | loss %.4f | norm %.4f | lr %.2e | %.1f ms | %.0f tok/s | MFU %.1f%%\n", step + 1,
                    o.steps, loss, norm, lr, ms, tok_s, 100 * mfu);
        std::fflush(stdout);
        jsonl_write(&log, step + 1, {{"loss", loss}, {"lr", lr}, {"grad_norm", norm}, {"ms", ms},
                                     {"tok_per_s", tok_s}, {"mfu", mfu}, {"threads", threads}});
        bool periodic = !o.checkpoint_dir.empty() && o.checkpoint_every > 0 && (step + 1) % o.checkpoint_every == 0;
        if (periodic || stop_signal)
            save_checkpoint(step + 1, o.checkpoint_dir.empty() ? "checkpoints" : o.checkpoint_dir);
        if (stop_signal) {
            int sig = stop_signal;
            std::printf("interrupted (%s): saved, stopping\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            jsonl_close(&log);
            return 128 + sig;
        }
    }
    jsonl_close(&log);
    if (consecutive_skips > 0)
        fail(strf("the run ended with its last %d updates skipped for a non-finite loss or gradient: the model is "
                  "not training%s. Lower --lr, or resume from an earlier checkpoint",
                  consecutive_skips, o.save.empty() ? "" : "; --save not written"));
    if (!o.save.empty()) save_final(o.save, c, model_params(&model));
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
    if (!tok_path.empty() && tok.vocab_size != c.V)
        fail(strf("%s has %d tokens, the model's vocabulary has %d: give the tokenizer the model was trained with",
                  tok_path.c_str(), tok.vocab_size, c.V));
    std::vector<int> prompt = {tok_path.empty() ? c.V - 1 : tok.eot};
    if (!s.prompt.empty()) {
        if (tok_path.empty()) fail("--prompt needs --tokenizer to encode it");
        std::vector<int> ids = bpe_encode(tok, s.prompt);
        prompt.insert(prompt.end(), ids.begin(), ids.end());
    }
    if ((int)prompt.size() + s.length > c.maxT)
        std::printf("note: the model's context is %d tokens; past it, each sample continues from its last %d tokens\n",
                    c.maxT, std::max(1, c.maxT / 2));
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

// CLI11's ranges let NaN through (every comparison with NaN is false), so
// every floating-point option also has to be a finite number.
static const CLI::Validator FINITE(
    [](std::string& text) {
        char* end = nullptr;
        double v = std::strtod(text.c_str(), &end);
        return std::isfinite(v) ? std::string() : "must be a finite number, got " + text;
    },
    "FINITE");

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
    app.add_option("--threads", o.threads, "CPU threads per step (0: all cores, fewer while other work shares them)")->check(CLI::Range(0, 4096));
    app.add_option("--batch", o.B, "sequences per micro-batch (B)")->check(CLI::Range(1, 1 << 20));
    app.add_option("--seq", o.T, "tokens per sequence (T)")->check(CLI::Range(1, 1 << 20));
    app.add_option("--total-batch", o.total_batch, "tokens per optimizer step, by gradient accumulation (0: one micro-batch)")->check(CLI::Range(0, 1 << 30));
    app.add_option("--steps", o.steps, "optimizer steps")->check(CLI::Range(0, 1 << 30));
    app.add_option("--lr", o.lr, "peak learning rate")->check(CLI::Range(0.0, 10.0))->check(FINITE);
    app.add_option("--warmup", o.warmup, "linear warmup steps")->check(CLI::Range(0, 1 << 30));
    app.add_option("--lr-min-frac", o.lr_min_frac, "final lr as a fraction of --lr (cosine decay)")->check(CLI::Range(0.0, 1.0))->check(FINITE);
    app.add_option("--wd", o.wd, "AdamW weight decay (matrices only)")->check(CLI::Range(0.0, 10.0))->check(FINITE);
    app.add_option("--grad-clip", o.grad_clip, "clip the global gradient norm to this (0: off)")->check(CLI::Range(0.0, 1e9))->check(FINITE);
    app.add_flag("--skip-nonfinite", o.skip_nonfinite, "skip an update whose loss or gradient is NaN/Inf instead of stopping");
    app.add_option("--max-skips", o.max_skips, "with --skip-nonfinite: stop after this many skipped updates in a row")->check(CLI::Range(1, 1 << 30));
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
    app.add_option("--temperature", o.temperature, "MoT softmax temperature (tau)")->check(CLI::Range(1e-6, 1e6))->check(FINITE);
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
    sample->add_option("--temperature", so.temperature, "sampling temperature (0: greedy)")->check(CLI::Range(0.0, 100.0))->check(FINITE);
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
        for (const CLI::Option* opt : app.get_options())
            if (opt->count() > 0) o.given.push_back(opt->get_name());
        return train(o);
    } catch (const std::bad_alloc&) {
        std::fprintf(stderr, "error: out of memory (a smaller --batch, --seq or model needs less)\n");
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
