// Training checks shared by the CPU suite (tests/test_train.cpp, --device cpu)
// and the GPU suite (tests/test_gpu_model.cu, --device cuda): bit-exact resume,
// and two runs of one command giving the same log and checkpoint; other suites
// that run the program use its data and log helpers. They run
// ./train_mot (tests/program.h) on hand-written shards named by a prefix,
// so that the suites do not share scratch files.
#pragma once
#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "common/jsonl.h"
#include "tests/program.h"
#include "tests/rng.h"

// Words in a pseudo-random order: text with structure, every batch different.
inline std::vector<uint16_t> text_tokens(int n, uint64_t seed) {
    const char* words[] = {"the ", "quick ", "brown ", "fox ", "jumps ", "over ", "lazy ", "dog. ", "a ", "cat "};
    std::vector<uint16_t> t;
    TestRng r(seed);
    while ((int)t.size() < n)
        for (const char* c = words[r.below(10)]; *c && (int)t.size() < n; c++) t.push_back((uint16_t)*c);
    return t;
}

// The step rows of a JSONL log: step -> key -> the value as written (a
// number's text, a string without its quotes, null as "null"). Validation
// rows with val_rows, else the others but the run row (params).
typedef std::map<int, std::map<std::string, std::string>> LogRows;
inline LogRows read_log(const std::string& path, bool val_rows = false) {
    LogRows rows;
    for (const JsonRow& row : jsonl_parse_text(slurp(path), path)) {
        if (row.count("val_loss") != (size_t)val_rows || row.count("params")) continue;
        std::map<std::string, std::string> fields;
        for (const auto& [key, value] : row) fields[key] = value.text;
        rows[std::stoi(fields["step"])] = fields;
    }
    return rows;
}

// The text after `key` in out, up to the end of its line ("" when absent).
inline std::string after(const std::string& out, const std::string& key, size_t from = 0) {
    size_t p = out.find(key, from);
    if (p == std::string::npos) return "";
    p += key.size();
    return out.substr(p, out.find('\n', p) - p);
}

// A tiny model of every kind (one MoT layer, one dense), on 257 byte tokens.
static const std::string TINY_MODEL =
    " --vocab 257 --layers 2 --heads 2 --d-model 16 --experts 4 --group 2 --batch 4 --seq 8 --sample-every 0";

// PREFIX_train.bin (2000 tokens), PREFIX_small.bin (200 tokens = 24 rows of
// T = 8: an epoch every 6 shuffled batches of 4), PREFIX_val.bin (400).
inline void make_train_data(const std::string& prefix) {
    mkdir("build", 0755);
    write_raw_shard(prefix + "_train.bin", text_tokens(2000, 1));
    write_raw_shard(prefix + "_small.bin", text_tokens(200, 2));
    write_raw_shard(prefix + "_val.bin", text_tokens(400, 3));
}

// 20 steps in one run that checkpoints every 10 steps, against a run resumed
// from its step-10 checkpoint (the step-20 one removed). Both runs have
// --steps 20: the lr schedule depends on it. extra: options both runs add
// (another FFN kind, --precision). The uninterrupted run's final model is
// left in PREFIX_resumeSHUFFLE_full.ckpt.
inline void check_resume(const std::string& prefix, const std::string& device, int shuffle,
                         const std::string& extra = "") {
    make_train_data(prefix);
    std::string tag = prefix + "_resume" + std::to_string(shuffle);
    std::string dir = tag + "_ckpt";
    clear_dir(dir);
    for (const char* f : {"_full.jsonl", "_b.jsonl", "_full.ckpt", "_b.ckpt"}) std::remove((tag + f).c_str());
    // small data: several epochs in 20 steps, the checkpoint falls mid-epoch;
    // samples every 5 steps test the sampling RNG's state
    std::string common = "--data " + prefix + "_small.bin --val-data " + prefix + "_val.bin --val-every 4 --val-batches 2"
                         " --warmup 4 --lr 1e-2 --steps 20 --checkpoint-dir " + dir + " --shuffle " +
                         std::to_string(shuffle) + TINY_MODEL + " --device " + device + " --sample-every 5 --sample-len 4" + extra;  // the last --sample-every counts
    Run full = run(common + " --checkpoint-every 10 --keep-checkpoints 0 --log " + tag + "_full.jsonl --save " + tag +
                   "_full.ckpt");
    INFO(full.out);
    REQUIRE(full.rc == 0);
    REQUIRE(exists(dir + "/step_00000010.ckpt"));
    REQUIRE(exists(dir + "/step_00000020.state"));
    std::remove((dir + "/step_00000020.ckpt").c_str());
    std::remove((dir + "/step_00000020.state").c_str());
    Run b = run(common + " --resume --log " + tag + "_b.jsonl --save " + tag + "_b.ckpt");
    INFO(b.out);
    REQUIRE(b.rc == 0);
    CHECK(b.out.find("resuming at step 10") != std::string::npos);

    LogRows f = read_log(tag + "_full.jsonl"), rb = read_log(tag + "_b.jsonl");
    REQUIRE(f.size() == 20);
    REQUIRE(rb.size() == 10);
    CHECK(rb.begin()->first == 11);
    for (int s = 11; s <= 20; s++) {
        INFO("step ", s);
        CHECK(rb[s]["loss"] == f[s]["loss"]);
        CHECK(rb[s]["grad_norm"] == f[s]["grad_norm"]);
        CHECK(rb[s]["lr"] == f[s]["lr"]);
    }
    // the losses change from step to step: the comparison means something
    CHECK(f[11]["loss"] != f[12]["loss"]);
    // validation after the resume, and the final model, byte for byte
    LogRows fv = read_log(tag + "_full.jsonl", true), bv = read_log(tag + "_b.jsonl", true);
    for (int s : {12, 16, 20}) CHECK(bv[s]["val_loss"] == fv[s]["val_loss"]);
    std::string m1 = slurp(tag + "_full.ckpt"), m2 = slurp(tag + "_b.ckpt");
    CHECK(m1.size() > 1024);
    CHECK(m1 == m2);
    // samples at steps 15 and 20 draw from the restored sampling RNG
    for (const char* at : {"step    15/20", "step    20/20"}) {
        size_t fp = full.out.find(at), bp = b.out.find(at);
        REQUIRE(fp != std::string::npos);
        REQUIRE(bp != std::string::npos);
        std::string sf = after(full.out, "---- sample 1 ----\n", fp), sb = after(b.out, "---- sample 1 ----\n", bp);
        CHECK(!sf.empty());
        CHECK(sf == sb);
    }
}

// The same command twice: every logged loss, gradient norm and validation
// loss, the samples and the saved model agree byte for byte.
inline void check_repeat(const std::string& prefix, const std::string& device) {
    make_train_data(prefix);
    std::string tag = prefix + "_repeat";
    std::string cmd = "--data " + prefix + "_train.bin --val-data " + prefix + "_val.bin" + TINY_MODEL +
                      " --val-every 5 --val-batches 2 --steps 15 --lr 1e-2 --sample-every 15 --sample-len 8 --device " +
                      device;
    std::string logs[2], ckpts[2], outs[2];
    for (int i = 0; i < 2; i++) {
        std::string name = tag + std::to_string(i);
        std::remove((name + ".jsonl").c_str());
        Run r = run(cmd + " --log " + name + ".jsonl --save " + name + ".ckpt");
        INFO(r.out);
        REQUIRE(r.rc == 0);
        if (device == "cuda") REQUIRE(r.out.find("device cuda") != std::string::npos);
        logs[i] = name + ".jsonl", ckpts[i] = name + ".ckpt", outs[i] = r.out;
    }
    LogRows a = read_log(logs[0]), b = read_log(logs[1]);
    REQUIRE(a.size() == 15);
    REQUIRE(b.size() == 15);
    for (int s = 1; s <= 15; s++) {
        INFO("step ", s);
        CHECK(a[s]["loss"] == b[s]["loss"]);
        CHECK(a[s]["grad_norm"] == b[s]["grad_norm"]);
    }
    CHECK(a[1]["loss"] != a[15]["loss"]);  // it trained: the comparison means something
    LogRows av = read_log(logs[0], true), bv = read_log(logs[1], true);
    CHECK(av.size() == 4);  // steps 0, 5, 10, 15
    for (auto& kv : av) CHECK(bv[kv.first]["val_loss"] == kv.second["val_loss"]);
    std::string m0 = slurp(ckpts[0]), m1 = slurp(ckpts[1]);
    CHECK(m0.size() > 1024);
    CHECK(m0 == m1);
    std::string s0 = after(outs[0], "---- sample 1 ----\n"), s1 = after(outs[1], "---- sample 1 ----\n");
    CHECK(!s0.empty());
    CHECK(s0 == s1);
}
