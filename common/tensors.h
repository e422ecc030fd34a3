// The named tensors of a model, shared by the CPU and GPU paths: pointer
// fields into the one allocation of the parameters (Weights, LayerWeights)
// and of the activations (Acts, LayerActs; the integer ones, indices, in one
// of their own), how each parameter starts (Init) and whether the backward
// pass adds into an activation's gradient (GradUse). Which of them a model
// has, in which order and of which shape, is common/layout.h's.
//
// Shapes: B batch, T positions, C d_model, NH heads, Vp padded vocabulary,
// S = B/G groups per position, E experts, f expert width.
#pragma once
#include <vector>

// How a parameter starts (docs/design.md section 2.3): matrices N(0, 0.02), the
// output projections of a residual branch N(0, 0.02/sqrt(2L)), LayerNorm
// weights 1, biases 0.
enum Init { INIT_ZERO, INIT_ONE, INIT_NORMAL, INIT_RESIDUAL };

// Parameter pointers of one transformer block. Only the FFN kind's own
// tensors are set; the others stay null.
template <typename real>
struct LayerWeights {
    real *ln1w, *ln1b;          // (C), (C)
    real *qkvw, *qkvb;          // (3C, C), (3C)
    real *attprojw, *attprojb;  // (C, C), (C)
    real *ln2w, *ln2b;          // (C), (C)
    real *fcw = nullptr, *fcb = nullptr;          // DENSE: (dff, C), (dff)
    real *fcprojw = nullptr, *fcprojb = nullptr;  // DENSE: (C, dff), (C)
    real *wc = nullptr;  // MOT controller, TOKEN_CHOICE router (E, C)
    real *bc = nullptr;  // TOKEN_CHOICE threshold routers: each expert's bias (E)
    real *w1 = nullptr;  // MOT, TOKEN_CHOICE expert input weights (E, f, C)
    real *w2 = nullptr;  // MOT, TOKEN_CHOICE expert output weights (E, C, f)
};

template <typename real>
struct Weights {
    real* wte;  // (Vp, C) token embedding, also the tied LM head
    real* wpe;  // (maxT, C) position embedding
    std::vector<LayerWeights<real>> layer;  // (L)
    real *lnfw, *lnfb;  // (C), (C) final LayerNorm
};

// Everything the forward pass of one block keeps for the backward pass. The
// backward pass carves a second block the same way for the gradients of
// these activations (llm.c's layout), so every d<name> has <name>'s shape.
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
    real *z = nullptr;  // MOT, TOKEN_CHOICE: (B,T,E) controller / router logits
    real *m = nullptr;  // MOT: (B,T,E) mixing weights, softmax over each group;
                        // TOKEN_CHOICE: (B,T,E) router probabilities, softmax over the experts
    real *u = nullptr;  // MOT: (S,T,E,C) one mixed token per expert and group;
                        // TOKEN_CHOICE: (E,cap,C) each expert's tokens
    real *p = nullptr;  // MOT: (S,T,E,f) expert pre-activations; TOKEN_CHOICE: (E,cap,f), under expert
                        // parallelism (N,El,cap,f) (this member's experts on every member's buffers)
    real *a = nullptr;  // MOT: (S,T,E,f) gelu(p); TOKEN_CHOICE: (E,cap,f)
    real *y = nullptr;  // MOT: (S,T,E,C) expert outputs; TOKEN_CHOICE: (E,cap,C)
    // MOT under expert parallelism (cpu/fast/expert_parallel.h), N = expert_shards, El = E/N; p and a
    // are then (N*S*T,El,f), the same size. The mixed-token exchange:
    real *ul = nullptr;    // (N*S*T,El,C) the mixed tokens of this member's experts, from every member;
                           // TOKEN_CHOICE: (N,El,cap,C) the buffers of this member's experts, from every member
    real *yl = nullptr;    // (N*S*T,El,C) this member's experts' outputs; TOKEN_CHOICE: (N,El,cap,C)
    real *xbuf = nullptr;  // (S*T*E*C) the exchange's scratch (MOT only: token choice's buffers are the blocks)
    // the input-token exchange (z, m then (N,B,T,El); u, y (N*S*T,El,C)):
    real *xall = nullptr;  // (N,B,T,C) every member's inputs
    real *oall = nullptr;  // (N,B,T,C) this member's experts' part of every member's outputs
    // integer activations (visit_int_acts), carved from the model's integer block; they have no gradient
    int *route = nullptr;   // TOKEN_CHOICE: (B,T,k) the expert of each choice, -1 none
    int *slot = nullptr;    // TOKEN_CHOICE: (B,T,k) its row in the expert's buffer, -1 when dropped or none
    real *load = nullptr;   // TOKEN_CHOICE: (E) tokens each expert took
    real *first = nullptr;  // TOKEN_CHOICE: (E) f_e, the share of tokens whose first choice is e
    real *aux = nullptr;    // TOKEN_CHOICE: (1) the load-balancing loss
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

// Whether the backward pass adds into an activation's gradient (so it must
// start at zero) or overwrites it whole before reading it (scratch: zeroing
// it would be wasted work).
enum GradUse { GRAD_ADDS, GRAD_OVERWRITES };
