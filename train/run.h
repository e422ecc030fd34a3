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
// check_options is train/checks.h's; setup_data to setup_device are
// train/setup.h's (--transition's steps in train/transition_setup.h);
// train_loop and finish are here; the optimizer step and the validation the
// loop runs are train/step.h's. What the steps fill in is a TrainRun
// (train/train_run.h). Here too: checkpoint saving, the log's first row, and
// train(), which calls the steps in the order above.
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
// a step's micro-batches, taking its own (train_step).
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
