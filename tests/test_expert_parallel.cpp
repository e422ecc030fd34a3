// tests/test_expert_parallel.cpp: expert parallelism (README, "Expert
// parallelism"). The expert-parallel MoT layer of cpu/fast/expert_parallel.h,
// its N members run as threads of one process (tests/exchange_threads.h),
// against one process running the layer of cpu/fast/mot.h on every member's
// batch with all experts: outputs and input gradients per member, the
// controller's gradient per member (replicated, not yet summed), and each
// owner's expert gradients against its slice of the sum over all members'
// batches. In double (to rounding) and in float. The same for the
// expert-parallel token-choice layer against cpu/fast/token_choice.h, with
// each member's routing the same to the bit. Both again through the bf16
// emulation (common/bf16_kernels.h): what each member stores rounded as one
// process stores it. The program under mpirun:
// tests/test_expert_parallel_ranks.cpp.
//   g++ -std=c++17 -O2 -march=native -fopenmp -Wall -Wextra -I. tests/test_expert_parallel.cpp -o /tmp/t -lpthread
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <vector>

#include "common/bf16_kernels.h"
#include "cpu/fast/expert_parallel.h"
#include "tests/close.h"
#include "tests/dist_runs.h"
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

// The layers as the kernel sets call them (cpu/kernels.h's names), on the
// parts of cpu/fast/ in any type; Bf16 is the same through the bf16
// emulation (common/bf16_kernels.h), which rounds what a bf16 run stores.
struct FastParts {
    template <typename... A> static void mot_forward(A... a) { fast::mot_forward(a...); }
    template <typename... A> static void mot_backward(A... a) { fast::mot_backward(a...); }
    template <typename... A> static void mot_ep_forward(A... a) { fast::mot_ep_forward(a...); }
    template <typename... A> static void mot_ep_backward(A... a) { fast::mot_ep_backward(a...); }
    template <typename... A> static void mot_ep_inputs_forward(A... a) { fast::mot_ep_inputs_forward(a...); }
    template <typename... A> static void mot_ep_inputs_backward(A... a) { fast::mot_ep_inputs_backward(a...); }
    template <typename... A> static void token_choice_forward(A... a) { fast::token_choice_forward(a...); }
    template <typename... A> static void token_choice_backward(A... a) { fast::token_choice_backward(a...); }
    template <typename... A> static void token_choice_ep_forward(A... a) { fast::token_choice_ep_forward(a...); }
    template <typename... A> static void token_choice_ep_backward(A... a) { fast::token_choice_ep_backward(a...); }
    template <typename real> static void round_bf16(real* x, size_t n) { bf16_round(x, n); }
};
using Bf16 = Bf16Kernels<FastParts>;

// Values of x that are not bf16 values (in float or double).
template <typename real>
static size_t not_bf16(const std::vector<real>& x) {
    size_t n = 0;
    for (real v : x) n += real(bf16_round(float(v))) != v;
    return n;
}

// Under Bf16 the inputs, weights and output gradients are bf16 values, as
// the model hands them to the layer.
template <typename K, typename real>
static void as_stored(std::initializer_list<std::vector<real>*> xs) {
    if (!std::is_same_v<K, Bf16>) return;
    for (std::vector<real>* x : xs) bf16_round(x->data(), x->size());
}

// inputs: the input-token exchange (each owner mixes for its experts); else the mixed-token one.
// K: FastParts, or Bf16: then both sides round what they store, and every
// tensor each member stores in bf16 (both copies of an exchanged one) is
// checked to hold bf16 values.
template <typename real, typename K = FastParts>
static void check_layer(int N, Tol tol, bool inputs = false) {
    const bool bf16 = std::is_same_v<K, Bf16>;
    const int B = 4, G = 2, T = 3, C = 8, E = 8, f = 6, ST = B / G * T, El = E / N;
    const real tau = real(0.5);
    const size_t BTC = (size_t)B * T * C, BTE = (size_t)B * T * E, STEC = (size_t)ST * E * C, STEf = (size_t)ST * E * f;
    TestRng rng(7 + N);
    std::vector<real> wc = values<real>(rng, (size_t)E * C), w1 = values<real>(rng, (size_t)E * f * C, 0.4),
                      w2 = values<real>(rng, (size_t)E * C * f, 0.4);
    std::vector<std::vector<real>> inp(N), dout(N);
    for (int s = 0; s < N; s++) inp[s] = values<real>(rng, BTC), dout[s] = values<real>(rng, BTC);
    as_stored<K>({&wc, &w1, &w2});
    for (int s = 0; s < N; s++) as_stored<K>({&inp[s], &dout[s]});

    // one process: every member's batch through the layer with all experts
    std::vector<std::vector<real>> out_ref(N, std::vector<real>(BTC)), dinp_ref(N, std::vector<real>(BTC)),
        dwc_ref(N, std::vector<real>((size_t)E * C)), y_ref(N);
    std::vector<real> dw1_ref(w1.size()), dw2_ref(w2.size());
    for (int s = 0; s < N; s++) {
        std::vector<real> z(BTE), m(BTE), u(STEC), p(STEf), a(STEf), y(STEC);
        std::vector<real> dz(BTE), dm(BTE), du(STEC), dp(STEf), da(STEf), dy(STEC);
        K::mot_forward(out_ref[s].data(), z.data(), m.data(), u.data(), p.data(), a.data(), y.data(), inp[s].data(),
                       wc.data(), w1.data(), w2.data(), B, T, C, E, G, f, tau);
        K::mot_backward(dinp_ref[s].data(), dwc_ref[s].data(), dw1_ref.data(), dw2_ref.data(), dz.data(), dm.data(),
                        du.data(), dp.data(), da.data(), dy.data(), dout[s].data(), inp[s].data(), m.data(), u.data(),
                        p.data(), a.data(), y.data(), wc.data(), w1.data(), w2.data(), B, T, C, E, G, f, tau);
        y_ref[s] = y;
        if (bf16) CHECK(not_bf16(u) + not_bf16(p) + not_bf16(a) + not_bf16(y) + not_bf16(out_ref[s]) == 0);
    }

    // expert parallel: member i holds experts [i*El, (i+1)*El)
    std::vector<std::vector<real>> out(N), dinp(N), dwc(N), dw1(N), dw2(N), y_member(N);
    std::vector<size_t> unrounded(N);  // under Bf16: values not bf16 in the tensors this member stores in bf16
    std::vector<ThreadExchange> xs = run_members(N, [&](ThreadExchange& x) {
        const int i = x.index;
        const size_t w1n = (size_t)El * f * C, w2n = (size_t)El * C * f;
        std::vector<real> w1l(w1.begin() + i * w1n, w1.begin() + (i + 1) * w1n),
            w2l(w2.begin() + i * w2n, w2.begin() + (i + 1) * w2n);
        std::vector<real> z(BTE), m(BTE), u(STEC), ul(STEC), p(STEf), a(STEf), yl(STEC), y(STEC), buf(STEC);
        std::vector<real> dz(BTE), dm(BTE), du(STEC), dul(STEC), dp(STEf), da(STEf), dyl(STEC), dy(STEC);
        out[i].assign(BTC, 0), dinp[i].assign(BTC, 0), dwc[i].assign((size_t)E * C, 0), dw1[i].assign(w1n, 0),
            dw2[i].assign(w2n, 0);
        if (inputs) {
            std::vector<real> xall(N * BTC), oall(N * BTC), dxall(N * BTC), doall(N * BTC);
            K::mot_ep_inputs_forward(out[i].data(), z.data(), m.data(), u.data(), p.data(), a.data(), y.data(),
                                     xall.data(), oall.data(), inp[i].data(), wc.data(), w1l.data(), w2l.data(), B,
                                     T, C, E, G, f, tau, false, &x);
            K::mot_ep_inputs_backward(dinp[i].data(), dwc[i].data(), dw1[i].data(), dw2[i].data(), dz.data(),
                                      dm.data(), du.data(), dp.data(), da.data(), dy.data(), dxall.data(),
                                      doall.data(), dout[i].data(), xall.data(), m.data(), u.data(), p.data(),
                                      a.data(), y.data(), wc.data(), w1l.data(), w2l.data(), B, T, C, E, G, f, tau,
                                      &x);
            unrounded[i] = not_bf16(u) + not_bf16(p) + not_bf16(a) + not_bf16(y) + not_bf16(out[i]) + not_bf16(dinp[i]);
            return;
        }
        K::mot_ep_forward(out[i].data(), z.data(), m.data(), u.data(), ul.data(), p.data(), a.data(), yl.data(),
                          y.data(), buf.data(), inp[i].data(), wc.data(), w1l.data(), w2l.data(), B, T, C, E, G, f,
                          tau, false, &x);
        K::mot_ep_backward(dinp[i].data(), dwc[i].data(), dw1[i].data(), dw2[i].data(), dz.data(), dm.data(),
                           du.data(), dul.data(), dp.data(), da.data(), dyl.data(), dy.data(), buf.data(),
                           dout[i].data(), inp[i].data(), m.data(), ul.data(), p.data(), a.data(), y.data(),
                           wc.data(), w1l.data(), w2l.data(), B, T, C, E, G, f, tau, &x);
        unrounded[i] = not_bf16(u) + not_bf16(ul) + not_bf16(p) + not_bf16(a) + not_bf16(yl) + not_bf16(y) +
                       not_bf16(out[i]) + not_bf16(dinp[i]);
        y_member[i] = y;
    });
    for (const ThreadExchange& x : xs) CHECK(x.calls == 4);  // mixed: U out, Y back, dY out, dU back; inputs: X, O, dO, dX
    // the input-token exchange leaves each owner its experts' rows of the controller's gradient over the
    // whole group: their sum over the members is one process's over every member's batch
    std::vector<real> dwc_sum((size_t)E * C), dwc_ref_sum((size_t)E * C);
    for (int i = 0; i < N; i++)
        for (size_t k = 0; k < dwc_sum.size(); k++) dwc_sum[k] += dwc[i][k], dwc_ref_sum[k] += dwc_ref[i][k];
    if (inputs) check_close(dwc_sum, dwc_ref_sum, tol, "the controller gradient summed over the members");
    for (int i = 0; i < N; i++) {
        std::string who = "member " + std::to_string(i) + " of " + std::to_string(N);
        check_close(out[i], out_ref[i], tol, (who + ": output").c_str());
        check_close(dinp[i], dinp_ref[i], tol, (who + ": input gradient").c_str());
        if (!inputs) check_close(dwc[i], dwc_ref[i], tol, (who + ": controller gradient").c_str());
        // the expert outputs this member's backward reads: one process's, as stored
        if (!inputs) check_close(y_member[i], y_ref[i], tol, (who + ": its expert outputs Y").c_str());
        if (bf16) CHECK_MESSAGE(unrounded[i] == 0, who << ": " << unrounded[i] << " values not bf16");
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

TEST_CASE("with the input-token exchange too, N = 2 and 4, in double and float") {
    for (int N : {2, 4}) {
        check_layer<double>(N, Tol{1e-12, 1e-12}, true);
        check_layer<float>(N, Tol{1e-6, 1e-5}, true);
    }
}

// Token choice: each member routes its own tokens (Nt of them) over all E
// experts; a capacity that drops tokens and k 2, the softmax router with its
// aux loss and the threshold router with its bias.
template <typename real, typename K = FastParts>
static void check_tc_layer(int N, TcRouter rt, Tol tol) {
    const bool bf16 = std::is_same_v<K, Bf16>;
    const int Nt = 24, C = 8, E = 8, f = 6, k = 2, El = E / N;
    const int cap = 3;  // capacity factor 0.5: ceil(0.5 * k * Nt / E)
    const size_t NtC = (size_t)Nt * C, NtE = (size_t)Nt * E, Ntk = (size_t)Nt * k, capC = (size_t)E * cap * C,
                 capf = (size_t)E * cap * f;
    const bool soft = rt.kind == ROUTER_SOFTMAX;
    TestRng rng(11 + N + 3 * rt.kind);
    std::vector<real> wc = values<real>(rng, (size_t)E * C), w1 = values<real>(rng, (size_t)E * f * C, 0.4),
                      w2 = values<real>(rng, (size_t)E * C * f, 0.4), bc = values<real>(rng, E, 0.5);
    const real daux = real(0.01);
    std::vector<std::vector<real>> inp(N), dout(N);
    for (int s = 0; s < N; s++) inp[s] = values<real>(rng, NtC), dout[s] = values<real>(rng, NtC);
    as_stored<K>({&wc, &w1, &w2, &bc});
    for (int s = 0; s < N; s++) as_stored<K>({&inp[s], &dout[s]});

    // one process: every member's tokens through the layer with all experts
    std::vector<std::vector<real>> out_ref(N, std::vector<real>(NtC)), dinp_ref(N, std::vector<real>(NtC)),
        dwc_ref(N, std::vector<real>((size_t)E * C)), dbc_ref(N, std::vector<real>(E)), load_ref(N), aux_ref(N),
        yout_ref(N);
    std::vector<std::vector<int>> route_ref(N), slot_ref(N);
    std::vector<real> dw1_ref(w1.size()), dw2_ref(w2.size());
    int dropped = 0;
    for (int s = 0; s < N; s++) {
        std::vector<real> z(NtE), probs(NtE), first(E), xin(capC), pre(capf), act(capf), yout(capC);
        std::vector<real> dz(NtE), dprobs(NtE), dxin(capC), dpre(capf), dact(capf), dyout(capC);
        route_ref[s].assign(Ntk, 0), slot_ref[s].assign(Ntk, 0), load_ref[s].assign(E, 0), aux_ref[s].assign(1, 0);
        K::token_choice_forward(out_ref[s].data(), z.data(), probs.data(), route_ref[s].data(), slot_ref[s].data(),
                                load_ref[s].data(), first.data(), aux_ref[s].data(), xin.data(), pre.data(),
                                act.data(), yout.data(), inp[s].data(), wc.data(), w1.data(), w2.data(), Nt, C, E,
                                f, k, cap, bc.data(), rt);
        K::token_choice_backward(dinp_ref[s].data(), dwc_ref[s].data(), dw1_ref.data(), dw2_ref.data(), dz.data(),
                                 dprobs.data(), dxin.data(), dpre.data(), dact.data(), dyout.data(), &daux,
                                 dout[s].data(), inp[s].data(), probs.data(), route_ref[s].data(),
                                 slot_ref[s].data(), first.data(), xin.data(), pre.data(), act.data(), yout.data(),
                                 wc.data(), w1.data(), w2.data(), Nt, C, E, f, k, cap, dbc_ref[s].data(), rt);
        for (size_t i = 0; i < Ntk; i++) dropped += route_ref[s][i] >= 0 && slot_ref[s][i] < 0;
        yout_ref[s] = yout;
        if (bf16) CHECK(not_bf16(xin) + not_bf16(pre) + not_bf16(act) + not_bf16(yout) + not_bf16(out_ref[s]) == 0);
    }
    // the capacity drops choices, so the dispatch order matters
    CHECK(dropped > 0);

    // expert parallel: member i holds experts [i*El, (i+1)*El)
    std::vector<std::vector<real>> out(N), dinp(N), dwc(N), dbc(N), dw1(N), dw2(N), load(N), aux(N),
        yout_member(N);
    std::vector<std::vector<int>> route(N), slot(N);
    std::vector<size_t> unrounded(N);  // under Bf16: values not bf16 in the tensors this member stores in bf16
    std::vector<ThreadExchange> xs = run_members(N, [&](ThreadExchange& x) {
        const int i = x.index;
        const size_t w1n = (size_t)El * f * C, w2n = (size_t)El * C * f;
        std::vector<real> w1l(w1.begin() + i * w1n, w1.begin() + (i + 1) * w1n),
            w2l(w2.begin() + i * w2n, w2.begin() + (i + 1) * w2n);
        std::vector<real> z(NtE), probs(NtE), first(E), xin(capC), xl(capC), pre(capf), act(capf), yl(capC),
            yout(capC);
        std::vector<real> dz(NtE), dprobs(NtE), dxin(capC), dxl(capC), dpre(capf), dact(capf), dyl(capC),
            dyout(capC);
        out[i].assign(NtC, 0), dinp[i].assign(NtC, 0), dwc[i].assign((size_t)E * C, 0), dbc[i].assign(E, 0),
            dw1[i].assign(w1n, 0), dw2[i].assign(w2n, 0), route[i].assign(Ntk, 0), slot[i].assign(Ntk, 0),
            load[i].assign(E, 0), aux[i].assign(1, 0);
        K::token_choice_ep_forward(out[i].data(), z.data(), probs.data(), route[i].data(), slot[i].data(),
                                   load[i].data(), first.data(), aux[i].data(), xin.data(), xl.data(), pre.data(),
                                   act.data(), yl.data(), yout.data(), inp[i].data(), wc.data(), w1l.data(),
                                   w2l.data(), Nt, C, E, f, k, cap, bc.data(), rt, &x);
        K::token_choice_ep_backward(dinp[i].data(), dwc[i].data(), dw1[i].data(), dw2[i].data(), dz.data(),
                                    dprobs.data(), dxin.data(), dxl.data(), dpre.data(), dact.data(), dyl.data(),
                                    dyout.data(), &daux, dout[i].data(), inp[i].data(), probs.data(),
                                    route[i].data(), slot[i].data(), first.data(), xl.data(), pre.data(),
                                    act.data(), yout.data(), wc.data(), w1l.data(), w2l.data(), Nt, C, E, f, k, cap,
                                    dbc[i].data(), rt, &x);
        unrounded[i] = not_bf16(xin) + not_bf16(xl) + not_bf16(pre) + not_bf16(act) + not_bf16(yl) + not_bf16(yout) +
                       not_bf16(out[i]) + not_bf16(dinp[i]);
        yout_member[i] = yout;
    });
    for (const ThreadExchange& x : xs) CHECK(x.calls == 4);  // buffers out, outputs back, their gradients out, back
    for (int i = 0; i < N; i++) {
        std::string who = "member " + std::to_string(i) + " of " + std::to_string(N);
        INFO(who);
        // the routing is the member's own, decided before any exchange: the same to the bit
        CHECK(route[i] == route_ref[i]);
        CHECK(slot[i] == slot_ref[i]);
        CHECK(load[i] == load_ref[i]);
        CHECK(aux[i] == aux_ref[i]);
        check_close(out[i], out_ref[i], tol, (who + ": output").c_str());
        check_close(dinp[i], dinp_ref[i], tol, (who + ": input gradient").c_str());
        check_close(dwc[i], dwc_ref[i], tol, (who + ": router gradient").c_str());
        // the expert outputs this member's backward reads: one process's, as stored
        check_close(yout_member[i], yout_ref[i], tol, (who + ": its buffers' expert outputs").c_str());
        if (bf16) CHECK_MESSAGE(unrounded[i] == 0, who << ": " << unrounded[i] << " values not bf16");
        if (!soft) check_close(dbc[i], dbc_ref[i], tol, (who + ": router bias gradient").c_str());
        check_close(dw1[i], span(dw1_ref.data() + (size_t)i * El * f * C, (size_t)El * f * C), tol,
                    (who + ": its experts' w1 gradient").c_str());
        check_close(dw2[i], span(dw2_ref.data() + (size_t)i * El * C * f, (size_t)El * C * f), tol,
                    (who + ": its experts' w2 gradient").c_str());
    }
}

TEST_CASE("the expert-parallel token-choice layer computes what one process computes, k 2, tokens dropped, N = 2 "
          "and 4, softmax and threshold routers, in double") {
    for (TcRouter rt : {TcRouter{ROUTER_SOFTMAX, 1}, TcRouter{ROUTER_THRESHOLD, 0.7f}}) {
        INFO("router ", rt.kind);
        check_tc_layer<double>(2, rt, Tol{1e-12, 1e-12});
        check_tc_layer<double>(4, rt, Tol{1e-12, 1e-12});
    }
}

TEST_CASE("the expert-parallel token-choice layer computes what one process computes, k 2, tokens dropped, N = 2 "
          "and 4, softmax and threshold routers, in float") {
    for (TcRouter rt : {TcRouter{ROUTER_SOFTMAX, 1}, TcRouter{ROUTER_THRESHOLD, 0.7f}}) {
        INFO("router ", rt.kind);
        check_tc_layer<float>(2, rt, Tol{1e-6, 1e-5});
        check_tc_layer<float>(4, rt, Tol{1e-6, 1e-5});
    }
}

// --precision bf16: in double, where the members' sums differ from one
// process's by 1e-16, no rounding to bf16 can fall differently on the two
// sides: what the members store must be what one process stores, to the
// tolerance of the unrounded layers.
TEST_CASE("under the bf16 emulation the expert-parallel MoT layer (both exchanges) and token-choice layer round "
          "what one process rounds: the same outputs, gradients and stored expert outputs, N = 2 and 4, and every "
          "member's copy of an exchanged tensor holds bf16 values") {
    for (int N : {2, 4}) {
        INFO("N ", N);
        check_layer<double, Bf16>(N, Tol{1e-12, 1e-12});
        check_layer<double, Bf16>(N, Tol{1e-12, 1e-12}, true);
        for (TcRouter rt : {TcRouter{ROUTER_SOFTMAX, 1}, TcRouter{ROUTER_THRESHOLD, 0.7f}}) {
            INFO("router ", rt.kind);
            check_tc_layer<double, Bf16>(N, rt, Tol{1e-12, 1e-12});
        }
    }
}
