// tests/test_sgemm.cpp: cpu/fast/sgemm.h against a naive double-precision triple loop.
//   g++ -std=c++17 -O2 -march=native -fopenmp -I. tests/test_sgemm.cpp -o test_sgemm
//
// Tolerance: each C[i][j] is a K-term fp32 dot product. Blocked/FMA summation
// has a worst-case relative error bound ~ K * eps * sum_k |a_ik b_kj| (eps =
// 2^-24 ~ 6e-8); typical error grows like sqrt(K) * eps. We check
//   |C - C_ref| <= 4 * eps * (K + 2) * (|alpha| * sum_k |a_ik||b_kj| + |beta| |C0|)
// i.e. the linear-in-K worst case with a small constant: it cannot flag a correct
// fp32 summation order, while any real bug (a dropped/duplicated k term, wrong
// element, stale C) produces errors of order |a b| itself, ~ 1/(K eps) times larger.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "cpu/fast/sgemm.h"
#include "tests/rng.h"

// One stream of test data for the whole suite, drawn in test order; values
// uniform in [-1, 1).
static TestRng rng(0x9E3779B97F4A7C15ull);

// reference on one product; returns the number of elements out of tolerance.
// C0 is C before the call (ignored when beta == 0).
static long check_one(bool tA, bool tB, int M, int N, int K, float alpha,
                      const float* A, int lda, const float* B, int ldb, float beta,
                      const float* C0, const float* C, int ldc) {
    const double eps = std::numeric_limits<float>::epsilon();
    long bad = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0, mag = 0.0;
            for (int k = 0; k < K; k++) {
                double a = tA ? A[(long)k * lda + i] : A[(long)i * lda + k];
                double b = tB ? B[(long)j * ldb + k] : B[(long)k * ldb + j];
                s += a * b;
                mag += std::fabs(a * b);
            }
            double ref = alpha * s, scale = std::fabs(alpha) * mag;
            if (beta != 0.0f) {
                ref += (double)beta * C0[(long)i * ldc + j];
                scale += std::fabs(beta * C0[(long)i * ldc + j]);
            }
            double got = C[(long)i * ldc + j];
            double tol = 4.0 * eps * (K + 2) * scale + 1e-30;
            if (!(std::fabs(got - ref) <= tol)) bad++;  // also catches NaN
        }
    return bad;
}

// run sgemm on padded storage and compare; padding outside C must be untouched
static void run_case(bool tA, bool tB, int M, int N, int K, float alpha, float beta,
                     int padA, int padB, int padC) {
    int lda = (tA ? M : K) + padA, ldb = (tB ? K : N) + padB, ldc = N + padC;
    std::vector<float> A = rng.floats((size_t)(tA ? K : M) * lda + 1);
    std::vector<float> B = rng.floats((size_t)(tB ? N : K) * ldb + 1);
    std::vector<float> C = rng.floats((size_t)M * ldc + 1);
    if (beta == 0.0f)  // beta == 0 must not read C
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = std::nanf("");
    std::vector<float> C0 = C;
    fast::sgemm(tA, tB, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
    CAPTURE(tA); CAPTURE(tB); CAPTURE(M); CAPTURE(N); CAPTURE(K);
    CAPTURE(alpha); CAPTURE(beta); CAPTURE(lda); CAPTURE(ldb); CAPTURE(ldc);
    CHECK(check_one(tA, tB, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta,
                    C0.data(), C.data(), ldc) == 0);
    long touched = 0;  // padding columns and the guard element
    for (int i = 0; i < M; i++)
        for (int j = N; j < ldc; j++) touched += C[(size_t)i * ldc + j] != C0[(size_t)i * ldc + j];
    touched += C.back() != C0.back();
    CHECK(touched == 0);
}

static const int odd_sizes[] = {1, 2, 3, 7, 8, 13, 14, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 129};

TEST_CASE("sgemm: all trans combos, odd sizes, alpha/beta, padded strides") {
    const float ab[][2] = {{1.0f, 0.0f}, {1.0f, 1.0f}, {-0.5f, 0.75f}, {2.0f, 0.0f}};
    for (int tA = 0; tA < 2; tA++)
        for (int tB = 0; tB < 2; tB++)
            for (int s = 0; s < 60; s++) {
                int M = odd_sizes[rng.below(18)], N = odd_sizes[rng.below(18)], K = odd_sizes[rng.below(18)];
                int c = rng.below(4);
                run_case(tA, tB, M, N, K, ab[c][0], ab[c][1], rng.below(3) * 5, rng.below(3) * 3, rng.below(3) * 7);
            }
}

TEST_CASE("sgemm: sizes crossing the cache blocks (KC, MC, NC) and the model's shapes") {
    // K > KC exercises the beta=1 accumulation between K blocks; M > MC, N > NC
    run_case(false, true, 300, 1100, 257, 1.0f, 0.0f, 0, 0, 0);
    run_case(false, false, 255, 129, 600, 1.0f, 1.0f, 3, 0, 5);
    run_case(true, false, 129, 255, 513, 1.0f, 1.0f, 0, 2, 0);
    run_case(true, true, 170, 1030, 100, -1.0f, 0.5f, 1, 1, 1);
    run_case(false, true, 512, 768, 256, 1.0f, 0.0f, 0, 0, 0);   // qkv forward, part of BT
    run_case(false, false, 512, 256, 768, 1.0f, 0.0f, 0, 0, 0);  // qkv dinp
    run_case(true, false, 768, 256, 512, 1.0f, 1.0f, 0, 0, 0);   // qkv dW +=
}

TEST_CASE("sgemm: degenerate K = 0 and alpha = 0 scale C by beta") {
    std::vector<float> A(16, 1.0f), B(16, 1.0f), C(12, 2.0f);
    fast::sgemm(false, false, 3, 4, 0, 1.0f, A.data(), 1, B.data(), 4, 0.5f, C.data(), 4);
    for (float x : C) CHECK(x == 1.0f);
    for (auto& x : C) x = std::nanf("");
    fast::sgemm(false, false, 3, 4, 2, 0.0f, A.data(), 2, B.data(), 4, 0.0f, C.data(), 4);
    for (float x : C) CHECK(x == 0.0f);
}

// strided batched: compare every product of the batch
static void run_batched(bool tA, bool tB, int M, int N, int K, float beta,
                        int lda, long long sA, int ldb, long long sB, int ldc, long long sC,
                        int batch, size_t nA, size_t nB, size_t nC) {
    std::vector<float> A = rng.floats(nA), B = rng.floats(nB), C = rng.floats(nC);
    if (beta == 0.0f)
        for (int b = 0; b < batch; b++)
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) C[b * sC + (size_t)i * ldc + j] = std::nanf("");
    std::vector<float> C0 = C;
    fast::sgemm_strided_batched(tA, tB, M, N, K, 1.0f, A.data(), lda, sA, B.data(), ldb, sB, beta,
                                C.data(), ldc, sC, batch);
    CAPTURE(tA); CAPTURE(tB); CAPTURE(M); CAPTURE(N); CAPTURE(K); CAPTURE(batch);
    long bad = 0;
    for (int b = 0; b < batch; b++)
        bad += check_one(tA, tB, M, N, K, 1.0f, A.data() + b * sA, lda, B.data() + b * sB, ldb,
                         beta, C0.data() + b * sC, C.data() + b * sC, ldc);
    CHECK(bad == 0);
}

TEST_CASE("sgemm_strided_batched: MoT layouts") {
    // MoT sizes scaled down: E experts, C model dim, f expert width, G group size,
    // ST = S*T groups. Group members are ST*C apart; expert slots E*C apart.
    const int E = 8, Cd = 48, f = 40, G = 8, ST = 12;
    // experts forward: per expert e, P[e] (ST, f) = U[:, e, :] (ST, C) w1[e]^T
    //   U stored (ST, E, C): lda = E*C, strideA = C; w1 (E, f, C): strideB = f*C;
    //   P stored (ST, E, f): ldc = E*f, strideC = f
    for (float beta : {0.0f, 1.0f})
        run_batched(false, true, ST, f, Cd, beta, E * Cd, Cd, Cd, (long long)f * Cd, E * f, f, E,
                    (size_t)ST * E * Cd, (size_t)E * f * Cd, (size_t)ST * E * f);
    // experts dw1[e] += dP[e]^T (f, ST) U[e] (ST, C): transA
    run_batched(true, false, f, Cd, ST, 1.0f, E * f, f, E * Cd, Cd, Cd, (long long)f * Cd, E,
                (size_t)ST * E * f, (size_t)ST * E * Cd, (size_t)E * f * Cd);
    // experts dU[e] = dP[e] (ST, f) w1[e] (f, C): no trans
    run_batched(false, false, ST, Cd, f, 0.0f, E * f, f, Cd, (long long)f * Cd, E * Cd, Cd, E,
                (size_t)ST * E * f, (size_t)E * f * Cd, (size_t)ST * E * Cd);
    // merge U = M^T X per group g: M (G, E) rows ST*E apart, X (G, C) rows ST*C apart
    //   M stored (G, ST, E): lda = ST*E, strideA = E; X stored (G, ST, C)
    //   U stored (ST, E, C): ldc = C, strideC = E*C
    for (float beta : {0.0f, 1.0f})
        run_batched(true, false, E, Cd, G, beta, ST * E, E, ST * Cd, Cd, Cd, (long long)E * Cd, ST,
                    (size_t)G * ST * E, (size_t)G * ST * Cd, (size_t)ST * E * Cd);
    // emit O = M Y: (G, E) (E, C) -> O (G, C) rows ST*C apart
    run_batched(false, false, G, Cd, E, 0.0f, ST * E, E, Cd, (long long)E * Cd, ST * Cd, Cd, ST,
                (size_t)G * ST * E, (size_t)ST * E * Cd, (size_t)G * ST * Cd);
    // dM = dO Y^T: (G, C) (C, E) transB
    run_batched(false, true, G, E, Cd, 0.0f, ST * Cd, Cd, Cd, (long long)E * Cd, ST * E, E, ST,
                (size_t)G * ST * Cd, (size_t)ST * E * Cd, (size_t)G * ST * E);
    // a large batch of tiny products (parallel over the batch) and a small batch
    // of bigger ones (parallel inside each product)
    run_batched(false, true, 3, 5, 7, 1.0f, 7, 21, 7, 35, 5, 15, 200, 200 * 21, 200 * 35, 200 * 15);
    run_batched(true, false, 130, 70, 90, 0.0f, 130, 130 * 90, 70, 70 * 90, 70, 130 * 70, 2,
                2 * 130 * 90, 2 * 70 * 90, 2 * 130 * 70);
}

TEST_CASE("sgemm: called from inside an omp parallel region") {
    const int M = 37, N = 45, K = 29, P = 4;
    std::vector<float> A = rng.floats((size_t)P * M * K), B = rng.floats((size_t)K * N), C((size_t)P * M * N);
#ifdef _OPENMP
#pragma omp parallel for
#endif
    for (int p = 0; p < P; p++)
        fast::sgemm(false, false, M, N, K, 1.0f, A.data() + (size_t)p * M * K, K, B.data(), N, 0.0f,
                    C.data() + (size_t)p * M * N, N);
    long bad = 0;
    for (int p = 0; p < P; p++)
        bad += check_one(false, false, M, N, K, 1.0f, A.data() + (size_t)p * M * K, K, B.data(), N,
                         0.0f, nullptr, C.data() + (size_t)p * M * N, N);
    CHECK(bad == 0);
}
