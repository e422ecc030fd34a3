// The checks of a training run's options, before any work and once the
// model and data are known: contradictions and impossible sizes, what
// --expert-parallel needs, where the run writes (no output over an input or
// another output, no new run into another run's checkpoints), and with
// several ranks, that every rank was given the same options and set up the
// same model and data. They refuse (fail) rather than fix; train/run.h calls
// check_ranks_options, check_options and check_ranks_setup, the setup
// (train/setup.h) the checks that need what it found.
#pragma once
#include <climits>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "common/checkpoint.h"
#include "common/fileio.h"
#include "common/model_file.h"
#include "data/dataloader.h"
#include "train/dist.h"
#include "train/distill.h"
#include "train/options.h"
#include "train/outputs.h"
#include "train/parallel.h"
#include "train/train_run.h"

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
                {"the model's group", num(c.mot.G)}, {"the model's expert size", num(c.f)},
                {"the model's temperature", num(c.mot.tau)}, {"the model's top-k", num(c.tc.topk)},
                {"the model's capacity factor", num(c.tc.capacity_factor)}, {"the model's router", num(c.tc.router)},
                {"the model's router temperature", num(c.tc.router_tau)},
                {"the starting weights", weights}, {"the starting step", num((double)r->state.step)},
                {"the training data (shard names and sizes)", strf("fingerprint %016llx", (unsigned long long)r->data_id)},
                {"the training shards", num((double)r->train_loader.files.size())},
                {"the validation shards", num(r->have_val ? (double)r->val_loader.files.size() : 0)},
                {"the tokenizer's vocabulary", num(r->tokp ? r->tok.vocab_size : 0)}},
               "comparing the ranks' models and data",
               "the ranks read different files (--load, the checkpoint --resume takes, --tokenizer, the --data or "
               "--val-data shards); give every rank the same");
}

// --expert-parallel N: what it needs of the ranks and the other options; the
// model's part is checked once the model is known (check_expert_parallel_model).
inline void check_expert_parallel_options(TrainRun* r) {
    Options& o = r->o;
    const int N = o.expert_parallel, R = dist().size;
    if (N == 1) return;
    if (R % N != 0)
        fail(strf("--expert-parallel %d must divide the number of ranks, %d: the ranks form expert groups of %d", N,
                  R, N));
    // GPU ranks (NCCL) only when asked for: that path has not yet run on GPUs (README)
    if (o.device == "cuda" && !nccl_compiled())
        fail("--expert-parallel --device cuda needs NCCL: rebuild with NCCL (in the CUDA toolkit), or --device cpu");
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
}

// Contradictions and impossible sizes, refused before any work; where the
// run writes, checked now rather than after hours of training.
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
