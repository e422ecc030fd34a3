// Helpers for suites that run ./train_mot as a user would (from the repository
// root): run it, capture its output and exit status, write shards by hand.
// The program is ./train_mot (make), or the path in MOT_TRAIN_MOT (CTest sets
// it to the CMake build's binary).
//
// Runs are single-threaded (OMP_NUM_THREADS=1): the test models are tiny, and
// on a busy machine OpenMP threads waiting for a core make them much slower.
#pragma once
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

struct Run {
    int rc;           // exit status; 128 + n when killed by signal n
    std::string out;  // stdout and stderr together
};

inline std::string train_mot_path() {
    const char* p = std::getenv("MOT_TRAIN_MOT");
    return p && *p ? p : "./train_mot";
}

inline Run run(const std::string& args) {
    std::string cmd = "OMP_NUM_THREADS=1 " + train_mot_path() + " " + args + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    REQUIRE(p);
    Run r{0, ""};
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
    int status = pclose(p);
    r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return r;
}

// Expects a clean failure: non-zero exit (not a signal) and every needle in the output.
inline void expect_error(const std::string& args, const std::vector<std::string>& needles) {
    Run r = run(args);
    INFO("args: ", args);
    INFO("output: ", r.out);
    CHECK(r.rc != 0);
    CHECK(r.rc < 128);  // an error exit, not a crash
    for (const std::string& n : needles) CHECK_MESSAGE(r.out.find(n) != std::string::npos, "missing: ", n);
}

inline bool exists(const std::string& path) {
    struct stat st;
    return stat(path.c_str(), &st) == 0;
}

// An llm.c-format shard written by hand, independent of data/shard.h; magic,
// count and keep_bytes (truncation) make broken ones.
inline void write_shard(const std::string& path, const std::vector<uint16_t>& tokens, int magic = 20240520,
                        int count = -1, size_t keep_bytes = SIZE_MAX) {
    std::vector<int32_t> h(256, 0);
    h[0] = magic;
    h[1] = 1;
    h[2] = count < 0 ? (int)tokens.size() : count;
    std::string bytes((const char*)h.data(), 1024);
    bytes.append((const char*)tokens.data(), tokens.size() * 2);
    if (keep_bytes < bytes.size()) bytes.resize(keep_bytes);
    FILE* fp = std::fopen(path.c_str(), "wb");
    REQUIRE(fp);
    std::fwrite(bytes.data(), 1, bytes.size(), fp);
    std::fclose(fp);
}
