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
// The pieces live in train/: options.h (every option and default), run.h
// (a training run, step by step: the loop, checkpoints, train()) with what a
// run holds (train_run.h), its checks (checks.h), its setup (setup.h,
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
        return train(o);
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
