// Where a training run writes: checked before the first step, so that a run
// never trains for hours and then finds it cannot save; and the checkpoint
// folder locked, so that two runs never write into one folder.
#pragma once
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "common/checkpoint.h"
#include "common/error.h"
#include "common/fileio.h"
#include "train/state.h"

// Fails unless files can be created in dir (made first if missing): creates
// and removes a probe file there. option names the flag for the message.
inline void check_writable_dir(const std::string& dir, const char* option) {
    try {
        make_dirs(dir);
    } catch (const std::exception& e) {
        fail(strf("%s %s: %s", option, dir.c_str(), e.what()));
    }
    struct stat st;
    if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        fail(strf("%s %s: not a directory", option, dir.c_str()));
    std::string probe = strf("%s/.mot-write-test-%d", dir.c_str(), (int)getpid());
    int fd = open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) fail(strf("%s %s: cannot write there (%s)", option, dir.c_str(), std::strerror(errno)));
    close(fd);
    unlink(probe.c_str());
}

// The folder of a file path ("." for a bare name).
inline std::string parent_dir(const std::string& path) {
    size_t slash = path.find_last_of('/');
    if (slash == std::string::npos) return ".";
    return slash == 0 ? "/" : path.substr(0, slash);
}

// Fails unless path can be written: an existing path must be a regular file,
// and its folder must take new files (the file is written to a temporary
// name there and renamed).
inline void check_writable_file(const std::string& path, const char* option) {
    // a name ending in '/' is a folder's, even before it exists: the file could never be written there
    if (!path.empty() && path.back() == '/')
        fail(strf("%s %s: names a folder (it ends in '/'); give a file name", option, path.c_str()));
    struct stat st;
    if (stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
        fail(strf("%s %s: exists and is not a regular file", option, path.c_str()));
    try {
        check_writable_dir(parent_dir(path), option);
    } catch (const std::exception& e) {
        fail(strf("%s %s: cannot be written: %s", option, path.c_str(), e.what()));
    }
}

// A file a run reads or writes, with the option that names it; a shard
// found by a glob also keeps the pattern the option gave.
struct RunFile {
    const char* option;
    std::string path, pattern;
};

inline std::string run_file_name(const RunFile& f) {
    if (f.pattern.empty() || f.pattern == f.path) return strf("%s %s", f.option, f.path.c_str());
    return strf("%s %s (its file %s)", f.option, f.pattern.c_str(), f.path.c_str());
}

// Refuses an output file (--save, --log) that is the --checkpoint-dir folder,
// however spelled: the run makes that folder at the start, and the file
// could not be written over it at the end.
inline void check_not_checkpoint_dir(const std::vector<RunFile>& files, const std::string& dir) {
    if (dir.empty()) return;
    for (const RunFile& f : files)
        if (!f.path.empty() && resolved_path(f.path) == resolved_path(dir))
            fail(strf("%s %s and --checkpoint-dir %s name the same path: the run makes it the folder of its "
                      "checkpoints, and %s could not be written over it; give %s another name",
                      f.option, f.path.c_str(), dir.c_str(), f.option, f.option));
}

// Refuses, before anything is written, a run with an output that is one of
// its inputs (--log over a training shard would destroy it, and the run
// would still end well) or that is another of its outputs (--log and --save:
// the model would replace the log). Paths are compared as files (same_file),
// so another spelling, a symlink or a hard link is the same file. An empty
// path is an option not given.
inline void check_outputs_apart(const std::vector<RunFile>& outputs, const std::vector<RunFile>& inputs) {
    for (size_t i = 0; i < outputs.size(); i++) {
        const RunFile& out = outputs[i];
        if (out.path.empty()) continue;
        for (const RunFile& in : inputs)
            if (!in.path.empty() && same_file(out.path, in.path))
                fail(strf("%s and %s name the same file: writing %s would destroy that input; give another %s",
                          run_file_name(out).c_str(), run_file_name(in).c_str(), out.option, out.option));
        for (size_t j = i + 1; j < outputs.size(); j++)
            if (!outputs[j].path.empty() && same_file(out.path, outputs[j].path))
                fail(strf("%s and %s name the same file: one would overwrite the other; give another %s",
                          run_file_name(out).c_str(), run_file_name(outputs[j]).c_str(), outputs[j].option));
    }
}

// An exclusive lock on a checkpoint folder, held until the process ends: a
// second run given the same folder stops with an error naming the first.
// The lock is flock() on DIR/.lock, which also holds the owner's pid; the
// kernel drops it when the owner exits, however it exits. The lock file is
// opened without following a symlink and must be a regular file of one
// link: a .lock planted as a link to another file would have that file
// truncated and overwritten with the pid.
inline void lock_checkpoint_dir(const std::string& dir) {
    static std::string locked;  // one folder per process
    if (locked == dir) return;
    if (!locked.empty()) fail(strf("--checkpoint-dir: already writing to %s", locked.c_str()));
    check_writable_dir(dir, "--checkpoint-dir");
    std::string path = dir + "/.lock";
    // O_NONBLOCK: a FIFO planted there is refused below instead of waited on
    int fd = open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0644);
    if (fd < 0 && errno == ELOOP)
        fail(strf("--checkpoint-dir %s: %s is a symlink, not the folder's lock file; remove it", dir.c_str(), path.c_str()));
    if (fd < 0) fail(strf("--checkpoint-dir %s: cannot create %s (%s)", dir.c_str(), path.c_str(), std::strerror(errno)));
    struct stat st;
    const char* odd = fstat(fd, &st) != 0      ? "something fstat cannot examine"
                      : !S_ISREG(st.st_mode)   ? file_kind(st.st_mode)
                      : st.st_nlink != 1       ? "a hard link: the file has other names"
                                               : nullptr;
    if (odd) {
        close(fd);
        fail(strf("--checkpoint-dir %s: %s is not the folder's lock file (it is %s); remove it", dir.c_str(),
                  path.c_str(), odd));
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char buf[32] = {0};
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        close(fd);
        std::string owner = n > 0 ? std::string(buf, strcspn(buf, "\n")) : "unknown";
        if (e == EWOULDBLOCK)
            fail(strf("--checkpoint-dir %s is in use by another train_mot (pid %s): two runs in one folder would "
                      "overwrite each other's checkpoints; give another folder or stop that run",
                      dir.c_str(), owner.c_str()));
        fail(strf("--checkpoint-dir %s: cannot lock %s (%s)", dir.c_str(), path.c_str(), std::strerror(e)));
    }
    std::string pid = strf("%d\n", (int)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid.data(), pid.size(), 0) != (ssize_t)pid.size())
        fail(strf("--checkpoint-dir %s: cannot write %s (%s)", dir.c_str(), path.c_str(), std::strerror(errno)));
    locked = dir;  // fd stays open: the lock lives as long as the process
}

// Writes the final model to --save; if that fails after all (the disk
// filled, the folder went away), writes it beside the requested path, then
// in the working folder, and fails saying where the model is: a trained
// model is never lost, and the run never reports a save it did not make.
inline void save_final(const std::string& path, const Config& c, const float* params) {
    std::string first_error;
    try {
        checkpoint_save(path, c, params);
        std::printf("saved %s\n", path.c_str());
        return;
    } catch (const std::exception& e) {
        first_error = e.what();
    }
    std::string base = path.substr(path.find_last_of('/') + 1);
    for (const std::string& fallback : {strf("%s.rescue-%d", path.c_str(), (int)getpid()),
                                        strf("%s.rescue-%d", base.c_str(), (int)getpid())}) {
        try {
            checkpoint_save(fallback, c, params);
        } catch (const std::exception&) {
            continue;
        }
        fail(strf("--save %s failed (%s); the model was written to %s instead", path.c_str(), first_error.c_str(),
                  fallback.c_str()));
    }
    fail(strf("--save %s failed (%s), and so did writing the model beside it and in the working folder",
              path.c_str(), first_error.c_str()));
}

// Writes step's checkpoint pair to --checkpoint-dir (checkpoint_dir_save).
// If that fails (the disk filled, the folder went away), the run stops, as
// it cannot keep its checkpoints, but the training so far is kept as the
// final --save keeps its model (save_final): the pair is written to a new
// folder beside (DIR.rescue-PID), then to one in the working folder; failing
// both, the model alone beside the pair's name in DIR and in the working
// folder; the error says what went where. Parameters that are not finite
// are refused with no rescue: there is nothing worth keeping.
inline void save_checkpoint_or_rescue(const std::string& dir, const Config& c, const float* params, const TrainState& s,
                                      int keep) {
    const long long step = (long long)s.step;
    std::string bad = first_nonfinite_tensor(c, params);
    if (!bad.empty()) fail(strf("step %lld: the parameters are not finite (%s); no checkpoint written", step, bad.c_str()));
    std::string first_error;
    try {
        checkpoint_dir_save(dir, c, params, s, keep);
        return;
    } catch (const std::exception& e) {
        first_error = e.what();
    }
    // a state file whose model file did not follow is no checkpoint: not left behind
    auto drop_lone_state = [&](const std::string& d) {
        if (!file_exists(checkpoint_name(d, step, "ckpt"))) std::remove(checkpoint_name(d, step, "state").c_str());
    };
    drop_lone_state(dir);
    std::string failed = strf("--checkpoint-dir %s: writing the checkpoint of step %lld failed (%s)", dir.c_str(), step,
                              first_error.c_str());
    std::string stem = dir;
    while (stem.size() > 1 && stem.back() == '/') stem.pop_back();
    std::string base = stem.substr(stem.find_last_of('/') + 1);
    const int pid = (int)getpid();
    for (const std::string& fallback : {strf("%s.rescue-%d", stem.c_str(), pid), strf("%s.rescue-%d", base.c_str(), pid)}) {
        if (mkdir(fallback.c_str(), 0755) != 0) continue;  // a folder of that name is someone else's
        try {
            checkpoint_dir_save(fallback, c, params, s, 0);
        } catch (const std::exception&) {
            drop_lone_state(fallback);
            rmdir(fallback.c_str());
            continue;
        }
        fail(strf("%s; the checkpoint was written to %s instead: --checkpoint-dir %s --resume continues the run",
                  failed.c_str(), fallback.c_str(), fallback.c_str()));
    }
    std::string name = strf("step_%08lld.ckpt.rescue-%d", step, pid);
    for (const std::string& fallback : {stem + "/" + name, name}) {
        try {
            checkpoint_save(fallback, c, params);
        } catch (const std::exception&) {
            continue;
        }
        fail(strf("%s, and so did writing the checkpoint beside the folder and in the working folder; the model alone "
                  "(without the optimizer's state) was written to %s: --load it to go on",
                  failed.c_str(), fallback.c_str()));
    }
    fail(strf("%s, and so did writing it or the model alone beside the folder and in the working folder", failed.c_str()));
}
