// tests/fault_runs.h: what the fault suites share (test_faults: bad input,
// bad files and the checkpoint folder; test_signals: stop signals;
// test_outputs: outputs that cannot be written, and the log). Each runs the
// TINY model on the CPU through ./train_mot on data of its own,
// PREFIX_train.bin and PREFIX_val.bin (make_train_data), its scratch files
// named by the same prefix, so that the suites can run at once.
#pragma once
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "tests/program.h"
#include "tests/train_checks.h"

static const std::string TINY = TINY_MODEL + " --device cpu";

// The data option of a suite's runs: its training shard.
inline std::string fault_data(const std::string& prefix) { return " --data " + prefix + "_train.bin"; }

// Number of checkpoint models in dir.
inline int checkpoint_steps_in(const std::string& dir) {
    int n = 0;
    for (const std::string& name : list_dir(dir)) n += name.size() > 5 && name.substr(name.size() - 5) == ".ckpt";
    return n;
}

// Waits (up to 20 s) until the log has at least n rows.
inline void wait_rows(const std::string& log, size_t n) {
    for (int i = 0; i < 400 && read_log(log).size() < n; i++) usleep(50000);
    REQUIRE(read_log(log).size() >= n);
}

// A long run in the background (TINY model on the suite's data, --log LOG),
// once its log has `rows` rows: it is training.
inline pid_t spawn_training(const std::string& prefix, const std::string& args, const std::string& log,
                            const std::string& out, size_t rows) {
    std::remove(log.c_str());
    pid_t pid = spawn(fault_data(prefix) + TINY + " --val-every 0 " + args + " --log " + log, out);
    wait_rows(log, rows);
    return pid;
}

// A small trained checkpoint (TINY model, on the suite's data) at path.
inline void trained(const std::string& prefix, const std::string& path) {
    make_train_data(prefix);
    Run r = run(fault_data(prefix) + TINY + " --val-every 0 --steps 3 --save " + path);
    INFO(r.out);
    REQUIRE(r.rc == 0);
}
