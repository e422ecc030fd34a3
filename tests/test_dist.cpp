// Several ranks (docs/design.md section 11, train/parallel.h): ./train_mot under
// mpirun against one process accumulating the same micro-batches; resume
// across rank counts; ZeRO-1 against the plain all-reduce; signals, a killed
// and a hung rank. Every case runs the real program with mpirun; without MPI
// (a build without mpicxx, or no mpirun) the cases are skipped, saying why.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <signal.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/dist_runs.h"
#include "tests/program.h"
#include "tests/train_checks.h"

static const std::string DATA = dist_data("dist");
static void make_data() { write_dist_data("dist"); }

// The models: dense, MoT in every layer, MoT and dense mixed, token choice (softmax, and threshold with
// --router-balance).
static const char* KINDS[][2] = {
    {"dense", " --layers 2 --heads 2 --d-model 16 --ffn dense"},
    {"mot", " --layers 2 --heads 2 --d-model 16 --ffn mot --experts 4 --group 2"},
    {"mixed", " --layers 2 --heads 2 --d-model 16 --ffn mot --ffn-layers second-half --experts 4 --group 2"},
    {"token-choice", " --layers 2 --heads 2 --d-model 16 --ffn token-choice --experts 4"},
    // the rate controller sums the fire counts over the ranks
    {"threshold-balanced", " --layers 2 --heads 2 --d-model 16 --ffn token-choice --experts 4 --router threshold"
                           " --topk 2 --group 2 --router-balance 1"},
};

MPI_TEST("2 ranks compute what 1 process accumulating the same micro-batches computes (1e-5 over 8 steps)") {
    make_data();
    for (auto& kind : KINDS)
        for (int shuffle : {0, 1})
            for (int per_rank : {1, 2}) {  // micro-batches per rank and step
                if (per_rank == 2 && std::string(kind[0]) != "mot") continue;
                std::string tag = std::string("build/dist_") + kind[0] + "_s" + std::to_string(shuffle) + "_a" +
                                  std::to_string(per_rank);
                INFO(tag);
                // B 4, T 8: 32 tokens a micro-batch; 2 ranks x per_rank micro-batches a step
                std::string args = DATA + kind[1] + " --batch 4 --steps 8 --shuffle " + std::to_string(shuffle) +
                                   " --total-batch " + std::to_string(64 * per_rank);
                std::remove((tag + "_1.jsonl").c_str());
                std::remove((tag + "_2.jsonl").c_str());
                Run one = run(args + " --log " + tag + "_1.jsonl");
                INFO(one.out);
                REQUIRE(one.rc == 0);
                Run two = run_cmd(mpirun(2, args + " --log " + tag + "_2.jsonl"));
                INFO(two.out);
                REQUIRE(two.rc == 0);
                CHECK(two.out.find("ranks: 2, gradients by MPI") != std::string::npos);
                CHECK(two.out.find("x " + std::to_string(per_rank) + " micro-batches x 2 ranks") != std::string::npos);
                double worst = compare_logs(tag + "_2.jsonl", tag + "_1.jsonl", 1e-5, 8);
                MESSAGE(tag << ": largest relative difference " << worst);
            }
}

// The routing statistics of the step (train/model.h, RouterStats) count every
// micro-batch of every rank, as the loss does: 2 ranks log what one process
// accumulating the same micro-batches logs. The capacity drops tokens, so the
// shares depend on which micro-batches are counted.
MPI_TEST("2 ranks log the routing statistics of 1 process accumulating the same micro-batches (1e-6)") {
    make_data();
    const char* routers[][2] = {
        {"softmax", " --layers 2 --heads 2 --d-model 16 --ffn token-choice --experts 4 --topk 2 --capacity-factor 1"},
        {"threshold", " --layers 2 --heads 2 --d-model 16 --ffn token-choice --experts 4 --router threshold --topk 2"
                      " --group 2 --capacity-factor 1 --router-balance 1"},
    };
    for (auto& router : routers)
        for (int per_rank : {1, 2}) {
            std::string tag = std::string("build/dist_routing_") + router[0] + "_a" + std::to_string(per_rank);
            INFO(tag);
            std::string args = DATA + router[1] + " --batch 4 --steps 6 --shuffle 0 --total-batch " +
                               std::to_string(64 * per_rank);
            std::remove((tag + "_1.jsonl").c_str());
            std::remove((tag + "_2.jsonl").c_str());
            Run one = run(args + " --log " + tag + "_1.jsonl");
            INFO(one.out);
            REQUIRE(one.rc == 0);
            Run two = run_cmd(mpirun(2, args + " --log " + tag + "_2.jsonl"));
            INFO(two.out);
            REQUIRE(two.rc == 0);
            compare_logs(tag + "_2.jsonl", tag + "_1.jsonl", 1e-5, 6);
            RoutingComparison r = compare_routing(tag + "_2.jsonl", tag + "_1.jsonl", 1e-6, ABSOLUTE);
            CHECK(r.fields == 6 * (1 + 2 * 4));  // every step: aux_loss, and each layer's four statistics
            CHECK(r.dropped[0] > 0.01);          // the capacity drops: the shares mean something
            MESSAGE(tag << ": largest difference " << r.worst << ", largest dropped share " << r.dropped[0]);
        }
}

MPI_TEST("a checkpoint of 2 ranks resumes under 2 ranks bit-exactly, and under 1 rank with twice the accumulation") {
    make_data();
    std::string dir = "build/dist_resume_ckpt";
    clear_dir(dir);
    std::string args = DATA + std::string(KINDS[1][1]) + " --batch 4 --steps 20 --total-batch 64 --checkpoint-dir " + dir;
    for (const char* f : {"full", "two", "one"}) std::remove(("build/dist_resume_" + std::string(f) + ".jsonl").c_str());
    Run full = run_cmd(mpirun(2, args + " --checkpoint-every 10 --keep-checkpoints 0 --log build/dist_resume_full.jsonl"
                                        " --save build/dist_resume_full.ckpt"));
    INFO(full.out);
    REQUIRE(full.rc == 0);
    REQUIRE(exists(dir + "/step_00000010.state"));
    std::remove((dir + "/step_00000020.ckpt").c_str());
    std::remove((dir + "/step_00000020.state").c_str());
    Run two = run_cmd(mpirun(2, args + " --resume --log build/dist_resume_two.jsonl --save build/dist_resume_two.ckpt"));
    INFO(two.out);
    REQUIRE(two.rc == 0);
    CHECK(two.out.find("resuming at step 10") != std::string::npos);
    LogRows f = read_log("build/dist_resume_full.jsonl"), t = read_log("build/dist_resume_two.jsonl");
    REQUIRE(t.size() == 10);
    for (int s = 11; s <= 20; s++) {
        INFO("step ", s);
        CHECK(t[s]["loss"] == f[s]["loss"]);
        CHECK(t[s]["grad_norm"] == f[s]["grad_norm"]);
    }
    std::string m1 = slurp("build/dist_resume_full.ckpt"), m2 = slurp("build/dist_resume_two.ckpt");
    CHECK(m1.size() > 1024);
    CHECK(m1 == m2);
    // one rank must keep the step's 2 micro-batches: refused without --total-batch
    std::remove((dir + "/step_00000020.ckpt").c_str());
    std::remove((dir + "/step_00000020.state").c_str());
    std::string one_args = DATA + std::string(KINDS[1][1]) + " --batch 4 --steps 20 --checkpoint-dir " + dir + " --resume";
    Run refused = run(one_args);
    CHECK(refused.rc != 0);
    CHECK(refused.out.find("2 micro-batches per step") != std::string::npos);
    CHECK(refused.out.find("--total-batch") != std::string::npos);
    Run one = run(one_args + " --total-batch 64 --log build/dist_resume_one.jsonl");
    INFO(one.out);
    REQUIRE(one.rc == 0);
    LogRows o = read_log("build/dist_resume_one.jsonl");
    REQUIRE(o.size() == 10);
    for (int s = 11; s <= 20; s++) {
        INFO("step ", s);
        CHECK(rel(num(o[s]["loss"]), num(f[s]["loss"])) <= 1e-5);
        CHECK(rel(num(o[s]["grad_norm"]), num(f[s]["grad_norm"])) <= 1e-5);
    }
}

MPI_TEST("--zero 1 (sharded moments and update) within 1e-6 of --zero 0 over 20 steps, and its checkpoints resume") {
    make_data();
    // 3 ranks: the MoT model's parameter count is not a multiple of 3, so the tail is used
    std::string args = DATA + std::string(KINDS[1][1]) + " --batch 4 --steps 20 --total-batch 96";
    for (int zero : {0, 1}) std::remove(("build/dist_zero" + std::to_string(zero) + ".jsonl").c_str());
    std::string dir = "build/dist_zero_ckpt";
    clear_dir(dir);
    Run z0 = run_cmd(mpirun(3, args + " --zero 0 --log build/dist_zero0.jsonl"));
    INFO(z0.out);
    REQUIRE(z0.rc == 0);
    Run z1 = run_cmd(mpirun(3, args + " --zero 1 --log build/dist_zero1.jsonl --checkpoint-dir " + dir +
                                   " --checkpoint-every 10 --keep-checkpoints 0 --save build/dist_zero1.ckpt"));
    INFO(z1.out);
    REQUIRE(z1.rc == 0);
    CHECK(z1.out.find("ZeRO-1") != std::string::npos);
    std::string params = after(slurp("build/dist_zero1.jsonl"), "\"params\": ");
    REQUIRE(!params.empty());
    CHECK((long long)num(params) % 3 != 0);
    double worst = compare_logs("build/dist_zero1.jsonl", "build/dist_zero0.jsonl", 1e-6, 20);
    MESSAGE("--zero 1 against --zero 0, largest relative difference: " << worst);
    // the sharded moments, gathered into the checkpoint, resume under ZeRO-1 bit-exactly
    std::remove((dir + "/step_00000020.ckpt").c_str());
    std::remove((dir + "/step_00000020.state").c_str());
    Run again = run_cmd(mpirun(3, args + " --zero 1 --resume --checkpoint-dir " + dir +
                                      " --log build/dist_zero1b.jsonl --save build/dist_zero1b.ckpt"));
    INFO(again.out);
    REQUIRE(again.rc == 0);
    CHECK(slurp("build/dist_zero1.ckpt") == slurp("build/dist_zero1b.ckpt"));
    // and under one process without ZeRO (the full moments): within 1e-5
    std::remove((dir + "/step_00000020.ckpt").c_str());
    std::remove((dir + "/step_00000020.state").c_str());
    std::remove("build/dist_zero1c.jsonl");
    Run one = run(args + " --resume --checkpoint-dir " + dir + " --log build/dist_zero1c.jsonl");
    INFO(one.out);
    REQUIRE(one.rc == 0);
    LogRows a = read_log("build/dist_zero1.jsonl"), c = read_log("build/dist_zero1c.jsonl");
    REQUIRE(c.size() == 10);
    for (int s = 11; s <= 20; s++) CHECK(rel(num(c[s]["loss"]), num(a[s]["loss"])) <= 1e-5);
}

MPI_TEST("--total-batch that the ranks cannot share is refused, naming the option and the sizes") {
    make_data();
    Run r = run_cmd(mpirun(2, DATA + std::string(KINDS[0][1]) + " --batch 4 --steps 2 --total-batch 96", 60));
    CHECK(r.rc != 0);
    CHECK(r.out.find("--total-batch 96 is not a multiple of --batch * --seq * ranks = 4 * 8 * 2 = 64") !=
          std::string::npos);
}

// mpirun's MPMD form: rank 0 runs ./train_mot a, rank 1 ./train_mot b;
// killed after `seconds` if it hangs. `pre0` and `pre1` go before each
// program (mpirun's per-rank options, such as -wdir).
static std::string mpirun_two(const std::string& a, const std::string& b, int seconds = 60, const std::string& pre0 = "",
                              const std::string& pre1 = "") {
    char* found = realpath(train_mot_path().c_str(), nullptr);  // found from any working folder
    REQUIRE(found);
    std::string program = found;
    std::free(found);
    return "env ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 timeout -s KILL " + std::to_string(seconds) +
           " mpirun --allow-run-as-root --oversubscribe -np 1 " + pre0 + " " + program + " " + a + " : -np 1 " + pre1 +
           " " + program + " " + b;
}

MPI_TEST("ranks started with different options stop at the start, naming the first difference and both values") {
    // another model on one rank corrupted the heap inside MPI_Allreduce;
    // another --seed, --lr, --data or --total-batch trained to the end
    // apart; another --steps or --zero hung until "a rank has died"
    make_data();
    write_raw_shard("build/dist_train2.bin", text_tokens(3000, 13));
    std::string base = DATA + std::string(KINDS[1][1]) + " --batch 4 --steps 4 --collective-timeout 10";
    struct Case {
        std::string a, b, said;
    };
    std::vector<Case> cases = {
        {"", " --ffn token-choice", "--ffn is mot on rank 0 and token-choice on rank 1"},
        {"", " --d-model 32", "--d-model is 16 on rank 0 and 32 on rank 1"},
        {" --seed 1", " --seed 2", "--seed is 1 on rank 0 and 2 on rank 1"},
        {" --lr 1e-2", " --lr 2e-2", "--lr is 0.01 on rank 0 and 0.02 on rank 1"},
        {"", " --data build/dist_train2.bin", "--data is build/dist_train.bin on rank 0 and build/dist_train2.bin on rank 1"},
        {" --total-batch 64", " --total-batch 128", "--total-batch is 64 on rank 0 and 128 on rank 1"},
        {"", " --steps 6", "--steps is 4 on rank 0 and 6 on rank 1"},
        {"", " --zero 1", "--zero is 0 on rank 0 and 1 on rank 1"},
    };
    for (const Case& c : cases) {
        Run r = run_cmd(mpirun_two(base + c.a, base + c.b));
        INFO("rank 1: ", c.b, "\n", r.out);
        CHECK(r.rc != 0);
        CHECK(r.rc != 137);  // not a hang
        CHECK(r.out.find("the ranks differ: " + c.said + "; every rank must be given the same options") !=
              std::string::npos);
        CHECK(r.out.find("step     1/") == std::string::npos);  // before any training
    }
    // the same values spelled otherwise, and --threads (a node's own), agree
    Run same = run_cmd(mpirun_two(base + " --lr 1e-2 --threads 1", base + " --lr 0.01 --threads 2"));
    INFO(same.out);
    CHECK(same.rc == 0);
    CHECK(same.out.find("step     4/4") != std::string::npos);
}

MPI_TEST("ranks that read different files under the same names stop at the start, naming what differs") {
    // each rank in a working folder of its own (mpirun -wdir), with the same options: the files decide
    make_data();
    char* root = realpath(".", nullptr);
    REQUIRE(root);
    std::string r = root;
    std::free(root);
    for (int k : {0, 1}) {
        std::string d = "build/dist_wdir" + std::to_string(k);
        mkdir(d.c_str(), 0755);
        write_raw_shard(d + "/train.bin", text_tokens(3000 + 500 * k, 11));
    }
    std::string args = "--data train.bin --vocab 257 --seq 8 --sample-every 0 --val-every 0 --batch 4 --steps 4" +
                       std::string(KINDS[1][1]);
    Run data = run_cmd(mpirun_two(args, args, 60, "-wdir " + r + "/build/dist_wdir0", "-wdir " + r + "/build/dist_wdir1"));
    INFO(data.out);
    CHECK(data.rc != 0);
    CHECK(data.out.find("the ranks differ: the training data (shard names and sizes) is fingerprint ") != std::string::npos);
    CHECK(data.out.find("the ranks read different files") != std::string::npos);
    CHECK(data.out.find("step     1/") == std::string::npos);
    // models of other widths under one --load name
    for (int k : {0, 1}) {
        std::string d = r + "/build/dist_wdir" + std::to_string(k);
        write_raw_shard(d + "/train.bin", text_tokens(3000, 11));
        Run m = run("--data " + d + "/train.bin --vocab 257 --seq 8 --sample-every 0 --val-every 0 --batch 4 --steps 1"
                    " --layers 2 --heads 2 --ffn dense --d-model " + std::to_string(16 * (k + 1)) + " --save " + d + "/m.ckpt");
        INFO(m.out);
        REQUIRE(m.rc == 0);
    }
    Run load = run_cmd(mpirun_two(args + " --load m.ckpt", args + " --load m.ckpt", 60, "-wdir " + r + "/build/dist_wdir0",
                                  "-wdir " + r + "/build/dist_wdir1"));
    INFO(load.out);
    CHECK(load.rc != 0);
    CHECK(load.out.find("the ranks differ: the model's width is 16 on rank 0 and 32 on rank 1") != std::string::npos);
    CHECK(load.out.find("step     1/") == std::string::npos);
}

// mpirun -np 2 of the MoT model's long run, once both ranks have trained
// some steps; mpirun's pid and the ranks' pids.
static pid_t start_long_job(const std::string& extra, const std::string& out_file, std::vector<pid_t>* ranks) {
    make_data();
    return start_ranks(2, DATA + std::string(KINDS[1][1]) + " --batch 4 --steps 100000 --val-every 0" + extra,
                       out_file, ranks);
}

MPI_TEST("SIGTERM to one rank: every rank stops after the step, rank 0 saves one checkpoint") {
    std::string dir = "build/dist_signal_ckpt";
    clear_dir(dir);
    std::vector<pid_t> ranks;
    pid_t job = start_long_job(" --checkpoint-dir " + dir, "build/dist_signal.out", &ranks);
    auto t0 = std::chrono::steady_clock::now();
    kill(ranks[1], SIGTERM);  // rank 1: the one that does not write
    Exit e = wait_exit(job);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::string out = slurp("build/dist_signal.out");
    INFO(out);
    CHECK(secs < 60);
    CHECK(e.exited);
    CHECK(e.code != 0);
    CHECK(out.find("interrupted (SIGTERM on another rank): saved, stopping") != std::string::npos);
    std::vector<std::string> files = list_dir(dir);
    REQUIRE(files.size() == 2);  // one .ckpt and its .state
    CHECK(files[0].find(".ckpt") != std::string::npos);
    // it resumes (2 ranks, to one more step)
    long long step = std::stoll(files[0].substr(5, 8));
    Run r = run_cmd(mpirun(2, DATA + std::string(KINDS[1][1]) + " --batch 4 --val-every 0 --resume --checkpoint-dir " +
                                  dir + " --steps " + std::to_string(step + 1)));
    INFO(r.out);
    CHECK(r.rc == 0);
    CHECK(r.out.find("resuming at step " + std::to_string(step)) != std::string::npos);
}

MPI_TEST("a killed rank ends the job with an error in bounded time, not a hang") {
    std::vector<pid_t> ranks;
    pid_t job = start_long_job("", "build/dist_killed.out", &ranks);
    auto t0 = std::chrono::steady_clock::now();
    kill(ranks[1], SIGKILL);
    Exit e = wait_exit(job);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    INFO(slurp("build/dist_killed.out"));
    CHECK(secs < 60);
    CHECK(e.exited);
    CHECK(e.code != 0);  // well before the test's time limit (300 s): mpirun ended it
}

MPI_TEST("a hung rank: the others stop at --collective-timeout, naming the collective") {
    std::vector<pid_t> ranks;
    pid_t job = start_long_job(" --collective-timeout 3", "build/dist_hung.out", &ranks);
    auto t0 = std::chrono::steady_clock::now();
    kill(ranks[1], SIGSTOP);  // alive, but never reaches the next collective
    Exit e = wait_exit(job);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::string out = slurp("build/dist_hung.out");
    INFO(out);
    CHECK(secs >= 3);
    CHECK(secs < 60);
    CHECK(e.exited);
    CHECK(e.code != 0);
    CHECK(out.find("error (rank 0 of 2): ") != std::string::npos);
    // it once said "a rank has died or hangs" for a slow rank too
    CHECK(out.find("did not complete within --collective-timeout 3 s (waited 3 s): a rank may have died, hang, or be "
                   "slow") != std::string::npos);
    for (pid_t p : ranks) kill(p, SIGKILL);  // in case mpirun left the stopped one
}

// GPU ranks through NCCL: one GPU per rank, so at least two GPUs.

NCCL_TEST("NCCL: 2 GPU ranks compute what 1 GPU process accumulating computes, --zero 0 and 1") {
    make_data();
    std::string args = DATA + std::string(KINDS[2][1]) + " --batch 4 --steps 8 --total-batch 64 --device cuda";
    for (const char* f : {"one", "z0", "z1"}) std::remove(("build/dist_nccl_" + std::string(f) + ".jsonl").c_str());
    Run one = run(args + " --log build/dist_nccl_one.jsonl");
    INFO(one.out);
    REQUIRE(one.rc == 0);
    for (int zero : {0, 1}) {
        std::string log = "build/dist_nccl_z" + std::to_string(zero) + ".jsonl";
        Run two = run_cmd(mpirun(2, args + " --zero " + std::to_string(zero) + " --log " + log));
        INFO(two.out);
        REQUIRE(two.rc == 0);
        CHECK(two.out.find("gradients by NCCL") != std::string::npos);
        compare_logs(log, "build/dist_nccl_one.jsonl", 1e-5, 8);
    }
}
