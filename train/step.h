// What the training loop (main, mot.cu) computes each step: the validation
// loss (validate) and one optimizer step (step_begin, step_batch,
// step_after_forward, step_end around the passes) over the ranks, each
// agreeing across the ranks on whether a stop signal came. They return what
// they computed; train/report.h prints and logs it.
#pragma once
#include <cmath>
#include <vector>

#include "common/clock.h"
#include "common/schedule.h"
#include "data/dataloader.h"
#include "train/dist.h"
#include "train/distill.h"
#include "train/model.h"
#include "train/parallel.h"
#include "train/report.h"
#include "train/threads.h"
#include "train/train_run.h"

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

// One optimizer step (step counts from 0), in three parts around the
// passes, which main (mot.cu) calls in the open, llm.c's way:
//
//   StepWork w = step_begin(r, step);
//   for (int m = 0; m < r->micro; m++) {
//       if (!step_batch(r, &w, m)) continue;      // another rank's micro-batch
//       w.s.loss += model_forward(&r->model, w.x, w.y, B, T) / r->micro;
//       step_after_forward(r, &w);                // distillation, aux loss, routing counts
//       model_backward(&r->model, 1.0 / r->micro);
//   }
//   StepResult s = step_end(r, &w);              // the ranks' gradients, clipping, AdamW
//
// accumulating micro-batches, then clipping and the AdamW update unless the
// loss or gradient is not finite. step_end returns what the step did, for
// report_step. With R ranks the step's R*A micro-batches are read in order
// by every rank; rank r computes micro-batch a*R + r at accumulation step a
// (docs/design.md section 11) and skips the others, so each rank's loader
// ends the step where one process's would.

// A step under way: what it has computed so far and its micro-batch.
struct StepWork {
    int step = 0;                // 0-based
    StepResult s;                // the result so far (s.loss: the mean over the step's micro-batches)
    std::vector<int> x, y;       // (B,T) the current micro-batch's inputs and targets
    std::vector<double> fires;   // --router-balance: (TOKEN_CHOICE layers, E) tokens each expert fired for
    std::vector<double> routed;  // the step's routing counts (model_add_router_counts); empty: no router
    double t0 = 0;               // when the step began (ms)
};

// The start of step `step`: its threads, clock and counters. The gradients
// are zero here: the last update left them so (or model_build, or a skipped
// step).
inline StepWork step_begin(TrainRun* r, int step) {
    StepWork w;
    w.step = step;
    w.s.step = step + 1;
    w.s.ranks = dist().size;
    w.x.resize((size_t)r->BT);
    w.y.resize((size_t)r->BT);
    w.s.threads = r->o.threads > 0 ? r->o.threads : tuner_next(&r->tuner);
    w.t0 = now_ms();
    parallel_exchange_reset(&r->par);
    w.routed.assign(router_counts_size(r->c), 0.0);
    return w;
}

// Micro-batch m of the step: this rank's (m % R == rank), read into w->x
// and w->y, returns true; another rank's, skipped in the loader, false.
inline bool step_batch(TrainRun* r, StepWork* w, int m) {
    if (m % dist().size != dist().rank) {
        dataloader_skip(&r->train_loader);
        return false;
    }
    dataloader_next(&r->train_loader, w->x.data(), w->y.data());
    return true;
}

// After a micro-batch's forward, before its backward: the teacher's
// probabilities (--distill), the aux loss, the routing counts.
inline void step_after_forward(TrainRun* r, StepWork* w) {
    distill_forward(&r->teacher, &r->model, w->x.data(), w->y.data(), r->B, r->T);
    w->s.aux_loss += model_aux_loss(r->model) / r->micro;
    if (r->o.router_balance > 0) model_count_fires(&r->model, &w->fires);
    if (!w->routed.empty()) model_add_router_counts(&r->model, &w->routed);
}

// The end of the step, after every micro-batch's backward: the ranks'
// gradients and losses summed, the stop check, the norm, and the update
// (or the skip of a non-finite one). Returns what the step did.
inline StepResult step_end(TrainRun* r, StepWork* w) {
    const Options& o = r->o;
    const int step = w->step;
    const bool balance = o.router_balance > 0;
    StepResult& s = w->s;
    if (balance) {
        model_zero_router_bias_grads(&r->model);
        w->fires.resize((size_t)count_kind(r->c, TOKEN_CHOICE) * r->c.E, 0.0);  // a rank with no micro-batch
        dist_sum(w->fires.data(), w->fires.size(), "the routers' fire counts' all-reduce");
    }
    if (!w->routed.empty()) {
        // over every rank's micro-batches, as the loss
        dist_sum(w->routed.data(), w->routed.size(), "the routing counts' all-reduce");
        s.routing = router_stats(r->c, w->routed);
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
            s.rate_err = model_router_balance(&r->model, &bc, w->fires, (double)(r->BT * r->micro), o.router_balance);
        r->consecutive_skips = 0;
    } else {
        model_zero_grad(&r->model);  // the skipped update did not consume them
        s.skipped = true;
        r->state.skipped++;
        r->consecutive_skips++;
    }
    s.skipped_total = (long long)r->state.skipped;
    s.skipped_in_a_row = r->consecutive_skips;
    s.ms = now_ms() - w->t0;
    s.tuned_from = r->tuner.current;
    tuner_record(&r->tuner, s.ms);
    s.tuned_to = r->tuner.current;
    s.tok_per_s = (double)(r->BT * r->micro) / (s.ms / 1000.0);
    s.mfu = r->flops_per_step / (s.ms / 1000.0) / r->peak_flops / s.ranks;  // of the R devices' peak
    if (s.ranks > 1) {
        s.exchange = parallel_sharded(r->par) ? "reduce-scatter, all-gather" : "all-reduce";
        s.comm_ms = r->par.comm_ms;
    }
    if (r->par.ep > 1) s.expert_ms = parallel_exchange_ms(r->par), s.expert_mb = parallel_exchange_bytes(r->par) / 1e6;
    return s;
}
