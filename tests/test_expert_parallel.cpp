// tests/test_expert_parallel.cpp: expert parallelism (README, "Expert
// parallelism"). The expert-parallel MoT layer of cpu/fast/expert_parallel.h,
// its N members run as threads of one process (tests/exchange_threads.h),
// against one process running the layer of cpu/fast/mot.h on every member's
// batch with all experts: outputs and input gradients per member, the
// controller's gradient per member (replicated, not yet summed), and each
// owner's expert gradients against its slice of the sum over all members'
// batches. In double (to rounding) and in float.
//   g++ -std=c++17 -O2 -march=native -fopenmp -Wall -Wextra -I. tests/test_expert_parallel.cpp -o /tmp/t -lpthread
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "cpu/fast/expert_parallel.h"
#include "tests/close.h"
#include "tests/exchange_threads.h"
#include "tests/rng.h"

TEST_CASE("packing a member's tensor into the owners' blocks puts expert e of group g in block e/El, and unpacking inverts it") {
    const int ST = 3, E = 8, N = 4, D = 2, El = E / N;
    std::vector<int> x((size_t)ST * E * D), blocks(x.size()), back(x.size());
    for (int g = 0; g < ST; g++)
        for (int e = 0; e < E; e++)
            for (int d = 0; d < D; d++) x[((size_t)g * E + e) * D + d] = g * 100 + e * 10 + d;
    fast::expert_blocks_pack(blocks.data(), x.data(), ST, E, N, D);
    for (int r = 0; r < N; r++)
        for (int g = 0; g < ST; g++)
            for (int j = 0; j < El; j++)
                for (int d = 0; d < D; d++)
                    CHECK(blocks[(((size_t)r * ST + g) * El + j) * D + d] == g * 100 + (r * El + j) * 10 + d);
    fast::expert_blocks_unpack(back.data(), blocks.data(), ST, E, N, D);
    CHECK(back == x);
}

template <typename real>
static std::vector<real> values(TestRng& r, size_t n, double scale = 1.0) {
    std::vector<double> d = r.doubles(n, scale);
    return std::vector<real>(d.begin(), d.end());
}

template <typename real>
static void check_layer(int N, Tol tol) {
    const int B = 4, G = 2, T = 3, C = 8, E = 8, f = 6, ST = B / G * T, El = E / N;
    const real tau = real(0.5);
    const size_t BTC = (size_t)B * T * C, BTE = (size_t)B * T * E, STEC = (size_t)ST * E * C, STEf = (size_t)ST * E * f;
    TestRng rng(7 + N);
    std::vector<real> wc = values<real>(rng, (size_t)E * C), w1 = values<real>(rng, (size_t)E * f * C, 0.4),
                      w2 = values<real>(rng, (size_t)E * C * f, 0.4);
    std::vector<std::vector<real>> inp(N), dout(N);
    for (int s = 0; s < N; s++) inp[s] = values<real>(rng, BTC), dout[s] = values<real>(rng, BTC);

    // one process: every member's batch through the layer with all experts
    std::vector<std::vector<real>> out_ref(N, std::vector<real>(BTC)), dinp_ref(N, std::vector<real>(BTC)),
        dwc_ref(N, std::vector<real>((size_t)E * C));
    std::vector<real> dw1_ref(w1.size()), dw2_ref(w2.size());
    for (int s = 0; s < N; s++) {
        std::vector<real> z(BTE), m(BTE), u(STEC), p(STEf), a(STEf), y(STEC);
        std::vector<real> dz(BTE), dm(BTE), du(STEC), dp(STEf), da(STEf), dy(STEC);
        fast::mot_forward(out_ref[s].data(), z.data(), m.data(), u.data(), p.data(), a.data(), y.data(), inp[s].data(),
                          wc.data(), w1.data(), w2.data(), B, T, C, E, G, f, tau);
        fast::mot_backward(dinp_ref[s].data(), dwc_ref[s].data(), dw1_ref.data(), dw2_ref.data(), dz.data(), dm.data(),
                           du.data(), dp.data(), da.data(), dy.data(), dout[s].data(), inp[s].data(), m.data(), u.data(),
                           p.data(), a.data(), y.data(), wc.data(), w1.data(), w2.data(), B, T, C, E, G, f, tau);
    }

    // expert parallel: member i holds experts [i*El, (i+1)*El)
    std::vector<std::vector<real>> out(N), dinp(N), dwc(N), dw1(N), dw2(N);
    std::vector<ThreadExchange> xs = run_members(N, [&](ThreadExchange& x) {
        const int i = x.index;
        const size_t w1n = (size_t)El * f * C, w2n = (size_t)El * C * f;
        std::vector<real> w1l(w1.begin() + i * w1n, w1.begin() + (i + 1) * w1n),
            w2l(w2.begin() + i * w2n, w2.begin() + (i + 1) * w2n);
        std::vector<real> z(BTE), m(BTE), u(STEC), ul(STEC), p(STEf), a(STEf), yl(STEC), y(STEC), buf(STEC);
        std::vector<real> dz(BTE), dm(BTE), du(STEC), dul(STEC), dp(STEf), da(STEf), dyl(STEC), dy(STEC);
        out[i].assign(BTC, 0), dinp[i].assign(BTC, 0), dwc[i].assign((size_t)E * C, 0), dw1[i].assign(w1n, 0),
            dw2[i].assign(w2n, 0);
        fast::mot_ep_forward(out[i].data(), z.data(), m.data(), u.data(), ul.data(), p.data(), a.data(), yl.data(),
                             y.data(), buf.data(), inp[i].data(), wc.data(), w1l.data(), w2l.data(), B, T, C, E, G, f,
                             tau, false, x);
        fast::mot_ep_backward(dinp[i].data(), dwc[i].data(), dw1[i].data(), dw2[i].data(), dz.data(), dm.data(),
                              du.data(), dul.data(), dp.data(), da.data(), dyl.data(), dy.data(), buf.data(),
                              dout[i].data(), inp[i].data(), m.data(), ul.data(), p.data(), a.data(), y.data(),
                              wc.data(), w1l.data(), w2l.data(), B, T, C, E, G, f, tau, x);
    });
    for (const ThreadExchange& x : xs) CHECK(x.calls == 4);  // U out, Y back, dY out, dU back
    for (int i = 0; i < N; i++) {
        std::string who = "member " + std::to_string(i) + " of " + std::to_string(N);
        check_close(out[i], out_ref[i], tol, (who + ": output").c_str());
        check_close(dinp[i], dinp_ref[i], tol, (who + ": input gradient").c_str());
        check_close(dwc[i], dwc_ref[i], tol, (who + ": controller gradient").c_str());
        check_close(dw1[i], span(dw1_ref.data() + (size_t)i * El * f * C, (size_t)El * f * C), tol,
                    (who + ": its experts' w1 gradient").c_str());
        check_close(dw2[i], span(dw2_ref.data() + (size_t)i * El * C * f, (size_t)El * C * f), tol,
                    (who + ": its experts' w2 gradient").c_str());
    }
}

TEST_CASE("the expert-parallel MoT layer computes what one process computes, N = 2 and 4, in double") {
    check_layer<double>(2, Tol{1e-12, 1e-12});
    check_layer<double>(4, Tol{1e-12, 1e-12});
}

TEST_CASE("the expert-parallel MoT layer computes what one process computes, N = 2 and 4, in float") {
    check_layer<float>(2, Tol{1e-6, 1e-5});
    check_layer<float>(4, Tol{1e-6, 1e-5});
}
