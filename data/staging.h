// Building a data set beside its folder and swapping it in whole (used by
// data/prepare.h).
//
// All or nothing: the data set is built in a new folder beside the output
// (<out>.tmp-<pid>) and swapped in whole by one rename, so a run that fails
// halfway (bad input, full disk) leaves the old data set as it was (no new
// tokenizer beside old shards) and removes its temporary folder. What the
// old folder holds besides a data set (the files prepare makes: manifest.txt,
// tokenizer.bin, *_train_NNNNNN.bin, *_val_NNNNNN.bin) moves over into the
// new one: the default --out data/cache also holds train_mot's cache folder.
// An output that is a symlink stays one (its target is swapped); one that is
// a mount point, which nothing beside it can be renamed onto, gets the
// folder inside it and the files moved in one by one at the end.
//
// Stopped by a signal (prepare_stop_on_signals: Ctrl-C, SIGTERM, SIGHUP),
// prepare removes the staging folder too and leaves the output as it was.
// Every file operation in the staging folder, and the swap, holds
// staging_mutex(); the thread that takes the signal takes the mutex, so it
// never removes the folder under a write or halfway through the swap, and
// no operation starts after it.
#pragma once
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/fileio.h"

// Whether a file name is one prepare makes (or its .tmp while writing): these
// are the data set; anything else in the output folder is someone else's.
inline bool prepare_owns(std::string n) {
    if (n.size() > 4 && n.compare(n.size() - 4, 4, ".tmp") == 0) n.resize(n.size() - 4);
    if (n == "manifest.txt" || n == "tokenizer.bin") return true;
    if (n.size() < 4 || n.compare(n.size() - 4, 4, ".bin") != 0) return false;
    n.resize(n.size() - 4);  // <prefix>_train_000012 or <prefix>_val_000012
    size_t u = n.find_last_of('_');
    if (u == std::string::npos || n.size() - u - 1 < 6) return false;
    for (size_t i = u + 1; i < n.size(); i++)
        if (n[i] < '0' || n[i] > '9') return false;
    n.resize(u);
    auto ends = [&](const char* e) { size_t k = std::strlen(e); return n.size() > k && n.compare(n.size() - k, k, e) == 0; };
    return ends("_train") || ends("_val");
}

// Removes a folder and everything in it; quiet (it is cleanup).
inline void remove_tree(const std::string& dir) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
}

// The names in a folder.
inline std::vector<std::string> dir_names(const std::string& dir) {
    std::vector<std::string> names;
    std::error_code ec;
    for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
        names.push_back(it->path().filename().string());
    if (ec) fail(strf("%s: cannot list the folder (%s)", dir.c_str(), ec.message().c_str()));
    return names;
}

// Held by every file operation in the staging folder (see the top).
inline std::mutex& staging_mutex() {
    static std::mutex m;
    return m;
}

// The staging folder of the data set being built ("" when none), for the
// signal thread to remove; read and written under staging_mutex().
inline std::string& staging_folder() {
    static std::string folder;
    return folder;
}

// From here on SIGINT, SIGTERM and SIGHUP stop the process (exit 128 + the
// signal) after removing the staging folder of a data set being built, so
// that the output is left as it was and nothing beside it. Call first in
// main, before any other thread starts: the signals are blocked in every
// thread and taken by a thread of its own (sigwait), which, unlike a signal
// handler, may remove a folder and wait for a mutex.
inline void prepare_stop_on_signals() {
    static sigset_t set;
    sigemptyset(&set);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set, sig);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    std::thread([] {
        int sig = 0;
        while (sigwait(&set, &sig) != 0) {
        }
        staging_mutex().lock();  // kept until the exit: no file operation in the staging folder starts now
        const std::string& tmp = staging_folder();
        if (!tmp.empty()) remove_tree(tmp);
        const char* name = sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "SIGHUP";
        std::fprintf(stderr, "prepare: interrupted (%s): stopped%s\n", name,
                     tmp.empty() ? "" : "; the data set being built was removed, the output folder is as it was");
        _exit(128 + sig);
    }).detach();
}

// Where a new data set is built before it replaces the one in dir.
struct PrepareStaging {
    std::string dir;      // the output folder (a symlink resolved: the link stays)
    std::string tmp;      // the folder the data set is built in
    bool inside = false;  // dir is a mount point: tmp is in it, files are moved in one by one
};

// Makes the staging folder: <dir>.tmp-<pid> beside dir, on the same file
// system so that one rename swaps it in, with dir's owner, group and mode
// (refused when they cannot be given to it). When dir is a mount point
// (nothing beside it is on its file system), dir/.prepare-tmp-<pid> instead.
inline PrepareStaging prepare_staging(const std::string& out) {
    PrepareStaging s;
    s.dir = out;
    struct stat st, parent_st;
    if (lstat(out.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
        char* real = realpath(out.c_str(), nullptr);
        if (!real) fail(strf("%s: cannot resolve the link (%s)", out.c_str(), std::strerror(errno)));
        s.dir = real;
        std::free(real);
    }
    size_t slash = s.dir.find_last_of('/');
    std::string parent = slash == std::string::npos ? "." : slash == 0 ? "/" : s.dir.substr(0, slash);
    make_dirs(parent);
    bool exists = stat(s.dir.c_str(), &st) == 0;
    if (exists && !S_ISDIR(st.st_mode)) fail(strf("%s: the output folder exists and is not a directory", out.c_str()));
    s.inside = exists && stat(parent.c_str(), &parent_st) == 0 && parent_st.st_dev != st.st_dev;
    std::string base = s.inside ? s.dir + "/.prepare-tmp" : s.dir + ".tmp";
    for (int k = 0;; k++) {
        s.tmp = strf("%s-%d", base.c_str(), (int)getpid()) + (k ? strf("-%d", k) : "");
        if (mkdir(s.tmp.c_str(), 0755) == 0) break;
        if (errno != EEXIST || k == 100)
            fail(strf("%s: cannot create the folder %s to build the data set in (%s)", out.c_str(), s.tmp.c_str(),
                      std::strerror(errno)));
    }
    // the swap puts this folder in the output folder's place: it takes that folder's owner, group and
    // permissions (the owner first: changing it may clear set-id bits)
    if (exists && !s.inside) {
        struct stat made;
        if (stat(s.tmp.c_str(), &made) != 0 ||
            ((made.st_uid != st.st_uid || made.st_gid != st.st_gid) && chown(s.tmp.c_str(), st.st_uid, st.st_gid) != 0) ||
            chmod(s.tmp.c_str(), st.st_mode & 07777) != 0) {
            int e = errno;
            rmdir(s.tmp.c_str());
            fail(strf("%s: the output folder belongs to user %d, group %d, mode %04o; the new data set is built in a "
                      "folder beside it that takes its place, and that folder cannot be given the same (%s): run "
                      "prepare as the folder's owner, or give another --out",
                      out.c_str(), (int)st.st_uid, (int)st.st_gid, (unsigned)(st.st_mode & 07777), std::strerror(e)));
        }
    }
    return s;
}

// Puts the finished data set in s.tmp in place of the one in s.dir. Beside
// dir: what else dir holds moves into tmp, then the two folders trade places
// in one step (renameat2 RENAME_EXCHANGE; two renames where the file system
// lacks it) and the old data set, now at tmp, is removed. On failure dir is
// as it was. Inside a mount point: the old data set's files go (the manifest
// first, so that an interruption leaves no valid cache), the new ones are
// moved in (the manifest last).
inline void prepare_commit(const PrepareStaging& s) {
    const std::string &dir = s.dir, &tmp = s.tmp;
    struct stat st;
    if (stat(dir.c_str(), &st) != 0) {
        if (std::rename(tmp.c_str(), dir.c_str()) != 0)
            fail(strf("%s: cannot rename the new data set from %s (%s)", dir.c_str(), tmp.c_str(), std::strerror(errno)));
        return;
    }
    std::vector<std::string> names = dir_names(dir);
    if (s.inside) {
        std::vector<std::string> fresh = dir_names(tmp);
        std::remove((dir + "/manifest.txt").c_str());
        for (const std::string& n : names)
            if (prepare_owns(n)) std::remove((dir + "/" + n).c_str());
        std::sort(fresh.begin(), fresh.end(), [](const std::string& a, const std::string& b) {
            return (a == "manifest.txt") < (b == "manifest.txt") || ((a == "manifest.txt") == (b == "manifest.txt") && a < b);
        });
        for (const std::string& n : fresh)
            if (std::rename((tmp + "/" + n).c_str(), (dir + "/" + n).c_str()) != 0)
                fail(strf("%s: cannot move %s in from %s (%s)", dir.c_str(), n.c_str(), tmp.c_str(), std::strerror(errno)));
        remove_tree(tmp);
        return;
    }
    std::vector<std::string> moved;
    auto move_back = [&] {
        for (const std::string& n : moved) std::rename((tmp + "/" + n).c_str(), (dir + "/" + n).c_str());
    };
    for (const std::string& n : names) {
        if (prepare_owns(n)) continue;
        if (std::rename((dir + "/" + n).c_str(), (tmp + "/" + n).c_str()) != 0) {
            int e = errno;
            move_back();
            fail(strf("%s: cannot move %s into the new data set (%s)", dir.c_str(), n.c_str(), std::strerror(e)));
        }
        moved.push_back(n);
    }
    int e = 0;
#ifdef RENAME_EXCHANGE
    if (renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) == 0) {
        remove_tree(tmp);  // the old data set
        return;
    }
    e = errno;
    if (e != EINVAL && e != ENOSYS) {
        move_back();
        fail(strf("%s: cannot swap in the new data set from %s (%s)", dir.c_str(), tmp.c_str(), std::strerror(e)));
    }
#endif
    std::string old = strf("%s.old-%d", dir.c_str(), (int)getpid());
    remove_tree(old);
    if (std::rename(dir.c_str(), old.c_str()) != 0) {
        e = errno;
        move_back();
        fail(strf("%s: cannot move the old data set aside to %s (%s)", dir.c_str(), old.c_str(), std::strerror(e)));
    }
    if (std::rename(tmp.c_str(), dir.c_str()) != 0) {
        e = errno;
        std::rename(old.c_str(), dir.c_str());
        move_back();
        fail(strf("%s: cannot rename the new data set from %s (%s)", dir.c_str(), tmp.c_str(), std::strerror(e)));
    }
    remove_tree(old);
}

