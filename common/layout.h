// Where every tensor lives, shared by the CPU and GPU paths: the parameters
// and the activations each sit in one allocation (the integer activations,
// indices, in one of their own), carved into the named tensors of
// common/tensors.h. visit_params(), visit_acts() and visit_int_acts() are
// the one place each order is written down; carving, the checkpoint
// (docs/design.md section 5), weight decay, the initialisation and the
// tests all go through them. Each block's feed-forward tensors are its
// kind's (common/ffn_kinds.h, the table of kinds).
//
// Shapes: B batch, T positions, C d_model, NH heads, Vp padded vocabulary,
// S = B/G groups per position, E experts, f expert width.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "config.h"
#include "ffn_kinds.h"
#include "tensors.h"

// ---------------------------------------------------------------- parameters

// Calls fn(name, slot, numel, ndim, init) for every parameter tensor in
// checkpoint order. `slot` is a reference to the pointer in w, so carving is
// one visit.
template <typename real, typename Fn>
void visit_params(Weights<real>& w, const Config& c, Fn fn) {
    size_t C = c.C;
    w.layer.resize(c.L);
    fn("wte", w.wte, (size_t)c.Vp * C, 2, INIT_NORMAL);
    fn("wpe", w.wpe, (size_t)c.maxT * C, 2, INIT_NORMAL);
    for (int l = 0; l < c.L; l++) {
        LayerWeights<real>& lw = w.layer[l];
        std::string p = "h" + std::to_string(l) + ".";
        fn(p + "ln1w", lw.ln1w, C, 1, INIT_ONE);
        fn(p + "ln1b", lw.ln1b, C, 1, INIT_ZERO);
        fn(p + "qkvw", lw.qkvw, 3 * C * C, 2, INIT_NORMAL);
        fn(p + "qkvb", lw.qkvb, 3 * C, 1, INIT_ZERO);
        fn(p + "attprojw", lw.attprojw, C * C, 2, INIT_RESIDUAL);
        fn(p + "attprojb", lw.attprojb, C, 1, INIT_ZERO);
        fn(p + "ln2w", lw.ln2w, C, 1, INIT_ONE);
        fn(p + "ln2b", lw.ln2b, C, 1, INIT_ZERO);
        with_ffn_kind(c.kinds[l], [&](auto kind) { kind.params(lw, c, p, fn); });
    }
    fn("lnfw", w.lnfw, C, 1, INIT_ONE);
    fn("lnfb", w.lnfb, C, 1, INIT_ZERO);
}

// Points every tensor of w into one block starting at base (host or device).
template <typename real>
Weights<real> carve_weights(real* base, const Config& c) {
    Weights<real> w;
    real* p = base;
    visit_params(w, c, [&](const std::string&, real*& slot, size_t n, int, Init) { slot = p; p += n; });
    return w;
}

struct TensorSpec {
    std::string name;
    size_t offset, numel;  // in elements, into the one parameter block
    int ndim;              // weight decay applies to ndim >= 2
    Init init;
};

inline std::vector<TensorSpec> param_specs(const Config& c) {
    std::vector<TensorSpec> specs;
    Weights<float> w;
    size_t offset = 0;
    visit_params(w, c, [&](const std::string& name, float*&, size_t n, int ndim, Init init) {
        specs.push_back({name, offset, n, ndim, init});
        offset += n;
    });
    return specs;
}

// Expert parallelism: what member `index` of an expert group holds (a config
// with expert_shards N) of the whole model's parameters (expert_shards 1),
// tensor by tensor in checkpoint order. The experts lead every tensor with
// an expert axis, so the member's part of such a tensor (smaller in its
// layout) is the contiguous slice [index*n, (index+1)*n) of the whole
// tensor's N*n; every other tensor it holds whole. Calls
// fn(offset in the whole model, offset in the member's, numel, sliced).
template <typename Fn>
void for_each_expert_slice(const Config& member, int index, Fn fn) {
    Config whole = member;
    whole.expert_shards = 1;
    std::vector<TensorSpec> ws = param_specs(whole), ms = param_specs(member);
    for (size_t i = 0; i < ms.size(); i++) {
        bool sliced = ms[i].numel != ws[i].numel;
        fn(ws[i].offset + (sliced ? (size_t)index * ms[i].numel : 0), ms[i].offset, ms[i].numel, sliced);
    }
}

inline size_t num_params(const Config& c) {
    size_t n = 0;
    for (const TensorSpec& s : param_specs(c)) n += s.numel;
    return n;
}

// ---------------------------------------------------------------- activations

// Calls fn(slot, numel, grad_use) for every activation tensor of a (B,T)
// batch, in a fixed order; `decoding`: for a decoder's one token per sequence.
template <typename real, typename Fn>
void visit_acts(Acts<real>& a, const Config& c, int B, int T, Fn fn, bool decoding = false) {
    size_t BT = (size_t)B * T, C = c.C, att = (size_t)B * c.NH * T * T;
    a.layer.resize(c.L);
    fn(a.encoded, BT * C, GRAD_ADDS);
    for (int l = 0; l < c.L; l++) {
        LayerActs<real>& la = a.layer[l];
        fn(la.ln1, BT * C, GRAD_ADDS);
        fn(la.ln1_mean, BT, GRAD_ADDS);
        fn(la.ln1_rstd, BT, GRAD_ADDS);
        fn(la.qkv, BT * 3 * C, GRAD_ADDS);
        fn(la.preatt, att, GRAD_OVERWRITES);
        fn(la.att, att, GRAD_OVERWRITES);
        fn(la.atty, BT * C, GRAD_ADDS);
        fn(la.attproj, BT * C, GRAD_ADDS);
        fn(la.res2, BT * C, GRAD_ADDS);
        fn(la.ln2, BT * C, GRAD_ADDS);
        fn(la.ln2_mean, BT, GRAD_ADDS);
        fn(la.ln2_rstd, BT, GRAD_ADDS);
        with_ffn_kind(c.kinds[l], [&](auto kind) { kind.acts(la, c, B, T, fn, decoding); });
        fn(la.ffn, BT * C, GRAD_ADDS);
        fn(la.res3, BT * C, GRAD_ADDS);
    }
    fn(a.lnf, BT * C, GRAD_ADDS);
    fn(a.lnf_mean, BT, GRAD_ADDS);
    fn(a.lnf_rstd, BT, GRAD_ADDS);
    fn(a.logits, BT * c.Vp, GRAD_ADDS);
    fn(a.probs, BT * c.Vp, GRAD_OVERWRITES);  // its gradient is never used
    fn(a.losses, BT, GRAD_ADDS);
}

inline size_t num_acts(const Config& c, int B, int T, bool decoding = false) {
    Acts<float> a;
    size_t n = 0;
    visit_acts(a, c, B, T, [&](float*&, size_t k, GradUse) { n += k; }, decoding);
    return n;
}

template <typename real>
Acts<real> carve_acts(real* base, const Config& c, int B, int T, bool decoding = false) {
    Acts<real> a;
    real* p = base;
    visit_acts(a, c, B, T, [&](real*& slot, size_t k, GradUse) { slot = p; p += k; }, decoding);
    return a;
}

// Calls fn(slot, numel) for every integer activation of a (B,T) batch (the
// kinds' int_acts: indices such as token choice's routing), in a fixed
// order. They live in an integer block of their own beside the real-valued
// one and have no gradient: the backward pass reads them as constants.
template <typename real, typename Fn>
void visit_int_acts(Acts<real>& a, const Config& c, int B, int T, Fn fn, bool decoding = false) {
    a.layer.resize(c.L);
    for (int l = 0; l < c.L; l++)
        with_ffn_kind(c.kinds[l], [&](auto kind) { kind.int_acts(a.layer[l], c, B, T, fn, decoding); });
}

inline size_t num_int_acts(const Config& c, int B, int T, bool decoding = false) {
    Acts<float> a;
    size_t n = 0;
    visit_int_acts(a, c, B, T, [&](int*&, size_t k) { n += k; }, decoding);
    return n;
}

// Points a's integer activations into one block starting at base (host or
// device), of num_int_acts ints.
template <typename real>
void carve_int_acts(Acts<real>* a, int* base, const Config& c, int B, int T, bool decoding = false) {
    int* p = base;
    visit_int_acts(*a, c, B, T, [&](int*& slot, size_t k) { slot = p; p += k; }, decoding);
}

// The model's FLOPs per token of training: 3x the forward (the backward
// computes two products for each forward product). Forward, per token:
//   attention block: qkv 2*3C^2, projection 2*C^2, scores and mixing
//                    2*2*C*(T+1)/2 (causal: on average (T+1)/2 keys)
//   feed-forward: the kind's flops()
//   LM head: 2*C*V
inline double model_flops_per_token(const Config& c, int T) {
    double C = c.C, fwd = 0;
    for (int l = 0; l < c.L; l++) {
        fwd += 2 * 4 * C * C + 2 * 2 * C * (T + 1) / 2.0;
        with_ffn_kind(c.kinds[l], [&](auto kind) { fwd += kind.flops(c); });
    }
    fwd += 2 * C * c.V;
    return 3 * fwd;
}
