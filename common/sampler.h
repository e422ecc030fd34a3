// Drawing the next token from logits: temperature, then optional top-k,
// then a draw from the softmax of the first V logits.
#pragma once
#include <algorithm>
#include <cmath>
#include <vector>

#include "rng.h"

// temperature <= 0 means greedy (argmax); top_k <= 0 or >= V means no top-k.
template <typename real>
int sample_token(const real* logits,  // (V) of one position
                 int V, float temperature, int top_k, Rng* rng) {
    int best = 0;
    for (int v = 1; v < V; v++) if (logits[v] > logits[best]) best = v;
    if (temperature <= 0) return best;
    double cutoff = -INFINITY;  // logits below the k-th largest are dropped
    if (top_k > 0 && top_k < V) {
        std::vector<double> sorted(logits, logits + V);
        std::nth_element(sorted.begin(), sorted.begin() + (top_k - 1), sorted.end(), std::greater<double>());
        cutoff = sorted[top_k - 1];
    }
    double maxv = logits[best], sum = 0;
    std::vector<double> p(V, 0.0);
    for (int v = 0; v < V; v++) {
        if (logits[v] < cutoff) continue;
        p[v] = std::exp((logits[v] - maxv) / temperature);
        sum += p[v];
    }
    double r = rng_uniform(rng) * sum, acc = 0;
    for (int v = 0; v < V; v++) {
        acc += p[v];
        if (p[v] > 0 && acc > r) return v;
    }
    return best;
}
