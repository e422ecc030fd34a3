// tests/test_expert_parallel_ranks.cpp: expert parallelism (README, "Expert
// parallelism") through the program: ./train_mot --expert-parallel N under
// mpirun against one process accumulating the same micro-batches
// (tests/dist_runs.h): losses, gradient norms, validation losses and token
// choice's routing statistics, in fp32 and bf16, and after --transition;
// checkpoints; refused layouts; a killed or stopped rank; the NCCL case.
// The layers themselves, as threads: tests/test_expert_parallel.cpp.
// Without MPI these cases are skipped, saying why.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "tests/dist_runs.h"

static const std::string EP_DATA = dist_data("ep");

// MoT in every layer, and MoT and dense mixed; token choice (k 2, a capacity that drops tokens) in
// every layer (the softmax router, and the threshold router with its bias, learned or held at a firing
// rate of 1/G by --router-balance), and token choice and dense mixed. E 4, so N 4 holds one expert
// per rank. (Options make no model with both MoT and token-choice layers: --ffn names one kind,
// --ffn-layers its layers, the others dense.)
static const char* EP_MODELS[][2] = {
    {"mot", " --layers 2 --heads 2 --d-model 16 --ffn mot --experts 4 --group 2"},
    {"mixed", " --layers 2 --heads 2 --d-model 16 --ffn mot --ffn-layers second-half --experts 4 --group 2"},
    {"tc", " --layers 2 --heads 2 --d-model 16 --ffn token-choice --experts 4 --topk 2 --capacity-factor 0.5"},
    {"tc_mixed", " --layers 2 --heads 2 --d-model 16 --ffn token-choice --ffn-layers second-half --experts 4 --topk 2"
                 " --capacity-factor 0.5"},
    {"tc_threshold", " --layers 2 --heads 2 --d-model 16 --ffn token-choice --router threshold --experts 4 --topk 2"
                     " --capacity-factor 0.5"},
    {"tc_balance", " --layers 2 --heads 2 --d-model 16 --ffn token-choice --router threshold --experts 4 --topk 2"
                   " --capacity-factor 0.5 --router-balance 2 --group 2"},
};

MPI_TEST("--expert-parallel over 2 and 4 ranks (N 2, N 4, N 2 with 2 replicas; both MoT exchanges; with and "
         "without --zero 1) computes what 1 process computes (1e-5 over 8 steps), MoT and token choice, and token "
         "choice's routing statistics") {
    write_dist_data("ep");
    // B 4, T 8: 32 tokens a micro-batch, 4 micro-batches a step: one process accumulates 4, 2 ranks 2 each.
    // MoT models run every layout with both exchanges; token choice (whose exchange has one form) the first
    // three; the models mixed with dense layers, and the held router, shuffled data only (the runs add up:
    // the suite also runs under the sanitizers)
    const char* layouts[][4] = {{"2", "2", "0", "mixed"},  {"4", "2", "1", "mixed"},  {"4", "4", "0", "mixed"},
                                {"2", "2", "1", "inputs"}, {"4", "2", "0", "inputs"}, {"4", "4", "1", "inputs"}};
    for (auto& model : EP_MODELS)
        for (int shuffle : {0, 1}) {
            const std::string name = model[0];
            const bool tc = name.rfind("tc", 0) == 0;
            if (shuffle == 0 && (name == "mixed" || name == "tc_mixed" || name == "tc_balance")) continue;
            std::string tag = std::string("build/ep_") + model[0] + "_s" + std::to_string(shuffle);
            std::string args = EP_DATA + model[1] + " --batch 4 --steps 8 --total-batch 128 --shuffle " +
                               std::to_string(shuffle);
            std::remove((tag + "_1.jsonl").c_str());
            Run one = run(args + " --log " + tag + "_1.jsonl");
            INFO(one.out);
            REQUIRE(one.rc == 0);
            for (auto& [np, N, zero, exchange] : layouts) {
                if (tc && std::string(exchange) == "inputs") continue;
                std::string log = tag + "_np" + np + "_N" + N + "_z" + zero + "_" + exchange + ".jsonl";
                INFO(log);
                std::remove(log.c_str());
                Run ep = run_cmd(mpirun(std::stoi(np), args + " --expert-parallel " + N + " --zero " + zero +
                                                           " --expert-exchange " + exchange + " --log " + log));
                INFO(ep.out);
                REQUIRE(ep.rc == 0);
                CHECK(ep.out.find(tc ? std::string("they exchange the routed tokens")
                                     : std::string("they exchange the ") + (exchange[0] == 'i' ? "input" : "mixed") +
                                           " tokens") != std::string::npos);
                int groups = std::stoi(np) / std::stoi(N);
                CHECK(ep.out.find("expert parallel: " + std::to_string(groups) + " expert groups of " + N +
                                  " ranks; each rank holds " + std::to_string(4 / std::stoi(N)) + " of the 4 experts") !=
                      std::string::npos);
                double worst = compare_logs(log, tag + "_1.jsonl", 1e-5, 8);
                if (tc) {
                    RoutingComparison r = compare_routing(log, tag + "_1.jsonl", 1e-5, RELATIVE);
                    CHECK(r.fields > 0);
                    CHECK(std::any_of(r.dropped.begin(), r.dropped.end(), [](auto& d) { return d.second > 0; }));
                }
                MESSAGE(log << ": largest relative difference " << worst);
            }
        }
}

// The layouts of the cases below: ranks, N, --expert-exchange (MoT layers).
static const char* EP_LAYOUTS[][3] = {{"2", "2", "mixed"}, {"2", "2", "inputs"}, {"4", "2", "mixed"},
                                      {"4", "2", "inputs"}};

MPI_TEST("--precision bf16 under --expert-parallel computes what 1 process computes in bf16 on 2 ranks N 2 (1e-5 "
         "over 8 steps; both MoT exchanges), and on 4 ranks N 2 x 2 replicas what 4 data-parallel ranks compute in "
         "bf16, also with --zero 1: MoT and token choice (softmax router, threshold router held by "
         "--router-balance), and token choice's routing statistics") {
    write_dist_data("ep");
    // With replicas the gradients are summed over the ranks in another order than one process accumulates
    // its micro-batches, as under data parallelism alone: in fp32 that moves the weights by 1e-8, but a bf16
    // run rounds them to bf16 every step, and a weight that lands on the other side of a rounding point
    // moves by 2^-8 of itself (4 data-parallel ranks measured 3.5e-5 from one process here). So 4 ranks are
    // compared with 4 data-parallel ranks, whose sums over the ranks are the same; 2 ranks N 2 sum in one
    // process's order and are compared with it.
    for (int k : {0, 2, 5}) {  // mot, tc, tc_balance
        const std::string name = EP_MODELS[k][0];
        const bool tc = k > 0;
        const std::string tag = "build/ep_bf16_" + name,
                          args = EP_DATA + EP_MODELS[k][1] + " --batch 4 --steps 8 --total-batch 128 --shuffle 1";
        for (const char* p : {"fp32", "bf16"}) {
            std::remove((tag + "_1_" + p + ".jsonl").c_str());
            Run one = run(args + " --precision " + p + " --log " + tag + "_1_" + p + ".jsonl");
            INFO(one.out);
            REQUIRE(one.rc == 0);
        }
        // bf16 is in effect: the one-process runs differ (the comparisons below are bf16's)
        LogRows fp32 = loss_rows(tag + "_1_fp32.jsonl"), bf16 = loss_rows(tag + "_1_bf16.jsonl");
        REQUIRE(fp32.size() == 8);
        CHECK(fp32[8]["loss"] != bf16[8]["loss"]);
        std::remove((tag + "_dp4_bf16.jsonl").c_str());
        Run dp = run_cmd(mpirun(4, args + " --precision bf16 --log " + tag + "_dp4_bf16.jsonl"));
        INFO(dp.out);
        REQUIRE(dp.rc == 0);
        for (auto& [np, N, exchange] : EP_LAYOUTS) {
            if (tc && std::string(exchange) == "inputs") continue;
            const std::string log = tag + "_np" + np + "_N" + N + "_" + exchange + ".jsonl",
                              ref = tag + (std::string(np) == "2" ? "_1_bf16.jsonl" : "_dp4_bf16.jsonl");
            INFO(log, " against ", ref);
            std::remove(log.c_str());
            Run ep = run_cmd(mpirun(std::stoi(np), args + " --precision bf16 --expert-parallel " + N +
                                                       " --expert-exchange " + exchange + " --log " + log));
            INFO(ep.out);
            REQUIRE(ep.rc == 0);
            CHECK(ep.out.find("bf16 emulated") != std::string::npos);
            double worst = compare_logs(log, ref, 1e-5, 8);
            if (tc) CHECK(compare_routing(log, ref, 1e-5, RELATIVE).fields > 0);
            MESSAGE(log << " against " << ref << ": largest relative difference " << worst);
        }
        // with --zero 1 too: each run of parameters' moments sharded over the ranks that hold it
        const std::string zlog = tag + "_np4_N2_zero1.jsonl", ref = tag + "_dp4_bf16.jsonl";
        std::remove(zlog.c_str());
        Run z = run_cmd(mpirun(4, args + " --precision bf16 --expert-parallel 2 --zero 1 --log " + zlog));
        INFO(z.out);
        REQUIRE(z.rc == 0);
        double worst = compare_logs(zlog, ref, 1e-5, 8);
        if (tc) CHECK(compare_routing(zlog, ref, 1e-5, RELATIVE).fields > 0);
        MESSAGE(zlog << " against " << ref << ": largest relative difference " << worst);
    }
}

// The value after `key` in the step-0 row of a log (a transition's losses).
static double step0(const std::string& log, const std::string& key) {
    LogRows rows = read_log(log);
    REQUIRE(rows.count(0));
    REQUIRE(rows[0].count(key));
    return num(rows[0][key]);
}

MPI_TEST("--transition token-choice under --expert-parallel (2 ranks N 2, 4 ranks N 2 x 2 replicas; the MoT "
         "model's both exchanges; fp32 and bf16): the threshold router calibrated over every rank's calibration "
         "batches and held by --router-balance computes what 1 process computes (the thresholds, the losses at "
         "the switch, then 1e-5 over 8 steps and the routing statistics); and so does the transition with "
         "--distill from the MoT model (2 ranks N 2)") {
    write_dist_data("ep");
    // the MoT model of EP_MODELS[0], trained a little so its controller's logits say something
    const std::string mot = "build/ep_transition_mot.ckpt";
    std::remove(mot.c_str());
    Run made = run(EP_DATA + EP_MODELS[0][1] + " --batch 4 --steps 16 --total-batch 128 --save " + mot);
    INFO(made.out);
    REQUIRE(made.rc == 0);
    // k 4 of E 4 by default (2E/G); capacity factor 0.5 drops choices; 3 calibration batches: not a multiple
    // of the ranks, so some rank runs a batch uncounted to stay in step
    const std::string args = EP_DATA + " --load " + mot + " --transition token-choice --router threshold"
                             " --router-balance 2 --capacity-factor 0.5 --calibration-batches 3 --batch 4 --steps 8"
                             " --total-batch 128 --shuffle 1";
    for (const char* p : {"fp32", "bf16"}) {
        const std::string tag = std::string("build/ep_transition_") + p, ref = tag + "_1.jsonl";
        std::remove(ref.c_str());
        Run one = run(args + " --precision " + p + " --log " + ref);
        INFO(one.out);
        REQUIRE(one.rc == 0);
        const std::string thresholds = after(one.out, "transition: thresholds");
        REQUIRE(!thresholds.empty());
        for (auto& [np, N, exchange] : EP_LAYOUTS) {
            if (std::string(p) == "bf16" && std::string(np) == "4") continue;  // replicas: see the case above
            const std::string log = tag + "_np" + np + "_N" + N + "_" + exchange + ".jsonl";
            INFO(log);
            std::remove(log.c_str());
            Run ep = run_cmd(mpirun(std::stoi(np), args + " --precision " + p + " --expert-parallel " + N +
                                                       " --expert-exchange " + exchange + " --log " + log));
            INFO(ep.out);
            REQUIRE(ep.rc == 0);
            CHECK(after(ep.out, "transition: thresholds") == thresholds);  // printed to 3 decimals
            double worst = 0;
            for (const char* key : {"transition_mot_loss", "transition_loss"}) {
                double d = rel(step0(log, key), step0(ref, key));
                CHECK_MESSAGE(d <= 1e-5, key << " " << step0(log, key) << " vs " << step0(ref, key));
                worst = std::max(worst, d);
            }
            worst = std::max(worst, compare_logs(log, ref, 1e-5, 8));
            CHECK(compare_routing(log, ref, 1e-5, RELATIVE).fields > 0);
            MESSAGE(log << ": largest relative difference " << worst);
        }
    }
    // learning from the MoT model too (--distill): every rank's whole teacher on its own micro-batches
    const std::string distill = args + " --distill " + mot + " --distill-weight 0.5", ref = "build/ep_distill_1.jsonl";
    std::remove(ref.c_str());
    Run one = run(distill + " --log " + ref);
    INFO(one.out);
    REQUIRE(one.rc == 0);
    // the teacher changed the run: its gradient has the KL term from step 1 on
    LogRows with = loss_rows(ref), without = loss_rows("build/ep_transition_fp32_1.jsonl");
    REQUIRE((!with.empty() && !without.empty()));
    CHECK(with.begin()->second["grad_norm"] != without.begin()->second["grad_norm"]);
    const std::string log = "build/ep_distill_np2_N2.jsonl";
    std::remove(log.c_str());
    Run ep = run_cmd(mpirun(2, distill + " --expert-parallel 2 --log " + log));
    INFO(ep.out);
    REQUIRE(ep.rc == 0);
    CHECK(ep.out.find("distill: from") != std::string::npos);
    MESSAGE(log << ": largest relative difference " << compare_logs(log, ref, 1e-5, 8));
}

// A model's checkpoint written under N 2 on 2 ranks at step 8 of 16: resumed
// under the same layout, under one process and under N 4 on 4 ranks. Its
// files are build/ep_resume_<tag>_*.
static void check_resume(const std::string& tag, const char* model) {
    write_dist_data("ep");
    const std::string dir = "build/ep_resume_" + tag + "_ckpt", out = "build/ep_resume_" + tag + "_";
    clear_dir(dir);
    std::string args = EP_DATA + std::string(model) + " --batch 4 --steps 16 --total-batch 128 " +
                       "--checkpoint-dir " + dir;
    for (const char* f : {"full", "same", "one", "four"}) std::remove((out + f + ".jsonl").c_str());
    Run full = run_cmd(mpirun(2, args + " --expert-parallel 2 --checkpoint-every 8 --keep-checkpoints 0 --log " +
                                     out + "full.jsonl --save " + out + "full.ckpt"));
    INFO(full.out);
    REQUIRE(full.rc == 0);
    REQUIRE(exists(dir + "/step_00000008.state"));
    // the file is one process's: the same size as a one-process checkpoint of the model
    Run whole = run(args.substr(0, args.find(" --checkpoint-dir")) + " --steps 1 --save " + out + "whole.ckpt");
    INFO(whole.out);
    REQUIRE(whole.rc == 0);
    CHECK(slurp(out + "full.ckpt").size() == slurp(out + "whole.ckpt").size());
    auto resume = [&](const std::string& cmd, const std::string& name) {
        std::remove((dir + "/step_00000016.ckpt").c_str());
        std::remove((dir + "/step_00000016.state").c_str());
        Run r = run_cmd(cmd + " --resume --log " + out + name + ".jsonl --save " + out + name + ".ckpt");
        INFO(r.out);
        REQUIRE(r.rc == 0);
        CHECK(r.out.find("resuming at step 8") != std::string::npos);
        return read_log(out + name + ".jsonl");
    };
    LogRows f = read_log(out + "full.jsonl");
    LogRows same = resume(mpirun(2, args + " --expert-parallel 2"), "same");
    REQUIRE(same.size() == 8);
    for (int s = 9; s <= 16; s++) {
        INFO("step ", s);
        CHECK(same[s]["loss"] == f[s]["loss"]);
        CHECK(same[s]["grad_norm"] == f[s]["grad_norm"]);
    }
    CHECK(slurp(out + "same.ckpt") == slurp(out + "full.ckpt"));
    for (auto& [cmd, name] : {std::pair{train_mot_path() + " " + args, "one"},
                              std::pair{mpirun(4, args + " --expert-parallel 4"), "four"}}) {
        LogRows o = resume(cmd, name);
        REQUIRE(o.size() == 8);
        for (int s = 9; s <= 16; s++) {
            INFO(name, ": step ", s);
            CHECK(rel(num(o[s]["loss"]), num(f[s]["loss"])) <= 1e-5);
            CHECK(rel(num(o[s]["grad_norm"]), num(f[s]["grad_norm"])) <= 1e-5);
        }
    }
}

MPI_TEST("a checkpoint of --expert-parallel 2 --zero 1 on 4 ranks (moments sharded over the replicas) resumes "
         "bit-exactly under the same layout, and within 1e-5 under one process") {
    write_dist_data("ep");
    std::string dir = "build/ep_zero_ckpt";
    clear_dir(dir);
    std::string args = EP_DATA + std::string(EP_MODELS[1][1]) + " --batch 4 --steps 16 --total-batch 128 " +
                       "--checkpoint-dir " + dir;
    const std::string layout = " --expert-parallel 2 --zero 1";
    for (const char* f : {"full", "same", "one"}) std::remove(("build/ep_zero_" + std::string(f) + ".jsonl").c_str());
    Run full = run_cmd(mpirun(4, args + layout + " --checkpoint-every 8 --keep-checkpoints 0 "
                                                 "--log build/ep_zero_full.jsonl --save build/ep_zero_full.ckpt"));
    INFO(full.out);
    REQUIRE(full.rc == 0);
    CHECK(full.out.find("ZeRO-1") != std::string::npos);
    LogRows f = read_log("build/ep_zero_full.jsonl");
    for (auto& [cmd, name] : {std::pair{mpirun(4, args + layout), "same"}, std::pair{train_mot_path() + " " + args, "one"}}) {
        std::remove((dir + "/step_00000016.ckpt").c_str());
        std::remove((dir + "/step_00000016.state").c_str());
        Run r = run_cmd(cmd + " --resume --log build/ep_zero_" + name + ".jsonl --save build/ep_zero_" + name + ".ckpt");
        INFO(r.out);
        REQUIRE(r.rc == 0);
        LogRows o = read_log("build/ep_zero_" + std::string(name) + ".jsonl");
        REQUIRE(o.size() == 8);
        for (int s = 9; s <= 16; s++) {
            INFO(name, ": step ", s);
            if (std::string(name) == "same") {
                CHECK(o[s]["loss"] == f[s]["loss"]);
                CHECK(o[s]["grad_norm"] == f[s]["grad_norm"]);
            } else {
                CHECK(rel(num(o[s]["loss"]), num(f[s]["loss"])) <= 1e-5);
                CHECK(rel(num(o[s]["grad_norm"]), num(f[s]["grad_norm"])) <= 1e-5);
            }
        }
    }
    CHECK(slurp("build/ep_zero_same.ckpt") == slurp("build/ep_zero_full.ckpt"));
}

MPI_TEST("--expert-exchange auto exchanges the input tokens when N*G < E, else the mixed tokens") {
    write_dist_data("ep");
    for (const char* group : {"2", "4"}) {  // E 8, N 2: N*G 4 < 8, 8 = 8
        Run r = run_cmd(mpirun(2, EP_DATA + " --layers 2 --heads 2 --d-model 16 --ffn mot --experts 8 --expert-size 8"
                                            " --batch 8 --steps 1 --expert-parallel 2 --group " + std::string(group)));
        INFO(r.out);
        REQUIRE(r.rc == 0);
        CHECK(r.out.find(std::string(group) == "2" ? "they exchange the input tokens (N*G 4 < E 8)"
                                                   : "they exchange the mixed tokens (N*G 8 >= E 8)") !=
              std::string::npos);
    }
}

MPI_TEST("a checkpoint written under --expert-parallel holds the whole model: it resumes bit-exactly under the same "
         "layout, and within 1e-5 under one process and under N 4 on 4 ranks (MoT, and token choice with a "
         "threshold router's bias)") {
    check_resume("mot", EP_MODELS[0][1]);
    check_resume("tc", EP_MODELS[4][1]);
}

MPI_TEST("--expert-parallel layouts that cannot work are refused, naming the numbers") {
    write_dist_data("ep");
    const std::string mot = EP_DATA + std::string(EP_MODELS[0][1]) + " --batch 4 --steps 2";
    struct Bad {
        int np;
        std::string args, says;
    };
    for (const Bad& b : std::vector<Bad>{
             {3, mot + " --expert-parallel 2", "--expert-parallel 2 must divide the number of ranks, 3"},
             {2, EP_DATA + " --layers 2 --heads 2 --d-model 16 --ffn mot --experts 3 --expert-size 8 --group 2"
                           " --batch 4 --steps 2"
                           " --expert-parallel 2",
              "--expert-parallel 2 must divide the number of experts, 3"},
             {2, EP_DATA + " --layers 2 --heads 2 --d-model 16 --ffn dense --batch 4 --steps 2 --expert-parallel 2",
              "has no MoT or token-choice layers"},
             {4, EP_DATA + " --layers 2 --heads 2 --d-model 16 --ffn token-choice --experts 6 --batch 4 --steps 2"
                           " --expert-parallel 4",
              "--expert-parallel 4 must divide the number of experts, 6"},
         }) {
        INFO(b.args);
        Run r = run_cmd(mpirun(b.np, b.args));
        INFO(r.out);
        CHECK(r.rc != 0);
        CHECK(r.out.find(b.says) != std::string::npos);
        CHECK(r.out.find("step     1/") == std::string::npos);
    }
}

MPI_TEST("under --expert-parallel a killed rank ends the job with an error in bounded time, not a hang") {
    write_dist_data("ep");
    std::vector<pid_t> ranks;
    pid_t job = start_ranks(2, EP_DATA + std::string(EP_MODELS[0][1]) + " --batch 4 --steps 100000 --val-every 0 "
                                 "--expert-parallel 2",
                            "build/ep_killed.out", &ranks);
    auto t0 = std::chrono::steady_clock::now();
    kill(ranks[1], SIGKILL);
    Exit e = wait_exit(job);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    INFO(slurp("build/ep_killed.out"));
    CHECK(secs < 60);
    CHECK(e.exited);
    CHECK(e.code != 0);
}

MPI_TEST("under --expert-parallel a stopped rank: the others stop at --collective-timeout, naming the collective") {
    write_dist_data("ep");
    std::vector<pid_t> ranks;
    pid_t job = start_ranks(2, EP_DATA + std::string(EP_MODELS[0][1]) + " --batch 4 --steps 100000 --val-every 0 "
                                 "--expert-parallel 2 --collective-timeout 3",
                            "build/ep_hung.out", &ranks);
    auto t0 = std::chrono::steady_clock::now();
    kill(ranks[1], SIGSTOP);  // alive, but never reaches the next exchange
    Exit e = wait_exit(job);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::string out = slurp("build/ep_hung.out");
    INFO(out);
    CHECK(secs >= 3);
    CHECK(secs < 60);
    CHECK(e.exited);
    CHECK(e.code != 0);
    CHECK(out.find("did not complete within --collective-timeout 3 s") != std::string::npos);
}

NCCL_TEST("NCCL: --expert-parallel 2 --device cuda on 2 GPU ranks (MoT, both exchanges and with --zero 1; token "
          "choice, softmax and threshold routers) computes what 1 GPU process computes (1e-5 over 8 steps)") {
    write_dist_data("ep");
    for (int model : {1, 2, 4}) {
        const std::string name = EP_MODELS[model][0];
        INFO("model " << name);
        std::string args = EP_DATA + std::string(EP_MODELS[model][1]) + " --batch 4 --steps 8 --total-batch 128 --device cuda";
        const std::string one_log = "build/ep_nccl_one_" + name + ".jsonl";
        std::remove(one_log.c_str());
        Run one = run(args + " --log " + one_log);
        INFO(one.out);
        REQUIRE(one.rc == 0);
        // token choice has one exchange, of the routed tokens' buffers; ZeRO-1 with the mixed tokens' ("zero")
        for (const char* exchange : {"mixed", "inputs", "zero"}) {
            if (model != 1 && exchange[0] != 'm') continue;
            std::string log = "build/ep_nccl_" + name + "_" + exchange + ".jsonl";
            std::remove(log.c_str());
            std::string how = exchange[0] == 'z'  ? " --expert-exchange mixed --zero 1"
                              : model == 1        ? std::string(" --expert-exchange ") + exchange
                                                  : "";
            Run two = run_cmd(mpirun(2, args + " --expert-parallel 2" + how + " --log " + log));
            INFO(two.out);
            REQUIRE(two.rc == 0);
            CHECK(two.out.find("gradients by NCCL") != std::string::npos);
            double worst = compare_logs(log, one_log, 1e-5, 8);
            MESSAGE(log << ": largest relative difference " << worst);
        }
    }
}

MPI_TEST("--expert-parallel --device cuda: refused in a build without NCCL, saying so") {
    write_dist_data("ep");
    const bool nccl = built.find("NCCL") != std::string::npos;
    const std::string mot = EP_DATA + std::string(EP_MODELS[0][1]) + " --batch 4 --steps 2 --expert-parallel 2 --device cuda";
    Run r = run_cmd(mpirun(2, mot + " --zero 1"));
    INFO(r.out);
    CHECK(r.rc != 0);  // without GPUs either way
    if (!nccl) CHECK(r.out.find("--expert-parallel --device cuda needs NCCL") != std::string::npos);
    else CHECK(r.out.find("--device cuda") != std::string::npos);
}
