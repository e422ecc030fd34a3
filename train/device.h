// The GPU side of train/, in one file: everything train/ needs from CUDA
// (when nvcc builds it) and from NCCL (when MOT_NCCL is defined too). The
// model (train/model.h) and the exchange between ranks (train/parallel.h)
// call what this file declares and never ask how the program was built:
//
//   device queries   whether this build has GPU code; GPU present, TF32,
//                    device per rank, name, free memory, peak FLOP rate
//   GpuModel         the GPU half of train/model.h's Model (gpu/gpt.cuh),
//                    gpu_model_* its functions, with plain host types (the
//                    passes, gpu::gpt_forward and gpu::gpt_backward, model.h
//                    calls by their own names)
//   device memory    host <-> device copies and a sum of squares
//   NcclComm         NCCL's collectives on device memory, for GPU ranks
//
// Built by g++ (no nvcc), GpuModel holds no device state and the queries say there is no
// GPU: a Model then never is on the GPU, and the functions that only such a
// model calls fail if reached. Built without NCCL, NcclComm is empty and its
// collectives fail likewise (train/parallel.h asks nccl_compiled first).
// Include from one translation unit only (gpu/ headers define kernels).
#pragma once
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/config.h"
#include "common/error.h"
#include "common/exchange.h"
#include "train/dist.h"
#ifdef __CUDACC__
#include "gpu/gpt.cuh"
#endif
#if defined(__CUDACC__) && defined(MOT_NCCL)
#include <nccl.h>
#endif

// Parameters [lo, lo + n) that one rank updates under ZeRO-1
// (train/parallel.h), their gradients at grads_at in the gradient block (lo
// when they are in place).
struct ParamRange {
    size_t lo, n;
    size_t grads_at;
};

#ifdef __CUDACC__

inline bool gpu_compiled() { return true; }

// The device queries (gpu_available, gpu_set_tf32, gpu_tf32,
// gpu_device_count, gpu_select_device, gpu_device_name, gpu_free_memory,
// gpu_peak_flops) are gpu/common.cuh's.

struct GpuModel {
    gpu::GPT gpt;
    size_t n_moments = 0;  // parameters whose AdamW moments gpt.mv_memory holds: all, or this rank's share
    gpu::AdamwChunk* share_chunks = nullptr;  // (n_share_chunks) device: the share's update (ZeRO-1), else null
    int n_share_chunks = 0;

    GpuModel() = default;
    GpuModel(const GpuModel&) = delete;
    GpuModel& operator=(const GpuModel&) = delete;
    ~GpuModel() {
        if (share_chunks) cudaFree(share_chunks);  // no throw in a destructor
    }
};

// Whether the model for batch shape (B,T) fits the GPU; if not, why.
inline bool gpu_model_fits(const Config& c, int B, int T, bool bf16, std::string* why) {
    if (!gpu_available()) {
        *why = gpu_unavailable_reason();
        return false;
    }
    size_t need = gpu::gpt_device_bytes(c, B, T, bf16), free_bytes = gpu_free_memory();
    if (need < free_bytes) return true;
    *why = strf("the model needs %.2f GiB of GPU memory at --batch %d --seq %d (%.2f GiB of it for cuBLAS, "
                "scratch and margin), %.2f GiB are free",
                need / 1073741824.0, B, T, gpu::GPU_RESERVE_BYTES / 1073741824.0, free_bytes / 1073741824.0);
    return false;
}

// Builds the model with the given parameters (num_params(c) floats, host)
// and its activations for (B,T); throws when the GPU runs out of memory.
inline void gpu_model_build(GpuModel* g, const Config& c, const float* params, int B, int T) {
    gpu::gpt_build(&g->gpt, c);
    gpu::gpu_gpt_load_params(&g->gpt, params);
    gpu::gpt_ensure_acts(&g->gpt, B, T);
    g->n_moments = g->gpt.num_params;
}

// Expert parallelism: the exchange the MoT layers call (device memory).
inline void gpu_model_set_experts(GpuModel* g, ExpertExchange* x) { g->gpt.experts = x; }

// Frees every device block (no throw).
inline void gpu_model_free(GpuModel* g) {
    if (g->share_chunks) cudaFree(g->share_chunks);
    g->share_chunks = nullptr;
    g->n_share_chunks = 0;
    gpu::gpt_free(&g->gpt);
    g->n_moments = 0;
}

// The blocks of parameters and gradients, (num_params) each, device.
inline float* gpu_model_params(GpuModel* g) { return g->gpt.params_memory; }
inline float* gpu_model_grads(GpuModel* g) { return g->gpt.grads_memory; }

inline void gpu_model_get_params(GpuModel* g, float* host) { gpu::gpu_gpt_get_params(&g->gpt, host); }

// The AdamW moments, n_moments each (m, then v in mv_memory).
inline void gpu_model_get_moments(GpuModel* g, std::vector<float>* mom, std::vector<float>* vel) {
    const size_t n = g->n_moments;
    mom->resize(n);
    vel->resize(n);
    CUDA_CHECK(cudaMemcpy(mom->data(), g->gpt.mv_memory, n * sizeof(float), cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(vel->data(), g->gpt.mv_memory + n, n * sizeof(float), cudaMemcpyDeviceToHost));
}

inline void gpu_model_set_moments(GpuModel* g, const float* mom, const float* vel) {
    const size_t n = g->n_moments;
    CUDA_CHECK(cudaMemcpy(g->gpt.mv_memory, mom, n * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(g->gpt.mv_memory + n, vel, n * sizeof(float), cudaMemcpyHostToDevice));
}

// The last forward's logits (BT,Vp) and losses (BT), to the host.
inline void gpu_model_logits_losses(GpuModel* g, size_t BT, size_t Vp, float* logits, float* losses) {
    CUDA_CHECK(cudaMemcpy(logits, g->gpt.acts.logits, BT * Vp * sizeof(float), cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(losses, g->gpt.acts.losses, BT * sizeof(float), cudaMemcpyDeviceToHost));
}

inline void gpu_model_set_aux_weight(GpuModel* g, double weight) { g->gpt.aux_weight = weight; }
// --precision bf16 (gpu/gpt.cuh, GPT::bf16)
inline void gpu_model_set_bf16(GpuModel* g, bool on) { g->gpt.bf16 = on; }
inline double gpu_model_aux_loss(const GpuModel& g) { return g.gpt.aux_loss; }
// --distill: the next backward of student distills from teacher's last forward (null: stops)
inline void gpu_model_set_teacher(GpuModel* student, const GpuModel* teacher, double weight) {
    student->gpt.teacher = teacher ? teacher->gpt.acts.probs : nullptr;
    student->gpt.distill_weight = weight;
}
inline void gpu_model_set_mot_discrete(GpuModel* g, bool on) { g->gpt.mot_discrete = on; }

// TOKEN_CHOICE layer l in the last forward: the tokens each expert took,
// load (E) on the host, and with a threshold router the choices, route
// ((N,k), -1 where none was made); returns the tokens N.
inline int gpu_model_routing(GpuModel* g, int l, float* load, std::vector<int>* route) {
    const Config& c = g->gpt.cfg;
    const int N = g->gpt.B * g->gpt.T;
    CUDA_CHECK(cudaMemcpy(load, g->gpt.acts.layer[l].load, c.E * sizeof(float), cudaMemcpyDeviceToHost));
    if (c.tc.router != ROUTER_SOFTMAX) {
        route->resize((size_t)N * c.tc.topk);
        CUDA_CHECK(cudaMemcpy(route->data(), g->gpt.acts.layer[l].route, route->size() * sizeof(int),
                              cudaMemcpyDeviceToHost));
    }
    return N;
}

inline void gpu_model_count_fires(GpuModel* g, double* fires) { gpu::gpt_count_fires(&g->gpt, fires); }

// Layer l's router biases bc, (E) on the host, read or written; their gradients zeroed.
inline void gpu_model_router_bias(GpuModel* g, int l, float* bc) {
    CUDA_CHECK(cudaMemcpy(bc, g->gpt.params.layer[l].bc, g->gpt.cfg.E * sizeof(float), cudaMemcpyDeviceToHost));
}
inline void gpu_model_set_router_bias(GpuModel* g, int l, const float* bc) {
    CUDA_CHECK(cudaMemcpy(g->gpt.params.layer[l].bc, bc, g->gpt.cfg.E * sizeof(float), cudaMemcpyHostToDevice));
}
inline void gpu_model_zero_router_bias_grad(GpuModel* g, int l) {
    CUDA_CHECK(cudaMemset(g->gpt.grads.layer[l].bc, 0, g->gpt.cfg.E * sizeof(float)));
}

inline void gpu_model_zero_grad(GpuModel* g) { gpu::gpt_zero_grad(&g->gpt); }
inline double gpu_model_grad_norm(GpuModel* g) { return gpu::gpt_grad_norm(&g->gpt); }

inline void gpu_model_update(GpuModel* g, float lr, float beta1, float beta2, float eps, float wd, int step,
                             float grad_scale) {
    gpu::gpt_update(&g->gpt, lr, beta1, beta2, eps, wd, step, grad_scale);
}

// ZeRO-1: moments for the ranges alone (packed in order, zero), and the
// optimizer's chunk table over them. The chunks index parameters and
// gradients at the same offset, so each range's gradients must be in place.
inline void gpu_model_shard(GpuModel* g, const std::vector<ParamRange>& ranges) {
    std::vector<gpu::AdamwChunk> chunks;
    size_t share = 0;
    for (const ParamRange& r : ranges) {
        if (r.grads_at != r.lo)
            fail(strf("internal error: the GPU updates a share's parameters [%zu, %zu) with their gradients in "
                      "place, not at %zu",
                      r.lo, r.lo + r.n, r.grads_at));
        std::vector<gpu::AdamwChunk> part = gpu::adamw_chunk_table(g->gpt.cfg, r.lo, r.n, share);
        chunks.insert(chunks.end(), part.begin(), part.end());
        share += r.n;
    }
    CUDA_CHECK(cudaFree(g->gpt.mv_memory));
    g->gpt.mv_memory = nullptr;
    gpu_malloc(&g->gpt.mv_memory, 2 * share, "the AdamW moments of this rank's share (--zero 1)");
    CUDA_CHECK(cudaMemset(g->gpt.mv_memory, 0, 2 * share * sizeof(float)));
    g->n_moments = share;
    if (g->share_chunks) CUDA_CHECK(cudaFree(g->share_chunks));
    g->share_chunks = nullptr;
    g->n_share_chunks = (int)chunks.size();
    gpu_malloc(&g->share_chunks, chunks.size(), "the optimizer's chunk table of this rank's share");
    CUDA_CHECK(cudaMemcpy(g->share_chunks, chunks.data(), chunks.size() * sizeof(gpu::AdamwChunk),
                          cudaMemcpyHostToDevice));
}

// One AdamW step over the share of gpu_model_shard, then every gradient zero.
inline void gpu_model_update_share(GpuModel* g, float lr, float beta1, float beta2, float eps, float wd, int step,
                                   float grad_scale) {
    float* mv = g->gpt.mv_memory;
    gpu::gpt_update_range(&g->gpt, g->share_chunks, g->n_share_chunks, mv, mv + g->n_moments, lr, beta1, beta2, eps,
                          wd, step, grad_scale);
    gpu::gpt_zero_grad(&g->gpt);
}

// Device memory: n floats copied, or their sum of squares in double (one
// fixed order, the same on every run).
inline void device_to_host(float* host, const float* dev, size_t n) {
    CUDA_CHECK(cudaMemcpy(host, dev, n * sizeof(float), cudaMemcpyDeviceToHost));
}
inline void host_to_device(float* dev, const float* host, size_t n) {
    CUDA_CHECK(cudaMemcpy(dev, host, n * sizeof(float), cudaMemcpyHostToDevice));
}
inline double device_norm_squared(const float* dev, size_t n) { return gpu::grad_norm_squared(dev, n); }

#else  // no GPU code: the queries say so; what only a GPU model calls fails

inline bool gpu_compiled() { return false; }

[[noreturn]] inline void no_gpu_code() {
    fail("internal error: a GPU function was called in a build without GPU code (built without nvcc)");
}

inline bool gpu_available() { return false; }
inline void gpu_set_tf32(bool) {}
inline bool gpu_tf32() { return false; }
inline int gpu_device_count() { return 0; }
inline void gpu_select_device(int) { no_gpu_code(); }
inline std::string gpu_device_name() { no_gpu_code(); }
inline double gpu_peak_flops(const std::string&, std::string*) { no_gpu_code(); }

// The GPU model's passes under gpu/gpt.cuh's names, which train/model.h
// calls directly (the step's forward and backward read the same in both
// builds); no Model is on the GPU here, so they are never reached.
namespace gpu {
struct GPT {
    double mean_loss = 0;
};
inline void gpt_forward(GPT*, const int*, const int*, int, int) { no_gpu_code(); }
inline void gpt_backward(GPT*, double) { no_gpu_code(); }
}  // namespace gpu

struct GpuModel {
    gpu::GPT gpt;
};

inline bool gpu_model_fits(const Config&, int, int, bool, std::string* why) {
    *why = "this build has no GPU code (built without nvcc)";
    return false;
}
inline void gpu_model_build(GpuModel*, const Config&, const float*, int, int) { no_gpu_code(); }
inline void gpu_model_free(GpuModel*) {}
inline void gpu_model_set_experts(GpuModel*, ExpertExchange*) {}
inline float* gpu_model_params(GpuModel*) { no_gpu_code(); }
inline float* gpu_model_grads(GpuModel*) { no_gpu_code(); }
inline void gpu_model_get_params(GpuModel*, float*) { no_gpu_code(); }
inline void gpu_model_get_moments(GpuModel*, std::vector<float>*, std::vector<float>*) { no_gpu_code(); }
inline void gpu_model_set_moments(GpuModel*, const float*, const float*) { no_gpu_code(); }
inline void gpu_model_logits_losses(GpuModel*, size_t, size_t, float*, float*) { no_gpu_code(); }
inline void gpu_model_set_aux_weight(GpuModel*, double) {}
inline void gpu_model_set_bf16(GpuModel*, bool on) {
    if (on) no_gpu_code();
}
inline double gpu_model_aux_loss(const GpuModel&) { no_gpu_code(); }
inline void gpu_model_set_teacher(GpuModel*, const GpuModel*, double) { no_gpu_code(); }
inline void gpu_model_set_mot_discrete(GpuModel*, bool) {}
inline int gpu_model_routing(GpuModel*, int, float*, std::vector<int>*) { no_gpu_code(); }
inline void gpu_model_count_fires(GpuModel*, double*) { no_gpu_code(); }
inline void gpu_model_router_bias(GpuModel*, int, float*) { no_gpu_code(); }
inline void gpu_model_set_router_bias(GpuModel*, int, const float*) { no_gpu_code(); }
inline void gpu_model_zero_router_bias_grad(GpuModel*, int) { no_gpu_code(); }
inline void gpu_model_zero_grad(GpuModel*) { no_gpu_code(); }
inline double gpu_model_grad_norm(GpuModel*) { no_gpu_code(); }
inline void gpu_model_update(GpuModel*, float, float, float, float, float, int, float) { no_gpu_code(); }
inline void gpu_model_shard(GpuModel*, const std::vector<ParamRange>&) { no_gpu_code(); }
inline void gpu_model_update_share(GpuModel*, float, float, float, float, float, int, float) { no_gpu_code(); }
inline void device_to_host(float*, const float*, size_t) { no_gpu_code(); }
inline void host_to_device(float*, const float*, size_t) { no_gpu_code(); }
inline double device_norm_squared(const float*, size_t) { no_gpu_code(); }

#endif  // __CUDACC__

#if defined(__CUDACC__) && defined(MOT_NCCL)

inline bool nccl_compiled() { return true; }

#define NCCL_CHECK(call)                                                                                   \
    do {                                                                                                   \
        ncclResult_t nccl_status_ = (call);                                                                \
        if (nccl_status_ != ncclSuccess)                                                                   \
            fail(strf("%s%s: %s", dist_who().c_str(), #call, ncclGetErrorString(nccl_status_)));           \
    } while (0)

struct NcclComm {
    ncclComm_t comm = nullptr;
};

// Every rank (of group g, or all) joins the communicator; the group's first
// rank's id travels over MPI.
inline void nccl_init(NcclComm* c, const DistGroup* g = nullptr) {
    const int rank = g ? g->rank : dist().rank, size = dist_size(g);
    ncclUniqueId id;
    if (rank == 0) NCCL_CHECK(ncclGetUniqueId(&id));
    dist_broadcast(&id, sizeof id, "sending the NCCL id", g);
    // blocks until every rank has joined: a rank that died or hangs after
    // sending the id must end the job, as in any other collective
    CollectiveGuard guard("creating the NCCL communicator");
    NCCL_CHECK(ncclCommInitRank(&c->comm, size, id, rank));
}

inline void nccl_free(NcclComm* c) {
    if (c->comm) ncclCommDestroy(c->comm);
    c->comm = nullptr;
}

// Collectives on device floats, queued on the default stream (nccl_wait
// waits for them): x (n) summed in place; x (ranks * n) summed with this
// rank's slice of n to slice; every rank's slice of n gathered into x
// (ranks * n).
inline void nccl_all_reduce_sum(NcclComm* c, float* x, size_t n) {
    NCCL_CHECK(ncclAllReduce(x, x, n, ncclFloat, ncclSum, c->comm, 0));
}
inline void nccl_reduce_scatter_sum(NcclComm* c, const float* x, float* slice, size_t n) {
    NCCL_CHECK(ncclReduceScatter(x, slice, n, ncclFloat, ncclSum, c->comm, 0));
}
inline void nccl_all_gather(NcclComm* c, const float* slice, float* x, size_t n) {
    NCCL_CHECK(ncclAllGather(slice, x, n, ncclFloat, c->comm, 0));
}

// Waits for the NCCL work queued on the default stream, under the
// collective time limit of train/dist.h (its watchdog ends the rank when a
// peer died or hangs); an error NCCL reports is raised.
inline void nccl_wait(NcclComm* c, const char* what) {
    CollectiveGuard guard(what);
    for (long polls = 0;; polls++) {
        cudaError_t st = cudaStreamQuery(0);
        if (st == cudaSuccess) return;
        if (st != cudaErrorNotReady) CUDA_CHECK(st);
        ncclResult_t async = ncclSuccess;
        NCCL_CHECK(ncclCommGetAsyncError(c->comm, &async));
        if (async != ncclSuccess) fail(strf("%s%s: NCCL: %s", dist_who().c_str(), what, ncclGetErrorString(async)));
        if (polls > 2000) usleep(50);
    }
}

// The exchange of an expert group of GPU ranks (common/exchange.h, on
// device memory): grouped sends and receives of equal blocks, NCCL's
// all-gather, and its reduce-scatter added into the output. Each call waits
// for its transfers (nccl_wait), so the layers use the data at once.
struct NcclExchange : ExpertExchange {
    NcclComm* comm = nullptr;  // the expert group's
    double ms = 0, bytes = 0;  // as MpiExchange's (train/parallel.h)
    float* sum = nullptr;      // (sum_n) device: reduce_scatter_add's block
    size_t sum_n = 0;
    NcclExchange() = default;
    NcclExchange(const NcclExchange&) = delete;
    NcclExchange& operator=(const NcclExchange&) = delete;
    ~NcclExchange() {
        if (sum) cudaFree(sum);
    }
    void all_to_all(const void* send, void* recv, size_t block) override {
        double t0 = now_ms();
        NCCL_CHECK(ncclGroupStart());
        for (int r = 0; r < members; r++) {
            NCCL_CHECK(ncclSend((const char*)send + r * block, block, ncclChar, r, comm->comm, 0));
            NCCL_CHECK(ncclRecv((char*)recv + r * block, block, ncclChar, r, comm->comm, 0));
        }
        NCCL_CHECK(ncclGroupEnd());
        nccl_wait(comm, "the expert exchange (--expert-parallel)");
        ms += now_ms() - t0;
        bytes += (double)block * (members - 1);
    }
    void all_gather(const void* send, void* recv, size_t block) override {
        double t0 = now_ms();
        NCCL_CHECK(ncclAllGather(send, recv, block, ncclChar, comm->comm, 0));
        nccl_wait(comm, "the expert exchange's all-gather (--expert-parallel)");
        ms += now_ms() - t0;
        bytes += (double)block * (members - 1);
    }
    void reduce_scatter_add(const float* send, float* recv, size_t n) override {
        double t0 = now_ms();
        if (sum_n < n) {
            if (sum) CUDA_CHECK(cudaFree(sum));
            sum = nullptr, sum_n = 0;
            CUDA_CHECK(cudaMalloc(&sum, n * sizeof(float)));
            sum_n = n;
        }
        NCCL_CHECK(ncclReduceScatter(send, sum, n, ncclFloat, ncclSum, comm->comm, 0));
        gpu::residual_forward(recv, recv, sum, n);
        nccl_wait(comm, "the expert exchange's reduce-scatter (--expert-parallel)");
        ms += now_ms() - t0;
        bytes += (double)n * sizeof(float) * (members - 1);
    }
    void reduce_scatter_add(const double*, double*, size_t) override {
        fail("the expert exchange of a training run moves floats");
    }
};

#else  // no NCCL: GPU ranks exchange through host copies (train/parallel.h)

inline bool nccl_compiled() { return false; }

[[noreturn]] inline void no_nccl_code() {
    fail("internal error: an NCCL collective was called in a build without NCCL");
}

struct NcclComm {};
inline void nccl_init(NcclComm*, const DistGroup* = nullptr) { no_nccl_code(); }
struct NcclExchange : ExpertExchange {
    NcclComm* comm = nullptr;
    double ms = 0, bytes = 0;
    void all_to_all(const void*, void*, size_t) override { no_nccl_code(); }
    void all_gather(const void*, void*, size_t) override { no_nccl_code(); }
    void reduce_scatter_add(const float*, float*, size_t) override { no_nccl_code(); }
    void reduce_scatter_add(const double*, double*, size_t) override { no_nccl_code(); }
};
inline void nccl_free(NcclComm*) {}
inline void nccl_all_reduce_sum(NcclComm*, float*, size_t) { no_nccl_code(); }
inline void nccl_reduce_scatter_sum(NcclComm*, const float*, float*, size_t) { no_nccl_code(); }
inline void nccl_all_gather(NcclComm*, const float*, float*, size_t) { no_nccl_code(); }
inline void nccl_wait(NcclComm*, const char*) { no_nccl_code(); }

#endif  // __CUDACC__ && MOT_NCCL
