// The training log: one JSON object per line (DESIGN.md section 5). Train rows
// carry step, loss, lr, grad_norm, ms, tok_per_s; validation rows carry
// val_loss. Flushed after every row so a crashed run keeps its log.
#pragma once
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "error.h"
#include "fileio.h"

struct JsonlLog {
    FILE* fp = nullptr;
};

inline void jsonl_open(JsonlLog* log, const std::string& path, bool append) {
    if (path.empty()) return;
    make_parent_dirs(path);
    log->fp = std::fopen(path.c_str(), append ? "a" : "w");
    if (!log->fp) fail(strf("--log %s: cannot open for writing", path.c_str()));
}

// fields: (name, value) pairs written as numbers, after "step".
inline void jsonl_write(JsonlLog* log, int step, const std::vector<std::pair<const char*, double>>& fields) {
    if (!log->fp) return;
    std::fprintf(log->fp, "{\"step\": %d", step);
    for (auto& f : fields) std::fprintf(log->fp, ", \"%s\": %.9g", f.first, f.second);
    std::fprintf(log->fp, "}\n");
    std::fflush(log->fp);
}

inline void jsonl_close(JsonlLog* log) {
    if (log->fp) std::fclose(log->fp);
    log->fp = nullptr;
}
