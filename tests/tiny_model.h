// The tiny model the whole-model suites share, and weights drawn wider than
// the training init (N(0, 0.02)) so that gradients stand well above the
// finite-difference noise floor and the sequences of a batch diverge.
#pragma once
#include <vector>

#include "cpu/gpt.h"
#include "tests/gradcheck.h"

// V 11 (padded to 64), maxT 8, NH 2, C 8, dff 16, E 4, G 2, f 8; one layer per kind.
inline Config tiny_config(std::vector<int> kinds, float tau = 1.0f) {
    Config c;
    c.V = 11; c.Vp = 64; c.maxT = 8; c.L = (int)kinds.size(); c.NH = 2; c.C = 8;
    c.dff = 16; c.E = 4; c.G = 2; c.f = 8; c.tau = tau;
    c.kinds = kinds;
    return c;
}

// matrices uniform in +-scale, biases +-0.1, LayerNorm weights 1 +- 0.2
template <typename real>
void randomize_params(GPT<real>* model, uint64_t seed, double scale) {
    TestRng r(seed);
    for (const TensorSpec& s : param_specs(model->cfg)) {
        real* p = model->params_memory.data() + s.offset;
        bool lnw = s.init == INIT_ONE;  // LayerNorm weights
        for (size_t i = 0; i < s.numel; i++)
            p[i] = real(s.ndim >= 2 ? scale * r.sym() : lnw ? 1.0 + 0.2 * r.sym() : 0.1 * r.sym());
    }
}
