// tests/rng.h: the one random number generator of the test suites.
//
// splitmix64, deliberately independent of common/rng.h (the program's own
// generator), so that a bug there cannot hide in the test data. Every draw is
// a fixed function of the seed: the same seed gives the same data on every
// machine and compiler.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

struct TestRng {
    uint64_t s;
    explicit TestRng(uint64_t seed) : s(seed) {}
    uint64_t next() {
        uint64_t z = (s += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    double uniform() { return (next() >> 11) * (1.0 / 9007199254740992.0); }  // [0, 1)
    double sym() { return 2 * uniform() - 1; }                                // [-1, 1)
    int below(int k) { return (int)(next() % (uint64_t)k); }                  // 0 .. k-1

    // n values offset + scale * sym(): uniform in [offset - scale, offset + scale)
    std::vector<double> doubles(size_t n, double scale = 1.0, double offset = 0.0) {
        std::vector<double> v(n);
        for (double& x : v) x = offset + scale * sym();
        return v;
    }
    // the same draws rounded to float
    std::vector<float> floats(size_t n, double scale = 1.0, double offset = 0.0) {
        std::vector<float> v(n);
        for (float& x : v) x = (float)(offset + scale * sym());
        return v;
    }
    // n token ids, uniform in 0 .. V-1
    std::vector<int> tokens(size_t n, int V) {
        std::vector<int> v(n);
        for (int& x : v) x = below(V);
        return v;
    }
};
