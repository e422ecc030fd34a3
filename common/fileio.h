// Small file helpers shared by every loader and writer (checkpoints, tokenizer,
// shards): errors name the file, writes are atomic.
//
// Writes are atomic: data goes to "<path>.tmp", which is renamed over <path>
// only after every byte was written and the file closed cleanly, so a crash
// or a full disk never leaves a half-written file under the real name.
// Binary files are written in host byte order; mot assumes a little-endian
// host (x86-64, ARM64), which is what the file formats specify.
#pragma once
#include <sys/stat.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"

// Writes the concatenation of parts to path, atomically.
inline void write_file_atomic(const std::string& path,
                              const std::vector<std::pair<const void*, size_t>>& parts) {
    std::string tmp = path + ".tmp";
    FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) fail(strf("%s: cannot create (%s)", tmp.c_str(), std::strerror(errno)));
    bool ok = true;
    for (const auto& p : parts)
        if (p.second && std::fwrite(p.first, 1, p.second, f) != p.second) ok = false;
    if (std::fclose(f) != 0) ok = false;
    if (!ok) {
        std::remove(tmp.c_str());
        fail(strf("%s: write failed (disk full?)", path.c_str()));
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        int e = errno;
        std::remove(tmp.c_str());
        fail(strf("%s: cannot rename from %s (%s)", path.c_str(), tmp.c_str(), std::strerror(e)));
    }
}

inline void write_file_atomic(const std::string& path, const std::string& data) {
    write_file_atomic(path, {{data.data(), data.size()}});
}

// Opens a file for reading or fails with a message naming it.
inline FILE* open_or_fail(const std::string& path, const char* what) {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) fail(strf("%s: cannot open %s (%s)", path.c_str(), what, std::strerror(errno)));
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

inline bool file_exists(const std::string& path) {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (f) std::fclose(f);
    return f != nullptr;
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
