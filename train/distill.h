// --distill TEACHER: a run that also learns from another model's
// probabilities on the same batches (knowledge distillation, temperature 1).
// Per token the objective is
//     (1 - w) CE(target) + w KL(q || p)
// with q the teacher's probabilities, p the model's and w --distill-weight;
// its gradient in the logits is p - (1 - w) onehot(target) - w q
// (cpu/crossentropy.h, distill_backward). The logged loss stays the
// cross-entropy, so runs with and without a teacher compare on it.
//
// Why: a transition (--transition) turns a trained MoT model into a routed
// one that computes something else; trained on the tokens alone, the routed
// model relearns from one target per token what the MoT model already
// predicts as a whole distribution. With the MoT model as the teacher it is
// pulled towards that distribution directly (README, "Transition tuning").
//
// The teacher is read like --load, runs on the trainer's device with the
// same batch shape, forward only, and never changes. Each rank distills its
// own micro-batches from its own whole copy, under --expert-parallel too:
// a forward on one micro-batch needs no other rank (its MoT groups lie in
// the micro-batch), so the teacher's experts are not sharded and its
// memory is a whole model's on every rank.
#pragma once
#include <string>
#include <vector>

#include "common/config.h"
#include "common/model_file.h"
#include "train/model.h"
#include "train/options.h"

struct Teacher {
    bool on = false;
    double weight = 0;  // w
    Model model;
};

// The options, before any model is read: --distill-weight means nothing
// without --distill.
inline void distill_check_options(const Options& o) {
    if (o.distill.empty()) {
        if (given(o, "--distill-weight")) fail("--distill-weight needs --distill: the model to distill from");
        return;
    }
    if (!(o.distill_weight > 0)) fail("--distill-weight 0: give a weight above 0, or leave --distill out");
}

// Reads the teacher and builds it on the student's device for batches of
// (B,T), after checking that it can predict the student's tokens.
inline void distill_setup(Teacher* t, const Options& o, const Model& student, int B, int T) {
    if (o.distill.empty()) return;
    Config c;
    std::vector<float> params;
    model_file_load(o.distill, &c, &params);
    if (c.V != student.cfg.V)
        fail(strf("--distill %s: its vocabulary has %d tokens, the model being trained %d", o.distill.c_str(), c.V,
                  student.cfg.V));
    if (T > c.maxT)
        fail(strf("--distill %s: --seq %d is above its maximum sequence length %d", o.distill.c_str(), T, c.maxT));
    if (batch_in_groups(c) && B % c.mot.G != 0)
        fail(strf("--distill %s: --batch %d is not divisible by its group %d (it has MoT layers)", o.distill.c_str(),
                  B, c.mot.G));
    model_build(&t->model, c, student.on_gpu ? "cuda" : "cpu", B, T, params.data(), student.cpu.bf16);
    t->on = true;
    t->weight = o.distill_weight;
    std::printf("distill: from %s (%.2fM parameters), weight %g: the objective is %g x cross-entropy + %g x "
                "KL(its probabilities || the model's)\n",
                o.distill.c_str(), num_params(c) / 1e6, t->weight, 1 - t->weight, t->weight);
}

// The teacher's forward on the micro-batch the student just ran, and the
// student's next backward told to distill from it.
inline void distill_forward(Teacher* t, Model* student, const int* inputs, const int* targets, int B, int T) {
    if (!t->on) return;
    model_forward(&t->model, inputs, targets, B, T);
    model_set_teacher(student, &t->model, t->weight);
}
