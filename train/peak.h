// The CPU's peak FLOP rate, the denominator of model FLOP utilization (MFU)
// on the CPU (the model's FLOPs are counted in common/layout.h).
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "common/error.h"

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
