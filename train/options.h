// The program's options: every default in one place (Options and the
// subcommands' structs), the command-line definitions (CLI11), and the
// mapping from options to a model configuration. Errors here name the
// options; the library below speaks of the model.
#pragma once
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/error.h"
#include "common/layout.h"

// The default data set, prepared from tinyshakespeare on first use.
inline const char* const DEFAULT_DATA_DIR = "data/cache/tinyshakespeare";

struct Options {
    // data
    std::string data, val_data, tokenizer;
    int vocab = 50257;  // for shards given without a tokenizer: GPT-2's
    int B = 32, T = 64, total_batch = 0;
    int shuffle = 1;
    // model
    int layers = 4, heads = 4, d_model = 128, d_ff = 0;
    std::string ffn = "mot", ffn_layers = "all";  // ffn: dense, mot or token-choice; ffn_layers: its layers
    // the MoT setting the study found best at this size (README, results):
    // 256 experts of width d_ff/8 in groups of 32, tau 0.1, every layer.
    // experts 0: the kind's default, 256 for MoT, 32 for token choice (the
    // study's token-choice runs: the parameters of MoT with E = G = 32)
    int experts = 0, group = 32, expert_size = 0;
    float temperature = 0.1f;
    int topk = 1;                   // TOKEN_CHOICE: experts each token chooses
    float capacity_factor = 1.25f;  // TOKEN_CHOICE: cf
    float aux_loss = 0.01f;         // TOKEN_CHOICE: weight of the load-balancing loss
    std::string transition;         // with --load: "token-choice" turns MOT layers into TOKEN_CHOICE
    std::string router;             // TOKEN_CHOICE: softmax, threshold or threshold-one; "": softmax, a transition threshold
    float router_temperature = 0;   // threshold router's gate temperature; 0: a transition's MoT tau, else 1
    int calibration_batches = 4;    // transition to a threshold router: training batches that set the thresholds
    float router_balance = 0;       // threshold routers: the bias controller's gain eta; 0: bc trained by AdamW;
                                    // a --transition to --router threshold: TRANSITION_ROUTER_BALANCE unless given
                                    // --resume: the training state's unless given
    std::string distill;            // a model whose probabilities the run also learns from (train/distill.h)
    float distill_weight = 0.5f;    // w: the objective is (1 - w) cross-entropy + w KL(teacher || model)
    // optimization
    int steps = 750, warmup = 50;
    float lr = 3e-3f, lr_min_frac = 0.1f, wd = 0.1f, grad_clip = 1.0f;
    float beta1 = 0.9f, beta2 = 0.95f, adam_eps = 1e-8f;  // AdamW (docs/design.md section 4.3)
    uint64_t seed = 1337;
    bool skip_nonfinite = false;
    int max_skips = 25;  // with --skip-nonfinite: consecutive skipped updates before giving up
    // device, files
    std::string device = "auto", load, save, log, checkpoint_dir;
    bool tf32 = false, resume = false;
    std::string precision = "fp32";  // fp32, tf32 or bf16 (README, "Precision"); --tf32 is tf32
    int checkpoint_every = 0, keep_checkpoints = 3;
    int threads = 0;  // CPU threads per step; 0: chosen by timing the steps (train/threads.h)
    // several ranks (mpirun; docs/design.md section 11, train/parallel.h)
    int zero = 0;                    // 1: ZeRO-1, the AdamW moments and update sharded over the ranks
    int expert_parallel = 1;         // N ranks share each MoT and token-choice layer's experts, E/N each
    std::string expert_exchange = "auto";  // MoT: what the group exchanges: mixed, inputs, or auto (fewer values)
    float collective_timeout = 600;  // seconds a rank waits for the others before the job stops
    // evaluation and samples
    int val_every = 250, val_batches = 16, sample_every = 500, sample_len = 128;
    std::vector<std::string> given;  // the options given on the command line
};

// The gain of the rate controller a transition to the threshold router runs
// unless --router-balance is given (README, "Transition tuning, measured").
inline constexpr float TRANSITION_ROUTER_BALANCE = 2.0f;

struct SampleOptions {
    std::string load, tokenizer, prompt;
    int length = 200, top_k = 0, num = 1;
    float temperature = 1.0f;
    uint64_t seed = 1337;
    bool mot_discrete = false;  // MOT layers with one-hot mixing weights
};

struct EvalOptions {
    std::string load, data, device = "auto";
    int B = 32, T = 64, batches = 0;  // B: a multiple of the default group size
    bool mot_discrete = false;
    bool decode = false;  // each sequence decoded alone with the KV cache (no MoT layers)
    std::string dump;     // safetensors file for the first batch's tokens, targets, logits and losses
};

// export --load MODEL -o FILE.safetensors [--dtype f32|bf16]
struct ExportOptions {
    std::string load, out, dtype = "f32", tokenizer;
};

// plot LOG... -o PNG --title TITLE
struct PlotOptions {
    std::vector<std::string> logs;
    std::string out = "loss.png", title = "mot: loss";
};

// CLI11's ranges let NaN through (every comparison with NaN is false), so
// every floating-point option also has to be a finite number.
inline const CLI::Validator FINITE(
    [](std::string& text) {
        char* end = nullptr;
        double v = std::strtod(text.c_str(), &end);
        return std::isfinite(v) ? std::string() : "must be a finite number, got " + text;
    },
    "FINITE");

// --seed: a whole number 0..2^64-1, written as one. CLI11's conversion to
// an unsigned 64-bit value took 1e23, -1 and 2^64 alike and made each
// 2^64 - 1: three different requests, one seed, no word said.
inline const CLI::Validator SEED(
    [](std::string& text) {
        bool digits = !text.empty() && std::all_of(text.begin(), text.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
        errno = 0;
        if (digits) (void)std::strtoull(text.c_str(), nullptr, 10);
        if (digits && errno != ERANGE) return std::string();
        return "must be a whole number from 0 to 18446744073709551615 (2^64 - 1), got " + text;
    },
    "SEED");

// The subcommands, to see which one the command line chose.
struct Subcommands {
    CLI::App *sample = nullptr, *eval = nullptr, *plot = nullptr, *export_model = nullptr;
};

// Defines every option of the program and its subcommands on app, bound to
// the structs above.
inline Subcommands define_options(CLI::App& app, Options* o, SampleOptions* so, EvalOptions* eo, PlotOptions* po,
                                  ExportOptions* xo) {
    app.option_defaults()->always_capture_default()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    app.get_formatter()->column_width(34);
    app.require_subcommand(0, 1);
    app.add_option("--data", o->data, "training token shards (file or glob); default: tinyshakespeare, prepared on first run");
    app.add_option("--val-data", o->val_data, "validation token shards (file or glob)");
    app.add_option("--tokenizer", o->tokenizer, "tokenizer file, this program's or llm.c's: decodes samples, sets the vocabulary");
    app.add_option("--vocab", o->vocab, "vocabulary size for shards given without a tokenizer")->check(CLI::Range(2, 65536));
    app.add_option("--device", o->device, "cpu, cuda or auto (the GPU when one works)")->check(CLI::IsMember({"cpu", "cuda", "auto"}));
    app.add_flag("--tf32", o->tf32, "GPU: allow TF32 tensor cores for fp32 matmuls (--precision tf32)");
    app.add_option("--precision", o->precision, "fp32, tf32 (GPU: TF32 tensor cores) or bf16 (bf16 weights and activations, fp32 master weights)")
        ->check(CLI::IsMember({"fp32", "tf32", "bf16"}));
    app.add_option("--threads", o->threads, "CPU threads per step (0: all cores, fewer while other work shares them)")->check(CLI::Range(0, 4096));
    app.add_option("--batch", o->B, "sequences per micro-batch (B)")->check(CLI::Range(1, 1 << 20));
    app.add_option("--seq", o->T, "tokens per sequence (T)")->check(CLI::Range(1, 1 << 20));
    app.add_option("--total-batch", o->total_batch, "tokens per optimizer step over all ranks, by gradient accumulation (0: one micro-batch per rank)")->check(CLI::Range(0, 1 << 30));
    app.add_option("--zero", o->zero, "with several ranks: 1 shards the AdamW moments and update over them (ZeRO-1)")->check(CLI::Range(0, 1));
    app.add_option("--expert-parallel", o->expert_parallel, "with several ranks: N ranks share each MoT and token-choice layer's experts, E/N each (N divides the ranks and E; CPU ranks)")->check(CLI::Range(1, 65536));
    app.add_option("--expert-exchange", o->expert_exchange, "with --expert-parallel: mixed (tokens to the experts' owners), inputs (each owner mixes the gathered inputs), or auto: whichever moves fewer values (inputs when N*G < E)")->check(CLI::IsMember({"auto", "mixed", "inputs"}));
    app.add_option("--collective-timeout", o->collective_timeout, "with several ranks: seconds to wait for the others before stopping the job")->check(CLI::Range(1.0, 1e7))->check(FINITE);
    app.add_option("--steps", o->steps, "optimizer steps")->check(CLI::Range(0, 1 << 30));
    app.add_option("--lr", o->lr, "peak learning rate")->check(CLI::Range(0.0, 10.0))->check(FINITE);
    app.add_option("--warmup", o->warmup, "linear warmup steps")->check(CLI::Range(0, 1 << 30));
    app.add_option("--lr-min-frac", o->lr_min_frac, "final lr as a fraction of --lr (cosine decay)")->check(CLI::Range(0.0, 1.0))->check(FINITE);
    app.add_option("--wd", o->wd, "AdamW weight decay (matrices only)")->check(CLI::Range(0.0, 10.0))->check(FINITE);
    app.add_option("--beta1", o->beta1, "AdamW first-moment decay")->check(CLI::Range(0.0, 1.0))->check(FINITE);
    app.add_option("--beta2", o->beta2, "AdamW second-moment decay")->check(CLI::Range(0.0, 1.0))->check(FINITE);
    app.add_option("--adam-eps", o->adam_eps, "AdamW epsilon")->check(CLI::Range(0.0, 1.0))->check(FINITE);
    app.add_option("--grad-clip", o->grad_clip, "clip the global gradient norm to this (0: off)")->check(CLI::Range(0.0, 1e9))->check(FINITE);
    app.add_flag("--skip-nonfinite", o->skip_nonfinite, "skip an update whose loss or gradient is NaN/Inf instead of stopping");
    app.add_option("--max-skips", o->max_skips, "with --skip-nonfinite: stop after this many skipped updates in a row")->check(CLI::Range(1, 1 << 30));
    app.add_option("--seed", o->seed, "random seed: weights, shuffling, samples (0..2^64-1)")->check(SEED);
    app.add_option("--shuffle", o->shuffle, "1: shuffled batches, 0: sequential (docs/design.md section 7)")->check(CLI::Range(0, 1));
    app.add_option("--layers", o->layers, "transformer blocks (L)")->check(CLI::Range(1, MAX_LAYERS));
    app.add_option("--heads", o->heads, "attention heads (NH)")->check(CLI::Range(1, 1 << 16));
    app.add_option("--d-model", o->d_model, "model width (C)")->check(CLI::Range(1, 1 << 16));
    app.add_option("--d-ff", o->d_ff, "dense FFN width (0: 4 * d-model)")->check(CLI::Range(0, 1 << 20));
    app.add_option("--ffn", o->ffn, "feed-forward kind: " + name_list(ffn_kind_names(false)))->check(CLI::IsMember(ffn_kind_names(false)));
    app.add_option("--ffn-layers,--mot-layers", o->ffn_layers, "the layers of the --ffn kind (" + name_list(ffn_kind_names(false, DENSE), ", ") + "), the others dense: all, second-half, or a list like 1,3 (also spelled --mot-layers)");
    app.add_option("--experts", o->experts, "experts (E) of MoT or token choice; 0: 256 for MoT, 32 for token choice")
        ->check(CLI::Range(0, 1 << 16));
    app.add_option("--group", o->group, "MoT group size (G): batch rows mixed together")->check(CLI::Range(1, 1 << 16));
    app.add_option("--expert-size", o->expert_size, "MoT expert width f (0: flop-matched d-ff * G / E)")->check(CLI::Range(0, 1 << 20));
    app.add_option("--temperature", o->temperature, "MoT softmax temperature (tau)")->check(CLI::Range(1e-6, 1e6))->check(FINITE);
    app.add_option("--topk", o->topk, "token-choice: experts each token chooses (k)")->check(CLI::Range(1, 1 << 16));
    app.add_option("--capacity-factor", o->capacity_factor, "token-choice: an expert takes up to cf*k*N/E of N tokens")->check(CLI::Range(1e-6, 1e6))->check(FINITE);
    app.add_option("--aux-loss", o->aux_loss, "token-choice: weight of the load-balancing loss in the objective")->check(CLI::Range(0.0, 1e6))->check(FINITE);
    app.add_option("--router", o->router, "token-choice router: softmax (top-k of a softmax over the experts), threshold (expert e fires when its logit + bias >= 0, gate sigmoid(./router-temperature)) or threshold-one (gate 1); default softmax, with --transition threshold")->check(CLI::IsMember({"softmax", "threshold", "threshold-one"}));
    app.add_option("--router-temperature", o->router_temperature, "threshold router: the gate's temperature (0: with --transition the MoT model's tau, else 1)")->check(CLI::Range(0.0, 1e6))->check(FINITE);
    app.add_option("--calibration-batches", o->calibration_batches, "--transition to a threshold router: training batches whose MoT controller logits set each expert's threshold")->check(CLI::Range(1, 1 << 16));
    app.add_option("--router-balance", o->router_balance, "threshold routers: after every step move each expert's bias by -ETA * (its firing rate - 1/G), G the group the thresholds were calibrated for (the MoT model's), instead of by its gradient; 0: off; default 0, with --transition to --router threshold 2; --resume keeps the run's")->check(CLI::Range(0.0, 1e6))->check(FINITE);
    app.add_option("--transition", o->transition, "with --load: turn every MoT layer into this kind (token-choice), same tensors, fresh optimizer")->check(CLI::IsMember({"token-choice"}));
    app.add_option("--distill", o->distill, "also learn from this model's probabilities on the same batches (a checkpoint, safetensors or llm.c file of the same vocabulary; e.g. the MoT model of a --transition): the objective is (1 - w) cross-entropy + w KL(its probabilities || the model's), w --distill-weight; the logged loss stays the cross-entropy");
    app.add_option("--distill-weight", o->distill_weight, "with --distill: the weight w of the KL term (0 < w <= 1)")->check(CLI::Range(0.0, 1.0))->check(FINITE);
    app.add_option("--load", o->load, "start from this model: a checkpoint, a safetensors file of export or an llm.c GPT-2 model file (its header sets the model shape)");
    app.add_option("--save", o->save, "write the final model to this checkpoint");
    app.add_option("--log", o->log, "write one JSON object per step to this file");
    app.add_option("--checkpoint-dir", o->checkpoint_dir, "directory for periodic checkpoints (model + training state)");
    app.add_option("--checkpoint-every", o->checkpoint_every, "write a checkpoint every N steps (0: never)")->check(CLI::Range(0, 1 << 30));
    app.add_option("--keep-checkpoints", o->keep_checkpoints, "keep the newest N checkpoints in the directory (0: all)")->check(CLI::Range(0, 1 << 20));
    app.add_flag("--resume", o->resume, "continue from the newest complete checkpoint in --checkpoint-dir");
    app.add_option("--val-every", o->val_every, "validate every N steps and at the end (0: never)")->check(CLI::Range(0, 1 << 30));
    app.add_option("--val-batches", o->val_batches, "batches per validation")->check(CLI::Range(1, 1 << 20));
    app.add_option("--sample-every", o->sample_every, "print a sample every N steps and at the end (0: never)")->check(CLI::Range(0, 1 << 30));
    app.add_option("--sample-len", o->sample_len, "tokens per sample")->check(CLI::Range(1, 1 << 20));


    Subcommands s;
    s.sample = app.add_subcommand("sample", "generate text from a checkpoint");
    s.sample->add_option("--load", so->load, "model: a checkpoint, a safetensors file or an llm.c GPT-2 model file")->required();
    s.sample->add_option("--tokenizer", so->tokenizer, "tokenizer file, this program's or llm.c's (default: the default data set's)");
    s.sample->add_option("--prompt", so->prompt, "text to continue");
    s.sample->add_option("--length", so->length, "new tokens per sample")->check(CLI::Range(1, 1 << 20));
    s.sample->add_option("--temperature", so->temperature, "sampling temperature (0: greedy)")->check(CLI::Range(0.0, 100.0))->check(FINITE);
    s.sample->add_option("--top-k", so->top_k, "sample among the k most likely tokens (0: all)")->check(CLI::Range(0, 1 << 20));
    s.sample->add_option("--num", so->num, "samples to print")->check(CLI::Range(1, 1 << 16));
    s.sample->add_option("--seed", so->seed, "random seed (0..2^64-1)")->check(SEED);
    s.sample->add_flag("--mot-discrete", so->mot_discrete, "MoT layers mix with one-hot weights at the argmax over the group");
    s.sample->footer("An MoT model decodes G sequences at once (its groups mix them): a lone prompt's group is filled "
                     "with G-1 more samples of the same prompt, generated alongside and not printed unless --num asks "
                     "for them. A token-choice or dense model decodes one sequence alone.");

    s.eval = app.add_subcommand("eval", "loss of a checkpoint on a data set");
    s.eval->add_option("--load", eo->load, "model: a checkpoint, a safetensors file or an llm.c GPT-2 model file")->required();
    s.eval->add_option("--data", eo->data, "token shards (default: tinyshakespeare's validation split)");
    s.eval->add_option("--batch", eo->B, "sequences per batch")->check(CLI::Range(1, 1 << 20));
    s.eval->add_option("--seq", eo->T, "tokens per sequence")->check(CLI::Range(1, 1 << 20));
    s.eval->add_option("--batches", eo->batches, "batches to average (0: one pass over the data)")->check(CLI::Range(0, 1 << 30));
    s.eval->add_option("--device", eo->device, "cpu, cuda or auto")->check(CLI::IsMember({"cpu", "cuda", "auto"}));
    s.eval->add_flag("--decode", eo->decode, "decode every sequence alone, token by token with the KV cache (on the CPU; a model without MoT layers): the loss serving one request");
    s.eval->add_flag("--mot-discrete", eo->mot_discrete, "MoT layers mix with one-hot weights at the argmax over the group");
    s.eval->add_option("--dump", eo->dump, "write the first batch's tokens, targets, logits (the first V columns) and per-token losses to this safetensors file");


    s.export_model = app.add_subcommand("export", "write a model as safetensors, for PyTorch and other tools (README, \"Using the models elsewhere\")");
    s.export_model->add_option("--load", xo->load, "model: a checkpoint, a safetensors file or an llm.c GPT-2 model file")->required();
    s.export_model->add_option("-o,--out", xo->out, "safetensors file to write")->required();
    s.export_model->add_option("--dtype", xo->dtype, "f32, or bf16 (rounded to nearest even)")->check(CLI::IsMember({"f32", "bf16"}));
    s.export_model->add_option("--tokenizer", xo->tokenizer, "the tokenizer the model was trained with, named in the metadata (default: the default data set's, when its vocabulary is the model's)");

    s.plot = app.add_subcommand("plot", "draw train and validation loss of runs on one PNG (gnuplot)");
    s.plot->add_option("logs", po->logs, "JSONL logs written by --log")->required();
    s.plot->add_option("-o,--out", po->out, "PNG to write");
    s.plot->add_option("--title", po->title, "plot title");
    return s;
}

// The options given on the command line (for notes on ignored ones).
inline std::vector<std::string> given_options(const CLI::App& app) {
    std::vector<std::string> names;
    for (const CLI::Option* opt : app.get_options())
        if (opt->count() > 0) names.push_back(opt->get_name());
    return names;
}

// The kind of --ffn (common/ffn_kinds.h, option); DENSE for a name no kind has.
inline int ffn_kind(const std::string& ffn) {
    const int kind = ffn_kind_named(ffn, false);
    return kind < 0 ? DENSE : kind;
}

// --ffn-layers: the layers of the --ffn kind, "all", "second-half" or a comma
// list of layer indices; the others are dense.
inline std::vector<int> layer_kinds(const Options& o) {
    std::vector<int> kinds(o.layers, DENSE);
    const int sparse = ffn_kind(o.ffn);
    if (sparse == DENSE) return kinds;
    if (o.ffn_layers == "all") return std::vector<int>(o.layers, sparse);
    if (o.ffn_layers == "second-half") {
        for (int l = o.layers / 2; l < o.layers; l++) kinds[l] = sparse;
        return kinds;
    }
    size_t pos = 0;
    while (true) {
        size_t comma = o.ffn_layers.find(',', pos);
        std::string item = o.ffn_layers.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        char* end = nullptr;
        long l = std::strtol(item.c_str(), &end, 10);
        if (item.empty() || *end != '\0' || l < 0 || l >= o.layers)
            fail(strf("--ffn-layers: '%s' is not a layer index in 0..%d (use all, second-half or a list like 1,3)",
                      item.c_str(), o.layers - 1));
        kinds[l] = sparse;
        if (comma == std::string::npos) return kinds;
        pos = comma + 1;
    }
}

inline int router_kind(const std::string& name) {
    if (name == "threshold") return ROUTER_THRESHOLD;
    if (name == "threshold-one") return ROUTER_THRESHOLD_ONE;
    return ROUTER_SOFTMAX;
}

inline Config config_from_options(const Options& o, int vocab) {
    Config c;
    c.V = vocab;
    c.Vp = pad_vocab(vocab);
    c.maxT = o.T;
    c.L = o.layers;
    c.NH = o.heads;
    c.C = o.d_model;
    c.dff = o.d_ff > 0 ? o.d_ff : 4 * o.d_model;
    c.E = o.experts > 0 ? o.experts : o.ffn == "token-choice" ? 32 : 256;
    c.mot.G = o.group;
    c.mot.tau = o.temperature;
    c.tc.topk = o.topk;
    c.tc.capacity_factor = o.capacity_factor;
    c.tc.router = router_kind(o.router.empty() ? "softmax" : o.router);
    c.tc.router_tau = o.router_temperature > 0 ? o.router_temperature : 1.0f;
    c.kinds = layer_kinds(o);
    if (has_kind(c, TOKEN_CHOICE) && c.tc.topk > c.E) fail(strf("--topk %d is above --experts %d", c.tc.topk, c.E));
    if (o.expert_size > 0) {
        c.f = o.expert_size;
    } else if (o.ffn == "token-choice") {
        // flop-matched: each token runs k experts of width f, a dense FFN one of width dff, so k*f = dff
        if (c.dff % c.tc.topk != 0)
            fail(strf("--d-ff %d is not divisible by --topk %d: give --expert-size", c.dff, c.tc.topk));
        c.f = c.dff / c.tc.topk;
    } else {
        // flop-matched: E experts of width f see S*T mixed tokens, a dense FFN
        // of width dff sees B*T = G*S*T tokens, so E*f = G*dff; only MoT
        // layers read f, so a model without any takes the quotient as it falls
        if (has_kind(c, MOT) && (long)c.dff * c.mot.G % c.E != 0)
            fail(strf("--d-ff %d * --group %d is not divisible by --experts %d: give --expert-size", c.dff, c.mot.G,
                      c.E));
        c.f = c.dff * c.mot.G / c.E;
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

inline bool given(const Options& o, const std::string& name) {
    return std::find(o.given.begin(), o.given.end(), name) != o.given.end();
}

// --precision and --tf32 made one: --tf32 is --precision tf32. bf16 runs on
// either device (common/bf16_kernels.h: the CPU emulates what the GPU
// computes).
inline void resolve_precision(Options* o) {
    if (o->tf32 && o->precision == "bf16") fail("--tf32 and --precision bf16 ask for two precisions: give one");
    if (o->tf32) o->precision = "tf32";
    o->tf32 = o->precision == "tf32";
}

// --vocab sizes a new model for shards given without a tokenizer; with one
// (`tokenizer` names it) the tokenizer sets the vocabulary, and --vocab
// cannot apply.
inline void check_vocab_applies(const Options& o, const std::string& tokenizer) {
    if (given(o, "--vocab") && !tokenizer.empty())
        fail(strf("--vocab applies to shards given without a tokenizer; %s sets the vocabulary", tokenizer.c_str()));
}

// Options that configure something the model being built does not have
// cannot apply, and are refused rather than ignored: a command with
// --ffn mot --topk 2 would otherwise train without the token choice it asks
// for. kinds are the layers' kinds: of the new model (loaded = false), or of
// the checkpoint that `model` names; --transition makes token-choice layers
// of a loaded model's MoT layers. The shape options of MoT and of either
// sparse kind (--group, --temperature, --experts, --expert-size) only get a
// note: scripts that compare kinds give one set of them to every --ffn.
inline void check_options_apply(const Options& o, const std::vector<int>& kinds, bool loaded, const std::string& model) {
    const bool transition = !o.transition.empty();
    const bool any_tc = transition || std::count(kinds.begin(), kinds.end(), (int)TOKEN_CHOICE) > 0;
    const bool any_mot = std::count(kinds.begin(), kinds.end(), (int)MOT) > 0;
    if (!loaded && given(o, "--ffn-layers") && ffn_kind(o.ffn) == DENSE)
        fail("--ffn-layers picks the layers of --ffn " + name_list(ffn_kind_names(false, DENSE)) +
             "; --ffn dense makes every layer dense");
    for (const char* name : {"--topk", "--capacity-factor", "--aux-loss", "--router", "--router-temperature"})
        if (given(o, name) && !any_tc)
            fail(strf("%s applies to token-choice layers; %s has none", name, model.c_str()));
    if (o.router_balance > 0 && !any_tc)
        fail(strf("--router-balance applies to token-choice layers with a threshold router; %s has none",
                  model.c_str()));
    // the router of the token-choice layers being made (a loaded model's own router is its header's)
    const int router = router_kind(o.router.empty() ? (transition ? "threshold" : "softmax") : o.router);
    if ((!loaded || transition) && any_tc && given(o, "--router-temperature") && router != ROUTER_THRESHOLD)
        fail(strf("--router-temperature is the gate temperature of --router threshold; the router is %s",
                  router_name(router)));
    if ((!loaded || transition) && any_tc && o.router_balance > 0 && router == ROUTER_SOFTMAX)
        fail("--router-balance holds the firing rates of --router threshold or threshold-one; the router is softmax");
    if (given(o, "--calibration-batches") && !(transition && router != ROUTER_SOFTMAX))
        fail(strf("--calibration-batches sets the thresholds of a --transition to a threshold router; %s",
                  transition ? "the router is softmax" : "there is no --transition"));
    if (!loaded && o.data.empty()) check_vocab_applies(o, "the default data set's tokenizer");
    if (loaded) return;  // note_ignored_model_options speaks of the shape options
    const bool sparse = any_mot || any_tc;
    const struct {
        const char* name;
        bool used;
        const char* shapes;
    } shape[] = {{"--group", any_mot || (any_tc && o.router_balance > 0), "MoT"},
                 {"--temperature", any_mot, "MoT"},
                 {"--experts", sparse, "MoT or token-choice"},
                 {"--expert-size", sparse, "MoT or token-choice"}};
    for (const auto& opt : shape)
        if (given(o, opt.name) && !opt.used)
            std::printf("note: %s is ignored: it shapes %s layers, and %s has none\n", opt.name, opt.shapes,
                        model.c_str());
}

// With --load or --resume the checkpoint's header sets the model's shape:
// an option given on the command line that asks for another shape is
// ignored, and said to be.
inline void note_ignored_model_options(const Options& o, const Config& c) {
    bool any_mot = has_kind(c, MOT), any_tc = has_kind(c, TOKEN_CHOICE), sparse = any_mot || any_tc;
    int dff = o.d_ff > 0 ? o.d_ff : 4 * o.d_model;
    struct { const char* name; bool differs;
    } opts[] = {
        {"--layers", o.layers != c.L},
        {"--heads", o.heads != c.NH},
        {"--d-model", o.d_model != c.C},
        {"--d-ff", dff != c.dff},
        {"--vocab", o.vocab != c.V},
        {"--ffn", !has_kind(c, ffn_kind(o.ffn))},
        {"--ffn-layers", o.layers == c.L && layer_kinds(o) != c.kinds},
        {"--experts", sparse && o.experts != c.E},
        {"--group", any_mot && o.group != c.mot.G},
        {"--expert-size", sparse && o.expert_size > 0 && o.expert_size != c.f},
        {"--temperature", any_mot && o.temperature != c.mot.tau},
        {"--topk", any_tc && o.topk != c.tc.topk},
        {"--capacity-factor", any_tc && o.capacity_factor != c.tc.capacity_factor},
        {"--router", any_tc && !o.router.empty() && router_kind(o.router) != c.tc.router},
        {"--router-temperature", any_tc && o.router_temperature > 0 && o.router_temperature != c.tc.router_tau}};
    for (const auto& opt : opts)
        if (given(o, opt.name) && opt.differs)
            std::printf("note: %s is ignored: the checkpoint's header sets the model's shape\n", opt.name);
}

