// tests/test_kinds.cpp: the three feed-forward kinds through ./train_mot:
// token choice trains and logs its routing, transition tuning from MoT (with
// the threshold routers' rate controller, --router-balance), and discrete MoT
// in eval and sample.
//   make NVCC= train_mot build/test_kinds && ./build/test_kinds
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/checkpoint.h"
#include "common/layout.h"
#include "tests/bad_input.h"
#include "tests/program.h"
#include "tests/train_checks.h"

static const std::string DATA = " --data build/tk_train.bin --val-data build/tk_val.bin";
static const std::string MODEL =
    " --vocab 257 --layers 2 --heads 2 --d-model 16 --experts 4 --group 2 --batch 4 --seq 8 --device cpu"
    " --sample-every 0";

// The number after `key` in out, at its first occurrence after `from` (NaN when absent).
static double number_after(const std::string& out, const std::string& key) {
    size_t p = out.find(key);
    return p == std::string::npos ? NAN : std::strtod(out.c_str() + p + key.size(), nullptr);
}

// A small MoT model trained for a few steps, saved at path.
static void mot_checkpoint(const std::string& path) {
    make_train_data("build/tk");
    Run r = run(DATA + MODEL + " --val-every 0 --steps 20 --lr 1e-2 --save " + path);
    INFO(r.out);
    REQUIRE(r.rc == 0);
}

TEST_CASE("token choice trains; the step line and the log carry the aux loss and each layer's routing") {
    make_train_data("build/tk");
    std::remove("build/tk_tc.jsonl");
    Run r = run(DATA + MODEL + " --ffn token-choice --ffn-layers 1 --topk 2 --capacity-factor 0.5 --aux-loss 0.1"
                " --val-every 5 --val-batches 12 --steps 10 --log build/tk_tc.jsonl --save build/tk_tc.ckpt");
    INFO(r.out);
    REQUIRE(r.rc == 0);
    CHECK(r.out.find("| aux ") != std::string::npos);
    CHECK(r.out.find("% |") != std::string::npos);
    LogRows rows = read_log("build/tk_tc.jsonl");
    REQUIRE(rows.size() == 10);
    for (auto& [step, f] : rows) {
        INFO("step " << step);
        for (const char* key : {"loss", "aux_loss", "dropped_1", "load_min_1", "load_max_1"})
            CHECK_MESSAGE(f.count(key) == 1, "missing ", key);
        CHECK(f.count("dropped_0") == 0);  // layer 0 is dense
        double dropped = std::atof(f["dropped_1"].c_str()), lo = std::atof(f["load_min_1"].c_str()),
               hi = std::atof(f["load_max_1"].c_str());
        CHECK((dropped >= 0 && dropped <= 1));
        CHECK((lo >= 0 && lo <= hi && hi <= 1));
        CHECK(std::atof(f["aux_loss"].c_str()) > 0);
    }
    // cf 0.5 with k 2: an expert takes half of the N*k/E choices it would on average: drops happen
    CHECK(std::atof(rows[1]["dropped_1"].c_str()) > 0);
    // the logged loss is the cross-entropy alone: eval of the saved model agrees with the last validation
    // (the 12 batches of 4 x 8 tokens that tk_val.bin's 400 hold)
    Run e = run("eval --load build/tk_tc.ckpt --data build/tk_val.bin --batch 4 --seq 8 --batches 12 --device cpu");
    INFO(e.out);
    REQUIRE(e.rc == 0);
    LogRows val = read_log("build/tk_tc.jsonl", true);
    CHECK(number_after(e.out, ": loss ") == doctest::Approx(std::atof(val[10]["val_loss"].c_str())).epsilon(1e-4));
    // a token-choice model samples one sequence alone
    Run s = run("sample --load build/tk_tc.ckpt --num 1 --length 20");
    INFO(s.out);
    CHECK(s.rc == 0);
    CHECK(s.out.find("---- sample 1 ----") != std::string::npos);
}

TEST_CASE("transition: before any update, the loss is exactly that of a token-choice model of the same tensors") {
    mot_checkpoint("build/tk_mot.ckpt");
    Run t = run(DATA + MODEL + " --load build/tk_mot.ckpt --transition token-choice --router softmax --topk 1"
                " --capacity-factor 2 --val-every 5 --val-batches 4 --steps 5 --log build/tk_transition.jsonl");
    INFO(t.out);
    REQUIRE(t.rc == 0);
    double mot = number_after(t.out, "first update on the validation batches: ");
    double tc = number_after(t.out, "with the MoT layers, ");
    CHECK(std::isfinite(mot));
    CHECK(std::isfinite(tc));
    CHECK(mot != tc);  // the switch changes the function
    // the same tensors under a TOKEN_CHOICE header: both layers kind 2, k 1, cf 2
    std::string ckpt = slurp("build/tk_mot.ckpt");
    int32_t two = 2, one = 1;
    float cf = 2.0f;
    std::memcpy(&ckpt[4 * 14], &one, 4);
    std::memcpy(&ckpt[4 * 15], &cf, 4);
    for (int l = 0; l < 2; l++) std::memcpy(&ckpt[4 * (32 + l)], &two, 4);
    write_bytes("build/tk_as_tc.ckpt", with_checksum(ckpt));
    Run e = run("eval --load build/tk_as_tc.ckpt --data build/tk_val.bin --batch 4 --seq 8 --batches 4 --device cpu");
    INFO(e.out);
    REQUIRE(e.rc == 0);
    CHECK(number_after(e.out, ": loss ") == doctest::Approx(tc).epsilon(1e-4));
    Run m = run("eval --load build/tk_mot.ckpt --data build/tk_val.bin --batch 4 --seq 8 --batches 4 --device cpu");
    CHECK(number_after(m.out, ": loss ") == doctest::Approx(mot).epsilon(1e-4));
    // the log records both, before the first step
    std::string log = slurp("build/tk_transition.jsonl");
    CHECK(log.find("\"transition_mot_loss\"") != std::string::npos);
    CHECK(log.find("\"transition_loss\"") != std::string::npos);
}

TEST_CASE("transition to the default threshold router: calibrated, saved with its router, decoded alone") {
    mot_checkpoint("build/tk_mot.ckpt");
    std::remove("build/tk_thr.jsonl");
    Run t = run(DATA + MODEL + " --load build/tk_mot.ckpt --transition token-choice --capacity-factor 4"
                " --val-every 5 --val-batches 4 --steps 5 --log build/tk_thr.jsonl --save build/tk_thr.ckpt");
    INFO(t.out);
    REQUIRE(t.rc == 0);
    // E 4, G 2: at most 2E/G = 4 experts per token; the gate temperature is the MoT model's (0.1)
    CHECK(t.out.find("router threshold, k 4, capacity factor 4, gate temperature 0.1)") != std::string::npos);
    CHECK(t.out.find("thresholds from 4 training batches") != std::string::npos);
    CHECK(t.out.find("experts/token ") != std::string::npos);
    LogRows rows = read_log("build/tk_thr.jsonl");
    REQUIRE(rows.count(1) == 1);
    for (int l = 0; l < 2; l++) {  // each expert fires for about 1/G of the tokens: about E/G = 2 per token
        double per_token = std::atof(rows[1]["experts_" + std::to_string(l)].c_str());
        CHECK((per_token > 1.0 && per_token < 3.0));
    }
    // the saved model is the routed one; decoding each sequence alone drops nothing, as the full
    // forward at capacity factor 4 (cap = 4 k N / E = 4N) does not either
    std::string ev = "eval --load build/tk_thr.ckpt --data build/tk_val.bin --batch 4 --seq 8 --batches 4 --device cpu";
    Run full = run(ev), dec = run(ev + " --decode");
    INFO(full.out << dec.out);
    REQUIRE(full.rc == 0);
    REQUIRE(dec.rc == 0);
    CHECK(dec.out.find("each sequence decoded alone") != std::string::npos);
    CHECK(number_after(dec.out, ": loss ") == doctest::Approx(number_after(full.out, ": loss ")).epsilon(1e-5));
    expect_error("eval --load build/tk_mot.ckpt --data build/tk_val.bin --batch 4 --seq 8 --decode",
                 {"--decode", "MoT layers"});
    // a model with MoT and token-choice layers (the MoT model with layer 1's kind set to token choice:
    // the same tensors) is refused: its token-choice layers' k and router would change silently
    std::string mixed = slurp("build/tk_mot.ckpt");
    int32_t two = 2;
    std::memcpy(&mixed[4 * 33], &two, 4);
    write_bytes("build/tk_mixed.ckpt", with_checksum(mixed));
    expect_error(DATA + MODEL + " --load build/tk_mixed.ckpt --transition token-choice --steps 2",
                 {"build/tk_mixed.ckpt already has token-choice layers"});
}

// The biases (E) of every token-choice layer of a checkpoint, layers in order.
static std::vector<float> checkpoint_router_bias(const std::string& path) {
    Config c;
    std::vector<float> p;
    checkpoint_load(path, &c, &p);
    std::vector<float> bc;
    for (const TensorSpec& s : param_specs(c))
        if (s.name.size() > 3 && s.name.compare(s.name.size() - 3, 3, ".bc") == 0)
            bc.insert(bc.end(), p.begin() + s.offset, p.begin() + s.offset + s.numel);
    return bc;
}

TEST_CASE("transition with --router-balance: the biases follow the controller, not AdamW; the rate error is logged") {
    mot_checkpoint("build/tk_mot.ckpt");
    const std::string transition = DATA + MODEL + " --load build/tk_mot.ckpt --transition token-choice --capacity-factor 4";
    Run sw = run(transition + " --steps 0 --val-every 0 --save build/tk_bal_sw.ckpt");
    INFO(sw.out);
    REQUIRE(sw.rc == 0);
    const std::vector<float> calibrated = checkpoint_router_bias("build/tk_bal_sw.ckpt");
    REQUIRE(calibrated.size() == 8);  // 2 layers of E 4
    {  // the controller's target 1/G: the routed model keeps the MoT model's G in its header
        Config c;
        std::vector<float> p;
        checkpoint_load("build/tk_bal_sw.ckpt", &c, &p);
        CHECK(c.mot.G == 2);
        CHECK(c.tc.router == ROUTER_THRESHOLD);
    }
    // a gain so small that the controller cannot move a float: the biases stay as calibrated, bit for bit,
    // through 5 AdamW steps at a high rate (without the controller they move)
    std::remove("build/tk_bal.jsonl");
    Run tiny = run(transition + " --router-balance 1e-30 --steps 5 --lr 1e-2 --val-every 0 --log build/tk_bal.jsonl"
                   " --save build/tk_bal_tiny.ckpt");
    INFO(tiny.out);
    REQUIRE(tiny.rc == 0);
    CHECK(checkpoint_router_bias("build/tk_bal_tiny.ckpt") == calibrated);
    Run off = run(transition + " --router-balance 0 --steps 5 --lr 1e-2 --val-every 0 --save build/tk_bal_off.ckpt");
    INFO(off.out);
    CHECK(off.out.find("--router-balance") == std::string::npos);
    REQUIRE(off.rc == 0);
    CHECK(checkpoint_router_bias("build/tk_bal_off.ckpt") != calibrated);
    LogRows rows = read_log("build/tk_bal.jsonl");
    for (int step = 1; step <= 5; step++)
        for (const char* key : {"rate_err_0", "rate_err_1"}) {
            INFO("step " << step << " " << key);
            REQUIRE(rows[step].count(key) == 1);
            CHECK(std::atof(rows[step][key].c_str()) >= 0);
        }
    CHECK(slurp("build/tk_bal.jsonl").find("\"router_balance\": 1e-30") != std::string::npos);
    // a real gain moves them; the transition to the threshold router runs the controller by default
    Run on = run(transition + " --router-balance 1 --steps 5 --lr 1e-2 --val-every 0 --save build/tk_bal_on.ckpt");
    INFO(on.out);
    REQUIRE(on.rc == 0);
    CHECK(checkpoint_router_bias("build/tk_bal_on.ckpt") != calibrated);
    std::remove("build/tk_bal_default.jsonl");
    Run def = run(transition + " --steps 2 --val-every 0 --log build/tk_bal_default.jsonl");
    INFO(def.out);
    REQUIRE(def.rc == 0);
    CHECK(def.out.find("firing rate 1/2 by a controller (--router-balance 2)") != std::string::npos);
    CHECK(read_log("build/tk_bal_default.jsonl")[1].count("rate_err_0") == 1);
    // not for threshold-one, whose runs were not measured with it
    Run one = run(transition + " --router threshold-one --steps 2 --val-every 0");
    INFO(one.out);
    REQUIRE(one.rc == 0);
    CHECK(one.out.find("--router-balance") == std::string::npos);
}

// Removes the checkpoint pairs of dir after step `keep`.
static void drop_checkpoints_after(const std::string& dir, int keep) {
    for (const std::string& n : list_dir(dir))
        if (n.compare(0, 5, "step_") == 0 && std::atoi(n.c_str() + 5) > keep) std::remove((dir + "/" + n).c_str());
}

TEST_CASE("--resume keeps the run's --router-balance: the controller goes on bit for bit; another gain is noted") {
    mot_checkpoint("build/tk_mot.ckpt");
    const std::string dir = "build/tk_bal_resume_ckpt", tag = "build/tk_bal_resume";
    clear_dir(dir);
    for (const char* f : {"_full.jsonl", "_b.jsonl", "_old.jsonl"}) std::remove((tag + f).c_str());
    const std::string common = DATA + MODEL + " --val-every 0 --steps 8 --lr 1e-2 --checkpoint-every 2"
                               " --keep-checkpoints 0 --checkpoint-dir " + dir;
    // the transition to the threshold router runs the controller (--router-balance 2, not given)
    Run full = run(common + " --load build/tk_mot.ckpt --transition token-choice --capacity-factor 4 --log " + tag +
                   "_full.jsonl --save " + tag + "_full.ckpt");
    INFO(full.out);
    REQUIRE(full.rc == 0);
    REQUIRE(full.out.find("(--router-balance 2)") != std::string::npos);
    REQUIRE(exists(dir + "/step_00000004.state"));
    drop_checkpoints_after(dir, 4);
    // resumed without --router-balance: the checkpoint's gain, the same steps
    Run b = run(common + " --resume --log " + tag + "_b.jsonl --save " + tag + "_b.ckpt");
    INFO(b.out);
    REQUIRE(b.rc == 0);
    CHECK(b.out.find("resuming at step 4") != std::string::npos);
    CHECK(b.out.find("note: the run was trained with") == std::string::npos);
    LogRows f = read_log(tag + "_full.jsonl"), rb = read_log(tag + "_b.jsonl");
    REQUIRE(f.count(8) == 1);
    REQUIRE(rb.size() == 4);
    CHECK(rb.begin()->first == 5);
    for (int s = 5; s <= 8; s++) {
        INFO("step ", s);
        CHECK(rb[s]["loss"] == f[s]["loss"]);
        CHECK(rb[s]["grad_norm"] == f[s]["grad_norm"]);
        CHECK(rb[s].count("rate_err_0") == 1);
        CHECK(rb[s]["rate_err_0"] == f[s]["rate_err_0"]);
    }
    CHECK(f[5]["loss"] != f[6]["loss"]);
    CHECK(slurp(tag + "_b.ckpt") == slurp(tag + "_full.ckpt"));  // the biases bc among the weights
    CHECK(checkpoint_router_bias(tag + "_b.ckpt") == checkpoint_router_bias(tag + "_full.ckpt"));
    // another gain: allowed, and said; its checkpoints record it
    drop_checkpoints_after(dir, 4);
    Run other = run(common + " --resume --router-balance 1 --steps 6");
    INFO(other.out);
    REQUIRE(other.rc == 0);
    CHECK(other.out.find("note: the run was trained with --router-balance 2, now --router-balance 1") !=
          std::string::npos);
    Run same = run(common + " --resume --router-balance 1 --steps 7");
    INFO(same.out);
    REQUIRE(same.rc == 0);
    CHECK(same.out.find("resuming at step 6") != std::string::npos);
    CHECK(same.out.find("note: the run was trained with") == std::string::npos);
    drop_checkpoints_after(dir, 6);
    std::remove((tag + "_kept.jsonl").c_str());
    Run kept = run(common + " --resume --log " + tag + "_kept.jsonl");
    INFO(kept.out);
    REQUIRE(kept.rc == 0);
    CHECK(kept.out.find("resuming at step 6") != std::string::npos);
    CHECK(kept.out.find("note: the run was trained with") == std::string::npos);
    CHECK(number_after(slurp(tag + "_kept.jsonl"), "\"router_balance\": ") == 1);
    // a training state of version 4 records no gain: the controller is off, and said to be
    drop_checkpoints_after(dir, 4);
    const std::string state = dir + "/step_00000004.state";
    const std::string v5 = slurp(state);
    patch_file(state, 8 * 1, (int64_t)4);
    patch_file(state, 8 * 26, (int64_t)0);
    Run old = run(common + " --resume --log " + tag + "_old.jsonl");
    INFO(old.out);
    REQUIRE(old.rc == 0);
    CHECK(old.out.find("resuming at step 4") != std::string::npos);
    CHECK(old.out.find("does not record --router-balance") != std::string::npos);
    CHECK(old.out.find("--router-balance 2 holds each expert at") != std::string::npos);
    CHECK(read_log(tag + "_old.jsonl")[5].count("rate_err_0") == 0);
    // a damaged gain is refused, naming it, and the checkpoint skipped
    drop_checkpoints_after(dir, 4);
    write_bytes(state, v5);
    patch_file(state, 8 * 26, (int64_t)0xbf800000);  // float -1
    Run bad = run(common + " --resume");
    INFO(bad.out);
    CHECK(bad.out.find("skipping the checkpoint of step 4") != std::string::npos);
    CHECK(bad.out.find("the --router-balance it trained with is -1 (slot 26)") != std::string::npos);
    CHECK(bad.out.find("resuming at step 2") != std::string::npos);  // the one before it
}

// The step rows' value of key, as a number.
static double log_number(LogRows& rows, int step, const char* key) {
    REQUIRE_MESSAGE(rows[step].count(key) == 1, "step ", step, " lacks ", key);
    return std::atof(rows[step][key].c_str());
}

TEST_CASE("distillation: the objective's weight as the gradient shows it; the logged loss stays the cross-entropy") {
    mot_checkpoint("build/tk_mot.ckpt");
    const std::string base = DATA + MODEL + " --load build/tk_mot.ckpt --val-every 0 --steps 1 --lr 1e-2";
    auto step1 = [&](const std::string& extra, const std::string& log) {
        std::remove(log.c_str());
        Run r = run(base + extra + " --log " + log);
        INFO(r.out);
        REQUIRE(r.rc == 0);
        LogRows rows = read_log(log);
        REQUIRE(rows.count(1) == 1);
        return rows;
    };
    LogRows plain = step1("", "build/tk_d_plain.jsonl");
    // from the model itself at weight 1 the two distributions are the same floats: the gradient is zero exactly
    LogRows self = step1(" --distill build/tk_mot.ckpt --distill-weight 1", "build/tk_d_self1.jsonl");
    CHECK(log_number(self, 1, "grad_norm") == 0.0);
    CHECK(self[1]["loss"] == plain[1]["loss"]);
    // at weight w the teacher's part cancels that fraction of the cross-entropy's gradient
    LogRows half = step1(" --distill build/tk_mot.ckpt --distill-weight 0.25", "build/tk_d_self025.jsonl");
    CHECK(log_number(half, 1, "grad_norm") ==
          doctest::Approx(0.75 * log_number(plain, 1, "grad_norm")).epsilon(1e-5));
    CHECK(half[1]["loss"] == plain[1]["loss"]);
    CHECK(number_after(slurp("build/tk_d_self025.jsonl"), "\"distill_weight\": ") == 0.25);
    CHECK(number_after(slurp("build/tk_d_plain.jsonl"), "\"distill_weight\": ") == 0);
    // another teacher (the model trained further) pulls elsewhere: neither zero nor the plain gradient
    Run more = run(DATA + MODEL + " --load build/tk_mot.ckpt --val-every 0 --steps 10 --lr 1e-2 --save build/tk_mot_more.ckpt");
    REQUIRE(more.rc == 0);
    LogRows other = step1(" --distill build/tk_mot_more.ckpt --distill-weight 1", "build/tk_d_other.jsonl");
    CHECK(log_number(other, 1, "grad_norm") > 0);
    CHECK(log_number(other, 1, "grad_norm") != doctest::Approx(log_number(plain, 1, "grad_norm")).epsilon(1e-3));
    // a transition distills from the MoT model it came from: same forward, another gradient
    const std::string tr = " --transition token-choice --capacity-factor 4";
    LogRows tplain = step1(tr, "build/tk_d_tplain.jsonl");
    LogRows tdist = step1(tr + " --distill build/tk_mot.ckpt", "build/tk_d_tdist.jsonl");
    CHECK(tdist[1]["loss"] == tplain[1]["loss"]);
    CHECK(tdist[1]["grad_norm"] != tplain[1]["grad_norm"]);
}

TEST_CASE("distillation resumes bit for bit with its teacher, and not without it") {
    mot_checkpoint("build/tk_mot.ckpt");
    check_resume("build/tkd", "cpu", 1, " --distill build/tk_mot.ckpt --distill-weight 0.5");
    // the same checkpoints, resumed without the teacher: refused, naming what is missing
    const std::string dir = "build/tkd_resume1_ckpt";
    REQUIRE(exists(dir + "/step_00000010.state"));
    Run r = run("--data build/tkd_small.bin --val-data build/tkd_val.bin --steps 20 --checkpoint-dir " + dir +
                TINY_MODEL + " --device cpu --resume");
    expect_error(r, {"distilled from a teacher", "--distill-weight 0.5", "give --distill"});
}

TEST_CASE("distillation refuses what it cannot do") {
    mot_checkpoint("build/tk_mot.ckpt");
    const std::string base = DATA + MODEL + " --val-every 0 --steps 1";
    expect_error(run(base + " --distill-weight 0.5"), {"--distill-weight needs --distill"});
    expect_error(run(base + " --distill build/tk_missing.ckpt"), {"build/tk_missing.ckpt"});
    expect_error(run(base + " --distill build/tk_mot.ckpt --distill-weight 0"), {"--distill-weight 0"});
    // another vocabulary: nothing to compare token by token
    Run v = run(DATA + " --vocab 300 --layers 2 --heads 2 --d-model 16 --experts 4 --group 2 --batch 4 --seq 8"
                " --device cpu --sample-every 0 --val-every 0 --steps 1 --save build/tk_v300.ckpt");
    REQUIRE(v.rc == 0);
    expect_error(run(base + " --distill build/tk_v300.ckpt"), {"--distill build/tk_v300.ckpt", "300 tokens", "257"});
    // a MoT teacher mixes groups of its G rows: the batch must hold whole groups
    expect_error(run(base + " --ffn dense --batch 3 --distill build/tk_mot.ckpt"),
                 {"--distill build/tk_mot.ckpt", "--batch 3", "group 2"});
}

TEST_CASE("--load of a threshold-routed model without --router-balance says that AdamW trains the biases") {
    mot_checkpoint("build/tk_mot.ckpt");
    Run sw = run(DATA + MODEL + " --load build/tk_mot.ckpt --transition token-choice --steps 0 --val-every 0"
                 " --save build/tk_bal_load.ckpt");
    INFO(sw.out);
    REQUIRE(sw.rc == 0);
    const std::string load = DATA + MODEL + " --load build/tk_bal_load.ckpt --steps 1 --val-every 0";
    Run plain = run(load);
    INFO(plain.out);
    REQUIRE(plain.rc == 0);
    CHECK(plain.out.find("note: build/tk_bal_load.ckpt has threshold-routed token-choice layers") != std::string::npos);
    CHECK(plain.out.find("--router-balance 2 holds each expert at a firing rate of 1/2") != std::string::npos);
    for (const char* eta : {" --router-balance 0", " --router-balance 2"}) {
        Run r = run(load + eta);
        INFO(r.out);
        REQUIRE(r.rc == 0);
        CHECK(r.out.find("has threshold-routed token-choice layers") == std::string::npos);
    }
    // a softmax-routed model has no biases to hold: no note
    Run tc = run(DATA + MODEL + " --ffn token-choice --val-every 0 --steps 1 --save build/tk_bal_soft.ckpt");
    REQUIRE(tc.rc == 0);
    Run soft = run(DATA + MODEL + " --load build/tk_bal_soft.ckpt --steps 1 --val-every 0");
    INFO(soft.out);
    REQUIRE(soft.rc == 0);
    CHECK(soft.out.find("--router-balance") == std::string::npos);
}

TEST_CASE("--router-balance is refused without a threshold router or without token-choice layers") {
    mot_checkpoint("build/tk_mot.ckpt");
    expect_error(DATA + MODEL + " --load build/tk_mot.ckpt --transition token-choice --router softmax --topk 1"
                 " --router-balance 1 --steps 2",
                 {"--router-balance", "the router is softmax"});
    expect_error(DATA + MODEL + " --ffn token-choice --router-balance 1 --steps 2",
                 {"--router-balance", "the router is softmax"});
    expect_error(DATA + MODEL + " --router-balance 1 --steps 2",
                 {"--router-balance applies to token-choice layers", "--ffn mot has none"});
    expect_error(DATA + MODEL + " --load build/tk_mot.ckpt --router-balance 1 --steps 2",
                 {"--router-balance applies to token-choice layers", "build/tk_mot.ckpt has none"});
    // a loaded token-choice model whose router is softmax (its header's)
    Run tc = run(DATA + MODEL + " --ffn token-choice --val-every 0 --steps 1 --save build/tk_soft.ckpt");
    REQUIRE(tc.rc == 0);
    expect_error(DATA + MODEL + " --load build/tk_soft.ckpt --router-balance 1 --steps 2",
                 {"--router-balance", "build/tk_soft.ckpt", "softmax"});
    // a threshold router trained from scratch takes it (its target is 1/--group)
    Run ok = run(DATA + MODEL + " --ffn token-choice --router threshold --topk 2 --router-balance 1 --val-every 0"
                 " --steps 2");
    INFO(ok.out);
    CHECK(ok.rc == 0);
    expect_error(DATA + MODEL + " --ffn token-choice --router threshold --router-balance -1 --steps 2",
                 {"--router-balance"});
}

TEST_CASE("transition and discrete MoT refuse what they cannot do") {
    mot_checkpoint("build/tk_mot.ckpt");
    expect_error(DATA + MODEL + " --transition token-choice --steps 2", {"--transition", "--load"});
    Run d = run(DATA + MODEL + " --ffn dense --val-every 0 --steps 2 --save build/tk_dense.ckpt");
    REQUIRE(d.rc == 0);
    expect_error(DATA + MODEL + " --load build/tk_dense.ckpt --transition token-choice --steps 2", {"no MoT layer"});
    expect_error("eval --load build/tk_dense.ckpt --data build/tk_val.bin --batch 4 --seq 8 --mot-discrete",
                 {"--mot-discrete", "no MoT layer"});
    expect_error(DATA + MODEL + " --ffn token-choice --topk 5 --steps 2", {"--topk 5", "--experts 4"});
}

TEST_CASE("discrete MoT: eval and sample run with one-hot mixing, and differ from soft MoT") {
    mot_checkpoint("build/tk_mot.ckpt");
    std::string e = "eval --load build/tk_mot.ckpt --data build/tk_val.bin --batch 4 --seq 8 --batches 4 --device cpu";
    Run soft = run(e), hard = run(e + " --mot-discrete");
    INFO(soft.out << hard.out);
    REQUIRE(soft.rc == 0);
    REQUIRE(hard.rc == 0);
    CHECK(hard.out.find("discrete MoT") != std::string::npos);
    double ls = number_after(soft.out, ": loss "), lh = number_after(hard.out, ": loss ");
    CHECK(std::isfinite(lh));
    CHECK(lh != ls);
    Run s = run("sample --load build/tk_mot.ckpt --mot-discrete --length 10");
    INFO(s.out);
    CHECK(s.rc == 0);
}
