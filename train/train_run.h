// What a training run holds (TrainRun), and how a signal asks it to stop.
// The steps of a run (train/run.h lists them) each take a TrainRun and fill
// in their part of it: the checks (train/checks.h), the setup
// (train/setup.h, with --transition's steps in train/transition_setup.h),
// the step (train/step.h) and the rest of the run (train/run.h). Held apart from them
// so that each includes it without including the others; train/run.h
// includes them all.
#pragma once
#include <signal.h>
#include <unistd.h>

#include <csignal>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/rng.h"
#include "data/dataloader.h"
#include "tokenizer/bpe.h"
#include "train/distill.h"
#include "train/log.h"
#include "train/model.h"
#include "train/options.h"
#include "train/parallel.h"
#include "train/state.h"
#include "train/threads.h"

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

// Everything a run holds, filled in by the steps of train/run.h in order.
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
    double flops_per_step = 0;  // model FLOPs of one optimizer step over all ranks (common/layout.h)
    double peak_flops = 0;      // one device's peak (for MFU)
    ThreadTuner tuner;
    int consecutive_skips = 0;
    // with --transition: the loss before the first update, with the MoT layers and as token choice
    bool transition_measured = false;
    double transition_mot_loss = 0, transition_loss = 0;
    Teacher teacher;  // --distill (train/distill.h)
};
