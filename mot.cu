// train_mot: trains a GPT whose feed-forward layers are Mixture of Tokens.
//
// One program for both devices: compiled by nvcc it can train on the GPU
// (gpu/), compiled as plain C++ (g++ -x c++) the GPU parts are left out and it
// trains on the CPU (cpu/). The options are a contract (docs/design.md section 10).
//
//   ./train_mot                          prepare tinyshakespeare, train, sample
//   ./train_mot sample --load CKPT       generate text from a checkpoint
//   ./train_mot eval --load CKPT         loss of a checkpoint on a data set
//   ./train_mot plot LOG... -o loss.png  loss curves of one or several runs
//   ./train_mot export --load CKPT -o M.safetensors   the model for PyTorch
//   ./train_mot --help                   every option with its default
//
// main reads top to bottom: the options, a subcommand or the training run,
// whose loop is here (validate, sample, one optimizer step, checkpoint),
// with the step's forward and backward passes in the open: the model
// (train/model.h model_forward, then cpu/gpt.h gpt_forward or gpu/gpt.cuh)
// runs its blocks (block_forward), each its layers.
//
// The pieces live in train/: options.h (every option and default), run.h
// (the run's setup, end and stops, checkpoint saving) with what a run holds
// (train_run.h), its checks (checks.h), its setup (setup.h,
// transition_setup.h) and its step (step.h), subcommands.h, and what they
// use: the model on either device (model.h; device.h holds all that only a
// build by nvcc has), checkpoints with their training state (state.h), the
// log (log.h), the outputs (outputs.h), the CPU threads (threads.h), the
// FLOP peak (peak.h), samples and validation (report.h).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <new>

#include "train/options.h"
#include "train/run.h"
#include "train/subcommands.h"
#include "train/threads.h"

int main(int argc, char** argv) {
    // before any OpenMP parallel region (train/threads.h)
    const std::string threads_note = cap_omp_threads();
    Options o;
    SampleOptions so;
    EvalOptions eo;
    PlotOptions po;
    ExportOptions xo;
    CLI::App app{"train_mot: train a GPT with Mixture-of-Tokens feed-forward layers"};
    Subcommands sub = define_options(app, &o, &so, &eo, &po, &xo);
    // what this build can do: the paths compiled in and the multi-rank backends
    std::string built = "train_mot: CPU (OpenMP)";
    if (gpu_compiled()) built += ", GPU (CUDA)";
    if (dist_compiled()) built += ", several ranks (MPI)";
    if (nccl_compiled()) built += ", GPU ranks (NCCL)";
    app.set_version_flag("--version", built, "print what this build can do and exit");
    CLI11_PARSE(app, argc, argv);
    if (!threads_note.empty()) std::printf("%s\n", threads_note.c_str());
    try {
        if (*sub.sample) return sample_main(so);
        if (*sub.eval) return eval_main(eo);
        if (*sub.plot) return plot_main(po);
        if (*sub.export_model) return export_main(xo);
        o.given = given_options(app);
        resolve_precision(&o);

        // training: every step from the state's (0, or --resume's) to --steps; validation and
        // samples on their schedule, then the step, then checkpoints on theirs
        TrainRun r;
        train_setup(&r, o);  // the options as the run resolved them are r.o
        int checkpointed = -1;  // the step of the last checkpoint this run wrote
        for (int step = (int)r.state.step; step <= r.o.steps; step++) {
            const bool last = step == r.o.steps;
            if (last) train_finish(&r);  // the final --save, before the final validation and sample
            // a stop during this step's validation or sample stops the run at `step`
            const uint64_t rng_before = r.sample_rng.state;
            const bool validation = r.have_val && (step % r.o.val_every == 0 || last);
            const bool sample = r.o.sample_len > 0 && r.o.sample_every > 0 && step > 0 &&
                                (step % r.o.sample_every == 0 || last);
            double val_loss;
            if (validation && validate(&r, &val_loss))
                report_validation(&r.log, step, val_loss, r.val_bytes_per_token);
            if (sample) train_sample(&r);
            if ((validation || sample) && dist().size == 1 && stop_signal) r.stop = true;
            if (r.stop)
                return train_end(&r, stop_at_eval(&r, step, validation, sample, checkpointed == step, rng_before));
            if (last) break;

            // one optimizer step (train/step.h): this rank's micro-batches forward and backward, the gradients
            // accumulating; then the ranks' sum, clipping and the update
            StepWork w = step_begin(&r, step);
            for (int m = 0; m < r.micro; m++) {
                if (!step_batch(&r, &w, m)) continue;  // another rank's micro-batch
                w.s.loss += model_forward(&r.model, w.x.data(), w.y.data(), r.B, r.T) / r.micro;
                step_after_forward(&r, &w);
                model_backward(&r.model, 1.0 / r.micro);
            }
            StepResult result = step_end(&r, &w);
            if (result.skipped) report_skip(result, r.o.max_skips);  // stops a run that is not recovering
            report_step(&r.log, result, r.o.steps, r.c.tc.router);

            const bool periodic = !r.o.checkpoint_dir.empty() && r.o.checkpoint_every > 0 &&
                                  (step + 1) % r.o.checkpoint_every == 0;
            // a signal reached this rank or another one during the step (step_end); one process also
            // stops for a signal that came after its step's check
            if (dist().size == 1 && stop_signal) r.stop = true;
            if (periodic) save_checkpoint(&r, step + 1, r.o.checkpoint_dir), checkpointed = step + 1;
            if (r.stop) return train_end(&r, stop_after_step(&r, step + 1, periodic));
        }
        return train_end(&r, 0);
    } catch (const std::bad_alloc&) {
        std::fprintf(stderr, "error: %sout of memory (a smaller --batch, --seq or model needs less)\n",
                     dist_who().c_str());
        dist_abort(1);  // with several ranks, the others may be waiting for this one
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s%s\n", dist_who().c_str(), e.what());
        dist_abort(1);
        return 1;
    }
}
