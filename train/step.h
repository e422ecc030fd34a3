// What the training loop (main, mot.cu) computes each step: the validation
// loss (validate) and one optimizer step (train_step) over the ranks, each
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

// One optimizer step (step counts from 0): accumulated micro-batches,
// clipping, and the AdamW update unless the loss or gradient is not finite.
// Returns what it did, for report_step. With R ranks the step's R*A
// micro-batches are read in order by every rank; rank r computes
// micro-batch a*R + r at accumulation step a (docs/design.md section 11)
// and skips the others, so each rank's loader ends the step where one
// process's would.
inline StepResult train_step(TrainRun* r, int step) {
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
    s.mfu = r->flops_per_step / (s.ms / 1000.0) / r->peak_flops / R;  // of the R devices' peak
    if (R > 1) {
        s.exchange = parallel_sharded(r->par) ? "reduce-scatter, all-gather" : "all-reduce";
        s.comm_ms = r->par.comm_ms;
    }
    if (r->par.ep > 1) s.expert_ms = parallel_exchange_ms(r->par), s.expert_mb = parallel_exchange_bytes(r->par) / 1e6;
    return s;
}
