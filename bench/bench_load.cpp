// bench/bench_load.cpp: a CPU training step alone and beside other work, with
// the thread count fixed at every core (--threads = nproc) and chosen by the
// program (--threads 0, common/threads.h).
//
//   make train_mot build/bench_load && ./build/bench_load [steps]     (make bench runs it)
//
// Runs ./train_mot on the default data set (the default L 4, C 128, T 64,
// with MoT E 8, G 4, B 16 fixed: the figures in the README were measured with
// them) from the repository root, reads the step times
// from its --log, and reports the median step time of each run:
//   alone                the machine to itself
//   beside a busy loop   one single-threaded process spinning all the while
//   beside a trainer     a second ./train_mot with the same options, started
//                        first and running all the while
// With n cores and two busy processes, fair sharing makes a step about 2x
// slower than alone; the goal is at most 3x. Ratios are against "alone" of
// the same thread policy, measured in the same run.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/runlog.h"

// the program: ./train_mot, or MOT_TRAIN_MOT (CMake sets it)
static const char* PROG = std::getenv("MOT_TRAIN_MOT") ? std::getenv("MOT_TRAIN_MOT") : "./train_mot";
static const std::string MODEL = " --experts 8 --group 4 --batch 16 --temperature 1 --val-every 0 --sample-every 0 --device cpu";

// Starts `./train_mot args` (stdout to /dev/null) or a busy loop (args empty).
static pid_t start(const std::string& args) {
    pid_t pid = fork();
    if (pid < 0) { std::perror("fork"); std::exit(1); }
    if (pid == 0) {
        if (args.empty()) {
            volatile unsigned long x = 0;
            for (;;) x = x + 1;
        }
        std::string cmd = std::string("exec ") + PROG + args + " > /dev/null 2>&1";
        execl("/bin/sh", "sh", "-c", cmd.c_str(), (char*)nullptr);
        _exit(127);
    }
    return pid;
}

static void stop(pid_t pid) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
}

struct Result {
    double median_ms = 0;
    int threads_last = 0;  // the thread count of the last step
};

// One measured run of `steps` steps with `threads` (0: tuned), beside `other`
// ("" nothing, "busy" a spinning process, "trainer" a second train_mot).
static Result measure(int steps, int threads, const std::string& other) {
    std::string opts = MODEL + " --threads " + std::to_string(threads);
    pid_t bg = 0;
    if (other == "busy") bg = start("");
    if (other == "trainer") bg = start(opts + " --steps 1000000");
    if (bg) usleep(1000000);  // let it get going
    std::string log = "build/bench_load.jsonl";
    std::remove(log.c_str());
    std::string cmd = std::string(PROG) + opts + " --steps " + std::to_string(steps) + " --log " + log + " > /dev/null 2>&1";
    int rc = std::system(cmd.c_str());
    if (bg) stop(bg);
    if (rc != 0) {
        std::fprintf(stderr, "bench_load: '%s' failed (%d)\n", cmd.c_str(), rc);
        std::exit(1);
    }
    Result r;
    r.median_ms = median(log_values(log, "ms", steps / 4));  // the first quarter: warm-up, and the tuner settling
    std::vector<double> used = log_values(log, "threads", 0);
    r.threads_last = used.empty() ? 0 : (int)used.back();
    return r;
}

int main(int argc, char** argv) {
    int steps = argc > 1 ? std::atoi(argv[1]) : 60;
    if (access(PROG, X_OK) != 0) {
        std::fprintf(stderr, "bench_load: %s not found: run from the repository root after make train_mot\n", PROG);
        return 1;
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    // prepare the default data set once, outside the timings
    if (std::system((std::string(PROG) + MODEL + " --steps 0 > /dev/null 2>&1").c_str()) != 0) {
        std::fprintf(stderr, "bench_load: %s could not prepare the default data set\n", PROG);
        return 1;
    }
    std::printf("CPU step of the default model (MoT E 8, G 4, B 16), %ld cores, %d steps per run (median of the last 3/4)\n", cores, steps);
    std::printf("%-10s %-20s %10s %8s %8s\n", "threads", "beside", "ms/step", "x alone", "threads");
    for (int policy : {(int)cores, 0}) {
        std::string name = policy == 0 ? "tuned" : "fixed " + std::to_string(policy);
        Result alone = measure(steps, policy, "");
        for (const char* other : {"", "busy", "trainer"}) {
            Result r = *other ? measure(steps, policy, other) : alone;
            std::string label = !*other ? "nothing (alone)" : std::string(other) == "busy" ? "a busy loop" : "a second trainer";
            std::printf("%-10s %-20s %10.1f %7.2fx %8d\n", name.c_str(), label.c_str(), r.median_ms,
                        r.median_ms / alone.median_ms, r.threads_last);
            std::fflush(stdout);
        }
    }
    return 0;
}
