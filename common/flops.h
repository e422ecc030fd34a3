// Model FLOPs, counted explicitly, and the device peak they are compared to
// (model FLOP utilization, MFU).
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "config.h"

// Training FLOPs per token: 3x the forward (the backward computes two
// products for each forward product). Forward, per token:
//   attention block: qkv 2*3C^2, projection 2*C^2, scores and mixing
//                    2*2*C*(T+1)/2 (causal: on average (T+1)/2 keys)
//   DENSE FFN: 2*2*C*dff
//   MOT FFN: controller 2*C*E, merge 2*E*C, emit 2*E*C (each token joins one
//            group, whose E mixed tokens it feeds and reads), experts
//            2*2*C*f*E/G (each group runs E experts once for its G tokens)
//   LM head: 2*C*V
inline double model_flops_per_token(const Config& c, int T) {
    double C = c.C, fwd = 0;
    for (int l = 0; l < c.L; l++) {
        fwd += 2 * 4 * C * C + 2 * 2 * C * (T + 1) / 2.0;
        if (c.kinds[l] == DENSE)
            fwd += 2 * 2 * C * c.dff;
        else
            fwd += 3 * 2 * C * c.E + 2 * 2 * C * c.f * (double)c.E / c.G;
    }
    fwd += 2 * C * c.V;
    return 3 * fwd;
}

// The core clock in GHz, measured with a chain of dependent register adds
// (one cycle each): under a VM, /proc/cpuinfo shows only the nominal rate,
// while the cores run at their turbo clock. About 30 ms. 0 where unknown.
inline double measure_clock_ghz() {
    double best = 0;
#if defined(__x86_64__)
    for (int r = 0; r < 3; r++) {
        long n = 40000000, x = 0, one = 1;
        auto t0 = std::chrono::steady_clock::now();
        for (long i = 0; i < n; i += 8)
            __asm__ volatile("add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\t"
                             "add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0"
                             : "+r"(x) : "r"(one));
        double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        best = std::max(best, n / dt * 1e-9);
    }
#endif
    return best;
}

// fp32 peak of this CPU: threads x FMA units (2 on AVX-512 and AVX2 server
// cores) x vector lanes x 2 FLOPs x clock, the clock measured as above
// (else /proc/cpuinfo's). The same definition in train_mot and every bench.
inline double cpu_peak_flops(int threads, std::string* how) {
    double mhz = 0;
    bool avx512 = false, avx2 = false;
    if (FILE* fp = std::fopen("/proc/cpuinfo", "r")) {
        char line[4096];
        while (std::fgets(line, sizeof line, fp)) {
            if (mhz == 0 && std::strncmp(line, "cpu MHz", 7) == 0) std::sscanf(std::strchr(line, ':') + 1, "%lf", &mhz);
            if (std::strncmp(line, "flags", 5) == 0) {
                avx512 |= std::strstr(line, " avx512f") != nullptr;
                avx2 |= std::strstr(line, " avx2") != nullptr && std::strstr(line, " fma") != nullptr;
            }
        }
        std::fclose(fp);
    }
    double measured = measure_clock_ghz() * 1000;
    const char* source = "measured";
    if (measured > 0) mhz = measured;
    else source = mhz > 0 ? "/proc/cpuinfo" : "assumed";
    if (mhz <= 0) mhz = 2000;
    int lanes = avx512 ? 16 : avx2 ? 8 : 4;
    double peak = threads * 2.0 * lanes * 2.0 * mhz * 1e6;
    if (how)
        *how = strf("%d threads x 2 FMA units x %d fp32 lanes x 2 x %.0f MHz (%s) = %.0f GFLOP/s", threads, lanes,
                    mhz, source, peak / 1e9);
    return peak;
}
