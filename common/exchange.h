// The exchange of an expert group (expert parallelism, README "Expert
// parallelism"): N members, each holding E/N of every expert layer's experts.
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
    virtual ~ExpertExchange() = default;
};
