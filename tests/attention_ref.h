// Attention's products in double from given probabilities or scores'
// gradient, for tests that check a layer's products apart from its softmax
// (the bf16 attention of tests/test_bf16.cpp and tests/test_gpu_layers.cu).
#pragma once
#include <cmath>
#include <cstddef>
#include <vector>

// out (B,T,C) = att V, each head's (T,T) probabilities over its values.
inline std::vector<float> mix_from(const std::vector<float>& att, const std::vector<float>& inp, int B, int T, int C,
                                   int NH) {
    const int hs = C / NH;
    std::vector<float> out((size_t)B * T * C);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++)
                for (int i = 0; i < hs; i++) {
                    double o = 0;
                    for (int t2 = 0; t2 <= t; t2++)
                        o += (double)att[(((size_t)b * NH + h) * T + t) * T + t2] * inp[((size_t)b * T + t2) * 3 * C + 2 * C + h * hs + i];
                    out[((size_t)b * T + t) * C + h * hs + i] = (float)o;
                }
    return out;
}
// dinp (B,T,3C) with its q and k parts += scale dpreatt K and
// scale dpreatt^T Q (its v part left as it is).
inline std::vector<float> qk_grads_from(std::vector<float> dinp, const std::vector<float>& dpre,
                                        const std::vector<float>& inp, int B, int T, int C, int NH) {
    const int hs = C / NH;
    const double scale = 1.0 / std::sqrt((double)hs);
    std::vector<double> acc(dinp.begin(), dinp.end());
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++)
                for (int t2 = 0; t2 <= t; t2++) {
                    const double g = scale * dpre[(((size_t)b * NH + h) * T + t) * T + t2];
                    const size_t qt = ((size_t)b * T + t) * 3 * C + h * hs, kt2 = ((size_t)b * T + t2) * 3 * C + C + h * hs;
                    for (int i = 0; i < hs; i++) {
                        acc[qt + i] += g * inp[kt2 + i];
                        acc[kt2 + i] += g * inp[qt + i];
                    }
                }
    for (size_t i = 0; i < dinp.size(); i++) dinp[i] = (float)acc[i];
    return dinp;
}
