// --transition's steps in a run's setup (train/setup.h calls them): the
// loaded MoT model's layers become token-choice layers (transition_kinds,
// from setup_model); the threshold routers are calibrated on training
// batches and the loss is measured before the first update, with the MoT
// layers and as token choice (from setup_device: transition_calibrate and
// transition_report on one process, transition_expert_parallel on the ranks
// of --expert-parallel). The arithmetic of the switch and the calibration is
// train/transition.h's; here is what a run does with it.
#pragma once
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "common/config.h"
#include "data/dataloader.h"
#include "train/dist.h"
#include "train/model.h"
#include "train/options.h"
#include "train/parallel.h"
#include "train/report.h"
#include "train/train_run.h"
#include "train/transition.h"

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
    const Config& mot_cfg = r->c;
    int router = router_kind(o.router.empty() ? "threshold" : o.router);
    int topk = o.topk;
    float cf = o.capacity_factor;
    if (router != ROUTER_SOFTMAX) {
        if (!given(o, "--topk")) topk = std::min(mot_cfg.E, std::max(1, 2 * mot_cfg.E / mot_cfg.mot.G));
        if (!given(o, "--capacity-factor")) cf = 1.0f;
    }
    if (topk > mot_cfg.E) fail(strf("--topk %d is above the model's %d experts", topk, mot_cfg.E));
    // the threshold router holds its calibrated firing rates unless told otherwise
    if (router == ROUTER_THRESHOLD && !given(o, "--router-balance")) r->o.router_balance = TRANSITION_ROUTER_BALANCE;
    r->before_transition = mot_cfg;
    r->c = transition_config(mot_cfg, router, o.router_temperature, topk, cf);
    config_validate(r->c);
    r->mot_params.swap(r->params);
    r->params = transition_params(r->before_transition, r->c, r->mot_params);
    std::printf("transition: the MoT layers become token-choice layers (router %s, k %d, capacity factor %g%s), "
                "the same tensors\n",
                router_name(r->c.tc.router), r->c.tc.topk, r->c.tc.capacity_factor,
                r->c.tc.router == ROUTER_THRESHOLD ? strf(", gate temperature %g", r->c.tc.router_tau).c_str() : "");
    if (o.router_balance > 0)
        std::printf("transition: each expert's bias is held at its calibrated firing rate 1/%d by a controller "
                    "(--router-balance %g), not trained\n",
                    mot_cfg.mot.G, o.router_balance);
}

inline void print_thresholds(const TrainRun* r, const std::vector<std::vector<float>>& q) {
    float lo = 1e30f, hi = -1e30f;
    for (auto& ql : q)
        for (float x : ql) lo = std::min(lo, x), hi = std::max(hi, x);
    std::printf("transition: thresholds from %d training batches: each expert fires for the top 1/%d of its "
                "controller logits (thresholds %.3f to %.3f)\n",
                r->o.calibration_batches, r->before_transition.mot.G, lo, hi);
}

// A threshold router's thresholds, from the MoT model's controller logits on
// the first --calibration-batches training batches (a copy of the loader:
// the run's data position stays).
inline void transition_calibrate(TrainRun* r) {
    if (r->c.tc.router == ROUTER_SOFTMAX) return;
    DataLoader loader = r->train_loader;
    std::vector<std::vector<int>> batches(r->o.calibration_batches, std::vector<int>(r->BT));
    std::vector<int> targets(r->BT);
    for (std::vector<int>& b : batches) dataloader_next(&loader, b.data(), targets.data());
    std::vector<std::vector<float>> q =
        calibrate_thresholds(r->before_transition, r->mot_params, r->c, &r->params, batches, r->B, r->T);
    print_thresholds(r, q);
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
    const Config& mot_cfg = r->before_transition;
    const int R = dist().size, rank = dist().rank, N = o.expert_parallel, El = mot_cfg.E / N;
    Model m;
    model_build(&m, parallel_member_config(mot_cfg, N, o.expert_exchange), "cpu", r->B, r->T,
                parallel_member_part(mot_cfg, N, r->mot_params).data());
    std::vector<float>().swap(r->mot_params);
    model_set_experts(&m, &r->par.exchange);
    if (r->c.tc.router != ROUTER_SOFTMAX) {
        // each MOT layer's logits of a batch: (B,T,E), or with the input-token exchange (N,B,T,El), the
        // logits of this rank's experts for the tokens of every member of its expert group
        const bool inputs = m.cfg.expert_inputs;
        const size_t BT = r->BT, per = BT * mot_cfg.E;
        std::vector<int> layers;
        for (int l = 0; l < mot_cfg.L; l++)
            if (mot_cfg.kinds[l] == MOT) layers.push_back(l);
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
        std::vector<std::vector<float>> q(layers.size(), std::vector<float>(mot_cfg.E));
        std::vector<float> all((size_t)R * rounds * per), bc;
        for (size_t j = 0; j < layers.size(); j++) {
            dist_all_gather(mine.data() + j * rounds * per, all.data(), rounds * per * sizeof(float),
                            "gathering the calibration's controller logits (--transition)", nullptr);
            for (int e = 0; e < mot_cfg.E; e++) {
                std::vector<float> v;
                for (int from = 0; from < R; from++)
                    for (int k = 0; k < rounds; k++) {
                        const float* z = all.data() + ((size_t)from * rounds + k) * per;
                        if (!inputs) {
                            if (k * R + from >= nb) continue;
                            for (size_t n = 0; n < BT; n++) v.push_back(z[n * mot_cfg.E + e]);
                            continue;
                        }
                        if (from % N != e / El) continue;
                        for (int s = 0; s < N; s++) {
                            if (k * R + from - from % N + s >= nb) continue;
                            for (size_t n = 0; n < BT; n++) v.push_back(z[((size_t)s * BT + n) * El + e % El]);
                        }
                    }
                q[j][e] = calibration_threshold(&v, mot_cfg.mot.G);
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
