// A small deterministic random number generator (xorshift64*, seeded through
// splitmix64), the same on every platform and compiler, so a seed means the
// same weights, batches and samples everywhere. Its whole state is one
// uint64, which the training state saves for bit-exact resume.
#pragma once
#include <cmath>
#include <cstdint>

struct Rng {
    uint64_t state;
};

inline Rng rng_seed(uint64_t seed) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ull;  // splitmix64: spreads small seeds
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return Rng{z ? z : 1};  // xorshift must not start at 0
}

inline uint64_t rng_u64(Rng* r) {
    r->state ^= r->state >> 12;
    r->state ^= r->state << 25;
    r->state ^= r->state >> 27;
    return r->state * 0x2545F4914F6CDD1Dull;
}

// uniform in [0, 1) with 24 random bits, exact in float
inline float rng_uniform(Rng* r) { return (rng_u64(r) >> 40) * (1.0f / 16777216.0f); }

// standard normal by Box-Muller (one value per call; simple over fast)
inline double rng_normal(Rng* r) {
    double u1 = ((rng_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740993.0);  // (0, 1]
    double u2 = (rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}
