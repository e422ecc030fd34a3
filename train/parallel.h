// Data-parallel training of the Model (train/model.h) over the ranks of
// train/dist.h (docs/design.md section 11). Every rank holds the whole model and
// runs its own micro-batches; between the backward passes and the update the
// ranks exchange gradients, so every rank applies the same update:
//
//   --zero 0 (default)  all-reduce: each rank's gradients are scaled by
//                       1/(R*A) in the backward pass, so the sum over the R
//                       ranks is the mean over the step's R*A micro-batches;
//                       every rank then clips and updates all parameters.
//   --zero 1            ZeRO stage 1 (Rajbhandari et al. 2020): the AdamW
//                       moments and the update are sharded. The parameters
//                       0..N-1 are cut into a body of R slices of S = N / R
//                       (rank r owns [r*S, r*S + S)) and a tail [R*S, N) of
//                       fewer than R parameters. Reduce-scatter the body's
//                       gradients (rank r receives the sum of its slice),
//                       all-reduce the tail's; the gradient norm is the sum
//                       of the ranks' squared norms of their slices (plus the
//                       tail once); each rank updates its slice and the tail
//                       with moments for S + tail parameters only, then an
//                       all-gather gives every rank the whole body. Memory
//                       per rank: parameters and gradients 8N bytes, moments
//                       8(S + tail) instead of 8N.
//
// Backends: MPI on host memory for CPU ranks; NCCL on device memory for GPU
// ranks when built with it (the NCCL id travels over MPI); GPU ranks without
// NCCL all-reduce through host copies (and --zero 1 needs NCCL there).
// Every collective has the time limit of train/dist.h.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/fileio.h"
#include "train/dist.h"
#include "train/model.h"
#if defined(__CUDACC__) && defined(MOT_NCCL)
#include <nccl.h>
#endif

struct Parallel {
    int zero = 0;         // 1: ZeRO-1 (only with several ranks)
    std::string backend;  // what moves the gradients, for the start-up lines
    size_t N = 0;         // parameters
    size_t S = 0, lo = 0;             // ZeRO-1: the body's slice per rank, and this rank's first parameter
    size_t tail_lo = 0, tail_n = 0;   // ZeRO-1: the tail [R*S, N), updated by every rank
    std::vector<float> host_grads;    // GPU ranks without NCCL: host staging of the gradients
    double comm_ms = 0;  // the last step's exchange, ms: the all-reduce, or (ZeRO-1) reduce-scatter and all-gather
#if defined(__CUDACC__) && defined(MOT_NCCL)
    ncclComm_t nccl = nullptr;
    gpu::AdamwChunk* shard_chunks = nullptr;  // ZeRO-1 on the GPU: this rank's slice and the tail (device)
    int n_shard_chunks = 0;
#endif
};

inline bool nccl_compiled() {
#if defined(__CUDACC__) && defined(MOT_NCCL)
    return true;
#else
    return false;
#endif
}

inline bool parallel_sharded(const Parallel& p) { return p.zero == 1 && dist().size > 1; }

#if defined(__CUDACC__) && defined(MOT_NCCL)
#define NCCL_CHECK(call)                                                                                   \
    do {                                                                                                   \
        ncclResult_t nccl_status_ = (call);                                                                \
        if (nccl_status_ != ncclSuccess)                                                                   \
            fail(strf("%s%s: %s", dist_who().c_str(), #call, ncclGetErrorString(nccl_status_)));           \
    } while (0)

// Waits for the NCCL work queued on the default stream, under the
// collective time limit of train/dist.h (its watchdog ends the rank when a
// peer died or hangs); an error NCCL reports is raised.
inline void nccl_wait(Parallel* p, const char* what) {
    CollectiveGuard guard(what);
    for (long polls = 0;; polls++) {
        cudaError_t st = cudaStreamQuery(0);
        if (st == cudaSuccess) return;
        if (st != cudaErrorNotReady) CUDA_CHECK(st);
        ncclResult_t async = ncclSuccess;
        NCCL_CHECK(ncclCommGetAsyncError(p->nccl, &async));
        if (async != ncclSuccess) fail(strf("%s%s: NCCL: %s", dist_who().c_str(), what, ncclGetErrorString(async)));
        if (polls > 2000) usleep(50);
    }
}
#endif

// The backend and, for ZeRO-1, this rank's share; with --zero 1 the model's
// moments shrink to that share. Call after model_build, on every rank.
inline void parallel_init(Parallel* p, Model* m, int zero) {
    const Dist& d = dist();
    p->N = num_params(m->cfg);
    p->zero = zero;
    p->S = p->N / d.size;
    p->lo = (size_t)d.rank * p->S;
    p->tail_lo = (size_t)d.size * p->S;
    p->tail_n = p->N - p->tail_lo;
    if (d.size == 1) {
        p->backend = "one process";
        return;
    }
    if (!m->on_gpu) {
        p->backend = "MPI";
    } else if (nccl_compiled()) {
        p->backend = "NCCL";
    } else {
        p->backend = "MPI through host copies of the GPU gradients (built without NCCL)";
        if (zero) fail("--zero 1 on GPUs needs NCCL: rebuild with NCCL (in the CUDA toolkit), or --zero 0");
        p->host_grads.resize(p->N);
    }
#if defined(__CUDACC__) && defined(MOT_NCCL)
    if (m->on_gpu) {
        ncclUniqueId id;
        if (d.rank == 0) NCCL_CHECK(ncclGetUniqueId(&id));
        dist_broadcast(&id, sizeof id, "sending the NCCL id");
        // blocks until every rank has joined: a rank that died or hangs after
        // sending the id must end the job, as in any other collective
        CollectiveGuard guard("creating the NCCL communicator");
        NCCL_CHECK(ncclCommInitRank(&p->nccl, d.size, id, d.rank));
    }
#endif
    if (!parallel_sharded(*p)) return;
    size_t share = p->S + p->tail_n;  // the moments this rank keeps
    if (!m->on_gpu) {
        std::vector<float>(share, 0.0f).swap(m->cpu.m_memory);
        std::vector<float>(share, 0.0f).swap(m->cpu.v_memory);
    }
#if defined(__CUDACC__) && defined(MOT_NCCL)
    if (m->on_gpu) {
        CUDA_CHECK(cudaFree(m->gpu.mv_memory));
        m->gpu.mv_memory = nullptr;
        gpu_malloc(&m->gpu.mv_memory, 2 * share, "the AdamW moments of this rank's share (--zero 1)");
        CUDA_CHECK(cudaMemset(m->gpu.mv_memory, 0, 2 * share * sizeof(float)));
        std::vector<gpu::AdamwChunk> chunks = gpu::adamw_chunk_table(m->cfg, p->lo, p->S, 0);
        std::vector<gpu::AdamwChunk> tail = gpu::adamw_chunk_table(m->cfg, p->tail_lo, p->tail_n, p->S);
        chunks.insert(chunks.end(), tail.begin(), tail.end());
        p->n_shard_chunks = (int)chunks.size();
        gpu_malloc(&p->shard_chunks, chunks.size(), "the optimizer's chunk table of this rank's share");
        CUDA_CHECK(cudaMemcpy(p->shard_chunks, chunks.data(), chunks.size() * sizeof(gpu::AdamwChunk),
                              cudaMemcpyHostToDevice));
    }
#endif
}

// Frees the NCCL communicator and the device chunk table (every rank, at the end).
inline void parallel_free(Parallel* p) {
#if defined(__CUDACC__) && defined(MOT_NCCL)
    if (p->shard_chunks) cudaFree(p->shard_chunks);
    p->shard_chunks = nullptr;
    if (p->nccl) ncclCommDestroy(p->nccl);
    p->nccl = nullptr;
#endif
    (void)p;
}

// The gradients summed over the ranks: all of them (--zero 0), or this
// rank's slice of the body (at grads[0, S) on the CPU, in place at
// grads[lo, lo + S) on the GPU) and the tail (--zero 1).
inline void parallel_sum_grads(Parallel* p, Model* m) {
    if (dist().size == 1) return;
    double t0 = now_ms();
    bool sharded = parallel_sharded(*p);
#if defined(__CUDACC__)
    if (m->on_gpu) {
        float* g = m->gpu.grads_memory;
#if defined(MOT_NCCL)
        if (sharded) {
            NCCL_CHECK(ncclReduceScatter(g, g + p->lo, p->S, ncclFloat, ncclSum, p->nccl, 0));
            if (p->tail_n) NCCL_CHECK(ncclAllReduce(g + p->tail_lo, g + p->tail_lo, p->tail_n, ncclFloat, ncclSum, p->nccl, 0));
        } else {
            NCCL_CHECK(ncclAllReduce(g, g, p->N, ncclFloat, ncclSum, p->nccl, 0));
        }
        nccl_wait(p, "the gradient all-reduce");
#else
        gpu::gpu_gpt_get_grads(&m->gpu, p->host_grads.data());
        dist_sum(p->host_grads.data(), p->N, "the gradient all-reduce");
        CUDA_CHECK(cudaMemcpy(g, p->host_grads.data(), p->N * sizeof(float), cudaMemcpyHostToDevice));
#endif
    }
#endif
    if (!m->on_gpu) {
        float* g = m->cpu.grads_memory.data();
        if (sharded) {
            dist_reduce_scatter_sum(g, p->S, "the gradient reduce-scatter (--zero 1)");
            dist_sum(g + p->tail_lo, p->tail_n, "the all-reduce of the gradients' tail (--zero 1)");
        } else {
            dist_sum(g, p->N, "the gradient all-reduce");
        }
    }
    p->comm_ms = now_ms() - t0;
}

// The global gradient norm, after parallel_sum_grads.
inline double parallel_grad_norm(Parallel* p, Model* m) {
    if (!parallel_sharded(*p)) return model_grad_norm(m);
    const bool first = dist().rank == 0;  // the tail counts once
    double sq = 0;
#if defined(__CUDACC__)
    if (m->on_gpu) {
        const float* g = m->gpu.grads_memory;
        sq = gpu::grad_norm_squared(g + p->lo, p->S) + (first && p->tail_n ? gpu::grad_norm_squared(g + p->tail_lo, p->tail_n) : 0.0);
    }
#endif
    if (!m->on_gpu) {
        const float* g = m->cpu.grads_memory.data();
        sq = grad_norm_squared(g, p->S) + (first ? grad_norm_squared(g + p->tail_lo, p->tail_n) : 0.0);
    }
    dist_sum(&sq, 1, "the gradient norm's all-reduce (--zero 1)");
    return std::sqrt(sq);
}

// The AdamW step (model_update's arguments); under ZeRO-1 this rank's slice
// and the tail, then the gradients zeroed and the body all-gathered.
inline void parallel_update(Parallel* p, Model* m, float lr, float beta1, float beta2, float eps, float wd, int step,
                            float grad_scale) {
    if (!parallel_sharded(*p)) {
        model_update(m, lr, beta1, beta2, eps, wd, step, grad_scale);
        return;
    }
    // the other ranks' slices of the gradients were not consumed: zeroed here
#if defined(__CUDACC__) && defined(MOT_NCCL)
    if (m->on_gpu) {
        size_t share = p->S + p->tail_n;
        gpu::gpt_update_range(&m->gpu, p->shard_chunks, p->n_shard_chunks, m->gpu.mv_memory, m->gpu.mv_memory + share,
                              lr, beta1, beta2, eps, wd, step, grad_scale);
        gpu::gpt_zero_grad(&m->gpu);
    }
#endif
    if (!m->on_gpu) {
        GPT<float, FastKernels>& g = m->cpu;
        float *grads = g.grads_memory.data(), *mo = g.m_memory.data(), *ve = g.v_memory.data();
        gpt_update_range(&g, p->lo, p->S, grads, mo, ve, lr, beta1, beta2, eps, wd, step, grad_scale);
        gpt_update_range(&g, p->tail_lo, p->tail_n, grads + p->tail_lo, mo + p->S, ve + p->S, lr, beta1, beta2, eps,
                         wd, step, grad_scale);
        std::fill(g.grads_memory.begin(), g.grads_memory.end(), 0.0f);
    }
    double t0 = now_ms();
#if defined(__CUDACC__) && defined(MOT_NCCL)
    if (m->on_gpu) {
        float* params = m->gpu.params_memory;
        NCCL_CHECK(ncclAllGather(params + p->lo, params, p->S, ncclFloat, p->nccl, 0));
        nccl_wait(p, "the parameter all-gather (--zero 1)");
    }
#endif
    if (!m->on_gpu) dist_allgather(m->cpu.params_memory.data(), p->S, "the parameter all-gather (--zero 1)");
    p->comm_ms += now_ms() - t0;
}

// The moments of every parameter, for a checkpoint: on rank 0 (gathered from
// the shards under ZeRO-1, a collective every rank calls); other ranks may
// get nothing.
inline void parallel_get_moments(Parallel* p, Model* m, std::vector<float>* mom, std::vector<float>* vel) {
    if (!parallel_sharded(*p)) {
        model_get_moments(m, mom, vel);
        return;
    }
    size_t share = p->S + p->tail_n;
    std::vector<float> sm(share), sv(share);  // this rank's share
#if defined(__CUDACC__)
    if (m->on_gpu) {
        CUDA_CHECK(cudaMemcpy(sm.data(), m->gpu.mv_memory, share * sizeof(float), cudaMemcpyDeviceToHost));
        CUDA_CHECK(cudaMemcpy(sv.data(), m->gpu.mv_memory + share, share * sizeof(float), cudaMemcpyDeviceToHost));
    }
#endif
    if (!m->on_gpu) sm = m->cpu.m_memory, sv = m->cpu.v_memory;
    bool root = dist().rank == 0;
    mom->assign(root ? p->N : 0, 0.0f);
    vel->assign(root ? p->N : 0, 0.0f);
    dist_gather(mom->data(), sm.data(), p->S, "gathering the AdamW m for a checkpoint (--zero 1)");
    dist_gather(vel->data(), sv.data(), p->S, "gathering the AdamW v for a checkpoint (--zero 1)");
    if (root) {
        std::copy(sm.begin() + p->S, sm.end(), mom->begin() + p->tail_lo);
        std::copy(sv.begin() + p->S, sv.end(), vel->begin() + p->tail_lo);
    }
}

// Sets the moments from those of every parameter (a resumed checkpoint's,
// read by every rank); under ZeRO-1 each rank keeps its share.
inline void parallel_set_moments(Parallel* p, Model* m, const std::vector<float>& mom, const std::vector<float>& vel) {
    if (!parallel_sharded(*p)) {
        model_set_moments(m, mom, vel);
        return;
    }
    size_t share = p->S + p->tail_n;
    std::vector<float> sm(share), sv(share);
    for (const auto& [all, part] : {std::pair{&mom, &sm}, std::pair{&vel, &sv}}) {
        std::copy(all->begin() + p->lo, all->begin() + p->lo + p->S, part->begin());
        std::copy(all->begin() + p->tail_lo, all->end(), part->begin() + p->S);
    }
#if defined(__CUDACC__)
    if (m->on_gpu) {
        CUDA_CHECK(cudaMemcpy(m->gpu.mv_memory, sm.data(), share * sizeof(float), cudaMemcpyHostToDevice));
        CUDA_CHECK(cudaMemcpy(m->gpu.mv_memory + share, sv.data(), share * sizeof(float), cudaMemcpyHostToDevice));
        return;
    }
#endif
    m->cpu.m_memory.swap(sm);
    m->cpu.v_memory.swap(sv);
}

// Fails on rank 0 when some rank's parameters differ from rank 0's: every
// rank applies the same update to the same weights, so they never should;
// checked before each checkpoint (the parameters are on the host then).
inline void parallel_check_same_params(const float* params, size_t n, int64_t step) {
    if (dist().size == 1) return;
    uint64_t h = fnv1a64(params, n * sizeof(float));
    char mine[17];
    std::snprintf(mine, sizeof mine, "%016llx", (unsigned long long)h);
    std::vector<char> all(dist().rank == 0 ? 17 * dist().size : 0);
    dist_gather(all.data(), mine, 17, "comparing the ranks' parameters");
    for (int r = 1; r < (int)all.size() / 17; r++)
        if (std::memcmp(all.data(), all.data() + 17 * r, 16) != 0)
            fail(strf("step %lld: rank %d holds other parameters than rank 0 (checksums %.16s and %.16s): the ranks "
                      "have diverged; no checkpoint written",
                      (long long)step, r, all.data(), all.data() + 17 * r));
}
