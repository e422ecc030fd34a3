// The training log: one JSON object per line (docs/design.md section 10). Train rows
// carry step, loss, lr, grad_norm, ms, tok_per_s, mfu; validation rows carry
// val_loss; a new log opens with one row (step 0, no loss) that describes
// the run: its shape, parameters, FLOPs per token and schedule, so that a log
// is a record of its run on its own (the study in study/ reads nothing else).
// Each row is written to the file at once (no buffer in the process), so a
// crashed run keeps its log.
//
// Every line is valid JSON: a NaN or infinite value is written as null. A
// failed write (a full disk) stops the run with an error, and the part of
// the row that did reach the file is cut off again, so the log never ends
// mid-line. Resuming from a checkpoint first drops the rows
// the crashed or stopped run logged after that checkpoint, so that the log
// of a resumed run holds each step once, as one uninterrupted run would.
#pragma once
#include <fcntl.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/fileio.h"
#include "common/jsonl.h"

struct JsonlLog {
    int fd = -1;
    std::string path;
    off_t end = 0;  // the file's size after its last full line
};

// Opens the log for writing. Without resume it starts empty. With resume at
// `resume_step` (optimizer steps done) it keeps the train rows up to that
// step and the validation rows before it (the resumed run validates at
// resume_step again), rewritten atomically, and appends from there.
inline void jsonl_open(JsonlLog* log, const std::string& path, bool resume, long long resume_step = 0) {
    if (path.empty()) return;
    make_parent_dirs(path);
    log->path = path;
    if (resume && file_exists(path)) {
        std::string torn, kept;
        size_t dropped = 0;
        for (const std::string& line : text_lines(read_file(path, "log"), &torn)) {
            // a line that is not a row of ours is dropped, as are the rows after the checkpoint
            JsonRow row;
            std::string error;
            double step = -1;
            if (json_parse_row(line, &row, &error)) json_number(row, "step", &step);
            bool val = row.count("val_loss") > 0;
            if (step >= 0 && (val ? step < resume_step : step <= resume_step)) kept += line + "\n";
            else dropped++;
        }
        if (!torn.empty()) dropped++;  // a torn last line
        if (dropped > 0) {
            write_file_atomic(path, kept);
            std::printf("--log %s: dropped %zu rows logged after the checkpoint at step %lld\n", path.c_str(), dropped,
                        resume_step);
        }
    }
    log->fd = open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | (resume ? O_APPEND : O_TRUNC), 0666);
    if (log->fd < 0) fail(strf("--log %s: cannot open for writing (%s)", path.c_str(), std::strerror(errno)));
    log->end = lseek(log->fd, 0, SEEK_END);
    if (log->end < 0) fail(strf("--log %s: cannot find its end (%s)", path.c_str(), std::strerror(errno)));
}

// fields: (name, value) pairs written as numbers (null when not finite), after "step";
// the names are plain (written as they are, no escapes).
// A write that fails partway (the disk filled within the row) leaves part of
// the row in the file: it is truncated back to the last full line before
// the run stops.
inline void jsonl_write(JsonlLog* log, int step, const std::vector<std::pair<std::string, double>>& fields) {
    if (log->fd < 0) return;
    std::string line = strf("{\"step\": %d", step);
    for (const auto& [name, value] : fields)
        line += ", \"" + name + "\": " + (std::isfinite(value) ? strf("%.9g", value) : std::string("null"));
    line += "}\n";
    for (size_t done = 0; done < line.size();) {
        ssize_t n = write(log->fd, line.data() + done, line.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int e = n < 0 ? errno : ENOSPC;
            bool cut = ftruncate(log->fd, log->end) == 0 && lseek(log->fd, log->end, SEEK_SET) == log->end;
            fail(strf("--log %s: write failed (%s); stopping rather than training without a log%s", log->path.c_str(),
                      std::strerror(e), cut ? "" : " (and its torn last line could not be cut off)"));
        }
        done += size_t(n);
    }
    log->end += off_t(line.size());
}

// True when the open log holds no rows yet: a new run, not a resumed one.
inline bool jsonl_empty(JsonlLog* log) { return log->fd >= 0 && log->end == 0; }

inline void jsonl_close(JsonlLog* log) {
    if (log->fd >= 0 && close(log->fd) != 0) {
        log->fd = -1;
        fail(strf("--log %s: write failed at close (%s)", log->path.c_str(), std::strerror(errno)));
    }
    log->fd = -1;
}
