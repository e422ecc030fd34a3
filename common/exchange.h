// The exchange of an expert group (expert parallelism, README "Expert
// parallelism"): N members, each holding E/N of every expert layer's experts.
// The mixed-token exchange moves blocks all-to-all; the input-token exchange
// gathers every member's inputs and sums the owners' partial outputs.
// The layers reach their peers only through this interface, so the same
// layer code runs over MPI (train/dist.h), NCCL, or, in the tests, threads of
// one process.
#pragma once
#include <cstddef>

struct ExpertExchange {
    int members = 1;  // N, the ranks of the expert group
    int index = 0;    // this rank's place in the group: it holds experts [index*E/N, (index+1)*E/N)
    // Block r of send (members blocks of `bytes` each) goes to member r;
    // block r of recv receives member r's block for this rank. send and recv
    // do not overlap. Every member calls it with the same `bytes`.
    virtual void all_to_all(const void* send, void* recv, size_t bytes) = 0;
    // Every member's `bytes` of send into recv, block r from member r.
    virtual void all_gather(const void* send, void* recv, size_t bytes) = 0;
    // recv (n) += the sum over the members of their block `index` of send
    // (members blocks of n values).
    virtual void reduce_scatter_add(const float* send, float* recv, size_t n) = 0;
    virtual void reduce_scatter_add(const double* send, double* recv, size_t n) = 0;
    virtual ~ExpertExchange() = default;
};
