// tests/exchange_threads.h: an expert group of N members as N threads of one
// process (common/exchange.h), so the expert-parallel layers can be tested
// against one process without MPI. run_members(N, fn) runs fn(exchange) on
// N threads, each with its own member's exchange.
#pragma once
#include <condition_variable>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "common/exchange.h"

// The members' shared table: each publishes its send buffer, then every
// member copies its blocks out of the others'. Two barriers: one before the
// copies (every send published), one after (no buffer reused while read).
struct ThreadGroup {
    int n;
    std::vector<const char*> sends;
    std::mutex mu;
    std::condition_variable cv;
    int arrived = 0;
    long generation = 0;
    explicit ThreadGroup(int n) : n(n), sends(n) {}
    void barrier() {
        std::unique_lock<std::mutex> lock(mu);
        long gen = generation;
        if (++arrived == n) {
            arrived = 0;
            generation++;
            cv.notify_all();
        } else {
            cv.wait(lock, [&] { return generation != gen; });
        }
    }
};

struct ThreadExchange : ExpertExchange {
    ThreadGroup* group;
    long calls = 0;  // all-to-alls made: the layers' exchanges are counted
    ThreadExchange(ThreadGroup* g, int i) : group(g) { members = g->n, index = i; }
    void all_to_all(const void* send, void* recv, size_t bytes) override {
        group->sends[index] = (const char*)send;
        group->barrier();
        for (int r = 0; r < members; r++)
            std::memcpy((char*)recv + r * bytes, group->sends[r] + index * bytes, bytes);
        group->barrier();
        calls++;
    }
    void all_gather(const void* send, void* recv, size_t bytes) override {
        group->sends[index] = (const char*)send;
        group->barrier();
        for (int r = 0; r < members; r++) std::memcpy((char*)recv + r * bytes, group->sends[r], bytes);
        group->barrier();
        calls++;
    }
    template <typename T>
    void sum_into(const T* send, T* recv, size_t n) {  // in member order, as a reduction tree may not be
        group->sends[index] = (const char*)send;
        group->barrier();
        for (int r = 0; r < members; r++) {
            const T* from = (const T*)group->sends[r] + index * n;
            for (size_t i = 0; i < n; i++) recv[i] += from[i];
        }
        group->barrier();
        calls++;
    }
    void reduce_scatter_add(const float* send, float* recv, size_t n) override { sum_into(send, recv, n); }
    void reduce_scatter_add(const double* send, double* recv, size_t n) override { sum_into(send, recv, n); }
};

// Runs fn(member's exchange) on N threads and waits for all; returns the
// exchanges so a test can read their counts.
inline std::vector<ThreadExchange> run_members(int N, const std::function<void(ThreadExchange&)>& fn) {
    ThreadGroup group(N);
    std::vector<ThreadExchange> x;
    for (int i = 0; i < N; i++) x.emplace_back(&group, i);
    std::vector<std::thread> threads;
    for (int i = 0; i < N; i++) threads.emplace_back([&, i] { fn(x[i]); });
    for (std::thread& t : threads) t.join();
    for (ThreadExchange& e : x) e.group = nullptr;
    return x;
}
