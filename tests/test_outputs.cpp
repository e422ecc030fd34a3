// tests/test_outputs.cpp: nothing lost where the program writes. An output
// that cannot be written is refused before the first step, or, when it fails
// at the end or on a full disk, the model is written beside it and the error
// says where; an output over an input or another output is refused naming
// both; the log never ends mid-line, holds JSON only (null for a value that
// is not finite) and, resumed, holds each step once.
// All through ./train_mot as a user runs it; tests/fault_runs.h has what
// the fault suites share.
//   make NVCC= train_mot
//   g++ -std=c++17 -O2 -march=native -fopenmp -Wall -Wextra -I. tests/test_outputs.cpp -o build/test_outputs
//   ./build/test_outputs          (from the repository root; scratch files go to build/to_*)
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/jsonl.h"
#include "tests/bad_input.h"
#include "tests/fault_runs.h"
#include "tests/program.h"

static const std::string PREFIX = "build/to", DATA = fault_data(PREFIX);

static void make_data() { make_train_data(PREFIX); }

TEST_CASE("--save that cannot be written is refused before the first step") {
    make_data();
    write_bytes("build/to_file", "a file, not a folder");
    Run r = run(DATA + TINY + " --steps 5 --save build/to_file/model.ckpt");
    INFO(r.out);
    CHECK(r.rc == 1);
    CHECK(r.out.find("--save build/to_file/model.ckpt") != std::string::npos);
    CHECK(r.out.find("step     1/5") == std::string::npos);  // no training happened
    expect_error(DATA + TINY + " --steps 5 --checkpoint-dir build/to_file/ckpt --checkpoint-every 2", {"--checkpoint-dir"});
}

TEST_CASE("a --save that fails at the end writes the model beside it and says where") {
    make_data();
    std::string dir = "build/to_savefail";
    clear_dir(dir + "/model.ckpt");
    clear_dir(dir);
    pid_t pid = spawn_training(PREFIX, "--steps 15000 --save " + dir + "/model.ckpt", "build/to_savefail.jsonl",
                               "build/to_savefail.out", 1);
    // once training runs, a folder takes the model's name: the final rename must fail
    REQUIRE(mkdir((dir + "/model.ckpt").c_str(), 0755) == 0);
    Exit e = wait_exit(pid);
    std::string out = slurp("build/to_savefail.out");
    INFO(out);
    CHECK(e.exited);
    CHECK(e.code == 1);  // not a success: the model is not where it was asked for
    std::string where = after(out, "the model was written to ");
    REQUIRE(!where.empty());
    std::string path = where.substr(0, where.find(" instead"));
    CHECK(path.find(dir + "/model.ckpt.rescue-") == 0);
    Run ev = run("eval --load " + path + " --data build/to_val.bin --device cpu --seq 8 --batch 4");
    INFO(ev.out);
    CHECK(ev.rc == 0);  // the rescued model loads
    std::remove(path.c_str());
}

TEST_CASE("an output that is an input or another output is refused before the run, naming both") {
    // --log over a --data shard once truncated the shard and the run still
    // exited 0; over --load or the tokenizer it destroyed them; --log and
    // --save on one file lost the log to the model; plot -o over its log
    // replaced the log with the picture
    trained(PREFIX, "build/to_model.ckpt");
    write_bytes("build/to_tok_in.bin", "not read: the run stops before");
    std::remove("build/to_shard_link.bin");
    REQUIRE(symlink("to_train.bin", "build/to_shard_link.bin") == 0);
    const std::string shard = slurp("build/to_train.bin"), model = slurp("build/to_model.ckpt");
    const std::string steps2 = TINY + " --val-every 0 --steps 2";
    struct Case {
        std::string args;
        std::vector<std::string> needles;
    };
    std::vector<Case> cases = {
        {DATA + steps2 + " --log build/to_train.bin", {"--log build/to_train.bin and --data build/to_train.bin"}},
        {DATA + steps2 + " --log ./build/../build/to_train.bin", {"--log ./build/../build/to_train.bin and --data"}},
        {DATA + steps2 + " --log build/to_shard_link.bin", {"--log build/to_shard_link.bin and --data"}},
        {" --data 'build/to_tr*.bin'" + steps2 + " --log build/to_train.bin",
         {"--log build/to_train.bin and --data build/to_tr*.bin (its file build/to_train.bin)"}},
        {DATA + steps2 + " --val-data build/to_val.bin --val-every 1 --log build/to_val.bin",
         {"--log build/to_val.bin and --val-data build/to_val.bin"}},
        {DATA + steps2 + " --save build/to_train.bin", {"--save build/to_train.bin and --data build/to_train.bin"}},
        {DATA + steps2 + " --load build/to_model.ckpt --log build/to_model.ckpt",
         {"--log build/to_model.ckpt and --load build/to_model.ckpt"}},
        {DATA + steps2 + " --tokenizer build/to_tok_in.bin --log build/to_tok_in.bin",
         {"--log build/to_tok_in.bin and --tokenizer build/to_tok_in.bin"}},
        {DATA + steps2 + " --log build/to_both.out --save build/to_both.out",
         {"--log build/to_both.out and --save build/to_both.out", "give another --save"}},
    };
    for (const Case& c : cases) {
        Run r = run_limited(c.args);
        INFO("args: ", c.args);
        expect_error(r, c.needles);
        CHECK(r.out.find("name the same file") != std::string::npos);
        CHECK(r.out.find("step     1/2") == std::string::npos);  // refused before the first step
        CHECK(slurp("build/to_train.bin") == shard);
        CHECK(slurp("build/to_model.ckpt") == model);
    }
    CHECK(slurp("build/to_tok_in.bin") == "not read: the run stops before");
    CHECK_FALSE(exists("build/to_both.out"));
    // a model trained further in place: --save over --load is allowed
    Run again = run(DATA + steps2 + " --load build/to_model.ckpt --save build/to_model.ckpt");
    INFO(again.out);
    CHECK(again.rc == 0);
    CHECK(slurp("build/to_model.ckpt") != model);
    std::remove("build/to_shard_link.bin");

    write_bytes("build/to_plot_in.jsonl", "{\"step\": 1, \"loss\": 3.5}\n{\"step\": 2, \"loss\": 3.25}\n");
    const std::string log = slurp("build/to_plot_in.jsonl");
    expect_error("plot build/to_plot_in.jsonl -o ./build/to_plot_in.jsonl",
                 {"-o ./build/to_plot_in.jsonl and the log build/to_plot_in.jsonl name the same file"});
    CHECK(slurp("build/to_plot_in.jsonl") == log);
}

// ---------------------------------------------------------------------------
// the log

TEST_CASE("the log writes null for non-finite values, so every line is JSON") {
    make_data();
    std::remove("build/to_null.jsonl");
    Run r = run(DATA + TINY + " --val-every 0 --steps 12 --lr 10 --wd 10 --warmup 0 --grad-clip 0 --skip-nonfinite"
                " --max-skips 100 --log build/to_null.jsonl");
    INFO(r.out);
    std::string log = slurp("build/to_null.jsonl");
    INFO(log);
    CHECK(log.find("null") != std::string::npos);
    CHECK(log.find("nan") == std::string::npos);
    CHECK(log.find("inf") == std::string::npos);
}

TEST_CASE("a failed log write (a full disk) stops the run with an error") {
    make_data();
    std::remove("build/to_full.jsonl");
    // files may grow to 4 blocks of 512 bytes: the log fills that within a few
    // dozen steps. SIGXFSZ is ignored, so the write fails with EFBIG as on a
    // full disk; the program's own output goes to a pipe, which has no limit.
    Run r = run_cmd("sh -c \"trap '' XFSZ; ulimit -f 4; exec " + train_mot_path() + DATA + TINY +
                    " --val-every 0 --steps 2000 --log build/to_full.jsonl\"");
    INFO(r.out.substr(r.out.size() > 2000 ? r.out.size() - 2000 : 0));
    CHECK(r.rc == 1);
    CHECK(r.out.find("--log build/to_full.jsonl: write failed") != std::string::npos);
    CHECK(r.out.find("step  2000/2000") == std::string::npos);
    // the row that did not fit is not left half-written: the log once ended
    // with the part of it that fit under the limit
    std::string log = slurp("build/to_full.jsonl");
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
    std::string dir = "build/to_ckfull";
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
    for (const std::string& n : list_dir("build")) CHECK(n.find("to_ckfull.rescue-") == std::string::npos);
    for (const std::string& n : list_dir(".")) CHECK(n.find("to_ckfull.rescue-") == std::string::npos);
    Run ev = run("eval --load " + path + " --data build/to_val.bin --device cpu --seq 8 --batch 4");
    INFO(ev.out);
    CHECK(ev.rc == 0);
}

TEST_CASE("a periodic checkpoint whose folder went away: the checkpoint is written beside it and resumes") {
    // the run stopped with "not a directory" and nothing kept
    make_data();
    std::string dir = "build/to_ckgone", out = "build/to_ckgone.out";
    std::filesystem::remove_all(dir);
    std::filesystem::remove_all(dir + ".moved");
    pid_t pid = spawn_training(PREFIX, "--steps 1000000 --checkpoint-every 200 --checkpoint-dir " + dir,
                               "build/to_ckgone.jsonl", out, 3);
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
    std::string dir = "build/to_logresume";
    clear_dir(dir);
    std::string d = DATA + TINY + " --val-data build/to_val.bin --val-every 4 --val-batches 1 --steps 20"
                    " --checkpoint-every 5 --keep-checkpoints 0 --checkpoint-dir " + dir;
    std::remove("build/to_full_run.jsonl");
    Run full = run(d + " --log build/to_full_run.jsonl");
    INFO(full.out);
    REQUIRE(full.rc == 0);
    std::string whole = slurp("build/to_full_run.jsonl");
    // a run that crashed after logging step 13: its log ends there, and its
    // newest checkpoint is step 10
    std::string crashed;
    std::vector<std::string> lines = text_lines(whole);
    for (size_t i = 0; i < lines.size(); i++) {
        double step = -1;
        json_number(jsonl_parse(lines[i], "build/to_full_run.jsonl", i + 1), "step", &step);
        if (step <= 13) crashed += lines[i] + "\n";
    }
    write_bytes("build/to_crashed.jsonl", crashed);
    for (int s : {15, 20}) {
        std::remove(strf("%s/step_%08d.ckpt", dir.c_str(), s).c_str());
        std::remove(strf("%s/step_%08d.state", dir.c_str(), s).c_str());
    }
    Run resumed = run(d + " --resume --log build/to_crashed.jsonl");
    INFO(resumed.out);
    REQUIRE(resumed.rc == 0);
    CHECK(resumed.out.find("resuming at step 10") != std::string::npos);
    CHECK(resumed.out.find("dropped") != std::string::npos);
    // every row once, in order, with the same numbers (timings aside)
    std::string got = slurp("build/to_crashed.jsonl");
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
