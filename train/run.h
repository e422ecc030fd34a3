// A training run, top to bottom (./train_mot with no subcommand):
//
//   check_options    contradictions and sizes, where the run writes
//   setup_data       the data set (the default one prepared on first use), the tokenizer
//   setup_model      the model's configuration and weights: new, --load, or --resume
//   setup_loaders    training and validation batches; what --resume must agree with
//   setup_device     the model on its device, the resumed moments and data position
//   train_loop       validate, sample, step, checkpoint; stop on a signal
//   finish           the last checks and the final --save, before the final validation and sample
//
// The steps compute; what they computed is printed and logged by
// train/report.h (report_step, report_skip, report_validation).
//
// With several ranks (mpirun -np R; docs/design.md section 11) every rank runs all
// of this on its own share of each step's micro-batches (train/parallel.h
// exchanges the gradients); rank 0 alone prints, logs, samples and writes
// checkpoints; the other ranks' standard output is discarded.
#pragma once
#include <signal.h>
#include <unistd.h>

#include <climits>
#include <csignal>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "common/checkpoint.h"
#include "common/clock.h"
#include "common/config.h"
#include "common/model_file.h"
#include "common/rng.h"
#include "common/schedule.h"
#include "data/dataloader.h"
#include "data/prepare.h"
#include "tokenizer/bpe.h"
#include "train/distill.h"
#include "train/log.h"
#include "train/model.h"
#include "train/options.h"
#include "train/outputs.h"
#include "train/parallel.h"
#include "train/report.h"
#include "train/state.h"
#include "train/threads.h"
#include "train/transition.h"

// SIGINT (Ctrl-C), SIGTERM (what schedulers and docker stop send) and SIGHUP
// (the terminal was closed): the first asks the training loop to save a
// checkpoint and stop after the current step; a second SIGINT or SIGTERM
// exits at once. A second SIGHUP does not: a closed terminal can send two
// (the kernel's to the foreground job, then the shell's to its jobs).
// After a SIGHUP, writes to a pipe whose reader went with the terminal
// (train_mot | tee) must fail quietly, not kill the run with SIGPIPE before
// it saves.
inline volatile std::sig_atomic_t stop_signal = 0;
inline void on_stop_signal(int sig) {
    if (stop_signal && sig == SIGHUP) return;
    if (stop_signal) _exit(128 + sig);
    stop_signal = sig;
    if (sig == SIGHUP) {
        struct sigaction ignore {};
        ignore.sa_handler = SIG_IGN;
        sigaction(SIGPIPE, &ignore, nullptr);  // async-signal-safe
    }
}

inline const char* stop_signal_name(int sig) {
    return sig == SIGTERM ? "SIGTERM" : sig == SIGHUP ? "SIGHUP" : "SIGINT";
}

// Everything a run holds, filled in by the steps below in order.
struct TrainRun {
    Options o;
    int B = 0, T = 0, accum = 1;  // micro-batch shape; micro-batches per optimizer step and rank
    int micro = 1;                // micro-batches per optimizer step over all ranks: accum * ranks
    int64_t BT = 0;               // tokens per micro-batch
    std::string train_pattern, val_pattern, tok_path;
    Tokenizer tok;
    const Tokenizer* tokp = nullptr;  // &tok, or null without a tokenizer
    Config c;
    Config before_transition;   // with --transition: the loaded MoT configuration
    std::vector<float> mot_params;  // with --transition: the loaded MoT weights, until calibrated and reported
    std::vector<float> params;  // the starting weights, until the model holds them
    TrainState state;           // step, data position, moments; from the checkpoint with --resume
    DataLoader train_loader, val_loader;
    bool have_val = false;
    double val_bytes_per_token = 0;
    uint64_t data_id = 0;
    Rng sample_rng;
    Model model;
    Parallel par;               // the ranks' gradient exchange (one rank: nothing to exchange)
    bool stop = false;          // a stop signal reached some rank: every rank saves and stops
    JsonlLog log;
    ThreadTuner tuner;
    int consecutive_skips = 0;
    // with --transition: the loss before the first update, with the MoT layers and as token choice
    bool transition_measured = false;
    double transition_mot_loss = 0, transition_loss = 0;
    Teacher teacher;  // --distill (train/distill.h)
};

// A new run (no --resume) into a folder that holds checkpoints would mix
// its checkpoints with that run's: pruning by step number would delete one
// run's for the other's, and a later --resume would continue whichever has
// the newest step. Refused; the folder is left as it is.
inline void refuse_other_checkpoints(const std::string& dir) {
    std::vector<std::string> files = checkpoint_files(dir);
    if (files.empty()) return;
    fail(strf("--checkpoint-dir %s already holds checkpoints of a run (%s%s): give --resume to continue it, or "
              "another folder for a new run",
              dir.c_str(), files.back().c_str(),
              files.size() > 1 ? strf(" and %zu more files", files.size() - 1).c_str() : ""));
}

// The options as every rank must have them, each as its option's name and
// a canonical value (numbers as parsed, so --lr 1e-3 and --lr 0.001 agree):
// every option of Options but --threads, whose best value is a node's own
// (the results are the same for any thread count).
inline std::vector<std::pair<std::string, std::string>> rank_options(const Options& o) {
    auto text = [](const std::string& s) { return s.empty() ? std::string("(not given)") : s; };
    auto num = [](double x) { return strf("%.17g", x); };
    auto fnum = [](float x) {  // the shortest text that reads back as the same float (9 digits always do)
        std::string t;
        for (int digits = 6; digits <= 9; digits++)
            if (std::strtof((t = strf("%.*g", digits, (double)x)).c_str(), nullptr) == x) break;
        return t;
    };
    return {{"--data", text(o.data)}, {"--val-data", text(o.val_data)}, {"--tokenizer", text(o.tokenizer)},
            {"--vocab", num(o.vocab)}, {"--batch", num(o.B)}, {"--seq", num(o.T)}, {"--total-batch", num(o.total_batch)},
            {"--shuffle", num(o.shuffle)}, {"--layers", num(o.layers)}, {"--heads", num(o.heads)},
            {"--d-model", num(o.d_model)}, {"--d-ff", num(o.d_ff)}, {"--ffn", o.ffn}, {"--ffn-layers", o.ffn_layers},
            {"--experts", num(o.experts)}, {"--group", num(o.group)}, {"--expert-size", num(o.expert_size)},
            {"--temperature", fnum(o.temperature)}, {"--topk", num(o.topk)},
            {"--capacity-factor", fnum(o.capacity_factor)}, {"--aux-loss", fnum(o.aux_loss)},
            {"--transition", text(o.transition)}, {"--router", text(o.router)},
            {"--router-temperature", fnum(o.router_temperature)}, {"--calibration-batches", num(o.calibration_batches)},
            {"--router-balance", fnum(o.router_balance)}, {"--distill", text(o.distill)},
            {"--distill-weight", fnum(o.distill_weight)},
            {"--steps", num(o.steps)}, {"--warmup", num(o.warmup)}, {"--lr", fnum(o.lr)},
            {"--lr-min-frac", fnum(o.lr_min_frac)}, {"--wd", fnum(o.wd)}, {"--grad-clip", fnum(o.grad_clip)},
            {"--beta1", fnum(o.beta1)}, {"--beta2", fnum(o.beta2)}, {"--adam-eps", fnum(o.adam_eps)},
            {"--seed", strf("%llu", (unsigned long long)o.seed)}, {"--skip-nonfinite", o.skip_nonfinite ? "on" : "off"},
            {"--max-skips", num(o.max_skips)}, {"--device", o.device}, {"--tf32", o.tf32 ? "on" : "off"},
            {"--precision", o.precision},
            {"--load", text(o.load)}, {"--save", text(o.save)}, {"--log", text(o.log)},
            {"--checkpoint-dir", text(o.checkpoint_dir)}, {"--resume", o.resume ? "on" : "off"},
            {"--checkpoint-every", num(o.checkpoint_every)}, {"--keep-checkpoints", num(o.keep_checkpoints)},
            {"--zero", num(o.zero)}, {"--expert-parallel", num(o.expert_parallel)},
            {"--expert-exchange", o.expert_exchange},
            {"--collective-timeout", fnum(o.collective_timeout)},
            {"--val-every", num(o.val_every)}, {"--val-batches", num(o.val_batches)},
            {"--sample-every", num(o.sample_every)}, {"--sample-len", num(o.sample_len)}};
}

// With several ranks, before anything else: every rank was given the same
// options (mpirun's MPMD form, -np 1 ./train_mot A : -np 1 ./train_mot B,
// or a wrapper script, can give them others). Ranks with another model
// exchanged gradients of other sizes (MPI corrupted the heap), with another
// seed, rate or data trained apart, with other --steps or --zero hung.
inline void check_ranks_options(const Options& o) {
    dist_agree(rank_options(o), "comparing the ranks' options",
               "every rank must be given the same options (all but --threads)");
}

// With several ranks, once the model and data are set up and before any
// collective whose size depends on them: the ranks agree on what the options
// led to, which files decide (--load, --resume's checkpoint, the tokenizer,
// the shards, each rank reading its own node's copy).
inline void check_ranks_setup(const TrainRun* r) {
    const Config& c = r->c;
    std::string kinds;
    for (int k : c.kinds) kinds += std::to_string(k);
    auto num = [](double x) { return strf("%.9g", x); };
    std::string weights = strf("checksum %016llx", (unsigned long long)checksum64(r->params.data(), r->params.size() * sizeof(float)));
    dist_agree({{"the model's vocabulary", num(c.V)}, {"the model's maximum sequence length", num(c.maxT)},
                {"the model's layers", num(c.L)}, {"the model's heads", num(c.NH)}, {"the model's width", num(c.C)},
                {"the model's d_ff", num(c.dff)}, {"the model's layer kinds", kinds}, {"the model's experts", num(c.E)},
                {"the model's group", num(c.G)}, {"the model's expert size", num(c.f)},
                {"the model's temperature", num(c.tau)}, {"the model's top-k", num(c.topk)},
                {"the model's capacity factor", num(c.capacity_factor)}, {"the model's router", num(c.router)},
                {"the model's router temperature", num(c.router_tau)},
                {"the starting weights", weights}, {"the starting step", num((double)r->state.step)},
                {"the training data (shard names and sizes)", strf("fingerprint %016llx", (unsigned long long)r->data_id)},
                {"the training shards", num((double)r->train_loader.files.size())},
                {"the validation shards", num(r->have_val ? (double)r->val_loader.files.size() : 0)},
                {"the tokenizer's vocabulary", num(r->tokp ? r->tok.vocab_size : 0)}},
               "comparing the ranks' models and data",
               "the ranks read different files (--load, the checkpoint --resume takes, --tokenizer, the --data or "
               "--val-data shards); give every rank the same");
}

// Contradictions and impossible sizes, refused before any work; where the
// run writes, checked now rather than after hours of training.
// --expert-parallel N: what it needs of the ranks and the other options; the
// model's part is checked once the model is known (check_expert_parallel_model).
inline void check_expert_parallel_options(TrainRun* r) {
    Options& o = r->o;
    const int N = o.expert_parallel, R = dist().size;
    if (N == 1) return;
    if (R % N != 0)
        fail(strf("--expert-parallel %d must divide the number of ranks, %d: the ranks form expert groups of %d", N,
                  R, N));
    // GPU ranks (MoT layers, NCCL) only when asked for: that path has not yet run on GPUs (README)
    if (o.device == "cuda" && !nccl_compiled())
        fail("--expert-parallel --device cuda needs NCCL: rebuild with NCCL (in the CUDA toolkit), or --device cpu");
    if (o.device == "cuda" && o.zero)
        fail("--expert-parallel --device cuda with --zero 1 is not built yet: give one of them, or --device cpu");
    if (o.device != "cuda") o.device = "cpu";
    if (o.sample_every > 0 && o.sample_len > 0) {
        if (dist().rank == 0)
            std::printf("note: --expert-parallel: no samples during training (a rank holds a part of the experts; "
                        "sample from a saved model: ./train_mot sample)\n");
        o.sample_every = 0;
    }
}

inline void check_expert_parallel_model(const TrainRun* r) {
    const int N = r->o.expert_parallel;
    const Config& c = r->c;
    if (N == 1) return;
    const char* model = r->o.resume ? "the checkpoint" : !r->o.load.empty() ? r->o.load.c_str() : "the model";
    if (!has_kind(c, MOT) && !has_kind(c, TOKEN_CHOICE))
        fail(strf("--expert-parallel: %s has no MoT or token-choice layers, no experts to share", model));
    if (c.E % N != 0)
        fail(strf("--expert-parallel %d must divide the number of experts, %d (of %s)", N, c.E, model));
    if (r->o.device == "cuda" && has_kind(c, TOKEN_CHOICE))
        fail(strf("--expert-parallel --device cuda: %s has token-choice layers, which run expert parallel on the "
                  "CPU only (--device cpu)",
                  model));
}

inline void check_options(TrainRun* r) {
    const Options& o = r->o;
    if (o.resume && !o.load.empty())
        fail("--resume and --load: give one (--resume continues the newest checkpoint in --checkpoint-dir, "
             "--load starts a new run from a model)");
    if (o.resume && o.checkpoint_dir.empty()) fail("--resume needs --checkpoint-dir");
    if (!o.transition.empty() && o.load.empty())
        fail(strf("--transition %s needs --load: the MoT model to turn into %s", o.transition.c_str(),
                  o.transition.c_str()));
    if (o.checkpoint_every > 0 && o.checkpoint_dir.empty())
        fail(strf("--checkpoint-every %d needs --checkpoint-dir: the folder to write them to", o.checkpoint_every));
    r->B = o.B, r->T = o.T;
    r->BT = (int64_t)o.B * o.T;  // every size product in 64 bits
    if (r->BT > INT32_MAX)
        fail(strf("--batch %d x --seq %d = %lld tokens per micro-batch, more than the 2^31 - 1 this program handles",
                  o.B, o.T, (long long)r->BT));
    const int R = dist().size;
    if (o.total_batch > 0) {
        if (o.total_batch % (r->BT * R) != 0)
            fail(R == 1 ? strf("--total-batch %d is not a multiple of --batch * --seq = %lld tokens", o.total_batch,
                               (long long)r->BT)
                        : strf("--total-batch %d is not a multiple of --batch * --seq * ranks = %d * %d * %d = %lld "
                               "tokens",
                               o.total_batch, o.B, o.T, R, (long long)(r->BT * R)));
        r->accum = (int)(o.total_batch / (r->BT * R));
    }
    r->micro = r->accum * R;
    check_expert_parallel_options(r);
    distill_check_options(o);
    if (o.load.empty() && !o.resume) check_options_apply(o, layer_kinds(o), false, "--ffn " + o.ffn);
    if (dist().rank != 0) return;  // rank 0 alone writes
    check_not_checkpoint_dir({{"--save", o.save, ""}, {"--log", o.log, ""}}, o.checkpoint_dir);
    if (!o.save.empty()) check_writable_file(o.save, "--save");
    if (!o.log.empty()) check_writable_file(o.log, "--log");
    if (!o.checkpoint_dir.empty()) {
        lock_checkpoint_dir(o.checkpoint_dir);
        if (!o.resume) refuse_other_checkpoints(o.checkpoint_dir);
    }
}

// Every input file (the shards, the tokenizer, --load) against the outputs
// (--log, --save), once the shards are known: no output may be an input or
// another output (check_outputs_apart). --save over a checkpoint --load is
// allowed: the checkpoint is read whole at the start and replaced at the
// end, a model trained further in place.
inline void check_inputs_kept(TrainRun* r) {
    const Options& o = r->o;
    std::vector<RunFile> inputs = {{"--load", o.load, ""},
                                   {o.tokenizer.empty() ? "the default --tokenizer" : "--tokenizer", r->tok_path, ""}};
    const char* data = o.data.empty() ? "the default --data" : "--data";
    const char* val_data = o.val_data.empty() ? "the default --val-data" : "--val-data";
    for (const auto& [option, pattern] : {std::pair<const char*, std::string>{data, r->train_pattern},
                                          std::pair<const char*, std::string>{val_data, r->val_pattern}}) {
        if (pattern.empty()) continue;
        std::vector<std::string> files;
        try {
            files = glob_files(pattern);
        } catch (const std::exception&) {
            continue;  // no shard: setup_loaders says so
        }
        for (const std::string& f : files) inputs.push_back({option, f, pattern});
    }
    check_outputs_apart({{"--log", o.log, ""}}, inputs);
    // --save writes a mot checkpoint: over a safetensors or llm.c --load it would change the file's format
    // under its name
    if (!o.save.empty() && !o.load.empty() && same_file(o.save, o.load)) {
        ModelFileFormat f = sniff_model_file(o.load);
        if (f == MODEL_FILE_SAFETENSORS || f == MODEL_FILE_LLMC)
            fail(strf("--save %s is the %s file --load reads, and --save writes a mot checkpoint: give another file%s",
                      o.save.c_str(), f == MODEL_FILE_LLMC ? "llm.c model" : "safetensors",
                      f == MODEL_FILE_LLMC ? "" : " (train_mot export makes safetensors of it afterwards)"));
    }
    inputs.erase(inputs.begin());  // --save may replace --load
    check_outputs_apart({{"--save", o.save, ""}}, inputs);
    check_outputs_apart({{"--log", o.log, ""}, {"--save", o.save, ""}}, {});
}

// The shards and the tokenizer; without --data, the default data set,
// prepared and cached on first use.
inline void setup_data(TrainRun* r) {
    // rank 0 prepares the default data set (once, cached); the others then find it ready
    if (dist().rank != 0) dist_barrier("waiting for rank 0 to prepare the data", false);
    r->train_pattern = r->o.data, r->val_pattern = r->o.val_data, r->tok_path = r->o.tokenizer;
    if (r->train_pattern.empty()) {
        PrepareConfig pc;
        pc.inputs = {find_default_text()};
        pc.out_dir = DEFAULT_DATA_DIR;
        pc.verbose = dist().rank == 0;  // rank 0 speaks for the job
        PrepareResult d = prepare_data(pc);
        r->train_pattern = d.train_pattern;
        if (r->val_pattern.empty()) r->val_pattern = d.val_pattern;
        if (r->tok_path.empty()) r->tok_path = d.tokenizer_path;
    }
    if (dist().rank == 0) dist_barrier("waiting for rank 0 to prepare the data", false);
    check_inputs_kept(r);
    if (!r->tok_path.empty()) {
        r->tok = tokenizer_load(r->tok_path);
        r->tokp = &r->tok;
    }
}

// Transition tuning (train/transition.h): every MOT layer of the loaded
// model becomes a TOKEN_CHOICE layer holding the same wc, w1, w2, with
// --router (threshold unless given), --topk and --capacity-factor; the
// optimizer starts fresh. A threshold router's k defaults to 2E/G (each
// expert fires for 1/G of the tokens: E/G experts per token on average) and
// its capacity factor to 1 (cap = 2N/G, twice an expert's expected load).
// The MoT configuration and weights are kept to calibrate the thresholds and
// measure the switch (transition_report).
inline void transition_kinds(TrainRun* r) {
    const Options& o = r->o;
    if (!has_kind(r->c, MOT)) fail(strf("--transition %s: %s has no MoT layer", o.transition.c_str(), o.load.c_str()));
    if (has_kind(r->c, TOKEN_CHOICE))
        fail(strf("--transition %s: %s already has token-choice layers, whose k, capacity and router would change; "
                  "give a model whose sparse layers are all MoT",
                  o.transition.c_str(), o.load.c_str()));
    const Config& mot = r->c;
    int router = router_kind(o.router.empty() ? "threshold" : o.router);
    int topk = o.topk;
    float cf = o.capacity_factor;
    if (router != ROUTER_SOFTMAX) {
        if (!given(o, "--topk")) topk = std::min(mot.E, std::max(1, 2 * mot.E / mot.G));
        if (!given(o, "--capacity-factor")) cf = 1.0f;
    }
    if (topk > mot.E) fail(strf("--topk %d is above the model's %d experts", topk, mot.E));
    // the threshold router holds its calibrated firing rates unless told otherwise
    if (router == ROUTER_THRESHOLD && !given(o, "--router-balance")) r->o.router_balance = TRANSITION_ROUTER_BALANCE;
    r->before_transition = mot;
    r->c = transition_config(mot, router, o.router_temperature, topk, cf);
    config_validate(r->c);
    r->mot_params.swap(r->params);
    r->params = transition_params(r->before_transition, r->c, r->mot_params);
    std::printf("transition: the MoT layers become token-choice layers (router %s, k %d, capacity factor %g%s), "
                "the same tensors\n",
                router_name(r->c.router), r->c.topk, r->c.capacity_factor,
                r->c.router == ROUTER_THRESHOLD ? strf(", gate temperature %g", r->c.router_tau).c_str() : "");
    if (o.router_balance > 0)
        std::printf("transition: each expert's bias is held at its calibrated firing rate 1/%d by a controller "
                    "(--router-balance %g), not trained\n",
                    mot.G, o.router_balance);
}

inline void print_thresholds(const TrainRun* r, const std::vector<std::vector<float>>& q) {
    float lo = 1e30f, hi = -1e30f;
    for (auto& ql : q)
        for (float x : ql) lo = std::min(lo, x), hi = std::max(hi, x);
    std::printf("transition: thresholds from %d training batches: each expert fires for the top 1/%d of its "
                "controller logits (thresholds %.3f to %.3f)\n",
                r->o.calibration_batches, r->before_transition.G, lo, hi);
}

// A threshold router's thresholds, from the MoT model's controller logits on
// the first --calibration-batches training batches (a copy of the loader:
// the run's data position stays).
inline void transition_calibrate(TrainRun* r) {
    if (r->c.router == ROUTER_SOFTMAX) return;
    DataLoader loader = r->train_loader;
    std::vector<std::vector<int>> batches(r->o.calibration_batches, std::vector<int>(r->BT));
    std::vector<int> targets(r->BT);
    for (std::vector<int>& b : batches) dataloader_next(&loader, b.data(), targets.data());
    std::vector<std::vector<float>> q =
        calibrate_thresholds(r->before_transition, r->mot_params, r->c, &r->params, batches, r->B, r->T);
    print_thresholds(r, q);
}

// A loaded model whose threshold routers' biases will train by AdamW
// because no --router-balance was given: --load without --transition (a
// new run: the default 0), or --resume from a training state that does not
// record the gain (version 4 or older). Said, since the transition that
// made such a model ran the controller by default.
inline void note_router_balance_off(const TrainRun* r) {
    const Options& o = r->o;
    const Config& c = r->c;
    if (given(o, "--router-balance") || !o.transition.empty() || !has_kind(c, TOKEN_CHOICE) ||
        c.router != ROUTER_THRESHOLD)
        return;
    std::string why;
    if (!o.load.empty())
        why = strf("%s has threshold-routed token-choice layers and --router-balance is not given", o.load.c_str());
    else if (o.resume && !r->state.settings.router_balance_known)
        why = "the checkpoint's training state (from an older version) does not record --router-balance, and it "
              "is not given";
    else
        return;
    std::printf("note: %s: the routers' biases bc train by AdamW; --router-balance %g holds each expert at a firing "
                "rate of 1/%d, as after --transition\n",
                why.c_str(), TRANSITION_ROUTER_BALANCE, c.G);
}

// The configuration and starting weights: from the newest valid checkpoint
// with --resume, from --load, or new from the options; then the checks of
// the options against the model.
inline void setup_model(TrainRun* r) {
    const Options& o = r->o;
    if (o.resume) {
        int64_t step = find_resume_checkpoint(o.checkpoint_dir, &r->c, &r->params, &r->state);
        std::printf("loaded %s\n", checkpoint_name(o.checkpoint_dir, step, "ckpt").c_str());
        // the run goes on with its controller (0 from a state that does not record it)
        if (!given(o, "--router-balance")) r->o.router_balance = r->state.settings.router_balance;
        // and in its precision, unless given
        if (!given(o, "--precision") && !given(o, "--tf32") && r->state.settings.precision >= 0) {
            r->o.precision = STATE_PRECISIONS[r->state.settings.precision];
            r->o.tf32 = false;
            resolve_precision(&r->o);
        }
        check_options_apply(o, r->c.kinds, true, checkpoint_name(o.checkpoint_dir, step, "ckpt"));
        if (r->state.settings.distill_weight > 0 && o.distill.empty())
            fail(strf("%s: the run distilled from a teacher (--distill-weight %g): give --distill with the same "
                      "teacher to continue it",
                      checkpoint_name(o.checkpoint_dir, step, "ckpt").c_str(), r->state.settings.distill_weight));
    } else if (!o.load.empty()) {
        model_file_load(o.load, &r->c, &r->params);
        std::printf("loaded %s\n", o.load.c_str());
        check_options_apply(o, r->c.kinds, true, o.load);
        if (!o.transition.empty()) transition_kinds(r);
    } else {
        check_vocab_applies(o, r->tokp ? "--tokenizer " + r->tok_path : std::string());
        r->c = config_from_options(o, r->tokp ? r->tok.vocab_size : o.vocab);
        check_host_memory(r->c, 0, 0, false);
        GPT<float> init;
        gpt_build(&init, r->c);
        gpt_init_weights(&init, o.seed);
        r->params.swap(init.params_memory);
    }
    const Config& c = r->c;
    check_expert_parallel_model(r);
    if (o.resume || !o.load.empty()) note_ignored_model_options(o, c);
    note_router_balance_off(r);
    if (o.router_balance > 0 && c.router == ROUTER_SOFTMAX)  // a loaded model's router is its header's
        fail(strf("--router-balance holds the firing rates of a threshold router; the token-choice layers of %s "
                  "route by softmax",
                  o.resume ? "the checkpoint" : o.load.c_str()));
    if (o.router_balance > 0 && c.G < 1)
        fail(strf("--router-balance holds each expert at 1/G of the tokens; the group size G of %s is %d",
                  o.resume ? "the checkpoint" : o.load.c_str(), c.G));
    if (r->tokp && r->tok.vocab_size != c.V)
        fail(strf("%s has %d tokens, the model's vocabulary has %d: samples could not be decoded; give the "
                  "tokenizer the model was trained with",
                  r->tok_path.c_str(), r->tok.vocab_size, c.V));
    if (r->T > c.maxT) fail(strf("--seq %d is above the model's maximum sequence length %d", r->T, c.maxT));
    if (batch_in_groups(c) && r->B % c.G != 0)
        fail(strf("--batch %d is not divisible by --group %d: MoT mixes tokens in groups of G batch rows", r->B, c.G));
    // memory for the CPU model before reading any data (model_build checks the GPU's)
    if (o.device == "cpu" || !gpu_compiled())  // this rank's part of the model
        check_host_memory(parallel_member_config(c, o.expert_parallel, o.expert_exchange), r->B, r->T, false);
}

// The batches, and with --resume what the checkpoint fixes: options that
// contradict it are refused.
inline void setup_loaders(TrainRun* r) {
    const Options& o = r->o;
    dataloader_init(&r->train_loader, r->train_pattern, r->B, r->T, o.shuffle != 0, o.seed, r->c.V);
    r->have_val = !r->val_pattern.empty() && o.val_every > 0;
    if (r->have_val) dataloader_init(&r->val_loader, r->val_pattern, r->B, r->T, false, o.seed, r->c.V);
    r->sample_rng = rng_seed(o.seed + 1);
    r->val_bytes_per_token = r->have_val && r->tokp ? bytes_per_token(r->tok, r->val_pattern) : 0;
    r->data_id = data_fingerprint(r->train_loader);
    if (!o.resume) return;
    const TrainState& s = r->state;
    if (s.B != r->B || s.T != r->T || s.shuffle != o.shuffle)
        fail(strf("--resume: the checkpoint was trained with --batch %lld --seq %lld --shuffle %lld; give the same",
                  (long long)s.B, (long long)s.T, (long long)s.shuffle));
    // the step's micro-batches over all ranks (R * A) must stay; the number of ranks may change
    if (s.accum != 0 && s.accum != r->micro)
        fail(strf("--resume: the checkpoint was trained with %lld micro-batches per step (--total-batch %lld), "
                  "now %lld (%d per rank on %d ranks); give the same --total-batch",
                  (long long)s.accum, (long long)(s.accum * r->BT), (long long)r->micro, r->accum, dist().size));
    if (s.data_id != 0 && s.data_id != r->data_id)
        fail(strf("--resume: --data %s is not the data the checkpoint was trained on (other shard names or sizes); "
                  "give the same",
                  r->train_pattern.c_str()));
    if (o.steps < s.step)
        fail(strf("--resume: --steps %d is below the checkpoint's step %lld: there is nothing to train; give "
                  "--steps above it",
                  o.steps, (long long)s.step));
}

// Mean loss of a model with the given weights on the batches the run
// validates on (or its first training batch): for the loss at the switch.
inline double loss_before_training(TrainRun* r, const Config& c, const std::vector<float>& params) {
    Model m;
    model_build(&m, c, r->o.device, r->B, r->T, params.data());
    DataLoader loader = r->have_val ? r->val_loader : r->train_loader;  // a copy: the run's loaders stay put
    return evaluate(&m, &loader, r->have_val ? r->o.val_batches : 1);
}

inline void print_transition_losses(TrainRun* r, double mot, double tc) {
    std::printf("transition: loss before the first update on the %s: %.4f with the MoT layers, %.4f as token "
                "choice\n",
                r->have_val ? "validation batches" : "first training batch", mot, tc);
    r->transition_measured = true;
    r->transition_mot_loss = mot, r->transition_loss = tc;
}

// The loss right before the first update, with the MoT layers and after the
// switch to token choice: the "spike at the switch". Printed and logged.
inline void transition_report(TrainRun* r) {
    double mot = loss_before_training(r, r->before_transition, r->mot_params),
           tc = loss_before_training(r, r->c, r->params);
    std::vector<float>().swap(r->mot_params);
    print_transition_losses(r, mot, tc);
}

// The transition under --expert-parallel (after parallel_init: it needs the
// expert exchange), on the ranks' parts of the models in lockstep: the MoT
// model's part (this rank's experts of it) for the calibration and its loss
// at the switch, the routed model's part (r->model) for its loss. The
// calibration batches are split over the ranks as the validation batches are
// (rank q runs batches q, q + R, ..., and batch 0 or its last again,
// uncounted, to stay in step); every rank gathers every rank's controller
// logits, so each threshold is the quantile over all the calibration
// tokens, as one process takes it, and the same on every rank. The losses
// are fp32, as one process measures them, whatever --precision.
inline void transition_expert_parallel(TrainRun* r) {
    const Options& o = r->o;
    const Config& mot = r->before_transition;
    const int R = dist().size, rank = dist().rank, N = o.expert_parallel, El = mot.E / N;
    Model m;
    model_build(&m, parallel_member_config(mot, N, o.expert_exchange), "cpu", r->B, r->T,
                parallel_member_part(mot, N, r->mot_params).data());
    std::vector<float>().swap(r->mot_params);
    model_set_experts(&m, &r->par.exchange);
    if (r->c.router != ROUTER_SOFTMAX) {
        // each MOT layer's logits of a batch: (B,T,E), or with the input-token exchange (N,B,T,El), the
        // logits of this rank's experts for the tokens of every member of its expert group
        const bool inputs = m.cfg.expert_inputs;
        const size_t BT = r->BT, per = BT * mot.E;
        std::vector<int> layers;
        for (int l = 0; l < mot.L; l++)
            if (mot.kinds[l] == MOT) layers.push_back(l);
        const int nb = o.calibration_batches, rounds = (nb + R - 1) / R;
        std::vector<float> mine(layers.size() * rounds * per);  // (layers, rounds, per)
        DataLoader loader = r->train_loader;  // a copy: the run's data position stays
        std::vector<int> x(BT), y(BT);
        for (int i = 0, k = 0; i < rounds * R; i++) {
            if (i % R != rank) {
                if (i < nb) dataloader_skip(&loader);
                continue;
            }
            if (i < nb) dataloader_next(&loader, x.data(), y.data());
            model_forward(&m, x.data(), y.data(), r->B, r->T);
            for (size_t j = 0; j < layers.size(); j++) {
                const float* z = m.cpu.acts.layer[layers[j]].z;
                std::copy(z, z + per, mine.begin() + (j * rounds + k) * per);
            }
            k++;
        }
        // a layer at a time, every rank's logits of it: (R, rounds, per). Expert e's: in round k rank q
        // ran batch k*R + q; with the input-token exchange its block s holds member s's batch,
        // k*R + (q - q % N) + s, and its experts are [(q % N)*El, (q % N + 1)*El)
        std::vector<std::vector<float>> q(layers.size(), std::vector<float>(mot.E));
        std::vector<float> all((size_t)R * rounds * per), bc;
        for (size_t j = 0; j < layers.size(); j++) {
            dist_all_gather(mine.data() + j * rounds * per, all.data(), rounds * per * sizeof(float),
                            "gathering the calibration's controller logits (--transition)", nullptr);
            for (int e = 0; e < mot.E; e++) {
                std::vector<float> v;
                for (int from = 0; from < R; from++)
                    for (int k = 0; k < rounds; k++) {
                        const float* z = all.data() + ((size_t)from * rounds + k) * per;
                        if (!inputs) {
                            if (k * R + from >= nb) continue;
                            for (size_t n = 0; n < BT; n++) v.push_back(z[n * mot.E + e]);
                            continue;
                        }
                        if (from % N != e / El) continue;
                        for (int s = 0; s < N; s++) {
                            if (k * R + from - from % N + s >= nb) continue;
                            for (size_t n = 0; n < BT; n++) v.push_back(z[((size_t)s * BT + n) * El + e % El]);
                        }
                    }
                q[j][e] = calibration_threshold(&v, mot.G);
                bc.push_back(-q[j][e]);
            }
        }
        model_set_router_bias(&r->model, bc);  // the MOT layers became the TOKEN_CHOICE layers, in order
        print_thresholds(r, q);
    }
    const int64_t n = r->have_val ? o.val_batches : 1;
    DataLoader loader = r->have_val ? r->val_loader : r->train_loader;
    double mot_loss = evaluate(&m, &loader, n, rank, R);
    const bool bf16 = o.precision == "bf16";
    model_set_bf16(&r->model, false);
    loader = r->have_val ? r->val_loader : r->train_loader;
    double tc_loss = evaluate(&r->model, &loader, n, rank, R);
    model_set_bf16(&r->model, bf16);
    dist_sum_each({&mot_loss, &tc_loss}, "the losses at the switch's all-reduce (--transition)");
    print_transition_losses(r, mot_loss, tc_loss);
}

// With several ranks: how many, the backend, and each rank's node and
// device (gathered on rank 0, which prints them).
inline void print_ranks(TrainRun* r, int threads) {
    const Dist& d = dist();
    const int W = 160;
    char host[64] = {0};
    gethostname(host, sizeof host - 1);
    std::string mine = strf("rank %d: %s, local rank %d, %s", d.rank, host, d.local_rank,
                            r->model.on_gpu ? device_name(r->model).c_str() : strf("cpu, %d threads", threads).c_str());
    mine.resize(W - 1);
    std::vector<char> all(d.rank == 0 ? (size_t)W * d.size : 0);
    dist_gather(all.data(), mine.c_str(), W, "gathering the ranks' devices");
    std::printf("ranks: %d, gradients by %s%s\n", d.size, r->par.backend.c_str(),
                parallel_sharded(r->par) ? ", ZeRO-1: AdamW moments and update sharded" : "");
    for (int k = 0; d.rank == 0 && k < d.size; k++) std::printf("  %s\n", all.data() + (size_t)W * k);
}

// The optimizer settings of this run, which its checkpoints record.
inline TrainSettings train_settings(const Options& o) {
    TrainSettings t;
    t.known = true;
    t.lr = o.lr, t.lr_min_frac = o.lr_min_frac, t.wd = o.wd, t.grad_clip = o.grad_clip, t.beta1 = o.beta1;
    t.beta2 = o.beta2, t.adam_eps = o.adam_eps, t.aux_loss = o.aux_loss, t.warmup = o.warmup;
    t.router_balance_known = true, t.router_balance = o.router_balance;
    for (int i = 0; i < 3; i++)
        if (o.precision == STATE_PRECISIONS[i]) t.precision = i;
    t.distill_weight = o.distill.empty() ? 0 : o.distill_weight;
    return t;
}

// --resume with an optimizer setting other than the checkpoint's: allowed
// (a run may be continued at a lower --lr), and said, as for --steps.
inline void note_changed_settings(const TrainSettings& was, const TrainSettings& now) {
    if (!was.known) return;
    const struct {
        const char* name;
        double was, now;
    } settings[] = {{"--lr", was.lr, now.lr},
                    {"--lr-min-frac", was.lr_min_frac, now.lr_min_frac},
                    {"--warmup", (double)was.warmup, (double)now.warmup},
                    {"--wd", was.wd, now.wd},
                    {"--grad-clip", was.grad_clip, now.grad_clip},
                    {"--beta1", was.beta1, now.beta1},
                    {"--beta2", was.beta2, now.beta2},
                    {"--adam-eps", was.adam_eps, now.adam_eps},
                    {"--aux-loss", was.aux_loss, now.aux_loss},
                    {"--router-balance", was.router_balance_known ? was.router_balance : now.router_balance,
                     now.router_balance},
                    {"--distill-weight", was.distill_weight, now.distill_weight}};
    for (const auto& s : settings)
        if (s.was != s.now)
            std::printf("note: the run was trained with %s %g, now %s %g: the updates from here on use the new "
                        "value, so the run differs from one trained with it throughout\n",
                        s.name, s.was, s.name, s.now);
    if (was.precision >= 0 && was.precision != now.precision)
        std::printf("note: the run was trained with --precision %s, now %s: the steps from here on compute in %s, so "
                    "the run differs from one trained in %s throughout\n",
                    STATE_PRECISIONS[was.precision], STATE_PRECISIONS[now.precision], STATE_PRECISIONS[now.precision],
                    STATE_PRECISIONS[now.precision]);
}

// The model on its device; with --resume its moments, the data position and
// the sampling RNG where the checkpoint left them. Prints the run's plan.
inline void setup_device(TrainRun* r) {
    const Options& o = r->o;
    const Config& c = r->c;
    if (o.device != "cpu" && gpu_available()) gpu_set_tf32(o.tf32);
    const bool transition = !r->before_transition.kinds.empty();
    if (transition && o.expert_parallel == 1) {
        transition_calibrate(r);
        transition_report(r);
    }
    // under --expert-parallel this rank's part of the model (train/parallel.h)
    model_build(&r->model, parallel_member_config(c, o.expert_parallel, o.expert_exchange), o.device, r->B, r->T,
                parallel_member_part(c, o.expert_parallel, r->params).data());
    model_set_aux_weight(&r->model, o.aux_loss);
    model_set_bf16(&r->model, o.precision == "bf16");
    std::vector<float>().swap(r->params);
    distill_setup(&r->teacher, o, r->model, r->B, r->T);
    parallel_init(&r->par, &r->model, o.zero);
    if (transition && o.expert_parallel > 1) transition_expert_parallel(r);
    if (o.zero && dist().size == 1) std::printf("note: --zero 1 with one rank: nothing to shard, the run is as --zero 0\n");
    if (o.resume) {
        parallel_set_moments(&r->par, &r->model, r->state.m, r->state.v);
        std::vector<float>().swap(r->state.m);
        std::vector<float>().swap(r->state.v);
        dataloader_set_state(&r->train_loader, r->state.loader);
        r->sample_rng.state = r->state.rng;
        std::printf("resuming at step %lld\n", (long long)r->state.step);
        if (r->state.ranks > 0 && r->state.ranks != dist().size)
            std::printf("note: the checkpoint was trained on %lld ranks, now %d with %d micro-batches each: the same "
                        "%lld micro-batches per step\n",
                        (long long)r->state.ranks, dist().size, r->accum, (long long)r->state.accum);
        if (r->state.total_steps != o.steps)
            std::printf("note: the run was planned for %lld steps, now --steps %d: the learning-rate schedule "
                        "changes from here, so the run differs from one planned for %d steps throughout\n",
                        (long long)r->state.total_steps, o.steps, o.steps);
        note_changed_settings(r->state.settings, train_settings(o));
    }
    r->state.settings = train_settings(o);
    // each kind's part (common/layout.h, summary), the dense one last and always
    std::string kinds;
    for_each_ffn_kind([&](auto k) {
        if (k.kind != DENSE && has_kind(c, k.kind)) kinds += k.summary(c, count_kind(c, k.kind)) + ", ";
    });
    kinds += DenseFfn::summary(c, count_kind(c, DENSE));
    std::printf("model: L %d, C %d, NH %d, V %d, %s, %.2fM parameters\n", c.L, c.C, c.NH, c.V, kinds.c_str(),
                num_params(c) / 1e6);
    const Dist& d = dist();
    int max_threads = 1;
#ifdef _OPENMP
    max_threads = omp_get_max_threads();
    // ranks that share a node share its cores: the cores this rank may run on (mpirun may bind it
    // to some), at most its share of the node's
    if (d.size > 1 && o.threads == 0) {
        int share = (int)sysconf(_SC_NPROCESSORS_ONLN) / d.local_size;
        omp_set_num_threads(max_threads = std::max(1, std::min(omp_get_num_procs(), share)));
    }
#endif
    std::string ranks = d.size == 1 ? std::string()
                                    : strf(" x %d ranks", d.size);
    std::printf("train: %d x %d tokens x %d micro-batches%s = %lld tokens/step, %d steps, lr %g, device %s\n", r->B,
                r->T, r->accum, ranks.c_str(), (long long)(r->BT * r->micro), o.steps, o.lr,
                device_name(r->model).c_str());
    if (d.size > 1) print_ranks(r, max_threads);
    if (r->par.ep > 1)
        std::printf("expert parallel: %d expert groups of %d ranks; each rank holds %d of the %d experts of every %s "
                    "layer, %.2fM of the %.2fM parameters; they exchange %s\n",
                    d.size / r->par.ep, r->par.ep, c.E / r->par.ep, c.E,
                    has_kind(c, MOT) && has_kind(c, TOKEN_CHOICE) ? "MoT and token-choice"
                    : has_kind(c, MOT)                            ? "MoT"
                                                                  : "token-choice",
                    num_params(r->model.cfg) / 1e6, num_params(c) / 1e6,
                    !has_kind(c, MOT) ? "the routed tokens"
                                      : strf("the %s tokens (N*G %d %s E %d)",
                                             r->model.cfg.expert_inputs ? "input" : "mixed", r->par.ep * c.G,
                                             r->par.ep * c.G < c.E ? "<" : ">=", c.E)
                                            .c_str());
    if (o.checkpoint_dir.empty() && o.save.empty())
        std::printf("note: no --checkpoint-dir or --save: nothing of this run is saved, not even when a signal "
                    "(Ctrl-C, SIGTERM, SIGHUP) stops it\n");
    // CPU threads per step, chosen by timing the steps (--threads N, or several ranks: fixed)
    tuner_init(&r->tuner, r->model.on_gpu || o.threads > 0 || d.size > 1 ? 1 : max_threads);
}

// Writes a checkpoint pair for `step` optimizer steps into dir. Every rank
// calls it (the moments and a check of the parameters are collectives);
// rank 0 writes. The data position is every rank's: each rank walks all of
// a step's micro-batches, taking its own (train_step).
// The whole model's weights on rank 0 (a collective: under --expert-parallel
// the experts are gathered); other ranks may get nullptr.
inline const float* whole_params(TrainRun* r, std::vector<float>* buf) {
    return parallel_whole(&r->par, r->model.cfg, model_params(&r->model), buf, "gathering the experts to save them");
}

inline void save_checkpoint(TrainRun* r, int step, const std::string& dir) {
    const bool writer = dist().rank == 0;
    if (writer) lock_checkpoint_dir(dir);
    TrainState& s = r->state;
    s.step = step;
    s.loader = dataloader_get_state(&r->train_loader);
    s.rng = r->sample_rng.state;
    s.B = r->B, s.T = r->T, s.shuffle = r->o.shuffle, s.total_steps = r->o.steps;
    s.data_id = r->data_id, s.accum = r->micro, s.ranks = dist().size;
    parallel_get_moments(&r->par, &r->model, &s.m, &s.v);
    parallel_check_same_params(&r->par, model_params(&r->model), num_params(r->model.cfg), step);
    std::vector<float> whole;
    const float* params = whole_params(r, &whole);
    if (writer) {
        save_checkpoint_or_rescue(dir, r->c, params, s, r->o.keep_checkpoints);
        std::printf("checkpoint: %s\n", checkpoint_name(dir, step, "ckpt").c_str());
    }
    std::vector<float>().swap(s.m);
    std::vector<float>().swap(s.v);
}

// What a stop signal saves, where the user asked for output: a checkpoint
// in --checkpoint-dir (unless `checkpointed`: one of this step is written);
// without one, the model to --save (the optimizer state has nowhere to go);
// without either, nothing, as the start said (setup_device). Every rank
// calls it; returns what was saved, for the message.
inline std::string save_on_stop(TrainRun* r, int step, bool checkpointed) {
    const Options& o = r->o;
    if (!o.checkpoint_dir.empty()) {
        if (!checkpointed) save_checkpoint(r, step, o.checkpoint_dir);
        return "saved";
    }
    if (o.save.empty()) return "nothing saved (no --checkpoint-dir or --save)";
    std::vector<float> whole;
    const float* params = whole_params(r, &whole);
    if (dist().rank == 0) save_final(o.save, r->c, params);
    return strf("saved the model of step %d to --save %s (without --checkpoint-dir there is no training state to "
                "--resume: --load it to go on)",
                step, o.save.c_str());
}

// The validation loss of the model as it is, into *loss; the batches are
// split over the ranks (rank r takes batches r, r + R, ...). A stop signal
// on any rank cuts it short: it returns false, and every rank sets r->stop.
inline bool validate(TrainRun* r, double* loss) {
    *loss = evaluate(&r->model, &r->val_loader, r->o.val_batches, dist().rank, dist().size, &stop_signal);
    double stopped = stop_signal ? 1 : 0;
    dist_sum_each({loss, &stopped}, "the validation loss's all-reduce");
    if (stopped > 0) r->stop = true;
    return stopped == 0;
}

// One optimizer step (step counts from 0): accumulated micro-batches,
// clipping, and the AdamW update unless the loss or gradient is not finite.
// Returns what it did, for report_step. With R ranks the step's R*A
// micro-batches are read in order by every rank; rank r computes
// micro-batch a*R + r at accumulation step a (docs/design.md section 11)
// and skips the others, so each rank's loader ends the step where one
// process's would.
inline StepResult train_step(TrainRun* r, int step, double peak_flops, double flops_per_step) {
    const Options& o = r->o;
    const int R = dist().size, rank = dist().rank;
    StepResult s;
    s.step = step + 1;
    s.ranks = R;
    std::vector<int> x((size_t)r->BT), y((size_t)r->BT);
    s.threads = o.threads > 0 ? o.threads : tuner_next(&r->tuner);
    double t0 = now_ms();
    parallel_exchange_reset(&r->par);
    const bool balance = o.router_balance > 0;
    std::vector<double> fires;  // --router-balance: (TOKEN_CHOICE layers, E) tokens each expert fired for
    std::vector<double> routed(router_counts_size(r->c), 0.0);  // the step's routing counts (model_add_router_counts)
    // the gradients are zero here: the last update left them so (or model_build, or a skipped step)
    for (int m = 0; m < r->micro; m++) {
        if (m % R != rank) {
            dataloader_skip(&r->train_loader);
            continue;
        }
        dataloader_next(&r->train_loader, x.data(), y.data());
        s.loss += model_forward(&r->model, x.data(), y.data(), r->B, r->T) / r->micro;
        distill_forward(&r->teacher, &r->model, x.data(), y.data(), r->B, r->T);
        s.aux_loss += model_aux_loss(r->model) / r->micro;
        if (balance) model_count_fires(&r->model, &fires);
        if (!routed.empty()) model_add_router_counts(&r->model, &routed);
        model_backward(&r->model, 1.0 / r->micro);
    }
    if (balance) {
        model_zero_router_bias_grads(&r->model);
        fires.resize((size_t)count_kind(r->c, TOKEN_CHOICE) * r->c.E, 0.0);  // a rank with no micro-batch
        dist_sum(fires.data(), fires.size(), "the routers' fire counts' all-reduce");
    }
    if (!routed.empty()) {
        // over every rank's micro-batches, as the loss
        dist_sum(routed.data(), routed.size(), "the routing counts' all-reduce");
        s.routing = router_stats(r->c, routed);
    }
    parallel_sum_grads(&r->par, &r->model);
    double stopped = stop_signal ? 1 : 0;  // a stop signal reached this rank: every rank stops
    dist_sum_each({&s.loss, &s.aux_loss, &stopped}, "the step's loss all-reduce");
    r->stop = stopped > 0;
    s.grad_norm = parallel_grad_norm(&r->par, &r->model);
    s.lr = lr_at(step, o.steps, o.lr, o.warmup, o.lr_min_frac);
    bool finite = std::isfinite(s.loss) && std::isfinite(s.grad_norm);
    // on the first step from --load no update has run yet: the lr cannot be the cause, the weights are
    if (!finite && !o.skip_nonfinite && step == 0 && !o.load.empty())
        fail(strf("step 1: the %s is not finite (loss %g, grad norm %g) before any update: the weights of --load %s "
                  "are the likely cause (a value so large that the forward or backward pass overflows); stopping",
                  std::isfinite(s.loss) ? "gradient" : "loss", s.loss, s.grad_norm, o.load.c_str()));
    if (!finite && !o.skip_nonfinite)
        fail(strf("step %d: the %s is not finite (loss %g, grad norm %g); stopping. Lower --lr, or "
                  "--skip-nonfinite to skip such updates",
                  s.step, std::isfinite(s.loss) ? "gradient" : "loss", s.loss, s.grad_norm));
    if (finite) {
        std::vector<float> bc = balance ? model_router_bias(&r->model) : std::vector<float>();
        parallel_update(&r->par, &r->model, s.lr, o.beta1, o.beta2, o.adam_eps, o.wd, step,
                        clip_scale(s.grad_norm, o.grad_clip));
        if (balance)
            s.rate_err = model_router_balance(&r->model, &bc, fires, (double)(r->BT * r->micro), o.router_balance);
        r->consecutive_skips = 0;
    } else {
        model_zero_grad(&r->model);  // the skipped update did not consume them
        s.skipped = true;
        r->state.skipped++;
        r->consecutive_skips++;
    }
    s.skipped_total = (long long)r->state.skipped;
    s.skipped_in_a_row = r->consecutive_skips;
    s.ms = now_ms() - t0;
    s.tuned_from = r->tuner.current;
    tuner_record(&r->tuner, s.ms);
    s.tuned_to = r->tuner.current;
    s.tok_per_s = (double)(r->BT * r->micro) / (s.ms / 1000.0);
    s.mfu = flops_per_step / (s.ms / 1000.0) / peak_flops / R;  // of the R devices' peak
    if (R > 1) {
        s.exchange = parallel_sharded(r->par) ? "reduce-scatter, all-gather" : "all-reduce";
        s.comm_ms = r->par.comm_ms;
    }
    if (r->par.ep > 1) s.expert_ms = parallel_exchange_ms(r->par), s.expert_mb = parallel_exchange_bytes(r->par) / 1e6;
    return s;
}

// The log's first row: what ran. Layer counts per kind other than dense
// (<stored name>_layers, in table order: mot_layers, token_choice_layers);
// E, G, f, tau for MoT and token choice (topk, capacity factor, router and
// its gate temperature for the latter).
inline void log_run_header(TrainRun* r, double flops_per_step) {
    const Options& o = r->o;
    const Config& c = r->c;
    double tokens_per_step = (double)(r->BT * r->micro);
    std::vector<std::pair<std::string, double>> fields = {
        {"params", (double)num_params(c)}, {"flops_per_token", flops_per_step / tokens_per_step},
        {"tokens_per_step", tokens_per_step}, {"steps", (double)o.steps}, {"peak_lr", o.lr},
        {"layers", (double)c.L}, {"d_model", (double)c.C}, {"heads", (double)c.NH},
        {"seq", (double)r->T}, {"vocab", (double)c.V}, {"d_ff", (double)c.dff}};
    for_each_ffn_kind([&](auto k) {
        if (k.kind != DENSE) fields.push_back({std::string(k.stored) + "_layers", (double)count_kind(c, k.kind)});
    });
    fields.insert(fields.end(), {{"experts", (double)c.E}, {"group", (double)c.G}, {"expert_size", (double)c.f},
                                 {"temperature", c.tau}, {"topk", (double)c.topk},
                                 {"capacity_factor", c.capacity_factor}, {"router", (double)c.router},
                                 {"router_temperature", c.router_tau}, {"router_balance", o.router_balance},
                                 {"ranks", (double)dist().size}, {"zero", (double)parallel_sharded(r->par)},
                                 {"expert_parallel", (double)r->par.ep},
                                 {"distill_weight", r->teacher.on ? r->teacher.weight : 0.0},
                                 {"params_held", (double)num_params(r->model.cfg)}});
    jsonl_write(&r->log, 0, fields);
}

// A run that ended still skipping non-finite updates failed; otherwise the
// final --save. Called by train_loop after the last step, before the final
// validation and sample.
inline void finish(TrainRun* r) {
    if (r->consecutive_skips > 0)
        fail(strf("the run ended with its last %d updates skipped for a non-finite loss or gradient: the model is "
                  "not training%s. Lower --lr, or resume from an earlier checkpoint",
                  r->consecutive_skips, r->o.save.empty() ? "" : "; --save not written"));
    if (!r->o.save.empty()) {
        std::vector<float> whole;
        const float* params = whole_params(r, &whole);
        if (dist().rank == 0) save_final(r->o.save, r->c, params);
    }
}

// The steps from the state's step to --steps: validation and samples on
// their schedule (and at the end, after the final --save), checkpoints on
// theirs. Returns 0, or 128 + the signal when one stopped the run (after
// saving what save_on_stop saves).
inline int train_loop(TrainRun* r) {
    const Options& o = r->o;
    std::string peak_how;
    double peak = device_peak_flops(r->model, &peak_how);
    double flops_per_step = model_flops_per_token(r->c, r->T) * (double)(r->BT * r->micro);
    std::printf("peak for MFU: %s\n", peak_how.c_str());
    jsonl_open(&r->log, dist().rank == 0 ? o.log : std::string(), o.resume, r->state.step);  // rank 0 logs
    if (jsonl_empty(&r->log)) log_run_header(r, flops_per_step);
    if (r->transition_measured)
        jsonl_write(&r->log, 0,
                    {{"transition_mot_loss", r->transition_mot_loss}, {"transition_loss", r->transition_loss}});
    std::vector<int> eot_prompt = {r->tokp ? r->tok.eot : r->c.V - 1};
    SampleSettings sampling;  // one sample from the end-of-text token, temperature 1, every token
    sampling.length = o.sample_len;
    std::signal(SIGINT, on_stop_signal);
    std::signal(SIGTERM, on_stop_signal);
    std::signal(SIGHUP, on_stop_signal);
    int checkpointed = -1;  // the step of the last checkpoint this run wrote
    for (int step = (int)r->state.step; step <= o.steps; step++) {
        bool last = step == o.steps;
        // the trained model is saved before the final validation and sample: a stop during them keeps it
        if (last) finish(r), std::fflush(stdout);
        // a stop during this step's validation or sample stops the run at `step`: the sample it cut
        // did not happen, and a resumed run validates and samples at `step` again
        const uint64_t rng_before = r->sample_rng.state;
        bool validation = r->have_val && (step % o.val_every == 0 || last);
        bool sample = o.sample_len > 0 && o.sample_every > 0 && step > 0 && (step % o.sample_every == 0 || last);
        double val_loss;
        if (validation && validate(r, &val_loss)) report_validation(&r->log, step, val_loss, r->val_bytes_per_token);
        if (sample && !r->stop && dist().rank == 0)
            print_samples(&r->model, r->tokp, eot_prompt, sampling, &r->sample_rng, &stop_signal);
        if (sample && dist().size > 1) {  // rank 0 alone samples: whether a signal came meanwhile, for every rank
            double stopped = stop_signal ? 1 : 0;
            dist_sum(&stopped, 1, "the stop check after the sample");
            if (stopped > 0) r->stop = true;
        }
        if ((validation || sample) && dist().size == 1 && stop_signal) r->stop = true;
        if (r->stop) {
            int sig = stop_signal ? stop_signal : SIGTERM;
            r->sample_rng.state = rng_before;
            std::string saved = last && o.checkpoint_dir.empty()
                                    ? (o.save.empty() ? "nothing saved (no --checkpoint-dir or --save)"
                                                      : strf("the trained model is saved (--save %s)", o.save.c_str()))
                                    : save_on_stop(r, step, checkpointed == step);
            std::printf("interrupted (%s%s) during the %s%s of step %d: %s, stopping\n", stop_signal_name(sig),
                        stop_signal ? "" : " on another rank", last ? "final " : "",
                        validation && sample ? "validation and sample" : validation ? "validation" : "sample", step,
                        saved.c_str());
            jsonl_close(&r->log);
            return 128 + sig;
        }
        if (last) break;
        StepResult result = train_step(r, step, peak, flops_per_step);
        if (result.skipped) report_skip(result, o.max_skips);  // stops a run that is not recovering
        report_step(&r->log, result, o.steps, r->c.router);
        bool periodic = !o.checkpoint_dir.empty() && o.checkpoint_every > 0 && (step + 1) % o.checkpoint_every == 0;
        // a signal reached this rank or another one during the step (train_step); one process also
        // stops for a signal that came after its step's check
        if (dist().size == 1 && stop_signal) r->stop = true;
        if (periodic) save_checkpoint(r, step + 1, o.checkpoint_dir), checkpointed = step + 1;
        if (r->stop) {
            int sig = stop_signal ? stop_signal : SIGTERM;  // a rank the signal did not reach stops as if by SIGTERM
            std::string saved = save_on_stop(r, step + 1, periodic);
            std::printf("interrupted (%s%s): %s, stopping\n", stop_signal_name(sig),
                        stop_signal ? "" : " on another rank", saved.c_str());
            jsonl_close(&r->log);
            return 128 + sig;
        }
    }
    jsonl_close(&r->log);
    return 0;
}

// The whole run; returns the program's exit status.
inline int train(const Options& o) {
#ifdef _OPENMP
    if (o.threads > 0) omp_set_num_threads(o.threads);
#endif
    const Dist& d = dist_init(o.collective_timeout);
    if (d.rank != 0 && !std::freopen("/dev/null", "w", stdout))  // rank 0 speaks for the job
        fail("cannot discard the standard output of a rank other than 0 (/dev/null)");
    if (d.size > 1 && o.device != "cpu" && gpu_available()) {  // one GPU per rank
        if (d.local_size > gpu_device_count())
            fail(strf("%d ranks on this node and %d GPUs: each rank needs a GPU of its own; start at most %d ranks "
                      "per node (mpirun -np, --map-by ppr:N:node), or --device cpu",
                      d.local_size, gpu_device_count(), gpu_device_count()));
        gpu_select_device(d.local_rank);
    }
    check_ranks_options(o);
    TrainRun r;
    r.o = o;
    check_options(&r);
    setup_data(&r);
    setup_model(&r);
    setup_loaders(&r);
    check_ranks_setup(&r);
    setup_device(&r);
    int status = train_loop(&r);
    parallel_free(&r.par);
    dist_finalize();
    return status;
}
