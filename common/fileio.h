// Small file helpers shared by every loader and writer (checkpoints, tokenizer,
// shards): errors name the file, writes are atomic.
//
// Writes are atomic: data goes to a temporary file beside <path>, which is
// renamed over <path> only after every byte was written and flushed to disk,
// so a crash or a full disk never leaves a half-written file under the real
// name (write_file_atomic).
// Binary files are written in host byte order; mot assumes a little-endian
// host (x86-64, ARM64), which is what the file formats specify.
#pragma once
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"

// 64-bit FNV-1a over n bytes, continuing from h (default: the standard
// offset basis): a cheap fingerprint of contents, not cryptographic. Call
// again with the result to hash several pieces in order.
inline uint64_t fnv1a64(const void* data, size_t n, uint64_t h = 0xcbf29ce484222325ull) {
    const unsigned char* b = (const unsigned char*)data;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

inline uint64_t fnv1a64(const std::string& s) { return fnv1a64(s.data(), s.size()); }

// A 64-bit checksum for large blocks (checkpoints): FNV-1a's step on 8-byte
// words in four independent lanes (four times the speed of one byte at a
// time), the lanes and the tail then folded in order. Catches any single
// flipped bit; not a cryptographic hash.
inline uint64_t checksum64(const void* data, size_t n, uint64_t h = 0xcbf29ce484222325ull) {
    const unsigned char* b = (const unsigned char*)data;
    const uint64_t prime = 0x100000001b3ull;
    uint64_t lane[4] = {h, h ^ 1, h ^ 2, h ^ 3};
    size_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 4; k++) {
            uint64_t w;
            std::memcpy(&w, b + i + 8 * k, 8);
            lane[k] = (lane[k] ^ w) * prime;
        }
    for (int k = 0; k < 4; k++) h = fnv1a64(&lane[k], 8, h);
    return fnv1a64(b + i, n - i, h);
}

// fsync of a folder, so that a rename in it survives a crash of the machine.
inline void sync_dir(const std::string& dir) {
    int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;  // best effort: some file systems refuse to open folders
    fsync(fd);
    close(fd);
}

// The number in the next temporary file's name (create_temp_file); shared
// by every thread of the process.
inline std::atomic<unsigned>& temp_file_count() {
    static std::atomic<unsigned> count{0};
    return count;
}

// Creates a new, empty temporary file beside path, <path>.tmp.<pid>.<count>,
// and returns it open for writing (its name in *tmp), or -1 with errno set.
// The file is made by this call (O_CREAT | O_EXCL, which also never follows
// a symlink): a file or symlink someone planted under a name the process
// would use is skipped, never written through, and a name taken by another
// process or a killed run is skipped too.
inline int open_temp_file(const std::string& path, std::string* tmp, mode_t mode = 0666) {
    for (int attempt = 0;; attempt++) {
        *tmp = strf("%s.tmp.%d.%u", path.c_str(), (int)getpid(), temp_file_count()++);
        int fd = open(tmp->c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
        if (fd >= 0 || errno != EEXIST || attempt == 1000) return fd;
    }
}

// open_temp_file, failing with a message naming path.
inline int create_temp_file(const std::string& path, std::string* tmp, mode_t mode = 0666) {
    int fd = open_temp_file(path, tmp, mode);
    if (fd < 0) fail(strf("%s: cannot create the temporary file %s (%s)", path.c_str(), tmp->c_str(), std::strerror(errno)));
    return fd;
}

// Writes the concatenation of parts to path, atomically and durably: the
// bytes go to a new temporary file beside it (create_temp_file), which is
// flushed to disk, then renamed over path; the folder is flushed before and
// after the rename. A crash, a full disk or a second process writing the
// same path never leaves a torn or mixed file under the real name, and a
// symlink planted at a temporary's name is never written through.
inline void write_file_atomic(const std::string& path,
                              const std::vector<std::pair<const void*, size_t>>& parts) {
    std::string tmp;
    int fd = create_temp_file(path, &tmp);
    FILE* f = fdopen(fd, "wb");
    if (!f) {
        int e = errno;
        close(fd);
        std::remove(tmp.c_str());
        fail(strf("%s: cannot create (%s)", tmp.c_str(), std::strerror(e)));
    }
    bool ok = true;
    for (const auto& p : parts)
        if (p.second && std::fwrite(p.first, 1, p.second, f) != p.second) ok = false;
    if (std::fflush(f) != 0 || fsync(fileno(f)) != 0) ok = false;
    int write_errno = errno;
    if (std::fclose(f) != 0) ok = false;
    if (!ok) {
        std::remove(tmp.c_str());
        fail(strf("%s: write failed (%s)", path.c_str(), std::strerror(write_errno ? write_errno : errno)));
    }
    size_t slash = path.find_last_of('/');
    std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
    sync_dir(dir);
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        int e = errno;
        std::remove(tmp.c_str());
        fail(strf("%s: cannot rename from %s (%s)", path.c_str(), tmp.c_str(), std::strerror(e)));
    }
    sync_dir(dir);
}

// The temporary files of write_file_atomic(path) that are still there (a
// process killed mid-write leaves one; a finished or failed write does not).
inline std::vector<std::string> leftover_temp_files(const std::string& path) {
    size_t slash = path.find_last_of('/');
    std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
    std::string prefix = (slash == std::string::npos ? path : path.substr(slash + 1)) + ".tmp.";
    std::vector<std::string> found;
    if (DIR* d = opendir(dir.c_str())) {
        while (dirent* e = readdir(d))
            if (std::strncmp(e->d_name, prefix.c_str(), prefix.size()) == 0) found.push_back(e->d_name);
        closedir(d);
    }
    return found;
}

inline void write_file_atomic(const std::string& path, const std::string& data) {
    write_file_atomic(path, {{data.data(), data.size()}});
}

// What a non-regular file is, for messages.
inline const char* file_kind(mode_t mode) {
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    return "not a regular file";
}

// Opens a file for reading or fails with a message naming it. Regular files
// only: a FIFO would block the open (and every read) until some writer comes,
// a directory opens fine and then fails to read with a meaningless message,
// and a device has no size. The open is non-blocking so that a FIFO is seen
// and refused instead of waited on; the flag is cleared again for the reads.
inline FILE* open_or_fail(const std::string& path, const char* what) {
    int fd = open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) fail(strf("%s: cannot open %s (%s)", path.c_str(), what, std::strerror(errno)));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        fail(strf("%s: cannot open %s (%s)", path.c_str(), what, std::strerror(e)));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        fail(strf("%s: cannot open %s: is a directory", path.c_str(), what));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        fail(strf("%s: cannot open %s: is not a regular file (it is %s)", path.c_str(), what, file_kind(st.st_mode)));
    }
    int flags = fcntl(fd, F_GETFL);
    FILE* f = flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0 ? nullptr : fdopen(fd, "rb");
    if (!f) {
        int e = errno;
        close(fd);
        fail(strf("%s: cannot open %s (%s)", path.c_str(), what, std::strerror(e)));
    }
    return f;
}

// Size in bytes of an open file (leaves the position at the start).
inline int64_t file_size(FILE* f) {
    std::fseek(f, 0, SEEK_END);
    int64_t n = std::ftell(f);
    std::fseek(f, 0, SEEK_SET);
    return n;
}

// The whole file as a byte string.
inline std::string read_file(const std::string& path, const char* what = "file") {
    FILE* f = open_or_fail(path, what);
    int64_t n = file_size(f);
    std::string s(n > 0 ? size_t(n) : 0, '\0');
    size_t got = n > 0 ? std::fread(&s[0], 1, s.size(), f) : 0;
    std::fclose(f);
    if (n < 0 || got != s.size()) fail(strf("%s: read error", path.c_str()));
    return s;
}

// Whether anything is at path. Only looks (stat), never opens: opening a
// FIFO would block. Whether it can be read is open_or_fail's to say.
inline bool file_exists(const std::string& path) {
    struct stat st;
    return stat(path.c_str(), &st) == 0;
}

// The absolute path that path names, for comparing paths and guarding
// folders: its longest existing part resolved by realpath (symlinks, . and
// ..), the rest appended with its . and .. applied as written. Two paths
// naming one file give the same string, whether or not the file exists yet.
inline std::string resolved_path(const std::string& path) {
    std::string abs = path;
    if (abs.empty() || abs[0] != '/') {
        char* cwd = getcwd(nullptr, 0);
        if (!cwd) fail(strf("%s: cannot resolve the path (the working folder: %s)", path.c_str(), std::strerror(errno)));
        abs = std::string(cwd) + "/" + abs;
        std::free(cwd);
    }
    std::vector<std::string> tail;  // the missing part, last component first
    std::string head = abs;
    while (true) {
        while (head.size() > 1 && head.back() == '/') head.pop_back();
        if (char* real = realpath(head.c_str(), nullptr)) {
            std::string out = real;
            std::free(real);
            for (size_t i = tail.size(); i-- > 0;) {
                if (tail[i].empty() || tail[i] == ".") continue;
                if (tail[i] == "..") {
                    size_t slash = out.find_last_of('/');
                    out = slash == 0 ? "/" : out.substr(0, slash);
                    continue;
                }
                out += (out == "/" ? "" : "/") + tail[i];
            }
            return out;
        }
        size_t slash = head.find_last_of('/');
        if (slash == std::string::npos || head == "/") return abs;  // nothing resolves, not even "/"
        tail.push_back(head.substr(slash + 1));
        head = slash == 0 ? "/" : head.substr(0, slash);
    }
}

// Whether paths a and b name one file: the same device and inode when both
// exist (however they are spelled, through any symlinks or hard links),
// else the same resolved_path (a file not written yet).
inline bool same_file(const std::string& a, const std::string& b) {
    struct stat sa, sb;
    bool ea = stat(a.c_str(), &sa) == 0, eb = stat(b.c_str(), &sb) == 0;
    if (ea && eb) return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    if (ea != eb) return false;
    return resolved_path(a) == resolved_path(b);
}

// mkdir -p: creates dir and every missing parent.
inline void make_dirs(const std::string& dir) {
    for (size_t i = 1; i <= dir.size(); i++) {
        if (i < dir.size() && dir[i] != '/') continue;
        std::string d = dir.substr(0, i);
        if (mkdir(d.c_str(), 0755) != 0 && errno != EEXIST)
            fail(strf("%s: cannot create directory (%s)", d.c_str(), std::strerror(errno)));
    }
}

// Creates the folder a file will be written into, if it is missing.
inline void make_parent_dirs(const std::string& path) {
    size_t slash = path.find_last_of('/');
    if (slash != std::string::npos && slash > 0) make_dirs(path.substr(0, slash));
}
