// Activation layout, shared by the CPU and GPU paths: everything the forward
// pass keeps for the backward pass, in one allocation carved into named
// tensors. The backward pass carves a second block the same way for the
// gradients of these activations (llm.c's layout), so every d<name> buffer
// has the shape of <name>.
//
// Shapes use B batch, T positions, C d_model, NH heads, S = B/G groups per
// position, E experts, f expert width, Vp padded vocab.
#pragma once
#include <string>
#include <vector>

#include "config.h"

template <typename real>
struct LayerActs {
    real *ln1, *ln1_mean, *ln1_rstd;  // (B,T,C), (B,T), (B,T)
    real *qkv;                        // (B,T,3C)
    real *preatt, *att;               // (B,NH,T,T) scores before / after softmax
    real *atty;                       // (B,T,C) attention output before projection
    real *attproj;                    // (B,T,C)
    real *res2;                       // (B,T,C) residual after attention
    real *ln2, *ln2_mean, *ln2_rstd;  // (B,T,C), (B,T), (B,T)
    real *fch = nullptr, *fch_gelu = nullptr;  // DENSE: (B,T,dff) pre / post GELU
    real *z = nullptr;  // MOT: (B,T,E) controller logits
    real *m = nullptr;  // MOT: (B,T,E) mixing weights, softmax over each group
    real *u = nullptr;  // MOT: (S,T,E,C) one mixed token per expert and group
    real *p = nullptr;  // MOT: (S,T,E,f) expert pre-activations
    real *a = nullptr;  // MOT: (S,T,E,f) gelu(p)
    real *y = nullptr;  // MOT: (S,T,E,C) expert outputs
    real *ffn;          // (B,T,C) FFN output
    real *res3;         // (B,T,C) residual after the FFN: the block's output
};

template <typename real>
struct Acts {
    real* encoded;                       // (B,T,C) wte[tok] + wpe[pos]
    std::vector<LayerActs<real>> layer;  // (L)
    real *lnf, *lnf_mean, *lnf_rstd;     // (B,T,C), (B,T), (B,T)
    real* logits;                        // (B,T,Vp)
    real* probs;                         // (B,T,Vp) softmax of the first V logits
    real* losses;                        // (B,T) per-token cross-entropy
};

// Calls fn(slot, numel) for every activation tensor, in a fixed order.
template <typename real, typename Fn>
void visit_acts(Acts<real>& a, const Config& c, int B, int T, Fn fn) {
    size_t BT = (size_t)B * T, C = c.C, S = B / c.G;
    a.layer.resize(c.L);
    fn(a.encoded, BT * C);
    for (int l = 0; l < c.L; l++) {
        LayerActs<real>& la = a.layer[l];
        fn(la.ln1, BT * C);
        fn(la.ln1_mean, BT);
        fn(la.ln1_rstd, BT);
        fn(la.qkv, BT * 3 * C);
        fn(la.preatt, (size_t)B * c.NH * T * T);
        fn(la.att, (size_t)B * c.NH * T * T);
        fn(la.atty, BT * C);
        fn(la.attproj, BT * C);
        fn(la.res2, BT * C);
        fn(la.ln2, BT * C);
        fn(la.ln2_mean, BT);
        fn(la.ln2_rstd, BT);
        if (c.kinds[l] == DENSE) {
            fn(la.fch, BT * c.dff);
            fn(la.fch_gelu, BT * c.dff);
        } else {
            fn(la.z, BT * c.E);
            fn(la.m, BT * c.E);
            fn(la.u, S * T * c.E * C);
            fn(la.p, S * T * c.E * c.f);
            fn(la.a, S * T * c.E * c.f);
            fn(la.y, S * T * c.E * C);
        }
        fn(la.ffn, BT * C);
        fn(la.res3, BT * C);
    }
    fn(a.lnf, BT * C);
    fn(a.lnf_mean, BT);
    fn(a.lnf_rstd, BT);
    fn(a.logits, BT * c.Vp);
    fn(a.probs, BT * c.Vp);
    fn(a.losses, BT);
}

inline size_t num_acts(const Config& c, int B, int T) {
    Acts<float> a;
    size_t n = 0;
    visit_acts(a, c, B, T, [&](float*&, size_t k) { n += k; });
    return n;
}

template <typename real>
Acts<real> carve_acts(real* base, const Config& c, int B, int T) {
    Acts<real> a;
    real* p = base;
    visit_acts(a, c, B, T, [&](real*& slot, size_t k) { slot = p; p += k; });
    return a;
}
