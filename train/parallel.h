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
    double ms = 0;       // time in the exchange since the last reset (step_begin: per step)
    double bytes = 0;    // bytes this rank sent to the others since then
    std::vector<float> sum;  // reduce_scatter_add's block
    void all_to_all(const void* send, void* recv, size_t block) override {
        double t0 = now_ms();
        dist_all_to_all(send, recv, block, "the expert exchange (--expert-parallel)", group);
        ms += now_ms() - t0;
        bytes += (double)block * (members - 1);
    }
    void all_gather(const void* send, void* recv, size_t block) override {
        double t0 = now_ms();
        dist_all_gather(send, recv, block, "the expert exchange's all-gather (--expert-parallel)", group);
        ms += now_ms() - t0;
        bytes += (double)block * (members - 1);
    }
    void reduce_scatter_add(const float* send, float* recv, size_t n) override {
        double t0 = now_ms();
        sum.resize(n);
        dist_reduce_scatter(send, sum.data(), n, "the expert exchange's reduce-scatter (--expert-parallel)", group);
        for (size_t i = 0; i < n; i++) recv[i] += sum[i];
        ms += now_ms() - t0;
        bytes += (double)n * sizeof(float) * (members - 1);
    }
    void reduce_scatter_add(const double*, double*, size_t) override {
        fail("the expert exchange of a training run moves floats");
    }
};

// A run of the model's parameters: [lo, lo + n), and whether it is a slice of
// expert tensors (summed over the replicas) or whole (summed over all ranks).
struct ParamRun {
    size_t lo, n;
    bool experts;
};

// ZeRO-1's cut of a contiguous run [lo, lo + n) of the parameters among the
// ranks of a group (all ranks, or under expert parallelism the replicas of
// an expert shard): a body of size*S (the group's rank r owns
// [lo + r*S, lo + r*S + S)) and a tail [lo + size*S, lo + n) of fewer than
// size parameters, updated by every rank of the group.
struct ZeroShard {
    size_t lo = 0, n = 0, S = 0, tail_lo = 0, tail_n = 0;
    const DistGroup* group = nullptr;  // nullptr: all ranks
    int rank = 0, size = 1;            // this rank's place in the group
    size_t slice_at = 0;  // where the summed slice lies in the gradients (MPI: at lo, NCCL: in place at mine())
    size_t mine() const { return lo + (size_t)rank * S; }
};

inline ZeroShard zero_shard(size_t lo, size_t n, const DistGroup* g) {
    ZeroShard z;
    z.lo = lo, z.n = n, z.group = g;
    z.size = dist_size(g);
    z.rank = g ? g->rank : dist().rank;
    z.S = n / z.size;
    z.tail_lo = lo + (size_t)z.size * z.S;
    z.tail_n = lo + n - z.tail_lo;
    z.slice_at = lo;
    return z;
}

struct Parallel {
    int zero = 0;         // 1: ZeRO-1 (only with several ranks)
    int ep = 1;           // --expert-parallel N: ranks per expert group
    DistGroup experts;    // this rank's expert group (N ranks)
    DistGroup replicas;   // the ranks that hold the same experts (R/N ranks)
    MpiExchange exchange;       // the expert group's exchange, which the expert layers call: CPU ranks
    NcclExchange nccl_exchange;  // ... GPU ranks (NCCL)
    NcclComm nccl_experts, nccl_replicas;  // GPU ranks: the two groups' communicators
    std::vector<ParamRun> runs;  // expert parallelism: the model's parameters, whole and sliced runs in order
    std::string backend;  // what moves the gradients, for the start-up lines
    size_t N = 0;         // parameters
    // ZeRO-1: one shard of all N parameters over all ranks; under expert parallelism one per run of
    // parameters, the whole ones over all ranks, the expert slices over their replicas
    std::vector<ZeroShard> shards;
    bool use_nccl = false;            // GPU ranks, built with NCCL: the collectives run on device memory
    NcclComm nccl;
    std::vector<float> host_grads;    // GPU ranks without NCCL: host staging of the gradients
    double comm_ms = 0;  // the last step's exchange, ms: the all-reduce, or (ZeRO-1) reduce-scatter and all-gather
};

inline bool parallel_sharded(const Parallel& p) { return p.zero == 1 && dist().size > 1; }

// The expert exchange's time (ms) and bytes sent since the last reset.
inline void parallel_exchange_reset(Parallel* p) {
    p->exchange.ms = p->exchange.bytes = 0;
    p->nccl_exchange.ms = p->nccl_exchange.bytes = 0;
}
inline double parallel_exchange_ms(const Parallel& p) { return p.use_nccl ? p.nccl_exchange.ms : p.exchange.ms; }
inline double parallel_exchange_bytes(const Parallel& p) {
    return p.use_nccl ? p.nccl_exchange.bytes : p.exchange.bytes;
}

// The config this rank's model is built with: that of the whole model, with
// expert_shards N under expert parallelism, exchanging input tokens or
// mixed tokens (`exchange`: inputs, mixed, or auto: whichever moves fewer
// values, the input tokens when N*G < E).
inline Config parallel_member_config(const Config& c, int ep, const std::string& exchange = "mixed") {
    Config member = c;
    member.expert_shards = ep;
    member.expert_inputs = ep > 1 && (exchange == "inputs" || (exchange == "auto" && (long long)ep * c.mot.G < c.E));
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

// The whole model's values on rank 0 from the members' parts (every rank
// calls it; the ranks of expert group 0 gather): the whole tensors from rank
// 0's part, the expert slices from the members of its group. Without expert
// parallelism, part.
inline const float* parallel_whole(Parallel* p, const Config& member, const float* part, std::vector<float>* whole,
                                   const char* what) {
    if (p->ep == 1) return part;
    if (dist().rank >= p->ep) return nullptr;  // expert group 0 alone gathers
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

// The NCCL communicator of a shard's group: all ranks (null), or the
// replicas of this rank's expert slice.
inline NcclComm* parallel_nccl(Parallel* p, const DistGroup* g) {
    return g == &p->replicas ? &p->nccl_replicas : &p->nccl;
}

// The backend and, for ZeRO-1, this rank's share; with --zero 1 the model's
// moments shrink to that share. Call after model_build, on every rank.
inline void parallel_init(Parallel* p, Model* m, int zero) {
    const Dist& d = dist();
    p->N = num_params(m->cfg);
    p->zero = zero;
    p->ep = m->cfg.expert_shards;
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
    if (p->ep > 1) {
        p->experts = dist_group(d.rank / p->ep);
        p->replicas = dist_group(d.rank % p->ep);
        ExpertExchange* x = &p->exchange;
        p->exchange.group = &p->experts;
        if (p->use_nccl) {
            nccl_init(&p->nccl_experts, &p->experts);
            nccl_init(&p->nccl_replicas, &p->replicas);
            p->nccl_exchange.comm = &p->nccl_experts;
            x = &p->nccl_exchange;
        }
        x->members = p->ep;
        x->index = p->experts.rank;
        model_set_experts(m, x);
        for_each_expert_slice(m->cfg, x->index, [&](size_t, size_t at, size_t n, bool sliced) {
            if (!p->runs.empty() && p->runs.back().experts == sliced) p->runs.back().n += n;
            else p->runs.push_back({at, n, sliced});
        });
    }
    if (!parallel_sharded(*p)) return;
    if (p->ep == 1) p->shards.push_back(zero_shard(0, p->N, nullptr));
    for (const ParamRun& r : p->runs) p->shards.push_back(zero_shard(r.lo, r.n, r.experts ? &p->replicas : nullptr));
    // MPI's reduce-scatter leaves this rank's slice at the start of the run,
    // NCCL's (as parallel_sum_grads asks it) in place
    std::vector<ParamRange> ranges;
    for (ZeroShard& z : p->shards) {
        if (p->use_nccl) z.slice_at = z.mine();
        ranges.push_back({z.mine(), z.S, z.slice_at});
        ranges.push_back({z.tail_lo, z.tail_n, z.tail_lo});
    }
    model_shard(m, ranges);
}

// Frees the NCCL communicator (every rank, at the end).
inline void parallel_free(Parallel* p) {
    nccl_free(&p->nccl);
    nccl_free(&p->nccl_experts);
    nccl_free(&p->nccl_replicas);
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
        if (sharded) {  // each shard over its group: the body reduce-scattered in place, the tail all-reduced
            for (const ZeroShard& z : p->shards) {
                NcclComm* comm = parallel_nccl(p, z.group);
                nccl_reduce_scatter_sum(comm, g.data + z.lo, g.data + z.mine(), z.S);
                if (z.tail_n) nccl_all_reduce_sum(comm, g.data + z.tail_lo, z.tail_n);
            }
        } else if (p->ep > 1) {
            for (const ParamRun& r : p->runs)
                nccl_all_reduce_sum(r.experts ? &p->nccl_replicas : &p->nccl, g.data + r.lo, r.n);
        } else {
            nccl_all_reduce_sum(&p->nccl, g.data, p->N);
        }
        nccl_wait(&p->nccl, "the gradient all-reduce");
    } else if (g.on_device) {
        span_to_host(g, p->host_grads.data());
        dist_sum(p->host_grads.data(), p->N, "the gradient all-reduce");
        span_from_host(g, p->host_grads.data());
    } else if (sharded) {
        for (const ZeroShard& z : p->shards) {
            dist_reduce_scatter_sum(g.data + z.lo, z.S, "the gradient reduce-scatter (--zero 1)", z.group);
            dist_sum(g.data + z.tail_lo, z.tail_n, "the all-reduce of the gradients' tail (--zero 1)", z.group);
        }
    } else if (p->ep > 1) {
        for (const ParamRun& r : p->runs)
            dist_sum(g.data + r.lo, r.n,
                     r.experts ? "the expert gradients' all-reduce over their replicas" : "the gradient all-reduce",
                     r.experts ? &p->replicas : nullptr);
    } else {
        dist_sum(g.data, p->N, "the gradient all-reduce");
    }
    p->comm_ms = now_ms() - t0;
}

// The global gradient norm, after parallel_sum_grads.
inline double parallel_grad_norm(Parallel* p, Model* m) {
    if (parallel_sharded(*p)) {  // each shard's slices once, and its tail on the group's first rank
        FloatSpan g = model_grad_span(m);
        double sq = 0;
        for (const ZeroShard& z : p->shards)
            sq += span_norm_squared(span_part(g, z.slice_at, z.S)) +
                  (z.rank == 0 && z.tail_n ? span_norm_squared(span_part(g, z.tail_lo, z.tail_n)) : 0.0);
        dist_sum(&sq, 1, "the gradient norm's all-reduce (--zero 1)");
        return std::sqrt(sq);
    }
    if (p->ep > 1) {  // the whole tensors are the same on every rank; the expert slices, once per group
        FloatSpan g = model_grad_span(m);
        double whole = 0, experts = 0;
        for (const ParamRun& r : p->runs) (r.experts ? experts : whole) += span_norm_squared(span_part(g, r.lo, r.n));
        dist_sum(&experts, 1, "the gradient norm's all-reduce (--expert-parallel)", &p->experts);
        return std::sqrt(whole + experts);
    }
    return model_grad_norm(m);
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
        for (const ZeroShard& z : p->shards)  // in place: each rank's slice sits at mine()
            nccl_all_gather(parallel_nccl(p, z.group), w.data + z.mine(), w.data + z.lo, z.S);
        nccl_wait(&p->nccl, "the parameter all-gather (--zero 1)");
    } else {
        for (const ZeroShard& z : p->shards)
            dist_allgather(w.data + z.lo, z.S, "the parameter all-gather (--zero 1)", z.group);
    }
    p->comm_ms += now_ms() - t0;
}

// The moments of every parameter, for a checkpoint: on rank 0 (gathered from
// the shards under ZeRO-1, a collective every rank calls); other ranks may
// get nothing.
inline void parallel_get_moments(Parallel* p, Model* m, std::vector<float>* mom, std::vector<float>* vel) {
    std::vector<float> pm, pv;  // this rank's: all it holds, or under ZeRO-1 its shares in model_shard's order
    model_get_moments(m, &pm, &pv);
    if (parallel_sharded(*p)) {
        // each shard gathered on its group's first rank: rank 0 for the whole
        // tensors, rank i (of expert group 0) for expert slice i
        const bool root = dist().rank < p->ep;
        std::vector<float> full[2] = {std::vector<float>(root ? p->N : 0), std::vector<float>(root ? p->N : 0)};
        size_t at = 0;  // the shard's first moment in this rank's share
        for (const ZeroShard& z : p->shards) {
            for (int k = 0; k < 2; k++) {
                const std::vector<float>& share = k == 0 ? pm : pv;
                dist_gather(root ? full[k].data() + z.lo : nullptr, share.data() + at, z.S,
                            "gathering the AdamW moments (--zero 1)", z.group);
                if (z.rank == 0)
                    std::copy(share.begin() + at + z.S, share.begin() + at + z.S + z.tail_n,
                              full[k].begin() + z.tail_lo);
            }
            at += z.S + z.tail_n;
        }
        pm.swap(full[0]);
        pv.swap(full[1]);
    }
    if (p->ep == 1) {
        mom->swap(pm);
        vel->swap(pv);
        if (parallel_sharded(*p) && dist().rank != 0) mom->clear(), vel->clear();
        return;
    }
    std::vector<float> whole;
    for (const auto& [part, out] : {std::pair{&pm, mom}, std::pair{&pv, vel}}) {
        const float* w = parallel_whole(p, m->cfg, part->data(), &whole, "gathering the expert moments");
        if (w) out->assign(w, w + whole.size());
        else out->clear();
    }
}

// Sets the moments from those of every parameter (a resumed checkpoint's,
// read by every rank); under ZeRO-1 each rank keeps its share.
inline void parallel_set_moments(Parallel* p, Model* m, const std::vector<float>& mom, const std::vector<float>& vel) {
    Config c = m->cfg;
    c.expert_shards = 1;
    std::vector<float> pm = parallel_member_part(c, p->ep, mom), pv = parallel_member_part(c, p->ep, vel);
    if (!parallel_sharded(*p)) {
        model_set_moments(m, pm, pv);
        return;
    }
    std::vector<float> sm, sv;  // this rank's shares, in model_shard's order
    for (const ZeroShard& z : p->shards)
        for (const auto& [all, part] : {std::pair{&pm, &sm}, std::pair{&pv, &sv}}) {
            part->insert(part->end(), all->begin() + z.mine(), all->begin() + z.mine() + z.S);
            part->insert(part->end(), all->begin() + z.tail_lo, all->begin() + z.tail_lo + z.tail_n);
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
