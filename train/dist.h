// Several processes training one model (docs/design.md section 11): the ranks of
// an MPI job, started by mpirun (or srun). This file is the host side: who
// this process is, and the collectives train_mot needs on host memory, each
// with a time limit, so that a rank that died or hangs stops the job with an
// error instead of leaving the others waiting forever.
//
// Built without MPI (no mpicxx when train_mot was made; MOT_MPI undefined),
// or started without a launcher, the process is rank 0 of 1 and every
// collective below is the identity: the single-process program is unchanged.
//
//   dist_init          rank, ranks, local rank (the GPU a rank uses); MPI_Init
//   dist_sum           element-wise sum over the ranks, in place (doubles, floats)
//   dist_sum_each      named scalars, each its sum over the ranks, in one collective
//   dist_reduce_scatter_sum / dist_allgather / dist_gather   ZeRO-1's pieces
//   dist_group         some of the ranks (an expert group, the replicas of an expert
//                      shard): dist_sum, dist_gather and dist_all_to_all run over one
//   dist_all_to_all / dist_all_gather / dist_reduce_scatter   a group's exchanges (expert parallelism)
//   dist_barrier       every rank reaches this point
//   dist_agree         every rank has rank 0's settings, or rank 0 names the first difference
//   dist_abort         one rank's error stops every rank
#pragma once
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/error.h"
#ifdef MOT_MPI
#include <mpi.h>
#endif

struct Dist {
    int rank = 0, size = 1;              // this process among the job's ranks
    int local_rank = 0, local_size = 1;  // among the ranks on this node: the GPU a rank uses
    bool mpi = false;                    // MPI_Init was called (a launcher started the job; size may be 1)
    double timeout_s = 600;              // --collective-timeout: longest wait for the other ranks
};

// The process's one Dist (the job does not change while the program runs).
inline Dist& dist() {
    static Dist d;
    return d;
}

inline bool dist_compiled() {
#ifdef MOT_MPI
    return true;
#else
    return false;
#endif
}

// Whether a launcher started this process as one rank of a job: the
// variables OpenMPI's mpirun, MPICH's hydra (PMI) and Slurm's srun (PMIx) set.
inline bool dist_launched() {
    for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
        if (std::getenv(v)) return true;
    return false;
}

// The time limit on collectives: a watchdog thread. Each collective runs
// inside a CollectiveGuard, which tells the watchdog what this rank waits
// for and since when; past timeout_s the watchdog says which collective
// timed out and ends this process, and mpirun, seeing a rank gone, stops the
// others. (The blocking collectives are twice as fast as non-blocking ones
// polled for a deadline; the watchdog makes no MPI call, so MPI needs no
// thread support.)
struct Watchdog {
    std::mutex mu;
    std::condition_variable cv;
    const char* what = nullptr;  // the collective this rank is in, or null
    long generation = 0;         // counts the collectives, to tell one from the next
    std::chrono::steady_clock::time_point since;
    bool quit = false;
    std::thread thread;
};

inline Watchdog& watchdog() {
    static Watchdog w;
    return w;
}

inline void watchdog_loop() {
    Watchdog& w = watchdog();
    std::unique_lock<std::mutex> lock(w.mu);
    while (!w.quit) {
        if (!w.what) {
            w.cv.wait(lock);
            continue;
        }
        long gen = w.generation;
        auto deadline = w.since + std::chrono::duration<double>(dist().timeout_s);
        if (w.cv.wait_until(lock, deadline, [&] { return w.quit || w.generation != gen || !w.what; })) continue;
        double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - w.since).count();
        std::fprintf(stderr,
                     "error (rank %d of %d): %s did not complete within --collective-timeout %g s (waited %.0f s): "
                     "a rank may have died, hang, or be slow; stopping every rank (a larger --collective-timeout "
                     "waits longer)\n",
                     dist().rank, dist().size, w.what, dist().timeout_s, waited);
        std::fflush(stderr);
        _exit(1);  // mpirun stops the job when a rank exits without MPI_Finalize
    }
}

struct CollectiveGuard {
    explicit CollectiveGuard(const char* what) {
        Watchdog& w = watchdog();
        std::lock_guard<std::mutex> lock(w.mu);
        w.what = what;
        w.generation++;
        w.since = std::chrono::steady_clock::now();
        w.cv.notify_all();
    }
    ~CollectiveGuard() {
        Watchdog& w = watchdog();
        std::lock_guard<std::mutex> lock(w.mu);
        w.what = nullptr;
        w.cv.notify_all();
    }
};

// Rank, ranks and local rank; MPI_Init when a launcher started the job and
// the program was built with MPI. Fails when a launcher started several
// ranks of a program built without MPI (each would train alone, unaware of
// the others, and all would write the same files).
inline Dist& dist_init(double timeout_s) {
    Dist& d = dist();
    d.timeout_s = timeout_s;
    if (!dist_launched()) return d;
#ifdef MOT_MPI
    int ready = 0;
    MPI_Initialized(&ready);
    if (!ready) MPI_Init(nullptr, nullptr);
    d.mpi = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &d.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d.size);
    MPI_Comm node;  // the ranks that share this node's memory (and its GPUs)
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, d.rank, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &d.local_rank);
    MPI_Comm_size(node, &d.local_size);
    MPI_Comm_free(&node);
    if (d.size > 1) watchdog().thread = std::thread(watchdog_loop);
#else
    const char* n = std::getenv("OMPI_COMM_WORLD_SIZE");
    if (!n) n = std::getenv("PMI_SIZE");
    if (n && std::atoi(n) > 1)
        fail(strf("started as one of %s ranks, but this train_mot was built without MPI: each rank would train "
                  "alone and all would write the same files. Install MPI (apt-get install libopenmpi-dev "
                  "openmpi-bin) and rebuild (make clean train_mot), or run one process",
                  n));
#endif
    return d;
}

// MPI_Finalize at a normal end (every rank gets here).
inline void dist_finalize() {
    Watchdog& w = watchdog();
    if (w.thread.joinable()) {
        {
            std::lock_guard<std::mutex> lock(w.mu);
            w.quit = true;
            w.cv.notify_all();
        }
        w.thread.join();
    }
#ifdef MOT_MPI
    if (dist().mpi) {
        int done = 0;
        MPI_Finalized(&done);
        if (!done) MPI_Finalize();
    }
#endif
}

// One rank failed (the message is printed): with several ranks the others
// may wait in a collective for this one, so the whole job is stopped now.
inline void dist_abort(int status) {
#ifdef MOT_MPI
    if (dist().size > 1) {
        std::fflush(stdout);
        std::fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, status);
    }
#endif
    (void)status;
}

// "" with one rank, "rank 1 of 2: " with several: the prefix of a rank's errors.
inline std::string dist_who() {
    const Dist& d = dist();
    return d.size > 1 ? strf("rank %d of %d: ", d.rank, d.size) : std::string();
}

#ifdef MOT_MPI
// Elements one MPI call moves at most (its counts are int).
constexpr size_t DIST_MAX_COUNT = (size_t)1 << 30;

// An element count as MPI takes it: larger transfers are refused by name.
inline int mpi_count(size_t n, const char* what) {
    if (n > DIST_MAX_COUNT) fail(strf("%s: %zu elements, more than this program sends at once", what, n));
    return (int)n;
}

template <typename T>
MPI_Datatype mpi_type();
template <>
inline MPI_Datatype mpi_type<float>() { return MPI_FLOAT; }
template <>
inline MPI_Datatype mpi_type<double>() { return MPI_DOUBLE; }
template <>
inline MPI_Datatype mpi_type<char>() { return MPI_CHAR; }
#endif

// Some of the job's ranks, with collectives of their own (expert
// parallelism: an expert group, the replicas of an expert shard). The
// collectives below run over the group they are given, or all ranks.
struct DistGroup {
    int rank = 0, size = 1;  // this rank's place in the group, and the group's ranks
#ifdef MOT_MPI
    MPI_Comm comm = MPI_COMM_NULL;
#endif
};

inline int dist_size(const DistGroup* g) { return g ? g->size : dist().size; }
#ifdef MOT_MPI
inline MPI_Comm dist_comm(const DistGroup* g) { return g ? g->comm : MPI_COMM_WORLD; }
#endif

// The group of the ranks that pass the same color, ordered by rank (every
// rank calls it).
inline DistGroup dist_group(int color) {
    DistGroup g;
#ifdef MOT_MPI
    if (dist().size > 1) {
        MPI_Comm_split(MPI_COMM_WORLD, color, dist().rank, &g.comm);
        MPI_Comm_rank(g.comm, &g.rank);
        MPI_Comm_size(g.comm, &g.size);
    }
#endif
    (void)color;
    return g;
}

inline void dist_group_free(DistGroup* g) {
#ifdef MOT_MPI
    if (g->comm != MPI_COMM_NULL) MPI_Comm_free(&g->comm);
#endif
    (void)g;
}

// x[i] = the sum over the ranks (of group g, or all) of x[i], on each of them.
template <typename T>
void dist_sum(T* x,  // (n)
              size_t n, const char* what, const DistGroup* g = nullptr) {
#ifdef MOT_MPI
    if (dist_size(g) == 1 || n == 0) return;  // several ranks: MPI is initialised
    CollectiveGuard guard(what);
    for (size_t off = 0; off < n; off += DIST_MAX_COUNT) {  // in slices MPI can count
        int count = (int)std::min(n - off, DIST_MAX_COUNT);
        MPI_Allreduce(MPI_IN_PLACE, x + off, count, mpi_type<T>(), MPI_SUM, dist_comm(g));
    }
#else
    (void)x, (void)n, (void)what, (void)g;
#endif
}

// All-gather within group g: block r of recv (g->size blocks of `bytes`)
// is the group's rank r's send.
inline void dist_all_gather(const void* send, void* recv, size_t bytes, const char* what, const DistGroup* g) {
#ifdef MOT_MPI
    if (dist_size(g) > 1) {
        int count = mpi_count(bytes, what);
        CollectiveGuard guard(what);
        MPI_Allgather(send, count, MPI_BYTE, recv, count, MPI_BYTE, dist_comm(g));
        return;
    }
#endif
    (void)what, (void)g;
    std::memcpy(recv, send, bytes);
}

// Reduce-scatter within group g (or all ranks): recv (n) = the sum over the
// ranks of their block `rank` of send (size blocks of n floats). send ==
// recv runs in place (MPI_IN_PLACE reads the blocks from recv and leaves the
// result at its start; the rest of it is then undefined).
inline void dist_reduce_scatter(const float* send,  // (size * n)
                                float* recv,        // (n), or (size * n) in place
                                size_t n, const char* what, const DistGroup* g = nullptr) {
#ifdef MOT_MPI
    if (dist_size(g) > 1) {
        int count = mpi_count(n, what);
        CollectiveGuard guard(what);
        MPI_Reduce_scatter_block(send == recv ? MPI_IN_PLACE : (const void*)send, recv, count, MPI_FLOAT, MPI_SUM,
                                 dist_comm(g));
        return;
    }
#endif
    (void)what, (void)g;
    if (send != recv) std::memcpy(recv, send, n * sizeof(float));
}

// All-to-all within group g: block r of send (g->size blocks of `bytes`)
// goes to the group's rank r, block r of recv comes from it.
inline void dist_all_to_all(const void* send, void* recv, size_t bytes, const char* what, const DistGroup* g) {
#ifdef MOT_MPI
    if (dist_size(g) > 1) {
        int count = mpi_count(bytes, what);
        CollectiveGuard guard(what);
        MPI_Alltoall(send, count, MPI_BYTE, recv, count, MPI_BYTE, dist_comm(g));
        return;
    }
#endif
    (void)what, (void)g;
    std::memcpy(recv, send, bytes);
}

// *v = the sum over the ranks of *v for each v of values, on every rank, in
// one collective: dist_sum_each({&loss, &stopped}, "...").
inline void dist_sum_each(std::initializer_list<double*> values, const char* what) {
    std::vector<double> x;
    for (double* v : values) x.push_back(*v);
    dist_sum(x.data(), x.size(), what);
    size_t i = 0;
    for (double* v : values) *v = x[i++];
}

// Reduce-scatter in place: x[0, n) = the sum over the ranks of their
// x[rank*n, rank*n + n), the slice this rank owns. The rest of x is left
// undefined.
inline void dist_reduce_scatter_sum(float* x,  // (size * n)
                                    size_t n, const char* what, const DistGroup* g = nullptr) {
    dist_reduce_scatter(x, x, n, what, g);
}

// x[r*n, r*n + n) = rank r's slice, on every rank (all-gather, in place).
inline void dist_allgather(float* x,  // (size * n); this rank's slice filled in
                           size_t n, const char* what, const DistGroup* g = nullptr) {
#ifdef MOT_MPI
    if (dist_size(g) == 1) return;
    int count = mpi_count(n, what);
    CollectiveGuard guard(what);
    MPI_Allgather(MPI_IN_PLACE, 0, MPI_FLOAT, x, count, MPI_FLOAT, dist_comm(g));
#else
    (void)x, (void)n, (void)what, (void)g;
#endif
}

// On rank 0: all[r*n, r*n + n) = rank r's part (gather); other ranks' `all`
// is not touched. T: float (moments) or char (text).
template <typename T>
void dist_gather(T* all,         // (size * n) on rank 0 (of group g, or of all)
                 const T* part,  // (n)
                 size_t n, const char* what, const DistGroup* g = nullptr) {
#ifdef MOT_MPI
    if (dist_size(g) > 1) {
        int count = mpi_count(n, what);
        CollectiveGuard guard(what);
        MPI_Gather(part, count, mpi_type<T>(), all, count, mpi_type<T>(), 0, dist_comm(g));
        return;
    }
#endif
    (void)what, (void)g;
    std::copy(part, part + n, all);
}

// Every rank waits here for the others; `limited`: within --collective-timeout
// (not while rank 0 prepares a data set, which takes as long as the text is
// large; a rank that dies meanwhile still stops the job through mpirun).
inline void dist_barrier(const char* what, bool limited = true) {
#ifdef MOT_MPI
    if (dist().size == 1) return;
    if (!limited) {
        MPI_Barrier(MPI_COMM_WORLD);
        return;
    }
    CollectiveGuard guard(what);
    MPI_Barrier(MPI_COMM_WORLD);
#else
    (void)what, (void)limited;
#endif
}

// A value of rank 0's, given to every rank (e.g. NCCL's id).
inline void dist_broadcast(void* bytes, size_t n, const char* what, const DistGroup* g = nullptr) {
#ifdef MOT_MPI
    if (dist_size(g) == 1) return;
    int count = mpi_count(n, what);
    CollectiveGuard guard(what);
    MPI_Bcast(bytes, count, MPI_BYTE, 0, dist_comm(g));
#else
    (void)bytes, (void)n, (void)what, (void)g;
#endif
}

// Whether every rank holds rank 0's settings (name, value pairs in a fixed
// order): ranks started with other options or reading other files would
// exchange buffers of other sizes (MPI then corrupts memory) or train apart.
// Rank 0's list goes to every rank (its length, then the text: sizes every
// rank knows); each rank finds its first difference and rank 0 gathers them
// in fixed-size reports. On a difference rank 0 fails naming the setting,
// its value on rank 0 and on the first rank that differs, followed by
// `advice`; the other ranks wait for it to stop the job. Every rank calls
// it; with one rank it does nothing.
inline void dist_agree(const std::vector<std::pair<std::string, std::string>>& settings, const char* what,
                       const char* advice) {
    const Dist& d = dist();
    if (d.size == 1) return;
    // one line per setting, name and value apart by a tab: tabs and newlines in a value (a path) escaped
    std::vector<std::pair<std::string, std::string>> lines;
    for (const auto& [name, value] : settings) {
        std::string v;
        for (char ch : value) v += ch == '\t' ? std::string("\\t") : ch == '\n' ? std::string("\\n") : std::string(1, ch);
        lines.push_back({name, v});
    }
    std::string mine;
    for (const auto& [name, value] : lines) mine += name + '\t' + value + '\n';
    uint64_t n = mine.size();
    dist_broadcast(&n, sizeof n, what);
    std::string root = d.rank == 0 ? mine : std::string(n, '\0');
    dist_broadcast(&root[0], n, what);
    auto shorten = [](std::string s) { return s.size() > 200 ? s.substr(0, 200) + "..." : s; };
    std::string report;  // this rank's first difference from rank 0, "" when none
    size_t pos = 0, i = 0;
    for (; i < lines.size() && report.empty(); i++) {
        size_t tab = root.find('\t', pos), nl = root.find('\n', pos);
        if (tab == std::string::npos || nl == std::string::npos || tab > nl) {
            report = strf("rank %d has %s rank 0 lacks (another build of train_mot?)", d.rank, lines[i].first.c_str());
            break;
        }
        std::string name = root.substr(pos, tab - pos), value = root.substr(tab + 1, nl - tab - 1);
        pos = nl + 1;
        if (name != lines[i].first)
            report = strf("rank 0 has %s where rank %d has %s (another build of train_mot?)", shorten(name).c_str(), d.rank,
                          lines[i].first.c_str());
        else if (value != lines[i].second)
            report = strf("%s is %s on rank 0 and %s on rank %d", name.c_str(), shorten(value).c_str(),
                          shorten(lines[i].second).c_str(), d.rank);
    }
    if (report.empty() && pos < root.size())
        report = strf("rank 0 has %s that rank %d lacks (another build of train_mot?)",
                      shorten(root.substr(pos, root.find('\t', pos) - pos)).c_str(), d.rank);
    const size_t W = 1024;
    report.resize(W - 1, '\0');
    std::vector<char> all(d.rank == 0 ? W * d.size : 0);
    dist_gather(all.data(), report.c_str(), W, what);
    int first = -1;
    for (int k = 1; d.rank == 0 && k < d.size && first < 0; k++)
        if (all[W * k]) first = k;
    dist_broadcast(&first, sizeof first, what);
    if (first < 0) return;
    if (d.rank == 0) fail(strf("the ranks differ: %s; %s", all.data() + W * first, advice));
    dist_barrier("waiting for rank 0 to stop the job: the ranks' settings differ");  // rank 0 never comes
}
