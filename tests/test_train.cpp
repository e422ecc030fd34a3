// tests/test_train.cpp: training runs of ./train_mot end to end, on tiny
// hand-written shards and a tiny model: bit-exact resume (shuffled and
// sequential), the checkpoint directory, gradient accumulation, non-finite
// values, the eval / sample / plot subcommands and Ctrl-C.
//   make NVCC= train_mot
//   g++ -std=c++17 -O2 -march=native -fopenmp -Wall -Wextra -I. tests/test_train.cpp -o build/test_train
//   ./build/test_train            (from the repository root; scratch files go to build/tt_*)
//
// Runs are single-threaded (tests/program.h).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "common/fileio.h"
#include "tests/bad_input.h"
#include "tests/program.h"
#include "tests/train_checks.h"

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

static double num(const std::string& s) { return std::strtod(s.c_str(), nullptr); }

static const std::string TINY = TINY_MODEL + " --device cpu";

static void make_data() { make_train_data("build/tt"); }

TEST_CASE("resume is bit-exact with shuffling") { check_resume("build/tt", "cpu", 1); }
TEST_CASE("resume is bit-exact in sequential mode") { check_resume("build/tt", "cpu", 0); }
TEST_CASE("two runs of the same command give the same log and checkpoint") { check_repeat("build/tt", "cpu"); }
// The results do not depend on the number of OpenMP threads (train/threads.h
// changes it during a run): 1, 2 and 3 threads train the same model, bit for
// bit, at sizes where the fast kernels split their work between threads.
TEST_CASE("the thread count does not change the results") {
    make_data();
    std::string d = " --data build/tt_train.bin --steps 4 --val-every 0 --vocab 257 --layers 2 --heads 4 --d-model 64"
                    " --ffn-layers 1 --experts 8 --group 2 --batch 8 --seq 32 --sample-every 0 --device cpu";
    std::string models[3];
    for (int n = 1; n <= 3; n++) {
        std::string path = "build/tt_threads" + std::to_string(n) + ".ckpt";
        Run r = run_cmd("OMP_NUM_THREADS=" + std::to_string(n) + " " + train_mot_path() + d + " --save " + path);
        INFO(r.out);
        REQUIRE(r.rc == 0);
        models[n - 1] = slurp(path);
    }
    CHECK(models[0].size() > 1024);
    CHECK(models[0] == models[1]);
    CHECK(models[0] == models[2]);
}

TEST_CASE("the checkpoint directory keeps the newest complete pairs") {
    make_data();
    std::string dir = "build/tt_keep";
    clear_dir(dir);
    Run r = run("--data build/tt_train.bin --steps 7 --checkpoint-dir " + dir + " --checkpoint-every 2 --keep-checkpoints 2" + TINY);
    INFO(r.out);
    REQUIRE(r.rc == 0);
    std::vector<std::string> want = {"step_00000004.ckpt", "step_00000004.state", "step_00000006.ckpt",
                                     "step_00000006.state"};
    CHECK(list_dir(dir) == want);  // no step 2, no .tmp files, nothing else
    // the model file is the contract format: --load reads it (and only it)
    Run load = run("--data build/tt_train.bin --steps 1 --batch 4 --seq 8 --sample-every 0 --device cpu --load " + dir +
                   "/step_00000006.ckpt");
    INFO(load.out);
    CHECK(load.rc == 0);
    CHECK(load.out.find("loaded " + dir + "/step_00000006.ckpt") != std::string::npos);
    std::string ck = slurp(dir + "/step_00000006.ckpt");
    REQUIRE(ck.size() >= 1024);
    int32_t h[3];
    std::memcpy(h, ck.data(), sizeof h);
    CHECK(h[0] == 20261128);
    CHECK(h[1] == 2);
    CHECK(h[2] == 257);
    // --keep-checkpoints 0 keeps all
    clear_dir(dir);
    REQUIRE(run("--data build/tt_train.bin --steps 4 --checkpoint-dir " + dir + " --checkpoint-every 1 --keep-checkpoints 0" + TINY).rc == 0);
    CHECK(list_dir(dir).size() == 8);
}

TEST_CASE("--resume without a usable checkpoint fails clearly") {
    make_data();
    std::string d = "--data build/tt_train.bin --steps 4" + TINY;
    clear_dir("build/tt_empty");
    mkdir("build/tt_empty", 0755);
    expect_error(d + " --resume --checkpoint-dir build/tt_empty", {"--resume", "no complete checkpoint", "build/tt_empty"});
    expect_error(d + " --resume --checkpoint-dir build/tt_no_such_dir", {"--resume", "build/tt_no_such_dir"});
    expect_error(d + " --resume", {"--resume", "--checkpoint-dir"});
    // a model file without its state file is not a complete checkpoint
    std::string dir = "build/tt_half";
    clear_dir(dir);
    REQUIRE(run(d + " --checkpoint-dir " + dir + " --checkpoint-every 2").rc == 0);
    std::remove((dir + "/step_00000004.state").c_str());
    Run half = run(d + " --steps 6 --resume --checkpoint-dir " + dir);
    INFO(half.out);
    CHECK(half.rc == 0);
    CHECK(half.out.find("resuming at step 2") != std::string::npos);
    // other batch shape than the checkpoint's
    expect_error(d + " --steps 6 --resume --checkpoint-dir " + dir + " --batch 6", {"--resume", "--batch 4"});
    expect_error(d + " --steps 6 --resume --checkpoint-dir " + dir + " --shuffle 0", {"--resume", "--shuffle"});
}

TEST_CASE("gradient accumulation equals one big batch") {
    make_data();
    // sequential data: two micro-batches of 4 rows read the same 64 tokens as
    // one batch of 8 rows. A dense model is the same function of them (MoT
    // would group rows differently).
    std::string d = "--data build/tt_train.bin --shuffle 0 --steps 3 --warmup 0 --lr 1e-2 --ffn dense" + TINY;
    std::remove("build/tt_acc1.jsonl");
    std::remove("build/tt_acc2.jsonl");
    Run one = run(d + " --batch 8 --log build/tt_acc1.jsonl");
    Run two = run(d + " --batch 4 --total-batch 64 --log build/tt_acc2.jsonl");
    INFO(one.out);
    INFO(two.out);
    REQUIRE(one.rc == 0);
    REQUIRE(two.rc == 0);
    CHECK(two.out.find("2 micro-batches") != std::string::npos);
    LogRows a = read_log("build/tt_acc1.jsonl"), b = read_log("build/tt_acc2.jsonl");
    REQUIRE(a.size() == 3);
    REQUIRE(b.size() == 3);
    for (int s = 1; s <= 3; s++) {
        INFO("step ", s);
        CHECK(num(b[s]["loss"]) == doctest::Approx(num(a[s]["loss"])).epsilon(1e-5));
        CHECK(num(b[s]["grad_norm"]) == doctest::Approx(num(a[s]["grad_norm"])).epsilon(1e-5));
    }
    CHECK(num(a[1]["loss"]) != doctest::Approx(num(a[3]["loss"])).epsilon(1e-4));  // it trains
    // a different data window (the second 32-token half only) gives another loss
    Run half = run(d + " --batch 4 --steps 1 --log build/tt_acc1.jsonl");
    REQUIRE(half.rc == 0);
    CHECK(num(read_log("build/tt_acc1.jsonl")[1]["loss"]) != doctest::Approx(num(b[1]["loss"])).epsilon(1e-5));
    // MoT with accumulation runs, and 4 micro-batches are counted
    Run mot = run("--data build/tt_train.bin --steps 2 --total-batch 128" + TINY);
    INFO(mot.out);
    CHECK(mot.rc == 0);
    CHECK(mot.out.find("4 micro-batches = 128 tokens/step") != std::string::npos);
    expect_error("--data build/tt_train.bin --steps 2 --total-batch 40" + TINY, {"--total-batch 40", "32"});
}

TEST_CASE("a non-finite loss stops the run, or is skipped with --skip-nonfinite") {
    make_data();
    // decoupled weight decay with lr * wd = 100 multiplies every matrix by -99
    // per step: the floats overflow within a few steps
    std::string d = "--data build/tt_train.bin --steps 60 --lr 10 --wd 10 --warmup 0 --grad-clip 0" + TINY;
    std::remove("build/tt_nan.ckpt");
    Run r = run(d + " --save build/tt_nan.ckpt");
    INFO(r.out);
    expect_error(r, {"not finite", "--skip-nonfinite"});
    std::string step = after(r.out, "error: step ");
    CHECK(!step.empty());
    CHECK(std::atoi(step.c_str()) > 1);  // names the step where it happened
    CHECK(std::atoi(step.c_str()) <= 60);
    CHECK_FALSE(exists("build/tt_nan.ckpt"));
    CHECK(leftover_temp_files("build/tt_nan.ckpt").empty());
    // skipping runs on to the end (the default --max-skips gives up sooner:
    // tests/test_faults.cpp), but a run that ends still skipping failed
    Run s = run(d + " --skip-nonfinite --max-skips 100");
    INFO(s.out);
    CHECK(s.rc == 1);
    CHECK(s.out.find("update skipped") != std::string::npos);
    CHECK(s.out.find("step    60/60") != std::string::npos);
    CHECK(s.out.find("the run ended with its last") != std::string::npos);
}

// ---------------------------------------------------------------------------
// subcommands

static std::string trained_checkpoint() {
    static std::string out;
    if (!out.empty()) return out;
    make_data();
    std::remove("build/tt_model.ckpt");
    Run r = run("--data build/tt_train.bin --val-data build/tt_val.bin --val-every 1000 --val-batches 3 --steps 5"
                " --save build/tt_model.ckpt" + TINY);
    INFO(r.out);
    REQUIRE(r.rc == 0);
    out = r.out;
    return out;
}

TEST_CASE("eval reports the validation loss training printed") {
    std::string train_out = trained_checkpoint();
    std::string val = after(train_out, "step     5 | val loss ");  // the final validation
    REQUIRE(!val.empty());
    Run e = run("eval --load build/tt_model.ckpt --data build/tt_val.bin --batch 4 --seq 8 --batches 3 --device cpu");
    INFO(train_out);
    INFO(e.out);
    CHECK(e.rc == 0);
    CHECK(after(e.out, ": loss ").substr(0, val.size()) == val);
    // the untrained model (step 0) had another loss: the comparison means something
    CHECK(after(train_out, "step     0 | val loss ") != val);
    // a whole pass by default: 400 tokens make 12 batches of 32 (+1)
    Run all = run("eval --load build/tt_model.ckpt --data build/tt_val.bin --batch 4 --seq 8 --device cpu");
    CHECK(all.rc == 0);
    CHECK(all.out.find("over 12 batches") != std::string::npos);
    expect_error("eval --load build/no_such.ckpt --data build/tt_val.bin", {"build/no_such.ckpt"});
    expect_error("eval --load build/tt_model.ckpt --data build/tt_val.bin --seq 16", {"16"});
}

TEST_CASE("sample is reproducible from its seed") {
    trained_checkpoint();
    std::string s = "sample --load build/tt_model.ckpt --num 2 --length 5";
    Run a = run(s + " --seed 3"), b = run(s + " --seed 3"), c = run(s + " --seed 4");
    INFO(a.out);
    INFO(c.out);
    REQUIRE(a.rc == 0);
    REQUIRE(c.rc == 0);
    CHECK(a.out.find("---- sample 2 ----") != std::string::npos);
    CHECK(a.out.find("---- sample 3 ----") == std::string::npos);
    CHECK(a.out == b.out);
    CHECK(a.out != c.out);
    // 5 token ids after the prompt (no tokenizer: ids are printed)
    std::string first = after(a.out, "---- sample 1 ----\n");
    int ids = 0;
    for (size_t p = 0; (p = first.find(' ', p)) != std::string::npos && p < first.find('('); p++) ids++;
    CHECK(ids == 5);
}

TEST_CASE("plot draws logs into a PNG and refuses bad logs") {
    if (std::system("command -v gnuplot > /dev/null 2>&1") != 0) {
        MESSAGE("gnuplot is not on PATH: plot test skipped");
        return;
    }
    make_data();
    for (const char* f : {"build/tt_p1.jsonl", "build/tt_p2.jsonl", "build/tt_plot.png", "build/tt_bad.png"})
        std::remove(f);
    std::string d = "--data build/tt_train.bin --val-data build/tt_val.bin --val-every 2 --val-batches 1 --steps 4" + TINY;
    REQUIRE(run(d + " --log build/tt_p1.jsonl").rc == 0);
    REQUIRE(run(d + " --seed 5 --log build/tt_p2.jsonl").rc == 0);
    Run p = run("plot build/tt_p1.jsonl build/tt_p2.jsonl -o build/tt_plot.png --title 'two runs'");
    INFO(p.out);
    CHECK(p.rc == 0);
    std::string png = slurp("build/tt_plot.png");
    CHECK(png.size() > 1000);
    CHECK(png.substr(0, 8) == std::string("\x89PNG\r\n\x1a\n", 8));
    CHECK(leftover_temp_files("build/tt_plot.png").empty());

    write_bytes("build/tt_noloss.jsonl", "{\"step\": 1, \"ms\": 3}\n{\"step\": 2, \"loss\": null}\n");
    expect_error("plot build/tt_p1.jsonl build/tt_noloss.jsonl -o build/tt_bad.png", {"build/tt_noloss.jsonl", "no loss rows"});
    CHECK_FALSE(exists("build/tt_bad.png"));
    CHECK(leftover_temp_files("build/tt_bad.png").empty());
    write_bytes("build/tt_badline.jsonl", "{\"step\": 1, \"loss\": 3}\nnot json at all\n");
    expect_error("plot build/tt_p1.jsonl build/tt_badline.jsonl -o build/tt_bad.png",
                 {"build/tt_badline.jsonl line 2: not a JSON object: expected '{'"});
    CHECK_FALSE(exists("build/tt_bad.png"));
    CHECK(leftover_temp_files("build/tt_bad.png").empty());
    expect_error("plot build/tt_no_such.jsonl -o build/tt_bad.png", {"build/tt_no_such.jsonl"});
    CHECK_FALSE(exists("build/tt_bad.png"));
    CHECK(leftover_temp_files("build/tt_bad.png").empty());
}

// ---------------------------------------------------------------------------

TEST_CASE("Ctrl-C saves a checkpoint, exits 130, and the run resumes from it") {
    make_data();
    std::string dir = "build/tt_sigint";
    clear_dir(dir);
    std::remove("build/tt_sigint.jsonl");
    std::remove("build/tt_sigint.out");
    pid_t pid = spawn("--data build/tt_train.bin --steps 1000000 --checkpoint-dir " + dir +
                      " --log build/tt_sigint.jsonl" + TINY, "build/tt_sigint.out");
    // wait until it trains (the log has rows), then interrupt
    for (int i = 0; i < 100 && read_log("build/tt_sigint.jsonl").size() < 3; i++) usleep(50000);
    usleep(200000);
    REQUIRE(kill(pid, SIGINT) == 0);
    Exit e = wait_exit(pid);
    std::string out = slurp("build/tt_sigint.out");
    INFO(out);
    REQUIRE(e.exited);
    CHECK(e.code == 130);
    CHECK(out.find("interrupted") != std::string::npos);
    LogRows rows = read_log("build/tt_sigint.jsonl");
    REQUIRE(!rows.empty());
    int last = rows.rbegin()->first;
    CHECK(last >= 3);
    CHECK(last < 1000000);
    // one complete pair, for the last logged step, and nothing else
    char name[64];
    std::snprintf(name, sizeof name, "step_%08d", last);
    std::vector<std::string> want = {std::string(name) + ".ckpt", std::string(name) + ".state"};
    CHECK(list_dir(dir) == want);
    Run r = run("--data build/tt_train.bin --checkpoint-dir " + dir + " --resume --log build/tt_sigint.jsonl --steps " +
                std::to_string(last + 2) + TINY);
    INFO(r.out);
    CHECK(r.rc == 0);
    CHECK(r.out.find("resuming at step " + std::to_string(last)) != std::string::npos);
    LogRows after_resume = read_log("build/tt_sigint.jsonl");  // appended
    CHECK(after_resume.rbegin()->first == last + 2);
    CHECK(after_resume.size() == rows.size() + 2);
}
