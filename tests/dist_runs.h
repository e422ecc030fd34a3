// tests/dist_runs.h: running ./train_mot as several ranks under mpirun, for
// the test programs of several ranks (test_dist, test_expert_parallel):
// the skip conditions, mpirun with a time limit, comparing two runs' logs
// (their losses, and their routing statistics),
// the data of a small run, the ranks of a running job.
#pragma once
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/program.h"
#include "tests/train_checks.h"

// The skip conditions are computed before any test runs: through capture,
// which asserts nothing.
static const std::string built = capture(train_mot_path() + " --version").out;

// Whether this train_mot can run several ranks, and why not.
inline std::string mpi_missing() {
    if (built.find("MPI") == std::string::npos) return "train_mot was built without MPI (no mpicxx at make time)";
    if (capture("command -v mpirun").rc != 0) return "mpirun is not on the PATH";
    return "";
}
static const std::string no_mpi = mpi_missing();
#define MPI_TEST(name) TEST_CASE(name * doctest::skip(!no_mpi.empty()) * doctest::description(no_mpi.c_str()))

// The GPUs here (nvidia-smi), and why a case of 2 NCCL ranks cannot run ("" when it can).
inline int gpu_count() {
    Run r = capture("nvidia-smi -L");
    if (r.rc != 0) return 0;
    int n = 0;
    for (size_t p = 0; (p = r.out.find("GPU ", p)) != std::string::npos; p += 4) n++;
    return n;
}
// Why the NCCL case cannot run here ("" when it can).
inline std::string nccl_missing() {
    if (!no_mpi.empty()) return no_mpi;
    if (built.find("NCCL") == std::string::npos) return "train_mot was built without NCCL (needs nvcc and MPI)";
    int gpus = gpu_count();
    return gpus < 2 ? "NCCL ranks need 2 GPUs, this machine has " + std::to_string(gpus) : "";
}
static const std::string no_nccl = nccl_missing();
#define NCCL_TEST(name) TEST_CASE(name * doctest::skip(!no_nccl.empty()) * doctest::description(no_nccl.c_str()))

// mpirun -np n ./train_mot args, killed after `seconds` (status 137) if it hangs.
// Under AddressSanitizer (CI's sanitizer build) the ranks run without leak
// detection: OpenMPI's plug-ins keep allocations past MPI_Finalize and are
// unloaded before the leak check, so their leaks cannot even be suppressed
// by name; every other check stays on, and the one-process runs keep it.
inline std::string mpirun(int n, const std::string& args, int seconds = 120) {
    return "env ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 timeout -s KILL " + std::to_string(seconds) +
           " mpirun --allow-run-as-root --oversubscribe -np " + std::to_string(n) + " " + train_mot_path() + " " + args;
}

inline double num(const std::string& s) {
    REQUIRE(!s.empty());
    return std::stod(s);
}

inline double rel(double a, double b) { return std::fabs(a - b) / std::max(std::fabs(b), 1e-30); }

// The step rows of a log that have a loss (not a transition's row of step 0).
inline LogRows loss_rows(const std::string& path) {
    LogRows rows = read_log(path);
    for (auto it = rows.begin(); it != rows.end();) it = it->second.count("loss") ? std::next(it) : rows.erase(it);
    return rows;
}

// Every step's loss and grad norm (and every validation loss) of log a
// within `tol` relative of log b's, over the steps b has; returns the largest.
inline double compare_logs(const std::string& a, const std::string& b, double tol, size_t steps) {
    LogRows ra = loss_rows(a), rb = loss_rows(b);
    REQUIRE(ra.size() == steps);
    REQUIRE(rb.size() == steps);
    double worst = 0;
    for (auto& [step, row] : rb) {
        INFO("step ", step);
        REQUIRE(ra.count(step));
        for (const char* k : {"loss", "grad_norm"}) {
            double d = rel(num(ra[step][k]), num(row[k]));
            CHECK_MESSAGE(d <= tol, k << " " << ra[step][k] << " vs " << row[k]);
            worst = std::max(worst, d);
        }
    }
    LogRows va = read_log(a, true), vb = read_log(b, true);
    CHECK(va.size() == vb.size());
    for (auto& [step, row] : vb) {
        double d = rel(num(va[step]["val_loss"]), num(row["val_loss"]));
        CHECK_MESSAGE(d <= tol, "val_loss at " << step << ": " << va[step]["val_loss"] << " vs " << row["val_loss"]);
        worst = std::max(worst, d);
    }
    CHECK(rb.begin()->second["loss"] != rb.rbegin()->second["loss"]);  // it trained: the comparison means something
    return worst;
}

// The routing statistics that token-choice layers log per step (aux_loss,
// and per layer l dropped_<l>, load_min_<l>, load_max_<l>, experts_<l>) of
// log a against log b's, at every step of b: each such field of b is in a,
// and differs from b's by at most tol, absolutely or relative to b's, as
// the caller says.
enum Measure { ABSOLUTE, RELATIVE };
struct RoutingComparison {
    int fields = 0;                 // the values compared
    double worst = 0;               // the largest difference
    std::map<int, double> dropped;  // per layer, b's largest dropped share over its steps
};
inline RoutingComparison compare_routing(const std::string& a, const std::string& b, double tol, Measure measure) {
    LogRows ra = read_log(a), rb = read_log(b);
    RoutingComparison r;
    for (auto& [step, row] : rb)
        for (auto& [key, value] : row) {
            bool dropped = key.rfind("dropped_", 0) == 0;
            if (key != "aux_loss" && !dropped && key.rfind("load_", 0) != 0 && key.rfind("experts_", 0) != 0)
                continue;
            INFO("step ", step, ": ", key);
            REQUIRE(ra[step].count(key));
            double x = num(ra[step][key]), y = num(value), d = measure == RELATIVE ? rel(x, y) : std::fabs(x - y);
            CHECK_MESSAGE(d <= tol, key << " " << ra[step][key] << " (" << a << ") vs " << value << " (" << b << ")");
            r.fields++;
            r.worst = std::max(r.worst, d);
            if (dropped) {
                double& most = r.dropped[std::stoi(key.substr(8))];
                most = std::max(most, y);
            }
        }
    return r;
}

// The data options of a small run on shards build/<name>_train.bin and
// _val.bin (each test program its own files: the programs may run at once),
// and writing them (in a test case: it checks the writes).
inline std::string dist_data(const std::string& name) {
    return "--data build/" + name + "_train.bin --val-data build/" + name + "_val.bin --vocab 257 --seq 8"
           " --sample-every 0 --val-every 4 --val-batches 4 --warmup 2 --lr 1e-2";
}
inline void write_dist_data(const std::string& name) {
    mkdir("build", 0755);
    write_raw_shard("build/" + name + "_train.bin", text_tokens(3000, 11));
    write_raw_shard("build/" + name + "_val.bin", text_tokens(600, 12));
}

// The pids of a process's children (the ranks mpirun started).
inline std::vector<pid_t> children(pid_t parent) {
    std::vector<pid_t> kids;
    for (const std::string& name : list_dir("/proc")) {
        if (name.find_first_not_of("0123456789") != std::string::npos) continue;
        std::ifstream stat("/proc/" + name + "/stat");
        std::string line;
        std::getline(stat, line);
        size_t close = line.rfind(')');
        if (close == std::string::npos) continue;
        std::istringstream rest(line.substr(close + 2));
        char state;
        int ppid = 0;
        rest >> state >> ppid;
        if (ppid == parent) kids.push_back((pid_t)std::stoi(name));
    }
    std::sort(kids.begin(), kids.end());
    return kids;
}

// mpirun -np n of a long run (args) in the background, once its ranks have
// trained some steps (its output in out_file); returns mpirun's pid and the
// ranks' pids.
inline pid_t start_ranks(int n, const std::string& args, const std::string& out_file, std::vector<pid_t>* ranks) {
    std::remove(out_file.c_str());  // a previous run's output would end the wait below at once
    pid_t job = spawn_cmd("exec " + mpirun(n, args, 300), out_file);  // exec: timeout's pid
    auto t0 = std::chrono::steady_clock::now();
    while (slurp(out_file).find("step     3/") == std::string::npos) {
        REQUIRE_MESSAGE(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60), slurp(out_file));
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    std::vector<pid_t> m = children(job);  // timeout -> mpirun -> ranks
    REQUIRE(m.size() == 1);
    *ranks = children(m[0]);
    REQUIRE(ranks->size() == (size_t)n);
    return job;
}

