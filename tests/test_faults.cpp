// tests/test_faults.cpp: the program under faults and contradictory input,
// through ./train_mot as a user runs it. Nothing is lost (a model that cannot
// be saved where asked is saved beside it; SIGTERM and SIGHUP save a checkpoint),
// nothing is silent (every bad option, file or state is an error naming it),
// and a resumed run continues exactly where the checkpoint left off.
//   make NVCC= train_mot
//   g++ -std=c++17 -O2 -march=native -fopenmp -Wall -Wextra -I. tests/test_faults.cpp -o build/test_faults
//   ./build/test_faults          (from the repository root; scratch files go to build/tf_*)
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/jsonl.h"
#include "tests/bad_input.h"
#include "tests/program.h"
#include "tests/train_checks.h"

static const std::string TINY = TINY_MODEL + " --device cpu";
static const std::string DATA = " --data build/tf_train.bin";

static void make_data() { make_train_data("build/tf"); }

// Number of checkpoint models in dir.
static int checkpoint_steps_in(const std::string& dir) {
    int n = 0;
    for (const std::string& name : list_dir(dir)) n += name.size() > 5 && name.substr(name.size() - 5) == ".ckpt";
    return n;
}

// Waits (up to 20 s) until the log has at least n rows.
static void wait_rows(const std::string& log, size_t n) {
    for (int i = 0; i < 400 && read_log(log).size() < n; i++) usleep(50000);
    REQUIRE(read_log(log).size() >= n);
}

// A long run in the background (TINY model, --log LOG), once its log has
// `rows` rows: it is training.
static pid_t spawn_training(const std::string& args, const std::string& log, const std::string& out, size_t rows) {
    std::remove(log.c_str());
    pid_t pid = spawn(DATA + TINY + " --val-every 0 " + args + " --log " + log, out);
    wait_rows(log, rows);
    return pid;
}

// A small trained checkpoint (TINY model) at path.
static void trained(const std::string& path) {
    make_data();
    Run r = run(DATA + TINY + " --val-every 0 --steps 3 --save " + path);
    INFO(r.out);
    REQUIRE(r.rc == 0);
}

// ---------------------------------------------------------------------------
// crashes, hangs, sizes

// The tests below wait on a spawned run's output file for a line ("saved
// ...") and then signal it. The file must not show an earlier run's lines
// meanwhile: under load the child's shell may truncate it seconds later, and
// the signal then came before the run had even started.
TEST_CASE("spawn empties the output file before the command runs") {
    std::string out = "build/tf_spawn.out";
    FILE* f = std::fopen(out.c_str(), "w");
    REQUIRE(f);
    std::fputs("saved build/old.ckpt\n", f);
    std::fclose(f);
    pid_t pid = spawn_cmd("sleep 1; echo new", out);
    CHECK(slurp(out).find("saved") == std::string::npos);
    Exit e = wait_exit(pid);
    CHECK(e.exited);
    CHECK(slurp(out) == "new\n");
}

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
// nothing lost

TEST_CASE("--save that cannot be written is refused before the first step") {
    make_data();
    write_bytes("build/tf_file", "a file, not a folder");
    Run r = run(DATA + TINY + " --steps 5 --save build/tf_file/model.ckpt");
    INFO(r.out);
    CHECK(r.rc == 1);
    CHECK(r.out.find("--save build/tf_file/model.ckpt") != std::string::npos);
    CHECK(r.out.find("step     1/5") == std::string::npos);  // no training happened
    expect_error(DATA + TINY + " --steps 5 --checkpoint-dir build/tf_file/ckpt --checkpoint-every 2", {"--checkpoint-dir"});
}

TEST_CASE("a --save that fails at the end writes the model beside it and says where") {
    make_data();
    std::string dir = "build/tf_savefail";
    clear_dir(dir + "/model.ckpt");
    clear_dir(dir);
    pid_t pid = spawn_training("--steps 15000 --save " + dir + "/model.ckpt", "build/tf_savefail.jsonl",
                               "build/tf_savefail.out", 1);
    // once training runs, a folder takes the model's name: the final rename must fail
    REQUIRE(mkdir((dir + "/model.ckpt").c_str(), 0755) == 0);
    Exit e = wait_exit(pid);
    std::string out = slurp("build/tf_savefail.out");
    INFO(out);
    CHECK(e.exited);
    CHECK(e.code == 1);  // not a success: the model is not where it was asked for
    std::string where = after(out, "the model was written to ");
    REQUIRE(!where.empty());
    std::string path = where.substr(0, where.find(" instead"));
    CHECK(path.find(dir + "/model.ckpt.rescue-") == 0);
    Run ev = run("eval --load " + path + " --data build/tf_val.bin --device cpu --seq 8 --batch 4");
    INFO(ev.out);
    CHECK(ev.rc == 0);  // the rescued model loads
    std::remove(path.c_str());
}

TEST_CASE("an output that is an input or another output is refused before the run, naming both") {
    // --log over a --data shard once truncated the shard and the run still
    // exited 0; over --load or the tokenizer it destroyed them; --log and
    // --save on one file lost the log to the model; plot -o over its log
    // replaced the log with the picture
    trained("build/tf_model.ckpt");
    write_bytes("build/tf_tok_in.bin", "not read: the run stops before");
    std::remove("build/tf_shard_link.bin");
    REQUIRE(symlink("tf_train.bin", "build/tf_shard_link.bin") == 0);
    const std::string shard = slurp("build/tf_train.bin"), model = slurp("build/tf_model.ckpt");
    const std::string steps2 = TINY + " --val-every 0 --steps 2";
    struct Case {
        std::string args;
        std::vector<std::string> needles;
    };
    std::vector<Case> cases = {
        {DATA + steps2 + " --log build/tf_train.bin", {"--log build/tf_train.bin and --data build/tf_train.bin"}},
        {DATA + steps2 + " --log ./build/../build/tf_train.bin", {"--log ./build/../build/tf_train.bin and --data"}},
        {DATA + steps2 + " --log build/tf_shard_link.bin", {"--log build/tf_shard_link.bin and --data"}},
        {" --data 'build/tf_tr*.bin'" + steps2 + " --log build/tf_train.bin",
         {"--log build/tf_train.bin and --data build/tf_tr*.bin (its file build/tf_train.bin)"}},
        {DATA + steps2 + " --val-data build/tf_val.bin --val-every 1 --log build/tf_val.bin",
         {"--log build/tf_val.bin and --val-data build/tf_val.bin"}},
        {DATA + steps2 + " --save build/tf_train.bin", {"--save build/tf_train.bin and --data build/tf_train.bin"}},
        {DATA + steps2 + " --load build/tf_model.ckpt --log build/tf_model.ckpt",
         {"--log build/tf_model.ckpt and --load build/tf_model.ckpt"}},
        {DATA + steps2 + " --tokenizer build/tf_tok_in.bin --log build/tf_tok_in.bin",
         {"--log build/tf_tok_in.bin and --tokenizer build/tf_tok_in.bin"}},
        {DATA + steps2 + " --log build/tf_both.out --save build/tf_both.out",
         {"--log build/tf_both.out and --save build/tf_both.out", "give another --save"}},
    };
    for (const Case& c : cases) {
        Run r = run_limited(c.args);
        INFO("args: ", c.args);
        expect_error(r, c.needles);
        CHECK(r.out.find("name the same file") != std::string::npos);
        CHECK(r.out.find("step     1/2") == std::string::npos);  // refused before the first step
        CHECK(slurp("build/tf_train.bin") == shard);
        CHECK(slurp("build/tf_model.ckpt") == model);
    }
    CHECK(slurp("build/tf_tok_in.bin") == "not read: the run stops before");
    CHECK_FALSE(exists("build/tf_both.out"));
    // a model trained further in place: --save over --load is allowed
    Run again = run(DATA + steps2 + " --load build/tf_model.ckpt --save build/tf_model.ckpt");
    INFO(again.out);
    CHECK(again.rc == 0);
    CHECK(slurp("build/tf_model.ckpt") != model);
    std::remove("build/tf_shard_link.bin");

    write_bytes("build/tf_plot_in.jsonl", "{\"step\": 1, \"loss\": 3.5}\n{\"step\": 2, \"loss\": 3.25}\n");
    const std::string log = slurp("build/tf_plot_in.jsonl");
    expect_error("plot build/tf_plot_in.jsonl -o ./build/tf_plot_in.jsonl",
                 {"-o ./build/tf_plot_in.jsonl and the log build/tf_plot_in.jsonl name the same file"});
    CHECK(slurp("build/tf_plot_in.jsonl") == log);
}

TEST_CASE("SIGTERM saves a checkpoint and exits 143; a second signal exits at once") {
    make_data();
    std::string dir = "build/tf_sigterm";
    clear_dir(dir);
    std::string args = "--steps 1000000 --checkpoint-dir " + dir;
    pid_t pid = spawn_training(args, "build/tf_sigterm.jsonl", "build/tf_sigterm.out", 3);
    REQUIRE(kill(pid, SIGTERM) == 0);
    Exit e = wait_exit(pid);
    std::string out = slurp("build/tf_sigterm.out");
    INFO(out);
    CHECK(e.exited);  // handled, not killed by the signal
    CHECK(e.code == 143);
    CHECK(out.find("interrupted (SIGTERM): saved") != std::string::npos);
    CHECK(checkpoint_steps_in(dir) == 1);

    // two signals: the second does not wait for the checkpoint
    clear_dir(dir);
    pid = spawn_training(args, "build/tf_sigterm.jsonl", "build/tf_sigterm.out", 3);
    REQUIRE(kill(pid, SIGTERM) == 0);
    REQUIRE(kill(pid, SIGINT) == 0);
    e = wait_exit(pid);
    out = slurp("build/tf_sigterm.out");
    INFO(out);
    CHECK(e.exited);
    CHECK((e.code == 143 || e.code == 130));
    CHECK(out.find("saved, stopping") == std::string::npos);
}

// ./train_mot run from the folder cwd (made first), in the background: the
// TINY model on build/tf_train.bin, logging to log (paths as seen from the
// repository root), once the log has `rows` rows.
static pid_t spawn_in(const std::string& cwd, const std::string& args, const std::string& log, const std::string& out,
                      size_t rows) {
    make_data();
    mkdir(cwd.c_str(), 0755);
    char* program = realpath(train_mot_path().c_str(), nullptr);
    char* root = realpath(".", nullptr);
    REQUIRE(program);
    REQUIRE(root);
    std::string r = root;
    std::remove(log.c_str());
    pid_t pid = spawn_cmd("cd " + cwd + " && exec " + program + " --data " + r + "/build/tf_train.bin" + TINY +
                              " --val-every 0 " + args + " --log " + r + "/" + log,
                          r + "/" + out);  // the redirection is made after the cd
    std::free(program);
    std::free(root);
    wait_rows(log, rows);
    return pid;
}

TEST_CASE("SIGTERM without --checkpoint-dir writes the model to --save, and nothing in the working folder") {
    // the signal wrote a checkpoint to ./checkpoints, a folder no option
    // named: it pruned what was there to the newest 3 (another run's pairs
    // among them) and failed in a working folder that takes no files,
    // though --save was checked writable
    std::string cwd = "build/tf_stop_cwd", save = "build/tf_stop_save.ckpt";
    std::filesystem::remove_all(cwd);
    REQUIRE(mkdir(cwd.c_str(), 0755) == 0);
    REQUIRE(mkdir((cwd + "/checkpoints").c_str(), 0755) == 0);
    for (int s = 1; s <= 4; s++)  // someone's folder of that name
        for (const char* ext : {"ckpt", "state"}) write_bytes(strf("%s/checkpoints/step_%08d.%s", cwd.c_str(), s, ext), "theirs");
    std::vector<std::string> theirs = list_dir(cwd + "/checkpoints");
    std::remove(save.c_str());
    char* root = realpath(".", nullptr);
    REQUIRE(root);
    std::string abs_save = std::string(root) + "/" + save;
    std::free(root);
    pid_t pid = spawn_in(cwd, "--steps 1000000 --save " + abs_save, "build/tf_stop.jsonl", "build/tf_stop.out", 3);
    REQUIRE(kill(pid, SIGTERM) == 0);
    Exit e = wait_exit(pid);
    std::string out = slurp("build/tf_stop.out");
    INFO(out);
    CHECK(e.exited);
    CHECK(e.code == 143);
    CHECK(out.find("interrupted (SIGTERM): saved the model of step ") != std::string::npos);
    CHECK(out.find("to --save " + abs_save) != std::string::npos);
    CHECK(out.find("note: no --checkpoint-dir or --save") == std::string::npos);
    CHECK(list_dir(cwd) == std::vector<std::string>{"checkpoints"});
    CHECK(list_dir(cwd + "/checkpoints") == theirs);
    CHECK(slurp(cwd + "/checkpoints/step_00000004.ckpt") == "theirs");
    Run ev = run("eval --load " + save + " --data build/tf_val.bin --device cpu --seq 8 --batch 4");
    INFO(ev.out);
    CHECK(ev.rc == 0);  // the model of the step it stopped at loads

    // neither --save nor --checkpoint-dir: said at the start and at the signal; nothing written
    std::filesystem::remove_all(cwd);
    pid = spawn_in(cwd, "--steps 1000000", "build/tf_stop.jsonl", "build/tf_stop.out", 3);
    REQUIRE(kill(pid, SIGTERM) == 0);
    e = wait_exit(pid);
    out = slurp("build/tf_stop.out");
    INFO(out);
    CHECK(e.exited);
    CHECK(e.code == 143);
    CHECK(out.find("note: no --checkpoint-dir or --save: nothing of this run is saved, not even when a signal") <
          out.find("step     1/"));
    CHECK(out.find("interrupted (SIGTERM): nothing saved (no --checkpoint-dir or --save), stopping") !=
          std::string::npos);
    CHECK(list_dir(cwd).empty());
}

// Waits (up to `seconds`) until the file holds needle; on a timeout kills
// pid (so that no run is left behind) and fails.
static void wait_output(pid_t pid, const std::string& file, const std::string& needle, int seconds) {
    for (int i = 0; i < seconds * 20 && slurp(file).find(needle) == std::string::npos; i++) usleep(50000);
    bool found = slurp(file).find(needle) != std::string::npos;
    if (!found) {
        kill(pid, SIGKILL);
        wait_exit(pid);
    }
    INFO(slurp(file));
    REQUIRE_MESSAGE(found, "no '", needle, "' within ", seconds, " s");
}

TEST_CASE("Ctrl-C during the final sample or validation stops it; the trained model is saved first") {
    // the final --save came after the final validation and sample, which
    // ignored Ctrl-C until they ended (a long sample ran to its end), and a
    // second Ctrl-C then exited without saving the trained model
    make_data();
    std::string save = "build/tf_final.ckpt", out = "build/tf_final.out";
    std::remove(save.c_str());
    std::remove(out.c_str());
    // a sample of 2^20 tokens at the end only: a minute or more
    pid_t pid = spawn(DATA + TINY + " --val-every 0 --steps 3 --sample-every 1000000 --sample-len 1048576 --save " + save, out);
    wait_output(pid, out, "saved " + save, 60);
    usleep(300000);  // into the sample
    auto t0 = std::chrono::steady_clock::now();
    REQUIRE(kill(pid, SIGINT) == 0);
    Exit e = wait_exit(pid);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::string text = slurp(out);
    INFO(text.substr(text.size() > 3000 ? text.size() - 3000 : 0));
    CHECK(secs < 20);
    CHECK(e.exited);
    CHECK(e.code == 130);
    CHECK(text.find("step     3/3") < text.find("saved " + save));
    CHECK(text.find("(cut short by a stop signal after ") != std::string::npos);
    CHECK(text.find("interrupted (SIGINT) during the final sample of step 3: the trained model is saved "
                    "(--save " + save + "), stopping") != std::string::npos);
    Run ev = run("eval --load " + save + " --data build/tf_val.bin --device cpu --seq 8 --batch 4");
    INFO(ev.out);
    CHECK(ev.rc == 0);

    // the final validation (2^20 batches; resumed at step 2, so that no validation comes before),
    // with --checkpoint-dir: the model is saved, and a checkpoint of the last step
    std::string dir = "build/tf_final_ckpt";
    std::filesystem::remove_all(dir);
    Run first = run(DATA + TINY + " --val-every 0 --steps 3 --checkpoint-every 2 --checkpoint-dir " + dir);
    INFO(first.out);
    REQUIRE(first.rc == 0);
    REQUIRE(list_dir(dir) == std::vector<std::string>{"step_00000002.ckpt", "step_00000002.state"});
    std::remove(save.c_str());
    pid = spawn(DATA + TINY + " --val-data build/tf_val.bin --val-every 3 --val-batches 1048576 --steps 3 --resume"
                " --checkpoint-dir " + dir + " --save " + save,
                out);
    wait_output(pid, out, "saved " + save, 60);
    usleep(300000);  // into the validation
    t0 = std::chrono::steady_clock::now();
    REQUIRE(kill(pid, SIGINT) == 0);
    e = wait_exit(pid);
    secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    text = slurp(out);
    INFO(text);
    CHECK(secs < 20);
    CHECK(e.exited);
    CHECK(e.code == 130);
    CHECK(text.find("val loss") == std::string::npos);  // the cut validation's partial mean is not reported
    CHECK(text.find("interrupted (SIGINT) during the final validation of step 3: saved, stopping") !=
          std::string::npos);
    CHECK(exists(save));
    CHECK(list_dir(dir) == std::vector<std::string>{"step_00000002.ckpt", "step_00000002.state", "step_00000003.ckpt",
                                                    "step_00000003.state"});
}

TEST_CASE("Ctrl-C during a validation stops at that step, with a checkpoint of it that resumes") {
    // the validation ignored Ctrl-C until it ended, then the run trained one more step
    make_data();
    std::string dir = "build/tf_val_stop", out = "build/tf_val_stop.out", log = "build/tf_val_stop.jsonl";
    std::filesystem::remove_all(dir);
    std::remove(out.c_str());
    std::remove(log.c_str());
    // a validation of 2^20 batches at step 0
    pid_t pid = spawn(DATA + TINY + " --val-data build/tf_val.bin --val-every 2 --val-batches 1048576 --steps 4"
                      " --checkpoint-dir " + dir + " --log " + log, out);
    wait_output(pid, log, "\"params\"", 60);  // the log's first row, written right before the validation
    usleep(500000);  // into the validation
    auto t0 = std::chrono::steady_clock::now();
    REQUIRE(kill(pid, SIGINT) == 0);
    Exit e = wait_exit(pid);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::string text = slurp(out);
    INFO(text);
    CHECK(secs < 20);
    CHECK(e.exited);
    CHECK(e.code == 130);
    CHECK(text.find("interrupted (SIGINT) during the validation of step 0: saved, stopping") != std::string::npos);
    CHECK(text.find("step     1/4") == std::string::npos);
    CHECK(list_dir(dir) == std::vector<std::string>{"step_00000000.ckpt", "step_00000000.state"});
    Run r = run(DATA + TINY + " --val-every 0 --steps 2 --resume --checkpoint-dir " + dir);
    INFO(r.out);
    CHECK(r.rc == 0);
    CHECK(r.out.find("resuming at step 0") != std::string::npos);
}

TEST_CASE("SIGHUP (a closed terminal) saves a checkpoint and exits 129, even when it comes twice") {
    // SIGHUP once killed the run on the spot, with nothing saved
    make_data();
    std::string dir = "build/tf_sighup";
    std::string args = "--steps 1000000 --checkpoint-dir " + dir;
    for (int signals : {1, 2}) {  // the kernel's and the shell's
        clear_dir(dir);
        pid_t pid = spawn_training(args, "build/tf_sighup.jsonl", "build/tf_sighup.out", 3);
        for (int i = 0; i < signals; i++) REQUIRE(kill(pid, SIGHUP) == 0);
        Exit e = wait_exit(pid);
        std::string out = slurp("build/tf_sighup.out");
        INFO(signals, " SIGHUP\n", out);
        CHECK(e.exited);
        CHECK(e.code == 129);
        CHECK(out.find("interrupted (SIGHUP): saved") != std::string::npos);
        CHECK(checkpoint_steps_in(dir) == 1);
    }
}

TEST_CASE("SIGHUP with the output in a pipe whose reader is gone (train_mot | tee, terminal closed) still saves") {
    make_data();
    std::string dir = "build/tf_sighup_pipe", log = "build/tf_sighup_pipe.jsonl";
    clear_dir(dir);
    std::remove(log.c_str());
    int p[2];
    REQUIRE(pipe(p) == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        dup2(p[1], 1);
        dup2(p[1], 2);
        close(p[0]);
        close(p[1]);
        setenv("OMP_NUM_THREADS", "1", 1);
        std::string cmd = "exec " + train_mot_path() + DATA + TINY + " --val-every 0 --steps 1000000 --checkpoint-dir " +
                          dir + " --log " + log;
        execl("/bin/sh", "sh", "-c", cmd.c_str(), (char*)nullptr);
        _exit(127);
    }
    close(p[1]);
    wait_rows(log, 3);  // a few lines of output: far from filling the pipe
    // the terminal goes: the run gets SIGHUP, and tee, the pipe's reader, is gone
    REQUIRE(kill(pid, SIGHUP) == 0);
    close(p[0]);
    Exit e = wait_exit(pid);
    INFO("exited ", e.exited, ", code or signal ", e.code);
    CHECK(e.exited);  // not killed by SIGPIPE on its next line of output
    CHECK(e.code == 129);
    CHECK(checkpoint_steps_in(dir) == 1);
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

// ---------------------------------------------------------------------------
// the log

TEST_CASE("the log writes null for non-finite values, so every line is JSON") {
    make_data();
    std::remove("build/tf_null.jsonl");
    Run r = run(DATA + TINY + " --val-every 0 --steps 12 --lr 10 --wd 10 --warmup 0 --grad-clip 0 --skip-nonfinite"
                " --max-skips 100 --log build/tf_null.jsonl");
    INFO(r.out);
    std::string log = slurp("build/tf_null.jsonl");
    INFO(log);
    CHECK(log.find("null") != std::string::npos);
    CHECK(log.find("nan") == std::string::npos);
    CHECK(log.find("inf") == std::string::npos);
}

TEST_CASE("a failed log write (a full disk) stops the run with an error") {
    make_data();
    std::remove("build/tf_full.jsonl");
    // files may grow to 4 blocks of 512 bytes: the log fills that within a few
    // dozen steps. SIGXFSZ is ignored, so the write fails with EFBIG as on a
    // full disk; the program's own output goes to a pipe, which has no limit.
    Run r = run_cmd("sh -c \"trap '' XFSZ; ulimit -f 4; exec " + train_mot_path() + DATA + TINY +
                    " --val-every 0 --steps 2000 --log build/tf_full.jsonl\"");
    INFO(r.out.substr(r.out.size() > 2000 ? r.out.size() - 2000 : 0));
    CHECK(r.rc == 1);
    CHECK(r.out.find("--log build/tf_full.jsonl: write failed") != std::string::npos);
    CHECK(r.out.find("step  2000/2000") == std::string::npos);
    // the row that did not fit is not left half-written: the log once ended
    // with the part of it that fit under the limit
    std::string log = slurp("build/tf_full.jsonl");
    INFO(log);
    CHECK(log.size() > 500);  // the run row and a few steps
    CHECK(log.size() <= 4 * 512);
    REQUIRE(!log.empty());
    CHECK(log.back() == '\n');
    size_t pos = 0;
    while (pos < log.size()) {  // every line a whole row
        size_t nl = log.find('\n', pos);
        std::string line = log.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
        CHECK(line.front() == '{');
        CHECK(line.back() == '}');
        pos = nl == std::string::npos ? log.size() : nl + 1;
    }
    CHECK(r.out.find("could not be cut off") == std::string::npos);
}

TEST_CASE("a periodic checkpoint that fails on a full disk: the model is written beside it, and the error says where") {
    // a failed checkpoint stopped the run with the model nowhere (the final
    // --save has a rescue, the checkpoints had none)
    make_data();
    std::string dir = "build/tf_ckfull";
    std::filesystem::remove_all(dir);
    // files may grow to 200 blocks of 512 bytes: the model file of the TINY
    // model (64,640 bytes) fits, its training state (127,488 bytes) does not;
    // SIGXFSZ is ignored, so the write fails with EFBIG as on a full disk
    Run r = run_cmd("sh -c \"trap '' XFSZ; ulimit -f 200; exec " + train_mot_path() + DATA + TINY +
                    " --val-every 0 --steps 100 --checkpoint-every 2 --checkpoint-dir " + dir + "\"");
    INFO(r.out);
    CHECK(r.rc == 1);
    CHECK(r.out.find("--checkpoint-dir " + dir + ": writing the checkpoint of step 2 failed (") != std::string::npos);
    CHECK(r.out.find("File too large") != std::string::npos);
    CHECK(r.out.find("step     3/100") == std::string::npos);  // the run stopped there
    std::string where = after(r.out, "the model alone (without the optimizer's state) was written to ");
    REQUIRE(!where.empty());
    std::string path = where.substr(0, where.find(": --load"));
    CHECK(path.find(dir + "/step_00000002.ckpt.rescue-") == 0);
    // the rescued model and nothing else: no lone state, no temporary file, no empty rescue folder
    CHECK(list_dir(dir) == std::vector<std::string>{path.substr(dir.size() + 1)});
    for (const std::string& n : list_dir("build")) CHECK(n.find("tf_ckfull.rescue-") == std::string::npos);
    for (const std::string& n : list_dir(".")) CHECK(n.find("tf_ckfull.rescue-") == std::string::npos);
    Run ev = run("eval --load " + path + " --data build/tf_val.bin --device cpu --seq 8 --batch 4");
    INFO(ev.out);
    CHECK(ev.rc == 0);
}

TEST_CASE("a periodic checkpoint whose folder went away: the checkpoint is written beside it and resumes") {
    // the run stopped with "not a directory" and nothing kept
    make_data();
    std::string dir = "build/tf_ckgone", out = "build/tf_ckgone.out";
    std::filesystem::remove_all(dir);
    std::filesystem::remove_all(dir + ".moved");
    pid_t pid = spawn_training("--steps 1000000 --checkpoint-every 200 --checkpoint-dir " + dir, "build/tf_ckgone.jsonl",
                               out, 3);
    // the folder is moved away and a file takes its name: the next checkpoint cannot go there
    REQUIRE(std::rename(dir.c_str(), (dir + ".moved").c_str()) == 0);
    write_bytes(dir, "a file, not the folder");
    Exit e = wait_exit(pid);
    std::string text = slurp(out);
    INFO(text.substr(text.size() > 3000 ? text.size() - 3000 : 0));
    CHECK(e.exited);
    CHECK(e.code == 1);
    CHECK(text.find("--checkpoint-dir " + dir + ": writing the checkpoint of step ") != std::string::npos);
    std::string where = after(text, "the checkpoint was written to ");
    REQUIRE(!where.empty());
    std::string rescue = where.substr(0, where.find(" instead"));
    CHECK(rescue.find(dir + ".rescue-") == 0);
    CHECK(text.find("--checkpoint-dir " + rescue + " --resume continues the run") != std::string::npos);
    std::vector<std::string> pair = list_dir(rescue);
    REQUIRE(pair.size() == 2);
    long long step = std::atoll(pair[0].c_str() + 5);
    CHECK(step % 200 == 0);
    Run resumed = run(DATA + TINY + " --val-every 0 --resume --checkpoint-dir " + rescue + " --steps " + std::to_string(step + 1));
    INFO(resumed.out);
    CHECK(resumed.rc == 0);
    CHECK(resumed.out.find("resuming at step " + std::to_string(step)) != std::string::npos);
    CHECK(slurp(dir) == "a file, not the folder");
    std::remove(dir.c_str());
    std::filesystem::remove_all(rescue);
}

TEST_CASE("resuming drops the log rows written after the checkpoint: the log equals an uninterrupted run's") {
    make_data();
    std::string dir = "build/tf_logresume";
    clear_dir(dir);
    std::string d = DATA + TINY + " --val-data build/tf_val.bin --val-every 4 --val-batches 1 --steps 20"
                    " --checkpoint-every 5 --keep-checkpoints 0 --checkpoint-dir " + dir;
    std::remove("build/tf_full_run.jsonl");
    Run full = run(d + " --log build/tf_full_run.jsonl");
    INFO(full.out);
    REQUIRE(full.rc == 0);
    std::string whole = slurp("build/tf_full_run.jsonl");
    // a run that crashed after logging step 13: its log ends there, and its
    // newest checkpoint is step 10
    std::string crashed;
    std::vector<std::string> lines = text_lines(whole);
    for (size_t i = 0; i < lines.size(); i++) {
        double step = -1;
        json_number(jsonl_parse(lines[i], "build/tf_full_run.jsonl", i + 1), "step", &step);
        if (step <= 13) crashed += lines[i] + "\n";
    }
    write_bytes("build/tf_crashed.jsonl", crashed);
    for (int s : {15, 20}) {
        std::remove(strf("%s/step_%08d.ckpt", dir.c_str(), s).c_str());
        std::remove(strf("%s/step_%08d.state", dir.c_str(), s).c_str());
    }
    Run resumed = run(d + " --resume --log build/tf_crashed.jsonl");
    INFO(resumed.out);
    REQUIRE(resumed.rc == 0);
    CHECK(resumed.out.find("resuming at step 10") != std::string::npos);
    CHECK(resumed.out.find("dropped") != std::string::npos);
    // every row once, in order, with the same numbers (timings aside)
    std::string got = slurp("build/tf_crashed.jsonl");
    auto rows = [](const std::string& text) {
        std::vector<std::string> out;
        size_t p = 0;
        while (p < text.size()) {
            size_t nl = text.find('\n', p);
            std::string line = text.substr(p, nl - p);
            p = nl + 1;
            size_t ms = line.find(", \"ms\"");
            out.push_back(ms == std::string::npos ? line : line.substr(0, ms));
        }
        return out;
    };
    CHECK(rows(got) == rows(whole));
    CHECK(rows(whole).size() == 27);  // the run row, 20 train rows, validation at 0, 4, 8, 12, 16, 20
}

// ---------------------------------------------------------------------------
// the checkpoint folder

TEST_CASE("a second trainer on one --checkpoint-dir stops with an error naming the first") {
    make_data();
    std::string dir = "build/tf_lock";
    clear_dir(dir);
    pid_t first = spawn_training("--steps 1000000 --checkpoint-every 50 --checkpoint-dir " + dir, "build/tf_lock.jsonl",
                                 "build/tf_lock.out", 2);
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
    trained("build/tf_model.ckpt");
    expect_error("sample --load build/tf_model.ckpt --temperature nan", {"--temperature", "finite"});
}

TEST_CASE("a checkpoint with a non-finite parameter or temperature is refused, naming the tensor") {
    trained("build/tf_model.ckpt");
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

TEST_CASE("a tokenizer whose vocabulary differs from the model's is refused at start") {
    make_data();
    write_bytes("build/tf_text.txt", std::string(3000, 'a') + "the quick brown fox jumps over the lazy dog\n");
    Run p = run_cmd("./prepare --out build/tf_prep --vocab 300 build/tf_text.txt");
    INFO(p.out);
    REQUIRE(p.rc == 0);
    trained("build/tf_model.ckpt");  // vocab 257
    Run r = run(DATA + TINY + " --steps 3 --sample-every 1 --load build/tf_model.ckpt --tokenizer build/tf_prep/tokenizer.bin");
    INFO(r.out);
    CHECK(r.rc == 1);
    CHECK(r.out.find("tokens, the model's vocabulary has 257") != std::string::npos);
    CHECK(r.out.find("step     1/3") == std::string::npos);  // at start, not at the first sample
    expect_error("sample --load build/tf_model.ckpt --tokenizer build/tf_prep/tokenizer.bin",
                 {"the model's vocabulary has 257"});
}

TEST_CASE("samples longer than the context slide the window and say so; NUL bytes are printed") {
    trained("build/tf_model.ckpt");  // maxT 8, vocab 257 (bytes)
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
