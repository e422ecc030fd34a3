// The setup of a training run, in the order train_setup (train/run.h) calls it:
// the data and tokenizer (setup_data), the configuration and starting
// weights (setup_model), the batches (setup_loaders), and the model on its
// device with what --resume restores (setup_device), which prints the run's
// plan. Everything up to a built model; the checks it calls are
// train/checks.h's, --transition's steps train/transition_setup.h's.
#pragma once
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/model_file.h"
#include "common/rng.h"
#include "data/dataloader.h"
#include "data/prepare.h"
#include "tokenizer/bpe.h"
#include "train/checks.h"
#include "train/dist.h"
#include "train/distill.h"
#include "train/model.h"
#include "train/options.h"
#include "train/parallel.h"
#include "train/report.h"
#include "train/state.h"
#include "train/threads.h"
#include "train/train_run.h"
#include "train/transition_setup.h"

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

// A loaded model whose threshold routers' biases will train by AdamW
// because no --router-balance was given: --load without --transition (a
// new run: the default 0), or --resume from a training state that does not
// record the gain (version 4 or older). Said, since the transition that
// made such a model ran the controller by default.
inline void note_router_balance_off(const TrainRun* r) {
    const Options& o = r->o;
    const Config& c = r->c;
    if (given(o, "--router-balance") || !o.transition.empty() || !has_kind(c, TOKEN_CHOICE) ||
        c.tc.router != ROUTER_THRESHOLD)
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
                why.c_str(), TRANSITION_ROUTER_BALANCE, c.mot.G);
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
    if (o.router_balance > 0 && c.tc.router == ROUTER_SOFTMAX)  // a loaded model's router is its header's
        fail(strf("--router-balance holds the firing rates of a threshold router; the token-choice layers of %s "
                  "route by softmax",
                  o.resume ? "the checkpoint" : o.load.c_str()));
    if (o.router_balance > 0 && c.mot.G < 1)
        fail(strf("--router-balance holds each expert at 1/G of the tokens; the group size G of %s is %d",
                  o.resume ? "the checkpoint" : o.load.c_str(), c.mot.G));
    if (r->tokp && r->tok.vocab_size != c.V)
        fail(strf("%s has %d tokens, the model's vocabulary has %d: samples could not be decoded; give the "
                  "tokenizer the model was trained with",
                  r->tok_path.c_str(), r->tok.vocab_size, c.V));
    if (r->T > c.maxT) fail(strf("--seq %d is above the model's maximum sequence length %d", r->T, c.maxT));
    if (batch_in_groups(c) && r->B % c.mot.G != 0)
        fail(strf("--batch %d is not divisible by --group %d: MoT mixes tokens in groups of G batch rows", r->B,
                  c.mot.G));
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
                parallel_member_part(c, o.expert_parallel, r->params).data(), o.precision == "bf16");
    model_set_aux_weight(&r->model, o.aux_loss);
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
    // each kind's part (common/ffn_kinds.h, summary), the dense one last and always
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
                                             r->model.cfg.expert_inputs ? "input" : "mixed", r->par.ep * c.mot.G,
                                             r->par.ep * c.mot.G < c.E ? "<" : ">=", c.E)
                                            .c_str());
    if (o.checkpoint_dir.empty() && o.save.empty())
        std::printf("note: no --checkpoint-dir or --save: nothing of this run is saved, not even when a signal "
                    "(Ctrl-C, SIGTERM, SIGHUP) stops it\n");
    // CPU threads per step, chosen by timing the steps (--threads N, or several ranks: fixed)
    tuner_init(&r->tuner, r->model.on_gpu || o.threads > 0 || d.size > 1 ? 1 : max_threads);
}
