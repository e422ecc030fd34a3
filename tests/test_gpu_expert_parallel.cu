// tests/test_gpu_expert_parallel.cu: the expert-parallel GPU layers
// (gpu/expert_parallel.cuh) as the N members of an expert group, N threads
// of this process sharing one GPU: MoT (both exchanges) against the CPU's
// one process, token choice against one GPU process.
//
//   make build/test_gpu_expert_parallel && ./build/test_gpu_expert_parallel
//
// Without a usable GPU every test case is reported as skipped, with the
// reason. tests/gpu_harness.h has the error measure; tests/rng.h the inputs.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tests/exchange_threads.h"
#include "tests/gpu_harness.h"

// N members of an expert group as threads of this process on the one GPU
// (tests/exchange_threads.h's group), the blocks moved by device copies.
// One member's GPU work at a time: a member holds the baton from its start
// and passes it at every barrier, so the members' kernels and cuBLAS calls
// never overlap.
struct DeviceThreadExchange : ExpertExchange {
    ThreadGroup* group;
    std::unique_lock<std::mutex>* held;  // this member's hold on the baton
    DeviceThreadExchange(ThreadGroup* g, int i, std::unique_lock<std::mutex>* h) : group(g), held(h) {
        members = g->n, index = i;
    }
    void barrier() {  // the baton is passed while waiting
        CUDA_CHECK(cudaDeviceSynchronize());
        held->unlock();
        group->barrier();
        held->lock();
    }
    void all_to_all(const void* send, void* recv, size_t bytes) override {
        group->sends[index] = (const char*)send;
        barrier();
        for (int r = 0; r < members; r++)
            CUDA_CHECK(cudaMemcpy((char*)recv + r * bytes, group->sends[r] + index * bytes, bytes,
                                  cudaMemcpyDeviceToDevice));
        barrier();
    }
    void all_gather(const void* send, void* recv, size_t bytes) override {
        group->sends[index] = (const char*)send;
        barrier();
        for (int r = 0; r < members; r++)
            CUDA_CHECK(cudaMemcpy((char*)recv + r * bytes, group->sends[r], bytes, cudaMemcpyDeviceToDevice));
        barrier();
    }
    void reduce_scatter_add(const float* send, float* recv, size_t n) override {
        group->sends[index] = (const char*)send;
        barrier();
        DevF block(n);
        for (int r = 0; r < members; r++) {
            CUDA_CHECK(cudaMemcpy(block.p, (const float*)group->sends[r] + index * n, n * sizeof(float),
                                  cudaMemcpyDeviceToDevice));
            gpu::residual_forward(recv, recv, block.p, n);
        }
        barrier();
    }
    void reduce_scatter_add(const double*, double*, size_t) override { FAIL("the GPU layers move floats"); }
};

// Runs fn(exchange) for each of N members, as N threads sharing the one GPU:
// one thread at a time holds the baton, passed on at each exchange.
template <typename Fn>
void run_device_members(int N, Fn fn) {
    ThreadGroup group(N);
    std::mutex baton;
    std::vector<std::thread> threads;
    for (int i = 0; i < N; i++)
        threads.emplace_back([&, i] {
            std::unique_lock<std::mutex> held(baton);
            DeviceThreadExchange x(&group, i, &held);
            fn(x);
        });
    for (std::thread& t : threads) t.join();
}

// Member i owns experts [i*El, (i+1)*El): its expert weights' gradients
// (dw1 (El,f,C), dw2 (El,C,f)) against that slice of one process's.
static void check_owned_experts(const std::vector<float>& dw1, const std::vector<float>& dw2,
                                const std::vector<float>& dw1_ref, const std::vector<float>& dw2_ref, int i, int El,
                                int f, int C, const std::string& what) {
    const size_t n = (size_t)El * f * C;
    std::vector<float> s1(dw1_ref.begin() + i * n, dw1_ref.begin() + (i + 1) * n),
        s2(dw2_ref.begin() + i * n, dw2_ref.begin() + (i + 1) * n);
    check_close(dw1, s1, scaled_tol(TOL, s1), what + " dw1");
    check_close(dw2, s2, scaled_tol(TOL, s2), what + " dw2");
}

GPU_TEST("gpu expert-parallel MoT layer, mixed and input tokens, N = 2 and 4: as the CPU's one process") {
    const int B = 4, G = 2, T = 5, C = 16, E = 8, f = 12, ST = B / G * T;
    const float tau = 0.5f;
    const size_t BTC = (size_t)B * T * C, BTE = (size_t)B * T * E, STEC = (size_t)ST * E * C, STEf = (size_t)ST * E * f;
    for (int N : {2, 4})
        for (bool inputs : {false, true}) {
            const int El = E / N;
            TestRng rng(40 + N + inputs);
            std::vector<float> wc = rng.floats((size_t)E * C, 0.5f), w1 = rng.floats((size_t)E * f * C, 0.3f),
                               w2 = rng.floats((size_t)E * C * f, 0.3f);
            std::vector<std::vector<float>> inp(N), dout(N);
            for (int s = 0; s < N; s++) inp[s] = rng.floats(BTC), dout[s] = rng.floats(BTC);
            // the CPU, one process: every member's batch with all experts
            std::vector<std::vector<float>> out_ref(N, std::vector<float>(BTC)), dinp_ref(N, std::vector<float>(BTC)),
                dwc_ref(N, std::vector<float>((size_t)E * C));
            std::vector<float> dw1_ref(w1.size()), dw2_ref(w2.size()), dwc_sum_ref((size_t)E * C);
            for (int s = 0; s < N; s++) {
                std::vector<float> z(BTE), m(BTE), u(STEC), p(STEf), a(STEf), y(STEC);
                std::vector<float> dz(BTE), dm(BTE), du(STEC), dp(STEf), da(STEf), dy(STEC);
                fast::mot_forward(out_ref[s].data(), z.data(), m.data(), u.data(), p.data(), a.data(), y.data(),
                                  inp[s].data(), wc.data(), w1.data(), w2.data(), B, T, C, E, G, f, tau);
                fast::mot_backward(dinp_ref[s].data(), dwc_ref[s].data(), dw1_ref.data(), dw2_ref.data(), dz.data(),
                                   dm.data(), du.data(), dp.data(), da.data(), dy.data(), dout[s].data(),
                                   inp[s].data(), m.data(), u.data(), p.data(), a.data(), y.data(), wc.data(),
                                   w1.data(), w2.data(), B, T, C, E, G, f, tau);
                for (size_t k = 0; k < dwc_sum_ref.size(); k++) dwc_sum_ref[k] += dwc_ref[s][k];
            }
            // the GPU, member i holding experts [i*El, (i+1)*El)
            std::vector<std::vector<float>> out(N), dinp(N), dwc(N), dw1(N), dw2(N);
            run_device_members(N, [&](DeviceThreadExchange& x) {
                    const int i = x.index;
                    const size_t w1n = (size_t)El * f * C, w2n = (size_t)El * C * f;
                    DevF d_inp(inp[i]), d_dout(dout[i]), d_wc(wc),
                        d_w1(std::vector<float>(w1.begin() + i * w1n, w1.begin() + (i + 1) * w1n)),
                        d_w2(std::vector<float>(w2.begin() + i * w2n, w2.begin() + (i + 1) * w2n));
                    DevF d_out(BTC), d_dinp(BTC), d_dwc((size_t)E * C), d_dw1(w1n), d_dw2(w2n);
                    DevF z(BTE), m(BTE), u(STEC), ul(STEC), p(STEf), a(STEf), yl(STEC), y(STEC), buf(STEC);
                    DevF dz(BTE), dm(BTE), du(STEC), dul(STEC), dp(STEf), da(STEf), dyl(STEC), dy(STEC);
                    DevF xall(N * BTC), oall(N * BTC), dxall(N * BTC), doall(N * BTC);
                    if (inputs) {
                        gpu::mot_ep_inputs_forward(d_out.p, z.p, m.p, u.p, p.p, a.p, y.p, xall.p, oall.p, d_inp.p,
                                                   d_wc.p, d_w1.p, d_w2.p, B, T, C, E, G, f, tau, false, &x);
                        gpu::mot_ep_inputs_backward(d_dinp.p, d_dwc.p, d_dw1.p, d_dw2.p, dz.p, dm.p, du.p, dp.p, da.p,
                                                    dy.p, dxall.p, doall.p, d_dout.p, xall.p, m.p, u.p, p.p, a.p, y.p,
                                                    d_wc.p, d_w1.p, d_w2.p, B, T, C, E, G, f, tau, &x);
                    } else {
                        gpu::mot_ep_forward(d_out.p, z.p, m.p, u.p, ul.p, p.p, a.p, yl.p, y.p, buf.p, d_inp.p, d_wc.p,
                                            d_w1.p, d_w2.p, B, T, C, E, G, f, tau, false, &x);
                        gpu::mot_ep_backward(d_dinp.p, d_dwc.p, d_dw1.p, d_dw2.p, dz.p, dm.p, du.p, dul.p, dp.p, da.p,
                                             dyl.p, dy.p, buf.p, d_dout.p, d_inp.p, m.p, ul.p, p.p, a.p, y.p, d_wc.p,
                                             d_w1.p, d_w2.p, B, T, C, E, G, f, tau, &x);
                    }
                    out[i] = d_out.get(), dinp[i] = d_dinp.get(), dwc[i] = d_dwc.get(), dw1[i] = d_dw1.get(),
                    dw2[i] = d_dw2.get();
                });
            std::vector<float> dwc_sum((size_t)E * C);
            for (int i = 0; i < N; i++)
                for (size_t k = 0; k < dwc_sum.size(); k++) dwc_sum[k] += dwc[i][k];
            const std::string tag = strf(" N%d %s", N, inputs ? "inputs" : "mixed");
            check_close(dwc_sum, dwc_sum_ref, scaled_tol(TOL, dwc_sum_ref), "ep dwc summed" + tag);
            for (int i = 0; i < N; i++) {
                const std::string who = strf(" member %d", i) + tag;
                check_close(out[i], out_ref[i], scaled_tol(TOL, out_ref[i]), "ep out" + who);
                check_close(dinp[i], dinp_ref[i], scaled_tol(TOL, dinp_ref[i]), "ep dinp" + who);
                if (!inputs) check_close(dwc[i], dwc_ref[i], scaled_tol(TOL, dwc_ref[i]), "ep dwc" + who);
                check_owned_experts(dw1[i], dw2[i], dw1_ref, dw2_ref, i, El, f, C, "ep" + who);
            }
        }
}

// Token choice under expert parallelism (gpu/expert_parallel.cuh): each
// member routes its own Nt tokens over all E experts, k 2, a capacity that
// drops choices, softmax and threshold routers; against one GPU process
// running each member's tokens with every expert (gpu/token_choice.cuh,
// itself tested against the CPU above). The routing is decided before any
// exchange by the same kernels, so it must agree to the bit.
GPU_TEST("gpu expert-parallel token-choice layer, k 2, drops, N = 2 and 4, both routers: as one GPU process") {
    const int Nt = 24, C = 8, E = 8, f = 6, k = 2, cap = 3;  // cap: ceil(0.5 * k * Nt / E)
    const size_t NtC = (size_t)Nt * C, NtE = (size_t)Nt * E, Ntk = (size_t)Nt * k, capC = (size_t)E * cap * C,
                 capf = (size_t)E * cap * f;
    for (TcRouter rt : {TcRouter{ROUTER_SOFTMAX, 1}, TcRouter{ROUTER_THRESHOLD, 0.7f}})
        for (int N : {2, 4}) {
            const int El = E / N;
            const bool soft = rt.kind == ROUTER_SOFTMAX;
            const std::string tag = strf(" N%d router %d", N, rt.kind);
            TestRng rng(60 + N + 3 * rt.kind);
            std::vector<float> wc = rng.floats((size_t)E * C, 1.0f), w1 = rng.floats((size_t)E * f * C, 0.4f),
                               w2 = rng.floats((size_t)E * C * f, 0.4f), bc = rng.floats(E, 0.5f), daux = {0.01f};
            std::vector<std::vector<float>> inp(N), dout(N);
            for (int s = 0; s < N; s++) inp[s] = rng.floats(NtC), dout[s] = rng.floats(NtC);
            DevF d_wc(wc), d_w1(w1), d_w2(w2), d_bc(bc), d_daux(daux);
            // one process: every member's tokens with all experts
            std::vector<std::vector<float>> out_ref(N), dinp_ref(N), dwc_ref(N), dbc_ref(N), load_ref(N), aux_ref(N);
            std::vector<std::vector<int>> route_ref(N), slot_ref(N);
            DevF d_dw1_ref(w1.size()), d_dw2_ref(w2.size());
            int dropped = 0;
            for (int s = 0; s < N; s++) {
                DevF d_inp(inp[s]), d_dout(dout[s]), out(NtC), z(NtE), probs(NtE), load(E), first(E), aux(1),
                    xin(capC), pre(capf), act(capf), yout(capC);
                DevF dinp(NtC), dwc((size_t)E * C), dbc(E), dz(NtE), dprobs(NtE), dxin(capC), dpre(capf), dact(capf),
                    dyout(capC);
                DevI route(Ntk), slot(Ntk);
                gpu::token_choice_forward(out.p, z.p, probs.p, route.p, slot.p, load.p, first.p, aux.p, xin.p, pre.p,
                                          act.p, yout.p, d_inp.p, d_wc.p, d_w1.p, d_w2.p, Nt, C, E, f, k, cap, d_bc.p,
                                          rt);
                gpu::token_choice_backward(dinp.p, dwc.p, d_dw1_ref.p, d_dw2_ref.p, dz.p, dprobs.p, dxin.p, dpre.p,
                                           dact.p, dyout.p, d_daux.p, d_dout.p, d_inp.p, probs.p, route.p, slot.p,
                                           first.p, xin.p, pre.p, act.p, yout.p, d_wc.p, d_w1.p, d_w2.p, Nt, C, E, f,
                                           k, cap, dbc.p, rt);
                out_ref[s] = out.get(), dinp_ref[s] = dinp.get(), dwc_ref[s] = dwc.get(), dbc_ref[s] = dbc.get();
                load_ref[s] = load.get(), aux_ref[s] = aux.get(), route_ref[s] = route.get(), slot_ref[s] = slot.get();
                for (size_t i = 0; i < Ntk; i++) dropped += route_ref[s][i] >= 0 && slot_ref[s][i] < 0;
            }
            CHECK(dropped > 0);  // the capacity drops choices: the dispatch order matters
            std::vector<float> dw1_ref = d_dw1_ref.get(), dw2_ref = d_dw2_ref.get();
            // expert parallel: member i holds experts [i*El, (i+1)*El)
            std::vector<std::vector<float>> out(N), dinp(N), dwc(N), dbc(N), dw1(N), dw2(N), load(N), aux(N);
            std::vector<std::vector<int>> route(N), slot(N);
            run_device_members(N, [&](DeviceThreadExchange& x) {
                    const int i = x.index;
                    const size_t w1n = (size_t)El * f * C, w2n = (size_t)El * C * f;
                    DevF d_inp(inp[i]), d_dout(dout[i]),
                        d_w1l(std::vector<float>(w1.begin() + i * w1n, w1.begin() + (i + 1) * w1n)),
                        d_w2l(std::vector<float>(w2.begin() + i * w2n, w2.begin() + (i + 1) * w2n));
                    DevF o(NtC), z(NtE), probs(NtE), ld(E), first(E), ax(1), xin(capC), xl(capC), pre(capf),
                        act(capf), yl(capC), yout(capC);
                    DevF di(NtC), dwci((size_t)E * C), dbci(E), dw1i(w1n), dw2i(w2n), dz(NtE), dprobs(NtE),
                        dxin(capC), dxl(capC), dpre(capf), dact(capf), dyl(capC), dyout(capC);
                    DevI rte(Ntk), slt(Ntk);
                    gpu::token_choice_ep_forward(o.p, z.p, probs.p, rte.p, slt.p, ld.p, first.p, ax.p, xin.p, xl.p,
                                                 pre.p, act.p, yl.p, yout.p, d_inp.p, d_wc.p, d_w1l.p, d_w2l.p, Nt, C,
                                                 E, f, k, cap, d_bc.p, rt, &x);
                    gpu::token_choice_ep_backward(di.p, dwci.p, dw1i.p, dw2i.p, dz.p, dprobs.p, dxin.p, dxl.p,
                                                  dpre.p, dact.p, dyl.p, dyout.p, d_daux.p, d_dout.p, d_inp.p,
                                                  probs.p, rte.p, slt.p, first.p, xl.p, pre.p, act.p, yout.p, d_wc.p,
                                                  d_w1l.p, d_w2l.p, Nt, C, E, f, k, cap, dbci.p, rt, &x);
                    out[i] = o.get(), dinp[i] = di.get(), dwc[i] = dwci.get(), dbc[i] = dbci.get();
                    dw1[i] = dw1i.get(), dw2[i] = dw2i.get(), load[i] = ld.get(), aux[i] = ax.get();
                    route[i] = rte.get(), slot[i] = slt.get();
                });
            for (int i = 0; i < N; i++) {
                const std::string who = strf(" member %d", i) + tag;
                CHECK_MESSAGE(route[i] == route_ref[i], "ep route" << who);
                CHECK_MESSAGE(slot[i] == slot_ref[i], "ep slot" << who);
                CHECK_MESSAGE(load[i] == load_ref[i], "ep load" << who);
                CHECK_MESSAGE(aux[i] == aux_ref[i], "ep aux" << who);
                check_close(out[i], out_ref[i], scaled_tol(TOL, out_ref[i]), "ep tc out" + who);
                check_close(dinp[i], dinp_ref[i], scaled_tol(TOL, dinp_ref[i]), "ep tc dinp" + who);
                check_close(dwc[i], dwc_ref[i], scaled_tol(TOL, dwc_ref[i]), "ep tc dwc" + who);
                if (!soft) check_close(dbc[i], dbc_ref[i], scaled_tol(TOL, dbc_ref[i]), "ep tc dbc" + who);
                check_owned_experts(dw1[i], dw2[i], dw1_ref, dw2_ref, i, El, f, C, "ep tc" + who);
            }
        }
}
