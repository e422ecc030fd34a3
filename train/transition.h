// Transition tuning (README, "Transition tuning"): a trained MoT model becomes
// a sparse mixture of experts that decodes one sequence alone. Every MOT layer
// becomes a TOKEN_CHOICE layer holding the same wc, w1, w2.
//
// What the routed model computes depends on its router (cpu/token_choice.h).
// At a low temperature MoT's softmax over the group is nearly one-hot: each
// expert takes about one token of every group of G, the one whose controller
// logit z_e is the largest for it, and hands that token back nearly all of its
// output. So what decides is how a token's z_e compares with other tokens'
// z_e for the same expert, not with its own logits for other experts (which
// carry per-expert offsets): a softmax over the experts ranks the wrong way.
// The threshold router fires expert e for a token when z_e >= q_e, where q_e
// is the (1 - 1/G) quantile of expert e's logits over calibration tokens of
// the MoT model (bc_e = -q_e): each expert then takes 1/G of the tokens, as it
// did in MoT, about E/G experts per token, each on one whole token.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/layout.h"
#include "cpu/fast/kernels.h"
#include "cpu/gpt.h"

// The routed model's configuration: MOT layers become TOKEN_CHOICE with the
// router, its gate temperature (0: the MoT temperature), k and the capacity
// factor given.
inline Config transition_config(const Config& mot_cfg, int router, float router_tau, int topk, float capacity) {
    Config c = mot_cfg;
    for (int& k : c.kinds)
        if (k == MOT) k = TOKEN_CHOICE;
    c.tc.router = router;
    c.tc.router_tau = router_tau > 0 ? router_tau : mot_cfg.mot.tau;
    c.tc.topk = topk;
    c.tc.capacity_factor = capacity;
    return c;
}

// The routed model's parameters: every tensor of the MoT model under its
// name; the ones it did not have (the threshold routers' bc) zero.
inline std::vector<float> transition_params(const Config& mot_cfg, const Config& routed,
                                            const std::vector<float>& mot_params) {
    std::vector<TensorSpec> from = param_specs(mot_cfg);
    std::vector<float> out(num_params(routed), 0.0f);
    for (const TensorSpec& t : param_specs(routed))
        for (const TensorSpec& s : from)
            if (s.name == t.name) {
                std::copy(mot_params.begin() + s.offset, mot_params.begin() + s.offset + s.numel,
                          out.begin() + t.offset);
                break;
            }
    return out;
}

// The threshold of one expert from its controller logits v (all the
// calibration tokens', in any order; reordered): the (1 - 1/G) quantile, the
// value m = round(n/G) of the n logits are at or above.
inline float calibration_threshold(std::vector<float>* v, int G) {
    size_t n = v->size(), m = std::max<size_t>(1, (size_t)std::llround((double)n / G));
    std::nth_element(v->begin(), v->begin() + (n - m), v->end());
    return (*v)[n - m];
}

// Each expert's threshold q_e in every MOT layer: the (1 - 1/G) quantile of
// its controller logits over the calibration batches (each (B,T) tokens), the
// MoT model run on the CPU (the training kernels; a forward pass per batch):
// m = round(n/G) of its n logits are at or above q_e. Writes bc = -q into the
// routed parameters. Returns the thresholds, (layers of MOT, E) in order.
inline std::vector<std::vector<float>> calibrate_thresholds(const Config& mot_cfg, const std::vector<float>& mot_params,
                                                            const Config& routed, std::vector<float>* routed_params,
                                                            const std::vector<std::vector<int>>& batches, int B,
                                                            int T) {
    GPT<float, FastKernels> model;
    gpt_build(&model, mot_cfg);
    std::copy(mot_params.begin(), mot_params.end(), model.params_memory.begin());
    const int E = mot_cfg.E;
    std::vector<std::vector<std::vector<float>>> logits(mot_cfg.L, std::vector<std::vector<float>>(E));
    for (const std::vector<int>& inputs : batches) {
        gpt_forward(&model, inputs.data(), (const int*)nullptr, B, T);
        for (int l = 0; l < mot_cfg.L; l++) {
            if (mot_cfg.kinds[l] != MOT) continue;
            const float* z = model.acts.layer[l].z;
            for (size_t n = 0; n < (size_t)B * T; n++)
                for (int e = 0; e < E; e++) logits[l][e].push_back(z[n * E + e]);
        }
    }
    Weights<float> w = carve_weights(routed_params->data(), routed);
    std::vector<std::vector<float>> q;
    for (int l = 0; l < mot_cfg.L; l++) {
        if (mot_cfg.kinds[l] != MOT) continue;
        std::vector<float> ql(E);
        for (int e = 0; e < E; e++) {
            ql[e] = calibration_threshold(&logits[l][e], mot_cfg.mot.G);
            if (w.layer[l].bc) w.layer[l].bc[e] = -ql[e];
        }
        q.push_back(ql);
    }
    return q;
}
