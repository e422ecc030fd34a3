// tests/test_signals.cpp: the program stopped by a signal. Ctrl-C (SIGINT),
// SIGTERM and SIGHUP stop a run after its current step (exit 130, 143, 129)
// and save where the options say: a checkpoint in --checkpoint-dir, else the
// model to --save, else nothing, never in a folder no option named; a
// validation or sample they interrupt is cut short, the trained model saved
// first; a second Ctrl-C or SIGTERM stops at once, a second SIGHUP does not.
// All through ./train_mot as a user runs it; tests/fault_runs.h has what
// the fault suites share.
//   make NVCC= train_mot
//   g++ -std=c++17 -O2 -march=native -fopenmp -Wall -Wextra -I. tests/test_signals.cpp -o build/test_signals
//   ./build/test_signals          (from the repository root; scratch files go to build/ts_*)
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "common/error.h"
#include "tests/fault_runs.h"
#include "tests/program.h"

static const std::string PREFIX = "build/ts", DATA = fault_data(PREFIX);

static void make_data() { make_train_data(PREFIX); }

// The tests below wait on a spawned run's output file for a line ("saved
// ...") and then signal it. The file must not show an earlier run's lines
// meanwhile: under load the child's shell may truncate it seconds later, and
// the signal then came before the run had even started.
TEST_CASE("spawn empties the output file before the command runs") {
    std::string out = "build/ts_spawn.out";
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

TEST_CASE("SIGTERM saves a checkpoint and exits 143; a second signal exits at once") {
    make_data();
    std::string dir = "build/ts_sigterm";
    clear_dir(dir);
    std::string args = "--steps 1000000 --checkpoint-dir " + dir;
    pid_t pid = spawn_training(PREFIX, args, "build/ts_sigterm.jsonl", "build/ts_sigterm.out", 3);
    REQUIRE(kill(pid, SIGTERM) == 0);
    Exit e = wait_exit(pid);
    std::string out = slurp("build/ts_sigterm.out");
    INFO(out);
    CHECK(e.exited);  // handled, not killed by the signal
    CHECK(e.code == 143);
    CHECK(out.find("interrupted (SIGTERM): saved") != std::string::npos);
    CHECK(checkpoint_steps_in(dir) == 1);

    // two signals: the second does not wait for the checkpoint
    clear_dir(dir);
    pid = spawn_training(PREFIX, args, "build/ts_sigterm.jsonl", "build/ts_sigterm.out", 3);
    REQUIRE(kill(pid, SIGTERM) == 0);
    REQUIRE(kill(pid, SIGINT) == 0);
    e = wait_exit(pid);
    out = slurp("build/ts_sigterm.out");
    INFO(out);
    CHECK(e.exited);
    CHECK((e.code == 143 || e.code == 130));
    CHECK(out.find("saved, stopping") == std::string::npos);
}

// ./train_mot run from the folder cwd (made first), in the background: the
// TINY model on build/ts_train.bin, logging to log (paths as seen from the
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
    pid_t pid = spawn_cmd("cd " + cwd + " && exec " + program + " --data " + r + "/build/ts_train.bin" + TINY +
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
    std::string cwd = "build/ts_stop_cwd", save = "build/ts_stop_save.ckpt";
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
    pid_t pid = spawn_in(cwd, "--steps 1000000 --save " + abs_save, "build/ts_stop.jsonl", "build/ts_stop.out", 3);
    REQUIRE(kill(pid, SIGTERM) == 0);
    Exit e = wait_exit(pid);
    std::string out = slurp("build/ts_stop.out");
    INFO(out);
    CHECK(e.exited);
    CHECK(e.code == 143);
    CHECK(out.find("interrupted (SIGTERM): saved the model of step ") != std::string::npos);
    CHECK(out.find("to --save " + abs_save) != std::string::npos);
    CHECK(out.find("note: no --checkpoint-dir or --save") == std::string::npos);
    CHECK(list_dir(cwd) == std::vector<std::string>{"checkpoints"});
    CHECK(list_dir(cwd + "/checkpoints") == theirs);
    CHECK(slurp(cwd + "/checkpoints/step_00000004.ckpt") == "theirs");
    Run ev = run("eval --load " + save + " --data build/ts_val.bin --device cpu --seq 8 --batch 4");
    INFO(ev.out);
    CHECK(ev.rc == 0);  // the model of the step it stopped at loads

    // neither --save nor --checkpoint-dir: said at the start and at the signal; nothing written
    std::filesystem::remove_all(cwd);
    pid = spawn_in(cwd, "--steps 1000000", "build/ts_stop.jsonl", "build/ts_stop.out", 3);
    REQUIRE(kill(pid, SIGTERM) == 0);
    e = wait_exit(pid);
    out = slurp("build/ts_stop.out");
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
    std::string save = "build/ts_final.ckpt", out = "build/ts_final.out";
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
    Run ev = run("eval --load " + save + " --data build/ts_val.bin --device cpu --seq 8 --batch 4");
    INFO(ev.out);
    CHECK(ev.rc == 0);

    // the final validation (2^20 batches; resumed at step 2, so that no validation comes before),
    // with --checkpoint-dir: the model is saved, and a checkpoint of the last step
    std::string dir = "build/ts_final_ckpt";
    std::filesystem::remove_all(dir);
    Run first = run(DATA + TINY + " --val-every 0 --steps 3 --checkpoint-every 2 --checkpoint-dir " + dir);
    INFO(first.out);
    REQUIRE(first.rc == 0);
    REQUIRE(list_dir(dir) == std::vector<std::string>{"step_00000002.ckpt", "step_00000002.state"});
    std::remove(save.c_str());
    pid = spawn(DATA + TINY + " --val-data build/ts_val.bin --val-every 3 --val-batches 1048576 --steps 3 --resume"
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
    std::string dir = "build/ts_val_stop", out = "build/ts_val_stop.out", log = "build/ts_val_stop.jsonl";
    std::filesystem::remove_all(dir);
    std::remove(out.c_str());
    std::remove(log.c_str());
    // a validation of 2^20 batches at step 0
    pid_t pid = spawn(DATA + TINY + " --val-data build/ts_val.bin --val-every 2 --val-batches 1048576 --steps 4"
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
    std::string dir = "build/ts_sighup";
    std::string args = "--steps 1000000 --checkpoint-dir " + dir;
    for (int signals : {1, 2}) {  // the kernel's and the shell's
        clear_dir(dir);
        pid_t pid = spawn_training(PREFIX, args, "build/ts_sighup.jsonl", "build/ts_sighup.out", 3);
        for (int i = 0; i < signals; i++) REQUIRE(kill(pid, SIGHUP) == 0);
        Exit e = wait_exit(pid);
        std::string out = slurp("build/ts_sighup.out");
        INFO(signals, " SIGHUP\n", out);
        CHECK(e.exited);
        CHECK(e.code == 129);
        CHECK(out.find("interrupted (SIGHUP): saved") != std::string::npos);
        CHECK(checkpoint_steps_in(dir) == 1);
    }
}

TEST_CASE("SIGHUP with the output in a pipe whose reader is gone (train_mot | tee, terminal closed) still saves") {
    make_data();
    std::string dir = "build/ts_sighup_pipe", log = "build/ts_sighup_pipe.jsonl";
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
