// A training run, top to bottom (./train_mot with no subcommand; main in
// mot.cu holds the loop, llm.c's way):
//
//   train_setup      the ranks, then in order:
//     check_options    contradictions and sizes, where the run writes
//     setup_data       the data set (the default one prepared on first use), the tokenizer
//     setup_model      the model's configuration and weights: new, --load, or --resume
//     setup_loaders    training and validation batches; what --resume must agree with
//     setup_device     the model on its device, the resumed moments and data position
//     and the log's first rows, the peak for MFU, the stop signals' handler
//   the loop (main)  validate, train_sample, the step, save_checkpoint; on a signal
//                    stop_at_eval or stop_after_step; train_finish before the last
//                    validation and sample (the final --save)
//   train_end        the log closed, the ranks left
//
// check_options is train/checks.h's; setup_data to setup_device are
// train/setup.h's (--transition's steps in train/transition_setup.h); the
// optimizer step and the validation are train/step.h's. What the steps fill
// in is a TrainRun (train/train_run.h). Here: the rest of the list above,
// checkpoint saving, the log's first row.
//
// The steps compute; what they computed is printed and logged by
// train/report.h (report_step, report_skip, report_validation).
//
// With several ranks (mpirun -np R; docs/design.md section 11) every rank runs all
// of this on its own share of each step's micro-batches (train/parallel.h
// exchanges the gradients); rank 0 alone prints, logs, samples and writes
// checkpoints; the other ranks' standard output is discarded.
#pragma once
#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

#include "common/checkpoint.h"
#include "common/layout.h"
#include "train/checks.h"
#include "train/dist.h"
#include "train/log.h"
#include "train/model.h"
#include "train/outputs.h"
#include "train/parallel.h"
#include "train/report.h"
#include "train/setup.h"
#include "train/state.h"
#include "train/step.h"
#include "train/train_run.h"

// The whole model's weights on rank 0 (a collective: under --expert-parallel
// the experts are gathered); other ranks may get nullptr.
inline const float* whole_params(TrainRun* r, std::vector<float>* buf) {
    return parallel_whole(&r->par, r->model.cfg, model_params(&r->model), buf, "gathering the experts to save them");
}

// Writes a checkpoint pair for `step` optimizer steps into dir. Every rank
// calls it (the moments and a check of the parameters are collectives);
// rank 0 writes. The data position is every rank's: each rank walks all of
// a step's micro-batches, taking its own (step_batch).
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

// The log's first row: what ran. Layer counts per kind other than dense
// (<stored name>_layers, in table order: mot_layers, token_choice_layers);
// the experts' E and f, then each kind's hyperparameters (group and
// temperature for MoT; topk, capacity factor, router and its gate
// temperature for token choice).
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
    fields.insert(fields.end(), {{"experts", (double)c.E}, {"expert_size", (double)c.f}});
    for_each_ffn_kind([&](auto k) {  // each kind's own hyperparameters (common/ffn_kinds.h, log_fields)
        k.log_fields(c, [&](const char* key, double v) { fields.push_back({key, v}); });
    });
    fields.insert(fields.end(), {{"router_balance", o.router_balance},
                                 {"ranks", (double)dist().size}, {"zero", (double)parallel_sharded(r->par)},
                                 {"expert_parallel", (double)r->par.ep},
                                 {"distill_weight", r->teacher.on ? r->teacher.weight : 0.0},
                                 {"params_held", (double)num_params(r->model.cfg)}});
    jsonl_write(&r->log, 0, fields);
}

// The run's start, on every rank: the ranks, then the steps at the top in
// order up to setup_device; then the step's FLOPs and the device's peak
// (for MFU), the log with its first rows, and the stop signals' handler.
inline void train_setup(TrainRun* r, const Options& o) {
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
    r->o = o;
    check_options(r);
    setup_data(r);
    setup_model(r);
    setup_loaders(r);
    check_ranks_setup(r);
    setup_device(r);
    std::string peak_how;
    r->peak_flops = device_peak_flops(r->model, &peak_how);
    r->flops_per_step = model_flops_per_token(r->c, r->T) * (double)(r->BT * r->micro);
    std::printf("peak for MFU: %s\n", peak_how.c_str());
    jsonl_open(&r->log, dist().rank == 0 ? r->o.log : std::string(), r->o.resume, r->state.step);  // rank 0 logs
    if (jsonl_empty(&r->log)) log_run_header(r, r->flops_per_step);
    if (r->transition_measured)
        jsonl_write(&r->log, 0,
                    {{"transition_mot_loss", r->transition_mot_loss}, {"transition_loss", r->transition_loss}});
    std::signal(SIGINT, on_stop_signal);
    std::signal(SIGTERM, on_stop_signal);
    std::signal(SIGHUP, on_stop_signal);
}

// The last step is done: a run that ended still skipping non-finite updates
// failed; otherwise the final --save, before the final validation and sample
// (a stop during them keeps it).
inline void train_finish(TrainRun* r) {
    if (r->consecutive_skips > 0)
        fail(strf("the run ended with its last %d updates skipped for a non-finite loss or gradient: the model is "
                  "not training%s. Lower --lr, or resume from an earlier checkpoint",
                  r->consecutive_skips, r->o.save.empty() ? "" : "; --save not written"));
    if (!r->o.save.empty()) {
        std::vector<float> whole;
        const float* params = whole_params(r, &whole);
        if (dist().rank == 0) save_final(r->o.save, r->c, params);
    }
    std::fflush(stdout);
}

// One sample from the end-of-text token (temperature 1, every token),
// printed by rank 0; with several ranks, every rank learns whether a stop
// signal came meanwhile.
inline void train_sample(TrainRun* r) {
    if (!r->stop && dist().rank == 0) {
        std::vector<int> eot_prompt = {r->tokp ? r->tok.eot : r->c.V - 1};
        SampleSettings sampling;
        sampling.length = r->o.sample_len;
        print_samples(&r->model, r->tokp, eot_prompt, sampling, &r->sample_rng, &stop_signal);
    }
    if (dist().size > 1) {
        double stopped = stop_signal ? 1 : 0;
        dist_sum(&stopped, 1, "the stop check after the sample");
        if (stopped > 0) r->stop = true;
    }
}

// A stop signal came during step's validation or sample: the run stops at
// `step` (the sample it cut did not happen: the sampling state goes back to
// rng_before, and a resumed run validates and samples at `step` again),
// saving what save_on_stop saves unless `checkpointed` (this step's
// checkpoint is written). Returns the exit status, 128 + the signal.
inline int stop_at_eval(TrainRun* r, int step, bool validation, bool sample, bool checkpointed, uint64_t rng_before) {
    const Options& o = r->o;
    const bool last = step == o.steps;
    int sig = stop_signal ? stop_signal : SIGTERM;  // a rank the signal did not reach stops as if by SIGTERM
    r->sample_rng.state = rng_before;
    std::string saved = last && o.checkpoint_dir.empty()
                            ? (o.save.empty() ? "nothing saved (no --checkpoint-dir or --save)"
                                              : strf("the trained model is saved (--save %s)", o.save.c_str()))
                            : save_on_stop(r, step, checkpointed);
    std::printf("interrupted (%s%s) during the %s%s of step %d: %s, stopping\n", stop_signal_name(sig),
                stop_signal ? "" : " on another rank", last ? "final " : "",
                validation && sample ? "validation and sample" : validation ? "validation" : "sample", step,
                saved.c_str());
    return 128 + sig;
}

// A stop signal came during the step that ended at `step`: saves what
// save_on_stop saves (unless `checkpointed`); returns 128 + the signal.
inline int stop_after_step(TrainRun* r, int step, bool checkpointed) {
    int sig = stop_signal ? stop_signal : SIGTERM;
    std::string saved = save_on_stop(r, step, checkpointed);
    std::printf("interrupted (%s%s): %s, stopping\n", stop_signal_name(sig), stop_signal ? "" : " on another rank",
                saved.c_str());
    return 128 + sig;
}

// The run's end, however it ended: closes the log, frees the exchange,
// leaves the job; returns the program's exit status.
inline int train_end(TrainRun* r, int status) {
    jsonl_close(&r->log);
    parallel_free(&r->par);
    dist_finalize();
    return status;
}
