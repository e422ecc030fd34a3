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
// --expert-parallel N (README, "Expert parallelism"): the R ranks form R/N
// expert groups of N consecutive ranks; member i of a group (rank r, i =
// r % N) holds experts [i*E/N, (i+1)*E/N) of every MoT and token-choice
// layer, everything else whole. The MoT layers exchange mixed tokens, the
// token-choice layers each expert's buffer of routed tokens, within the
// expert group (cpu/fast/expert_parallel.h, through the group's
// ExpertExchange). An
// expert's gradient is complete on its owner after the backward pass (it
// sums the mixed tokens of the whole group) and is summed over the R/N
// replicas of that shard only (the ranks with the same i); the rest over
// all ranks, as above. The gradient norm counts each expert once. A
// checkpoint gathers the shards of expert group 0 into the whole model on
// rank 0; a loaded or resumed model is sliced on every rank.
//
// Backends: MPI on host memory for CPU ranks; NCCL on device memory for GPU
// ranks when built with it (train/device.h; the NCCL id travels over MPI);
// GPU ranks without NCCL all-reduce through host copies (and --zero 1 needs
// NCCL there). Every collective has the time limit of train/dist.h. The
// model is reached through train/model.h alone: its blocks of parameters and
// gradients as spans, its moments and its update of a share.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/fileio.h"
#include "train/device.h"
#include "train/dist.h"
#include "train/model.h"

// The all-to-all of an expert group over MPI (common/exchange.h).
struct MpiExchange : ExpertExchange {
    DistGroup* group = nullptr;
    double ms = 0;       // time in the all-to-alls since the last reset (train_step: per step)
    double bytes = 0;    // bytes this rank sent to the others since then
    void all_to_all(const void* send, void* recv, size_t block) override {
        double t0 = now_ms();
        dist_all_to_all(send, recv, block, "the expert exchange (--expert-parallel)", group);
        ms += now_ms() - t0;
        bytes += (double)block * (members - 1);
    }
};

// A run of the model's parameters: [lo, lo + n), and whether it is a slice of
// expert tensors (summed over the replicas) or whole (summed over all ranks).
struct ParamRun {
    size_t lo, n;
    bool experts;
};

struct Parallel {
    int zero = 0;         // 1: ZeRO-1 (only with several ranks)
    int ep = 1;           // --expert-parallel N: ranks per expert group
    DistGroup experts;    // this rank's expert group (N ranks)
    DistGroup replicas;   // the ranks that hold the same experts (R/N ranks)
    MpiExchange exchange;       // the expert group's all-to-all, which the expert layers call
    std::vector<ParamRun> runs;  // expert parallelism: the model's parameters, whole and sliced runs in order
    std::string backend;  // what moves the gradients, for the start-up lines
    size_t N = 0;         // parameters
    size_t S = 0, lo = 0;             // ZeRO-1: the body's slice per rank, and this rank's first parameter
    size_t tail_lo = 0, tail_n = 0;   // ZeRO-1: the tail [R*S, N), updated by every rank
    size_t slice_at = 0;  // ZeRO-1: where the summed slice lies in the gradients (MPI: 0, NCCL: in place at lo)
    bool use_nccl = false;            // GPU ranks, built with NCCL: the collectives run on device memory
    NcclComm nccl;
    std::vector<float> host_grads;    // GPU ranks without NCCL: host staging of the gradients
    double comm_ms = 0;  // the last step's exchange, ms: the all-reduce, or (ZeRO-1) reduce-scatter and all-gather
};

inline bool parallel_sharded(const Parallel& p) { return p.zero == 1 && dist().size > 1; }

// The config this rank's model is built with: that of the whole model, with
// expert_shards N under expert parallelism.
inline Config parallel_member_config(const Config& c, int ep) {
    Config member = c;
    member.expert_shards = ep;
    return member;
}

// This rank's part of the whole model's values (parameters or moments, in
// checkpoint order): under expert parallelism its experts' slices and every
// whole tensor.
inline std::vector<float> parallel_member_part(const Config& c, int ep, const std::vector<float>& whole) {
    if (ep == 1) return whole;
    Config member = parallel_member_config(c, ep);
    std::vector<float> part(num_params(member));
    for_each_expert_slice(member, dist().rank % ep, [&](size_t at_whole, size_t at, size_t n, bool) {
        std::copy(whole.begin() + at_whole, whole.begin() + at_whole + n, part.begin() + at);
    });
    return part;
}

// The whole model's values on rank 0 from the members' parts (a collective
// every rank calls): the whole tensors from rank 0's part, the expert slices
// gathered from rank 0's expert group. Without expert parallelism, part.
inline const float* parallel_whole(Parallel* p, const Config& member, const float* part, std::vector<float>* whole,
                                   const char* what) {
    if (p->ep == 1) return part;
    std::vector<float> mine;  // this member's expert slices, in order
    for (const ParamRun& r : p->runs)
        if (r.experts) mine.insert(mine.end(), part + r.lo, part + r.lo + r.n);
    const bool root = p->experts.rank == 0;
    std::vector<float> all(root ? mine.size() * p->ep : 0);
    dist_gather(all.data(), mine.data(), mine.size(), what, &p->experts);
    if (dist().rank != 0) return nullptr;
    Config c = member;
    c.expert_shards = 1;
    whole->assign(num_params(c), 0.0f);
    for (int i = 0; i < p->ep; i++) {
        size_t k = 0;  // into member i's slices
        for_each_expert_slice(member, i, [&](size_t at_whole, size_t at, size_t n, bool sliced) {
            const float* from = sliced ? all.data() + i * mine.size() + k : part + at;
            if (sliced) k += n;
            if (sliced || i == 0) std::copy(from, from + n, whole->begin() + at_whole);
        });
    }
    return whole->data();
}

// The backend and, for ZeRO-1, this rank's share; with --zero 1 the model's
// moments shrink to that share. Call after model_build, on every rank.
inline void parallel_init(Parallel* p, Model* m, int zero) {
    const Dist& d = dist();
    p->N = num_params(m->cfg);
    p->zero = zero;
    p->ep = m->cfg.expert_shards;
    if (p->ep > 1) {
        p->experts = dist_group(d.rank / p->ep);
        p->replicas = dist_group(d.rank % p->ep);
        p->exchange.members = p->ep;
        p->exchange.index = p->experts.rank;
        p->exchange.group = &p->experts;
        model_set_experts(m, &p->exchange);
        for_each_expert_slice(m->cfg, p->exchange.index, [&](size_t, size_t at, size_t n, bool sliced) {
            if (!p->runs.empty() && p->runs.back().experts == sliced) p->runs.back().n += n;
            else p->runs.push_back({at, n, sliced});
        });
    }
    p->S = p->N / d.size;
    p->lo = (size_t)d.rank * p->S;
    p->tail_lo = (size_t)d.size * p->S;
    p->tail_n = p->N - p->tail_lo;
    if (d.size == 1) {
        p->backend = "one process";
        return;
    }
    if (!model_grad_span(m).on_device) {
        p->backend = "MPI";
    } else if (nccl_compiled()) {
        p->backend = "NCCL";
        p->use_nccl = true;
    } else {
        p->backend = "MPI through host copies of the GPU gradients (built without NCCL)";
        if (zero) fail("--zero 1 on GPUs needs NCCL: rebuild with NCCL (in the CUDA toolkit), or --zero 0");
        p->host_grads.resize(p->N);
    }
    if (p->use_nccl) nccl_init(&p->nccl);
    if (!parallel_sharded(*p)) return;
    // MPI's reduce-scatter leaves this rank's slice at the start of the
    // gradients, NCCL's (as parallel_sum_grads asks it) in place
    p->slice_at = p->use_nccl ? p->lo : 0;
    model_shard(m, {{p->lo, p->S, p->slice_at}, {p->tail_lo, p->tail_n, p->tail_lo}});
}

// Frees the NCCL communicator (every rank, at the end).
inline void parallel_free(Parallel* p) {
    nccl_free(&p->nccl);
    dist_group_free(&p->experts);
    dist_group_free(&p->replicas);
}

// The gradients summed over the ranks: all of them (--zero 0), or this
// rank's slice of the body (at grads[slice_at, slice_at + S)) and the tail
// (--zero 1).
inline void parallel_sum_grads(Parallel* p, Model* m) {
    if (dist().size == 1) return;
    double t0 = now_ms();
    bool sharded = parallel_sharded(*p);
    FloatSpan g = model_grad_span(m);  // (N)
    if (p->use_nccl) {
        if (sharded) {
            nccl_reduce_scatter_sum(&p->nccl, g.data, g.data + p->lo, p->S);
            if (p->tail_n) nccl_all_reduce_sum(&p->nccl, g.data + p->tail_lo, p->tail_n);
        } else {
            nccl_all_reduce_sum(&p->nccl, g.data, p->N);
        }
        nccl_wait(&p->nccl, "the gradient all-reduce");
    } else if (g.on_device) {
        span_to_host(g, p->host_grads.data());
        dist_sum(p->host_grads.data(), p->N, "the gradient all-reduce");
        span_from_host(g, p->host_grads.data());
    } else if (p->ep > 1) {
        for (const ParamRun& r : p->runs)
            dist_sum(g.data + r.lo, r.n,
                     r.experts ? "the expert gradients' all-reduce over their replicas" : "the gradient all-reduce",
                     r.experts ? &p->replicas : nullptr);
    } else if (sharded) {
        dist_reduce_scatter_sum(g.data, p->S, "the gradient reduce-scatter (--zero 1)");
        dist_sum(g.data + p->tail_lo, p->tail_n, "the all-reduce of the gradients' tail (--zero 1)");
    } else {
        dist_sum(g.data, p->N, "the gradient all-reduce");
    }
    p->comm_ms = now_ms() - t0;
}

// The global gradient norm, after parallel_sum_grads.
inline double parallel_grad_norm(Parallel* p, Model* m) {
    if (p->ep > 1) {  // the whole tensors are the same on every rank; the expert slices, once per group
        FloatSpan g = model_grad_span(m);
        double whole = 0, experts = 0;
        for (const ParamRun& r : p->runs) (r.experts ? experts : whole) += span_norm_squared(span_part(g, r.lo, r.n));
        dist_sum(&experts, 1, "the gradient norm's all-reduce (--expert-parallel)", &p->experts);
        return std::sqrt(whole + experts);
    }
    if (!parallel_sharded(*p)) return model_grad_norm(m);
    const bool first = dist().rank == 0;  // the tail counts once
    FloatSpan g = model_grad_span(m);
    double sq = span_norm_squared(span_part(g, p->slice_at, p->S)) +
                (first && p->tail_n ? span_norm_squared(span_part(g, p->tail_lo, p->tail_n)) : 0.0);
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
    model_update_share(m, lr, beta1, beta2, eps, wd, step, grad_scale);
    double t0 = now_ms();
    FloatSpan w = model_param_span(m);  // (N)
    if (p->use_nccl) {
        nccl_all_gather(&p->nccl, w.data + p->lo, w.data, p->S);
        nccl_wait(&p->nccl, "the parameter all-gather (--zero 1)");
    } else {
        dist_allgather(w.data, p->S, "the parameter all-gather (--zero 1)");
    }
    p->comm_ms += now_ms() - t0;
}

// The moments of every parameter, for a checkpoint: on rank 0 (gathered from
// the shards under ZeRO-1, a collective every rank calls); other ranks may
// get nothing.
inline void parallel_get_moments(Parallel* p, Model* m, std::vector<float>* mom, std::vector<float>* vel) {
    if (p->ep > 1) {
        std::vector<float> pm, pv, whole;
        model_get_moments(m, &pm, &pv);
        for (const auto& [part, out] : {std::pair{&pm, mom}, std::pair{&pv, vel}}) {
            const float* w = parallel_whole(p, m->cfg, part->data(), &whole, "gathering the expert moments");
            if (w) out->assign(w, w + whole.size());
            else out->clear();
        }
        return;
    }
    if (!parallel_sharded(*p)) {
        model_get_moments(m, mom, vel);
        return;
    }
    std::vector<float> sm, sv;  // this rank's share, (S + tail_n) each
    model_get_moments(m, &sm, &sv);
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
    if (p->ep > 1) {
        Config c = m->cfg;
        c.expert_shards = 1;
        model_set_moments(m, parallel_member_part(c, p->ep, mom), parallel_member_part(c, p->ep, vel));
        return;
    }
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
    model_set_moments(m, sm, sv);
}

// Fails on rank 0 when some rank's parameters differ from rank 0's: every
// rank applies the same update to the same weights, so they never should;
// checked before each checkpoint (the parameters are on the host then).
// Within group g (or all ranks); `which` names the parameters compared.
inline void parallel_check_same(const float* params, size_t n, int64_t step, const DistGroup* g, const char* which) {
    if (dist_size(g) == 1) return;
    uint64_t h = fnv1a64(params, n * sizeof(float));
    char mine[17];
    std::snprintf(mine, sizeof mine, "%016llx", (unsigned long long)h);
    const bool root = g ? g->rank == 0 : dist().rank == 0;
    std::vector<char> all(root ? 17 * dist_size(g) : 0);
    dist_gather(all.data(), mine, 17, "comparing the ranks' parameters", g);
    for (int r = 1; r < (int)all.size() / 17; r++)
        if (std::memcmp(all.data(), all.data() + 17 * r, 16) != 0)
            fail(strf("step %lld: %s: rank %d holds other parameters than rank %d (checksums %.16s and %.16s): the "
                      "ranks have diverged; no checkpoint written",
                      (long long)step, which, dist().rank + r * (g ? dist().size / g->size : 1), dist().rank,
                      all.data(), all.data() + 17 * r));
}

// Under expert parallelism the whole tensors are compared over all ranks,
// each expert slice over its replicas.
inline void parallel_check_same_params(Parallel* p, const float* params, size_t n, int64_t step) {
    if (p->ep == 1) {
        parallel_check_same(params, n, step, nullptr, "all parameters");
        return;
    }
    for (bool experts : {false, true}) {
        std::vector<float> runs;
        for (const ParamRun& r : p->runs)
            if (r.experts == experts) runs.insert(runs.end(), params + r.lo, params + r.lo + r.n);
        parallel_check_same(runs.data(), runs.size(), step, experts ? &p->replicas : nullptr,
                            experts ? "this rank's experts, against their replicas" : "the replicated parameters");
    }
}
