// How many OpenMP threads a CPU training step uses, chosen while the run goes.
//
// Why: a step runs thousands of parallel loops, each ending in a barrier
// where every thread waits for the slowest. When another busy process shares
// the cores, one of our threads is regularly descheduled for a whole
// scheduler time slice while the others wait at the barrier for it, thousands
// of times per step: steps slow down 40-100x, far beyond the 2x that fair
// sharing of the cores costs. Fewer threads than free cores have no such
// waits. So the tuner
//   - starts with every thread;
//   - tries half as many for one step when a step takes 3x the usual (the
//     machine just got busy), and now and then anyway (after 5 steps, then
//     backing off to every 640 while the trial keeps losing);
//   - tries twice as many for one step when the machine has idle cores
//     again (the share of idle CPU time in /proc/stat since the last look);
//   - keeps a trial count when its step was at least 15% faster than the
//     median of the last steps at the current count.
// Each trial is one step, so on a free machine the tuner costs well under 1%.
//
// The results do not depend on the thread count: every CPU kernel sums in
// an order fixed by the data, not by the threads (tests/test_train.cpp
// checks it), so switching never changes a loss, and resume stays bit-exact.
#pragma once
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "common/error.h"

// OMP_NUM_THREADS is capped at the cores before any parallel region runs.
// More threads than cores only wait for each other (a step slows by orders
// of magnitude), and MFU would be computed against their peak; a huge count
// (99999999999, which libgomp wraps to 1215752191) makes libgomp try to
// allocate hundreds of GB for its threads at the first parallel region.
// libgomp reads the variable when the program loads, so the count is set
// again here (omp_set_num_threads, before any parallel region), and in the
// environment for processes started later. A value that is not a thread
// count (abc, 0: libgomp says it is invalid) becomes the cores too.
// Returns the note to print, or "" when the value is a count within the cores.
inline std::string cap_omp_threads() {
#ifdef _OPENMP
    const char* env = std::getenv("OMP_NUM_THREADS");
    if (!env || !*env) return "";
    const std::string value = env;
    // the first entry: OMP_NUM_THREADS=4,2 also sets nested levels, which this program does not use
    std::string first = value.substr(0, value.find(','));
    first.erase(0, first.find_first_not_of(" \t"));
    first.erase(first.find_last_not_of(" \t") + 1);
    const int cores = std::max(1, omp_get_num_procs());
    char* end = nullptr;
    errno = 0;
    long long n = std::strtoll(first.c_str(), &end, 10);
    bool number = !first.empty() && *end == '\0' && errno != ERANGE;
    if (number && n >= 1 && n <= cores) return "";
    setenv("OMP_NUM_THREADS", std::to_string(cores).c_str(), 1);
    omp_set_num_threads(cores);
    if (number && n > cores)
        return strf("note: OMP_NUM_THREADS=%s is more threads than the %d cores this process may run on: using %d",
                    value.c_str(), cores, cores);
    return strf("note: OMP_NUM_THREADS=%s is not a number of threads from 1 to the %d cores: using %d", value.c_str(),
                cores, cores);
#else
    return "";
#endif
}

struct ThreadTuner {
    int max_threads = 1;
    int current = 1;              // threads in use
    int trial = 0;                // threads of a one-step trial under way, or 0
    std::vector<double> recent;   // the last step times at `current`, newest last
    int since_trial = 0;          // steps since the last trial
    int trial_every = 5;          // steps between unprompted trials of fewer threads (the first soon)
    double idle_mark = -1, total_mark = 0;  // /proc/stat counters at the last look
};

inline void tuner_init(ThreadTuner* t, int max_threads) {
    *t = ThreadTuner();
    t->max_threads = t->current = std::max(1, max_threads);
}

// Share of CPU time spent idle on the whole machine since the last call
// (from /proc/stat); -1 when unknown.
inline double tuner_idle_share(ThreadTuner* t) {
    FILE* fp = std::fopen("/proc/stat", "r");
    if (!fp) return -1;
    unsigned long long v[8] = {0};
    int n = std::fscanf(fp, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                        &v[6], &v[7]);
    std::fclose(fp);
    if (n < 5) return -1;
    double idle = (double)v[3] + (double)v[4], total = 0;  // idle + iowait
    for (int i = 0; i < n; i++) total += (double)v[i];
    double share = -1;
    if (t->idle_mark >= 0 && total > t->total_mark) share = (idle - t->idle_mark) / (total - t->total_mark);
    t->idle_mark = idle, t->total_mark = total;
    return share;
}

inline double tuner_median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
}

// The thread count for the next step; sets it for OpenMP.
inline int tuner_next(ThreadTuner* t) {
    int n = t->trial > 0 ? t->trial : t->current;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    return n;
}

// Records the time of the step just run with tuner_next's count and decides
// the next one.
inline void tuner_record(ThreadTuner* t, double step_ms) {
    if (t->max_threads < 2) return;
    double usual = tuner_median(t->recent);
    if (t->trial > 0) {  // a trial step: keep its count if it was clearly faster
        bool better = step_ms < 0.85 * usual;
        if (better) {
            t->current = t->trial;
            t->recent = {step_ms};
            t->trial_every = 20;
        } else if (t->trial < t->current) {
            t->trial_every = std::min(640, 2 * t->trial_every);  // fewer threads lost: look less often
        }
        t->trial = 0;
        t->since_trial = 0;
        return;
    }
    t->recent.push_back(step_ms);
    if (t->recent.size() > 5) t->recent.erase(t->recent.begin());
    bool slow = t->recent.size() >= 4 && step_ms > 3 * usual;
    if (slow) t->recent = {step_ms};  // the old times no longer describe the machine
    t->since_trial++;
    if (t->current > 1 && (slow || t->since_trial >= t->trial_every)) {
        t->trial = t->current / 2;
        return;
    }
    // fewer threads than cores: try more when the machine has idle cores again
    if (t->current < t->max_threads && t->since_trial >= 5) {
        double idle = tuner_idle_share(t);
        double spare = 1.0 - (double)t->current / t->max_threads;  // our idle share on an otherwise free machine
        if (idle >= 0.6 * spare && idle > 0) t->trial = std::min(t->max_threads, 2 * t->current);
        t->since_trial = 0;
    }
}
