// tests/test_faults.cpp: the program under contradictory input and damaged
// files. Nothing is silent: every bad option, file or state is an error
// naming it, before any work where it can be; a damaged checkpoint is skipped
// saying why, and a resumed run continues exactly where the checkpoint left
// off. (Stop signals: tests/test_signals.cpp; outputs that cannot be written
// and the log: tests/test_outputs.cpp.)
// All through ./train_mot as a user runs it; tests/fault_runs.h has what
// the fault suites share.
//   make NVCC= train_mot
//   g++ -std=c++17 -O2 -march=native -fopenmp -Wall -Wextra -I. tests/test_faults.cpp -o build/test_faults
//   ./build/test_faults          (from the repository root; scratch files go to build/tf_*)
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "common/error.h"
#include "tests/bad_input.h"
#include "tests/fault_runs.h"
#include "tests/program.h"

static const std::string PREFIX = "build/tf", DATA = fault_data(PREFIX);

static void make_data() { make_train_data(PREFIX); }

// ---------------------------------------------------------------------------
// sizes

TEST_CASE("sizes whose product overflows int are refused, not a SIGFPE") {
    make_data();
    expect_error(DATA + TINY + " --batch 65536 --seq 65536 --total-batch 8", {"--batch 65536", "--seq 65536", "2^31"});
}

TEST_CASE("a model too large for memory is refused before allocating, naming the options that size it") {
    make_data();
    expect_error(DATA + TINY + " --batch 40960 --seq 8192", {"out of memory", "--batch 40960", "GiB are available"});
    expect_error(DATA + TINY + " --d-model 32768 --heads 1 --layers 64", {"out of memory", "--d-model", "GiB"});
}

// ---------------------------------------------------------------------------
// the checkpoint folder

TEST_CASE("a second trainer on one --checkpoint-dir stops with an error naming the first") {
    make_data();
    std::string dir = "build/tf_lock";
    clear_dir(dir);
    pid_t first = spawn_training(PREFIX, "--steps 1000000 --checkpoint-every 50 --checkpoint-dir " + dir,
                                 "build/tf_lock.jsonl", "build/tf_lock.out", 2);
    Run second = run(DATA + TINY + " --val-every 0 --steps 10 --checkpoint-dir " + dir + " --checkpoint-every 2");
    INFO(second.out);
    CHECK(second.rc == 1);
    CHECK(second.out.find("in use by another train_mot (pid " + std::to_string(first) + ")") != std::string::npos);
    REQUIRE(kill(first, SIGINT) == 0);
    Exit e = wait_exit(first);
    CHECK(e.exited);
    CHECK(e.code == 130);
    // the first one's checkpoints are intact: the newest resumes
    Run third = run(DATA + TINY + " --val-every 0 --steps " + std::to_string(read_log("build/tf_lock.jsonl").rbegin()->first + 1) +
                    " --checkpoint-dir " + dir + " --resume");
    INFO(third.out);
    CHECK(third.rc == 0);
}

TEST_CASE("a .lock planted in --checkpoint-dir as a symlink or hard link is refused, its target untouched") {
    make_data();
    std::string dir = "build/tf_planted_lock", victim = "build/tf_lock_victim.txt";
    // the lock was opened following symlinks and truncated: a planted link
    // had its target's contents replaced by the trainer's pid
    for (bool hard : {false, true}) {
        clear_dir(dir);
        REQUIRE(mkdir(dir.c_str(), 0755) == 0);
        write_bytes(victim, "the victim's own bytes\n");
        if (hard) REQUIRE(link(victim.c_str(), (dir + "/.lock").c_str()) == 0);
        else REQUIRE(symlink("../tf_lock_victim.txt", (dir + "/.lock").c_str()) == 0);
        INFO("planted: ", (hard ? "a hard link" : "a symlink"));
        expect_error(DATA + TINY + " --val-every 0 --steps 2 --checkpoint-every 1 --checkpoint-dir " + dir,
                     {"--checkpoint-dir " + dir, dir + "/.lock", hard ? "hard link" : "symlink", "remove it"});
        CHECK(slurp(victim) == "the victim's own bytes\n");
        CHECK(checkpoint_steps_in(dir) == 0);
        std::remove((dir + "/.lock").c_str());
    }
    std::remove(victim.c_str());
}

// A run of 10 steps that checkpoints at 5 and 10 into dir.
static void two_checkpoints(const std::string& dir) {
    make_data();
    clear_dir(dir);
    Run r = run(DATA + TINY + " --val-every 0 --steps 10 --checkpoint-every 5 --keep-checkpoints 0 --checkpoint-dir " + dir);
    INFO(r.out);
    REQUIRE(r.rc == 0);
}

TEST_CASE("--resume skips a damaged newest checkpoint, saying which and why, and takes the one before") {
    std::string dir = "build/tf_damaged";
    two_checkpoints(dir);
    std::string ckpt = dir + "/step_00000010.ckpt", bytes = slurp(ckpt);
    write_bytes(ckpt, bytes.substr(0, bytes.size() / 2));  // torn
    Run r = run(DATA + TINY + " --val-every 0 --steps 12 --checkpoint-dir " + dir + " --resume");
    INFO(r.out);
    CHECK(r.rc == 0);
    CHECK(r.out.find("skipping the checkpoint of step 10") != std::string::npos);
    CHECK(r.out.find("does not match its header") != std::string::npos);
    CHECK(r.out.find("resuming at step 5") != std::string::npos);
}

TEST_CASE("a training state with an impossible step, position or moments is refused, naming the field") {
    std::string dir = "build/tf_state";
    struct Damage { int slot; int64_t value; const char* needle; };
    for (Damage d : {Damage{2, (int64_t)1 << 40, "the step"}, Damage{2, -1, "the step"},
                     Damage{6, -5, "the data position"}, Damage{9, 0, "the batch size"}}) {
        two_checkpoints(dir);
        for (int s : {5, 10}) patch_file(strf("%s/step_%08d.state", dir.c_str(), s), 8 * d.slot, d.value);  // int64 slots
        expect_error(DATA + TINY + " --val-every 0 --steps 12 --checkpoint-dir " + dir + " --resume",
                     {"no valid checkpoint", d.needle});
    }
    two_checkpoints(dir);
    for (int s : {5, 10}) patch_file(strf("%s/step_%08d.state", dir.c_str(), s), 256 + 4 * 7, NAN);  // AdamW m[7]
    expect_error(DATA + TINY + " --val-every 0 --steps 12 --checkpoint-dir " + dir + " --resume",
                 {"AdamW moment 7", "finite"});
}

TEST_CASE("--resume refuses options that contradict the checkpoint") {
    std::string dir = "build/tf_conflict";
    two_checkpoints(dir);
    std::string d = TINY + " --val-every 0 --checkpoint-dir " + dir + " --resume";
    expect_error(DATA + d + " --steps 7", {"--steps 7", "below the checkpoint's step 10"});
    expect_error(DATA + d + " --steps 20 --load build/tf_x.ckpt", {"--resume and --load"});
    expect_error(" --data build/tf_small.bin" + d + " --steps 20", {"--data build/tf_small.bin", "not the data"});
    expect_error(DATA + d + " --steps 20 --total-batch 64", {"--total-batch"});
    // model options cannot change a checkpoint's shape: said, not silently ignored
    Run r = run(DATA + d + " --steps 11 --d-model 32");
    INFO(r.out);
    CHECK(r.rc == 0);
    CHECK(r.out.find("note: --d-model is ignored") != std::string::npos);
}

TEST_CASE("a new run into a --checkpoint-dir that holds checkpoints is refused, the folder untouched") {
    // a new run there pruned by step number across both runs: with the other
    // run's steps 5 and 10 and --keep-checkpoints 1 it reported
    // "checkpoint: .../step_00000002.ckpt" and deleted it at once, then
    // deleted the other run's; a later --resume continued the other run
    std::string dir = "build/tf_other_run";
    two_checkpoints(dir);  // steps 5 and 10
    std::vector<std::string> before = list_dir(dir);
    REQUIRE(before.size() == 4);
    std::string newest = slurp(dir + "/step_00000010.ckpt");
    std::string fresh = DATA + TINY + " --val-every 0 --steps 4 --checkpoint-every 2 --keep-checkpoints 1 --checkpoint-dir " + dir;
    Run r = run(fresh);
    expect_error(r, {"--checkpoint-dir " + dir + " already holds checkpoints", "step_00000010.state", "--resume",
                     "another folder"});
    CHECK(r.out.find("step     1/4") == std::string::npos);  // refused before the first step
    CHECK(list_dir(dir) == before);
    CHECK(slurp(dir + "/step_00000010.ckpt") == newest);
    // a lone model or state file (a pair cut short) is a checkpoint too
    for (const char* lone : {"step_00000010.ckpt", "step_00000005.state"}) {
        two_checkpoints(dir);
        for (const std::string& n : list_dir(dir))
            if (n != lone) std::remove((dir + "/" + n).c_str());
        INFO("only ", lone);
        expect_error(fresh, {"already holds checkpoints", lone});
        CHECK(list_dir(dir) == std::vector<std::string>{lone});
    }
    // other files do not count: the folder takes a new run
    two_checkpoints(dir);
    for (const std::string& n : list_dir(dir)) std::remove((dir + "/" + n).c_str());
    write_bytes(dir + "/notes.txt", "the user's");
    Run ok = run(fresh);
    INFO(ok.out);
    CHECK(ok.rc == 0);
    CHECK(list_dir(dir) == std::vector<std::string>{"notes.txt", "step_00000004.ckpt", "step_00000004.state"});
}

TEST_CASE("a resumed run never prunes the checkpoint it just wrote for a newer one it skipped") {
    // pruning kept the newest steps of the folder: with a damaged step-10
    // pair that --resume skipped and --keep-checkpoints 1, the resumed run
    // deleted each pair it wrote (6, then 7) as soon as it wrote it, and
    // only the damaged pair was left
    std::string dir = "build/tf_prune_resumed";
    two_checkpoints(dir);
    std::string ckpt = dir + "/step_00000010.ckpt", bytes = slurp(ckpt);
    write_bytes(ckpt, bytes.substr(0, bytes.size() / 2));  // torn
    Run r = run(DATA + TINY + " --val-every 0 --steps 7 --checkpoint-every 1 --keep-checkpoints 1 --resume --checkpoint-dir " + dir);
    INFO(r.out);
    REQUIRE(r.rc == 0);
    CHECK(r.out.find("resuming at step 5") != std::string::npos);
    CHECK(list_dir(dir) == std::vector<std::string>{"step_00000007.ckpt", "step_00000007.state", "step_00000010.ckpt",
                                                    "step_00000010.state"});
    Run again = run(DATA + TINY + " --val-every 0 --steps 8 --resume --checkpoint-dir " + dir);
    INFO(again.out);
    CHECK(again.rc == 0);
    CHECK(again.out.find("resuming at step 7") != std::string::npos);
}

TEST_CASE("--checkpoint-every without --checkpoint-dir is refused") {
    make_data();
    expect_error(DATA + TINY + " --steps 4 --checkpoint-every 2", {"--checkpoint-every 2", "--checkpoint-dir"});
}


// ---------------------------------------------------------------------------
// bad values in options and files

TEST_CASE("NaN is refused by every floating-point option") {
    make_data();
    for (const char* opt : {"--lr", "--wd", "--grad-clip", "--lr-min-frac", "--temperature"})
        expect_error(DATA + TINY + " --steps 2 " + opt + " nan", {opt, "finite"});
    trained(PREFIX, "build/tf_model.ckpt");
    expect_error("sample --load build/tf_model.ckpt --temperature nan", {"--temperature", "finite"});
}

TEST_CASE("a checkpoint with a non-finite parameter or temperature is refused, naming the tensor") {
    trained(PREFIX, "build/tf_model.ckpt");
    std::string good = slurp("build/tf_model.ckpt");
    write_bytes("build/tf_nanparam.ckpt", patched(good, 1024 + 4 * 5, NAN));  // wte, element 5
    expect_error("eval --load build/tf_nanparam.ckpt --data build/tf_val.bin --device cpu --seq 8 --batch 4",
                 {"build/tf_nanparam.ckpt", "wte[5]", "not finite"});
    expect_error("sample --load build/tf_nanparam.ckpt", {"wte[5]"});
    for (uint32_t bits : {0x00000001u, 0x7f800000u, 0x7fc00000u}) {  // denormal, infinity, NaN
        write_bytes("build/tf_badtau.ckpt", patched(good, 4 * 12, bits));  // the temperature
        expect_error("eval --load build/tf_badtau.ckpt --data build/tf_val.bin --device cpu --seq 8 --batch 4",
                     {"build/tf_badtau.ckpt", "temperature"});
    }
}

TEST_CASE("--skip-nonfinite gives up after --max-skips updates in a row, and saves no non-finite model") {
    make_data();
    // lr * wd = 100 multiplies every matrix by -99 per step: the floats overflow within a few steps
    std::string d = DATA + TINY + " --val-every 0 --steps 200 --lr 10 --wd 10 --warmup 0 --grad-clip 0 --skip-nonfinite";
    std::remove("build/tf_nan.ckpt");
    Run r = run(d + " --max-skips 5 --save build/tf_nan.ckpt");
    INFO(r.out);
    CHECK(r.rc == 1);
    CHECK(r.out.find("5 updates in a row") != std::string::npos);
    CHECK(r.out.find("--max-skips 5") != std::string::npos);
    CHECK(r.out.find("step   200/200") == std::string::npos);
    CHECK_FALSE(exists("build/tf_nan.ckpt"));
    // allowed to run on (a large --max-skips): the run ends still skipping,
    // which is not a success, and the model that does not train is not saved
    Run s = run(d + " --max-skips 1000 --save build/tf_nan.ckpt");
    INFO(s.out);
    CHECK(s.rc == 1);
    CHECK(s.out.find("updates skipped") != std::string::npos);
    CHECK_FALSE(exists("build/tf_nan.ckpt"));
}

TEST_CASE("a tokenizer whose vocabulary differs from the model's is refused at start") {
    make_data();
    write_bytes("build/tf_text.txt", std::string(3000, 'a') + "the quick brown fox jumps over the lazy dog\n");
    Run p = run_cmd("./prepare --out build/tf_prep --vocab 300 build/tf_text.txt");
    INFO(p.out);
    REQUIRE(p.rc == 0);
    trained(PREFIX, "build/tf_model.ckpt");  // vocab 257
    Run r = run(DATA + TINY + " --steps 3 --sample-every 1 --load build/tf_model.ckpt --tokenizer build/tf_prep/tokenizer.bin");
    INFO(r.out);
    CHECK(r.rc == 1);
    CHECK(r.out.find("tokens, the model's vocabulary has 257") != std::string::npos);
    CHECK(r.out.find("step     1/3") == std::string::npos);  // at start, not at the first sample
    expect_error("sample --load build/tf_model.ckpt --tokenizer build/tf_prep/tokenizer.bin",
                 {"the model's vocabulary has 257"});
}

TEST_CASE("samples longer than the context slide the window and say so; NUL bytes are printed") {
    trained(PREFIX, "build/tf_model.ckpt");  // maxT 8, vocab 257 (bytes)
    Run r = run("sample --load build/tf_model.ckpt --length 100");
    INFO(r.out);
    REQUIRE(r.rc == 0);
    CHECK(r.out.find("note: the model's context is 8 tokens") != std::string::npos);
    std::string ids = after(r.out, "---- sample 1 ----\n");
    int n = 0;
    for (size_t i = 0; i < ids.size(); i++) n += ids[i] == ' ' && i > 0 && ids[i - 1] != ' ';
    CHECK(n >= 100);  // all 100 token ids, not the 7 that fit
    // decoded through a byte tokenizer, token 0 is the byte 0: it must reach the output
    write_bytes("build/tf_text.txt", std::string(3000, 'a') + "the quick brown fox jumps over the lazy dog\n");
    Run p = run_cmd("./prepare --out build/tf_prep257 --vocab 257 build/tf_text.txt");
    INFO(p.out);
    REQUIRE(p.rc == 0);
    Run s = run("sample --load build/tf_model.ckpt --tokenizer build/tf_prep257/tokenizer.bin --length 4000 --seed 3");
    INFO(s.out.size());
    REQUIRE(s.rc == 0);
    CHECK(s.out.find('\0') != std::string::npos);
}
