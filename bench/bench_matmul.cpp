// bench/bench_matmul.cpp: cpu/fast/sgemm.h vs OpenBLAS at every GEMM shape of one
// training step of the bench model (L 4, C 256, NH 4, T 128, B 16, V 4096,
// dense dff 1024, MoT E 32, G 8, f 256 -> B*T = 2048 rows, S*T = 256 groups).
// OpenBLAS is linked here only, as a yardstick; the engine never links it.
//   g++ -std=c++17 -O3 -march=native -fopenmp -I. bench/bench_matmul.cpp -o bench_matmul -lopenblas
//   env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ./bench_matmul
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include <cblas.h>
#include <omp.h>

#include "train/peak.h"
#include "cpu/fast/sgemm.h"

extern "C" char* openblas_get_corename(void);
extern "C" char* openblas_get_config(void);
extern "C" void openblas_set_num_threads(int);

static double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// one row of the table: a (strided-batched) product
struct Shape {
    const char* name;
    bool tA, tB;
    int M, N, K;
    int lda, ldb, ldc;
    long long sA, sB, sC;  // batch strides
    int batch;
    float beta;
};

// a product on contiguous per-product storage (the plain row-major leading dims)
static Shape plain(const char* name, bool tA, bool tB, int M, int N, int K, float beta, int batch = 1) {
    int lda = tA ? M : K, ldb = tB ? K : N;
    return {name, tA, tB, M, N, K, lda, ldb, N, (long long)M * K, (long long)K * N,
            (long long)M * N, batch, beta};
}

// elements spanned by a batched operand: rows x ld of the last product + offset
static size_t span(int rows, int ld, long long stride, int batch) {
    return (size_t)(batch - 1) * stride + (size_t)rows * ld + 64;
}

static void run_ours(const Shape& s, const float* A, const float* B, float* C) {
    if (s.batch == 1)
        fast::sgemm(s.tA, s.tB, s.M, s.N, s.K, 1.0f, A, s.lda, B, s.ldb, s.beta, C, s.ldc);
    else
        fast::sgemm_strided_batched(s.tA, s.tB, s.M, s.N, s.K, 1.0f, A, s.lda, s.sA, B, s.ldb, s.sB,
                                    s.beta, C, s.ldc, s.sC, s.batch);
}

static void run_blas(const Shape& s, const float* A, const float* B, float* C) {
    for (int b = 0; b < s.batch; b++)
        cblas_sgemm(CblasRowMajor, s.tA ? CblasTrans : CblasNoTrans, s.tB ? CblasTrans : CblasNoTrans,
                    s.M, s.N, s.K, 1.0f, A + b * s.sA, s.lda, B + b * s.sB, s.ldb, s.beta,
                    C + b * s.sC, s.ldc);
}

// median seconds per call; each sample runs enough calls to last >= ~15 ms
template <typename F>
static double time_median(F f, int samples) {
    f();
    double t0 = now();
    f();
    double one = std::max(now() - t0, 1e-7);
    int inner = std::max(1, (int)(0.015 / one));
    std::vector<double> ts;
    for (int r = 0; r < samples; r++) {
        double t = now();
        for (int i = 0; i < inner; i++) f();
        ts.push_back((now() - t) / inner);
    }
    std::sort(ts.begin(), ts.end());
    return ts[ts.size() / 2];
}

// measured single-core fp32 FMA throughput (flops/s): 24 independent zmm FMA
// chains (latency 4 x 2 ports needs >= 8 in flight), in asm so nothing spills
static double measure_core_peak() {
#if defined(__AVX512F__) && defined(__x86_64__)
    long n = 20000000;
    double t = now();
    __asm__ volatile(
        "vxorps %%zmm0, %%zmm0, %%zmm0\n\t"
        "vxorps %%zmm30, %%zmm30, %%zmm30\n\t"
        "vxorps %%zmm31, %%zmm31, %%zmm31\n\t"
        "1:\n\t"
        ".irp r,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23\n\t"
        "vfmadd231ps %%zmm30, %%zmm31, %%zmm\\r\n\t"
        ".endr\n\t"
        "dec %0\n\t"
        "jnz 1b"
        : "+r"(n) : : "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
          "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16",
          "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm30", "xmm31");
    double dt = now() - t;
    return 20000000.0 * 24 * 16 * 2 / dt;
#else
    return 0.0;
#endif
}

int main() {
    const int BT = 2048, C = 256, T = 128, NH = 4, HS = C / NH, B = 16, V = 4096, DFF = 1024;
    const int E = 32, G = 8, F = 256, ST = (B / G) * T;
    int nt = omp_get_max_threads();
    openblas_set_num_threads(nt);
    printf("OpenBLAS core: %s | config: %s | threads: %d (ours: OpenMP %d)\n",
           openblas_get_corename(), openblas_get_config(), nt, nt);
    const char* ct = getenv("OPENBLAS_CORETYPE");
    const char* l2 = getenv("OPENBLAS_L2_SIZE");
    printf("env OPENBLAS_CORETYPE=%s OPENBLAS_L2_SIZE=%s\n", ct ? ct : "(unset)", l2 ? l2 : "(unset)");

    double ghz = measure_clock_ghz();  // train/peak.h
    double core_fma = measure_core_peak();
    int ncores = nt, fma_units = 2, vw = SG_VL;
    double peak = ncores * fma_units * vw * 2 * ghz * 1e9;
    double mhz = 0.0;  // what the kernel reports (the VM shows the nominal TSC rate)
    if (FILE* f = fopen("/proc/cpuinfo", "r")) {
        char line[256];
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "cpu MHz : %lf", &mhz) == 1 || sscanf(line, "cpu MHz\t: %lf", &mhz) == 1) break;
        fclose(f);
    }
    printf("clock %.2f GHz measured with a dependent-add chain (/proc/cpuinfo: %.0f MHz, nominal)\n",
           ghz, mhz);
    printf("peak = %d cores x %d FMA units x %d lanes x 2 flops x %.2f GHz = %.0f GFLOP/s\n",
           ncores, fma_units, vw, ghz, peak * 1e-9);
    printf("measured 1-core zmm FMA throughput: %.1f GFLOP/s = 2 FMA units at %.2f GHz (AVX-512 clock);"
           " x %d cores = %.0f GFLOP/s reachable\n\n",
           core_fma * 1e-9, core_fma / (fma_units * vw * 2 * 1e9), ncores, ncores * core_fma * 1e-9);

    std::vector<Shape> shapes;
    // linear y = x W^T (rows, out, in): forward NT, dinp NN, dW += TN with beta 1
    struct Lin { const char* fwd; const char* dx; const char* dw; int out, in; };
    const Lin lins[] = {
        {"qkv fwd", "qkv dinp", "qkv dW", 3 * C, C},
        {"attproj fwd", "attproj dinp", "attproj dW", C, C},
        {"fc fwd", "fc dinp", "fc dW", DFF, C},
        {"fcproj fwd", "fcproj dinp", "fcproj dW", C, DFF},
        {"lmhead fwd", "lmhead dinp", "lmhead dW", V, C},
        {"mot ctrl fwd", "mot ctrl dinp", "mot ctrl dW", E, C},
    };
    for (const Lin& l : lins) {
        shapes.push_back(plain(l.fwd, false, true, BT, l.out, l.in, 0.0f));
        shapes.push_back(plain(l.dx, false, false, BT, l.in, l.out, 0.0f));
        shapes.push_back(plain(l.dw, true, false, l.out, l.in, BT, 1.0f));
    }
    // MoT experts, batch E: U (ST, E, C) slot e at offset e*C, rows E*C apart.
    // w1 (E, f, C) and w2 (E, C, f) have the same 256^3 shapes since f = C.
    shapes.push_back({"experts fwd", false, true, ST, F, C, E * C, C, E * F, C, (long long)F * C, F, E, 0.0f});
    shapes.push_back({"experts dinp", false, false, ST, C, F, E * F, C, E * C, F, (long long)F * C, C, E, 0.0f});
    shapes.push_back({"experts dW", true, false, F, C, ST, E * F, E * C, C, F, C, (long long)F * C, E, 1.0f});
    // merge/emit per group, batch ST: M (G, ST, E) rows ST*E apart, X/O (G, ST, C)
    // rows ST*C apart, U/Y (ST, E, C) contiguous per group
    shapes.push_back({"merge U=M^T X", true, false, E, C, G, ST * E, ST * C, C, E, C, (long long)E * C, ST, 0.0f});
    shapes.push_back({"emit O=M Y", false, false, G, C, E, ST * E, C, ST * C, E, (long long)E * C, C, ST, 0.0f});
    shapes.push_back({"emit dM=dO Y^T", false, true, G, E, C, ST * C, C, ST * E, C, (long long)E * C, E, ST, 0.0f});
    // attention per (b, h) on (B, NH, T, hs) tensors, batch B*NH
    shapes.push_back(plain("attn S=QK^T", false, true, T, T, HS, 0.0f, B * NH));
    shapes.push_back(plain("attn O=PV", false, false, T, HS, T, 0.0f, B * NH));
    shapes.push_back(plain("attn dV=P^T dO", true, false, T, HS, T, 0.0f, B * NH));

    printf("%-16s %-2s %5s %5s %5s %5s | %8s %8s %6s | %6s %6s\n", "product", "op", "M", "N", "K",
           "batch", "ours", "openblas", "ratio", "ours%", "blas%");
    printf("%-16s %-2s %5s %5s %5s %5s | %8s %8s %6s | %6s %6s\n", "", "", "", "", "", "", "GFLOP/s",
           "GFLOP/s", "", "peak", "peak");
    double tot_ours = 0, tot_blas = 0, tot_flops = 0;
    for (const Shape& s : shapes) {
        size_t nA = span(s.tA ? s.K : s.M, s.lda, s.sA, s.batch);
        size_t nB = span(s.tB ? s.N : s.K, s.ldb, s.sB, s.batch);
        size_t nC = span(s.M, s.ldc, s.sC, s.batch);
        std::vector<float> A(nA), Bm(nB), Cm(nC);
        for (size_t i = 0; i < nA; i++) A[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
        for (size_t i = 0; i < nB; i++) Bm[i] = (float)((i * 104729) % 1000) * 1e-3f - 0.5f;
        for (size_t i = 0; i < nC; i++) Cm[i] = 0.0f;
        double flops = 2.0 * s.M * s.N * s.K * s.batch;
        // alternate the two libraries so drifting machine load hits both alike.
        // After each library, pause: idle OpenBLAS workers spin for ~2^28 cycles
        // and OpenMP workers briefly too, stealing one of the 2 cores from the next.
        double t_ours = 1e30, t_blas = 1e30;
        for (int round = 0; round < 3; round++) {
            t_ours = std::min(t_ours, time_median([&] { run_ours(s, A.data(), Bm.data(), Cm.data()); }, 5));
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
            t_blas = std::min(t_blas, time_median([&] { run_blas(s, A.data(), Bm.data(), Cm.data()); }, 5));
            std::this_thread::sleep_for(std::chrono::milliseconds(150));
        }
        double g_ours = flops / t_ours * 1e-9, g_blas = flops / t_blas * 1e-9;
        tot_ours += t_ours; tot_blas += t_blas; tot_flops += flops;
        printf("%-16s %c%c %5d %5d %5d %5d | %8.1f %8.1f %6.2f | %5.1f%% %5.1f%%\n", s.name,
               s.tA ? 'T' : 'N', s.tB ? 'T' : 'N', s.M, s.N, s.K, s.batch, g_ours, g_blas,
               g_ours / g_blas, 100 * g_ours * 1e9 / peak, 100 * g_blas * 1e9 / peak);
    }
    printf("\nall shapes once (sum of times): ours %.2f ms (%.1f GFLOP/s), openblas %.2f ms (%.1f GFLOP/s), ratio %.2f\n",
           tot_ours * 1e3, tot_flops / tot_ours * 1e-9, tot_blas * 1e3, tot_flops / tot_blas * 1e-9,
           tot_blas / tot_ours);
    return 0;
}
