// Model FLOPs, counted explicitly, and the device peak they are compared to
// (model FLOP utilization, MFU).
#pragma once
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

// fp32 peak of this CPU as stated by its features: threads x FMA units (2
// on AVX-512 and AVX2 server cores) x vector lanes x 2 FLOPs x clock (from
// /proc/cpuinfo). A statement, not a measurement.
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
    if (mhz <= 0) mhz = 2000;  // unknown clock: assume 2 GHz and say so below
    int lanes = avx512 ? 16 : avx2 ? 8 : 4;
    double peak = threads * 2.0 * lanes * 2.0 * mhz * 1e6;
    if (how)
        *how = strf("%d threads x 2 FMA units x %d fp32 lanes x 2 x %.0f MHz = %.0f GFLOP/s", threads, lanes, mhz,
                    peak / 1e9);
    return peak;
}
