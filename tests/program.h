// Helpers for suites that run ./train_mot as a user would (from the repository
// root): run it, capture its output and exit status, write shards by hand.
// Expecting a clean failure is tests/bad_input.h.
// The program is ./train_mot (make), or the path in MOT_TRAIN_MOT (CTest sets
// it to the CMake build's binary).
//
// Runs are single-threaded (OMP_NUM_THREADS=1): the test models are tiny, and
// on a busy machine OpenMP threads waiting for a core make them much slower.
#pragma once
#include <doctest/doctest.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
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

// The prepare program: MOT_PREPARE, else beside MOT_TRAIN_MOT (CMake builds
// both into one folder), else ./prepare.
inline std::string prepare_path() {
    const char* p = std::getenv("MOT_PREPARE");
    if (p && *p) return p;
    std::string t = train_mot_path();
    size_t slash = t.find_last_of('/');
    return slash == std::string::npos ? "./prepare" : t.substr(0, slash + 1) + "prepare";
}

// s as one word for /bin/sh.
inline std::string sh_quote(const std::string& s) {
    std::string q = "'";
    for (char ch : s) q += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
    return q + "'";
}

// Runs a shell command line, capturing its output; rc -1 when it could not
// be started. Asserts nothing, so it also serves outside a test case (a
// suite's skip conditions).
inline Run capture(const std::string& command) {
    FILE* p = popen((command + " 2>&1").c_str(), "r");
    if (!p) return Run{-1, ""};
    Run r{0, ""};
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
    int status = pclose(p);
    r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return r;
}

// Runs a shell command line (single-threaded), capturing its output.
inline Run run_cmd(const std::string& command) {
    Run r = capture("OMP_NUM_THREADS=1 " + command);
    REQUIRE(r.rc != -1);
    return r;
}

inline Run run(const std::string& args) { return run_cmd(train_mot_path() + " " + args); }

// ./train_mot args, killed after `seconds` (exit status 137) if it hangs.
inline Run run_limited(const std::string& args, int seconds = 10) {
    return run_cmd("timeout -s KILL " + std::to_string(seconds) + " " + train_mot_path() + " " + args);
}

// A command in the background through sh -c, single-threaded, stdout and
// stderr to out_file. Returns the pid (the command's own with "exec ...").
inline pid_t spawn_cmd(const std::string& command, const std::string& out_file) {
    // emptied here, before the fork: the child's shell truncates it only when
    // it gets to run, and until then a caller waiting on the file's output
    // would read what an earlier run left in it
    FILE* f = std::fopen(out_file.c_str(), "w");
    REQUIRE(f);
    std::fclose(f);
    std::string cmd = command + " > " + out_file + " 2>&1";
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        setenv("OMP_NUM_THREADS", "1", 1);
        execl("/bin/sh", "sh", "-c", cmd.c_str(), (char*)nullptr);
        _exit(127);
    }
    return pid;
}

// ./train_mot args in the background; `prefix` goes before the program in
// the shell command (e.g. "trap '' XFSZ; ulimit -f 4;").
inline pid_t spawn(const std::string& args, const std::string& out_file, const std::string& prefix = "") {
    return spawn_cmd(prefix + " exec " + train_mot_path() + " " + args, out_file);
}

// How a spawned run ended.
struct Exit {
    bool exited;  // exited by itself (not killed by a signal)
    int code;     // its exit status, or the signal that killed it
};

inline Exit wait_exit(pid_t pid) {
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    if (WIFEXITED(status)) return {true, WEXITSTATUS(status)};
    return {false, WIFSIGNALED(status) ? WTERMSIG(status) : -1};
}

inline std::string slurp(const std::string& path) {
    FILE* fp = std::fopen(path.c_str(), "rb");
    if (!fp) return "";
    std::string s;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, fp)) > 0) s.append(buf, n);
    std::fclose(fp);
    return s;
}

inline std::vector<std::string> list_dir(const std::string& dir) {
    std::vector<std::string> names;
    DIR* d = opendir(dir.c_str());
    if (!d) return names;
    while (dirent* e = readdir(d))
        if (e->d_name[0] != '.') names.push_back(e->d_name);
    closedir(d);
    std::sort(names.begin(), names.end());
    return names;
}

inline void clear_dir(const std::string& dir) {
    for (const std::string& n : list_dir(dir)) std::remove((dir + "/" + n).c_str());
    rmdir(dir.c_str());
}

// Writes bytes to path (a test's input file).
inline void write_bytes(const std::string& path, const std::string& bytes) {
    FILE* fp = std::fopen(path.c_str(), "wb");
    REQUIRE(fp);
    std::fwrite(bytes.data(), 1, bytes.size(), fp);
    std::fclose(fp);
}

inline bool exists(const std::string& path) {
    struct stat st;
    return stat(path.c_str(), &st) == 0;
}

// An llm.c-format shard written by hand, independent of data/shard.h; magic,
// count and keep_bytes (truncation) make broken ones.
inline void write_raw_shard(const std::string& path, const std::vector<uint16_t>& tokens, int magic = 20240520,
                            int count = -1, size_t keep_bytes = SIZE_MAX) {
    std::vector<int32_t> h(256, 0);
    h[0] = magic;
    h[1] = 1;
    h[2] = count < 0 ? (int)tokens.size() : count;
    std::string bytes((const char*)h.data(), 1024);
    bytes.append((const char*)tokens.data(), tokens.size() * 2);
    if (keep_bytes < bytes.size()) bytes.resize(keep_bytes);
    write_bytes(path, bytes);
}
