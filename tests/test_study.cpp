// The study (make reproduce: study/reproduce.sh and build/study) at its
// smallest: one toy size, a few steps, the whole protocol (learning-rate
// grid, dense, MoT at two granularities in every layer and in the second
// half, token choice, a transition), then the table. The numbers in
// results.json are checked against the run logs they come from, and a second
// invocation must redo nothing; a stopped run must continue from its
// checkpoint. The study's programs come from the environment as in
// tests/program.h (MOT_TRAIN_MOT; MOT_PREPARE and MOT_STUDY under CTest).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/data_path.h"
#include "common/fileio.h"
#include "common/jsonl.h"
#include "tests/program.h"
#include "tests/train_checks.h"

// the text, found as the program finds it (common/data_path.h: MOT_DATA, else data/, ...)
static const std::string TEXT = data_path("tinyshakespeare.txt");

// The driver at QUICK scale with one size S (2 layers, d_model 32, d_ff 128),
// STEPS steps per run, into out: the protocol's short phase (steps 1-3), whose
// runs the cases below count; the long phase is the same runs at other rates.
static Run study(const std::string& out, int steps, const std::string& grid, const std::string& taus,
                 const std::string& env = "") {
    REQUIRE_MESSAGE(!TEXT.empty(), "tinyshakespeare.txt not found in ", data_dirs_text(),
                    ": put it at data/tinyshakespeare.txt (README's set-up) or set MOT_DATA");
    return run_cmd("QUICK=1 SIZES=S STEPS_S=" + std::to_string(steps) + " VOCAB=512 PHASES=short LR_WIDEN=0 LR_GRID='" + grid + "' TAUS='" +
                   taus + "' TEXT='" + TEXT + "' OUT=" + out + " " + env + " study/reproduce.sh");
}

// results.json: one object per line (a JSON array of them, each line's
// object followed by a comma but the last), each field's value as written
// (strings without their quotes).
typedef std::map<std::string, std::string> Obj;
static std::map<std::string, Obj> read_results(const std::string& path) {
    std::map<std::string, Obj> runs;
    std::vector<std::string> lines = text_lines(slurp(path));
    for (size_t i = 0; i < lines.size(); i++) {
        std::string line = lines[i];
        if (line.find('{') == std::string::npos) continue;  // the array's brackets
        if (line.back() == ',') line.pop_back();
        Obj o;
        for (const auto& [key, value] : jsonl_parse(line, path, i + 1)) o[key] = value.text;
        REQUIRE(o.count("name"));
        CHECK_MESSAGE(!runs.count(o["name"]), "two objects for ", o["name"]);
        runs[o["name"]] = o;
    }
    return runs;
}

static double num(const Obj& o, const std::string& key) {
    REQUIRE_MESSAGE(o.count(key), o.at("name"), " lacks ", key);
    return o.at(key) == "null" ? NAN : std::stod(o.at(key));
}

// The validation losses of a run's log: step -> loss.
static std::map<int, double> val_losses(const std::string& log) {
    std::map<int, double> v;
    for (auto& [step, f] : read_log(log, true)) v[step] = std::stod(f.at("val_loss"));
    return v;
}

TEST_CASE("make reproduce at its smallest: every run of the protocol, the table from their logs, a rerun redoes nothing") {
    const std::string out = "build/study_test";
    run_cmd("rm -rf " + out);
    Run r = study(out, 20, "0.003 0.006", "1 0.1", "SEEDS='1337 1338'");
    INFO(r.out);
    REQUIRE(r.rc == 0);

    std::vector<std::string> names = {"S-dense", "S-tc32", "S-tc32k2", "S-transition", "S-transition-threshold-one",
                                      "S-transition-softmax", "S-transition-distill", "S-dense-s1338", "S-tc32-s1338", "S-tc32k2-s1338",
                                      "S-transition-s1338"};
    for (const char* fam : {"dense", "mot32", "mot256", "tc32", "tc32k2"})
        for (const char* lr : {"0.003", "0.006"}) names.push_back(std::string("S-lr-") + fam + "-" + lr);
    for (const char* fam : {"mot32", "mot256"})
        for (const char* where : {"all", "second-half"})
            for (const char* tau : {"1", "0.1"}) names.push_back(std::string("S-") + fam + "-" + where + "-t" + tau);
    std::map<std::string, Obj> res = read_results(out + "/results.json");
    CHECK(res.size() == names.size() + 1);  // and the best MoT run at the second seed
    for (const std::string& n : names) {
        REQUIRE_MESSAGE(res.count(n), "results.json lacks run ", n);
        CHECK(res[n]["finished"] == "true");
        for (const char* key : {"kind", "layers", "E", "G", "f", "tau", "top_k", "lr", "parameters", "flops_per_token",
                                "tokens_seen", "final_val_loss", "steps_to_dense_final", "wall_clock_to_dense_final_s",
                                "wall_clock_s", "seed", "setting"})
            CHECK_MESSAGE(res[n].count(key), n, " lacks ", key);
        // the final validation loss is the log's last one
        std::map<int, double> v = val_losses(out + "/runs/" + n + ".jsonl");
        REQUIRE(!v.empty());
        CHECK(num(res[n], "final_val_loss") == doctest::Approx(v.rbegin()->second).epsilon(1e-5));
        CHECK(num(res[n], "wall_clock_s") > 0);
    }
    CHECK(num(res["S-dense-s1338"], "seed") == 1338);
    CHECK(res["S-dense-s1338"]["setting"] == "S-dense");
    CHECK(num(res["S-dense-s1338"], "final_val_loss") != num(res["S-dense"], "final_val_loss"));
    // the grid runs at the main runs' length; a main run the grid already made is that run
    CHECK(num(res["S-lr-dense-0.003"], "tokens_seen") == 20 * 32 * 32);
    std::string dense_lr = num(res["S-lr-dense-0.003"], "final_val_loss") <= num(res["S-lr-dense-0.006"], "final_val_loss")
                               ? "0.003" : "0.006";
    CHECK(slurp(out + "/runs/S-dense.jsonl") == slurp(out + "/runs/S-lr-dense-" + dense_lr + ".jsonl"));
    // each transition decoded alone; the routers as named
    for (const char* t : {"S-transition", "S-transition-threshold-one", "S-transition-softmax", "S-transition-distill",
                          "S-transition-s1338"})
        CHECK_MESSAGE(num(res[t], "decode_val_loss") > 0, t);
    CHECK(res["S-transition"]["router"] == "threshold");
    CHECK(res["S-transition-threshold-one"]["router"] == "threshold-one");
    CHECK(res["S-transition-softmax"]["router"] == "softmax");
    CHECK(res["S-transition-distill"]["router"] == "threshold");
    CHECK(num(res["S-transition-distill"], "distill_weight") == 0.5);
    CHECK(num(res["S-transition"], "distill_weight") == 0);

    // the shapes of the protocol (d_ff 128 at size S)
    Obj &dense = res["S-dense"], &m32 = res["S-mot32-all-t0.1"], &m256 = res["S-mot256-second-half-t1"],
              &tc = res["S-tc32"];
    CHECK(dense["kind"] == "dense");
    CHECK(dense["layers"] == "none");
    CHECK(dense["E"] == "null");
    CHECK(num(dense, "tokens_seen") == 20 * 32 * 32);
    CHECK(m32["kind"] == "mot");
    CHECK(m32["layers"] == "all");
    CHECK((num(m32, "E") == 32 && num(m32, "G") == 32 && num(m32, "f") == 128 && num(m32, "tau") == 0.1));
    CHECK(m256["layers"] == "second-half");
    CHECK((num(m256, "E") == 256 && num(m256, "G") == 32 && num(m256, "f") == 16 && num(m256, "tau") == 1));
    CHECK(tc["kind"] == "token-choice");
    CHECK((num(tc, "E") == 32 && num(tc, "f") == 128 && num(tc, "top_k") == 1));
    CHECK(num(m32, "parameters") > num(dense, "parameters"));
    CHECK(num(tc, "flops_per_token") > num(dense, "flops_per_token"));  // the router
    CHECK(num(res["S-transition"], "tokens_seen") == 2 * 32 * 32);        // 10% more steps

    // each family trains at the rate of its best grid run
    for (const char* fam : {"dense", "mot32", "mot256", "tc32", "tc32k2"}) {
        std::string a = std::string("S-lr-") + fam + "-0.003", b = std::string("S-lr-") + fam + "-0.006";
        double best = num(res[a], "final_val_loss") <= num(res[b], "final_val_loss") ? 0.003 : 0.006;
        std::string f = fam;
        std::string main_run = f == "dense" ? "S-dense" : f.rfind("tc", 0) == 0 ? "S-" + f : "S-" + f + "-all-t1";
        CHECK_MESSAGE(num(res[main_run], "lr") == best, fam);
    }

    // steps to reach dense's final loss, recomputed from the logs
    double dense_final = val_losses(out + "/runs/S-dense.jsonl").rbegin()->second;
    std::string best_mot;
    for (const std::string& n : names) {
        if (res[n]["phase"] != "main" || res[n]["kind"] == "transition" || n.find("-s1338") != std::string::npos) continue;
        int first = -1;
        for (auto& [step, loss] : val_losses(out + "/runs/" + n + ".jsonl"))
            if (loss <= dense_final) { first = step; break; }
        double got = num(res[n], "steps_to_dense_final");
        CHECK_MESSAGE((first < 0 ? std::isnan(got) : got == first), n, ": ", got, " against ", first);
        if (res[n]["kind"] == "mot" && (best_mot.empty() || num(res[n], "final_val_loss") < num(res[best_mot], "final_val_loss")))
            best_mot = n;
    }
    CHECK(res["S-transition"]["from"] == best_mot);
    // the transitions go on at the rate their MoT run ended at, a tenth of its peak
    for (const char* t : {"S-transition", "S-transition-threshold-one", "S-transition-softmax", "S-transition-distill",
                          "S-transition-s1338"})
        CHECK_MESSAGE(num(res[t], "lr") == doctest::Approx(num(res[best_mot], "lr") / 10).epsilon(1e-6), t);
    CHECK(res.count(best_mot + "-s1338"));
    CHECK(res["S-transition-s1338"]["from"] == best_mot + "-s1338");
    // the transition starts from that model: its loss before the switch is the MoT run's last
    CHECK(num(res["S-transition"], "loss_before_switch") ==
          doctest::Approx(num(res[best_mot], "final_val_loss")).epsilon(1e-4));
    CHECK(num(res["S-transition"], "loss_at_switch") > 0);

    std::string md = slurp(out + "/results.md");
    CHECK(md.find("## Size S") != std::string::npos);
    CHECK(md.find("Learning-rate grid") != std::string::npos);
    CHECK(md.find("The headline runs at every seed (S)") != std::string::npos);
    CHECK(md.find("Transition tuning (S)") != std::string::npos);
    std::string png = slurp(out + "/loss.png");
    CHECK((png.size() > 1000 && png.substr(1, 3) == "PNG"));

    // a second invocation trains nothing and writes the same table
    std::string json = slurp(out + "/results.json");
    Run again = study(out, 20, "0.003 0.006", "1 0.1", "SEEDS='1337 1338'");
    INFO(again.out);
    REQUIRE(again.rc == 0);
    CHECK(again.out.find("(new)") == std::string::npos);
    CHECK(again.out.find("(--resume)") == std::string::npos);
    CHECK(slurp(out + "/results.json") == json);

    // a rerun with other settings into the same folder is refused: its runs would have been taken as done
    Run changed = study(out, 21, "0.003 0.006", "1 0.1", "SEEDS='1337 1338'");
    CHECK(changed.rc == 2);
    CHECK_MESSAGE(changed.out.find("ran with other settings") != std::string::npos, changed.out);
    CHECK(slurp(out + "/results.json") == json);

    // the same folder on other tokens is refused, and left as it was
    Run other = study(out, 20, "0.003 0.006", "1 0.1", "SEEDS='1337 1338' VOCAB=600");
    CHECK(other.rc == 2);
    CHECK_MESSAGE(other.out.find("holds runs on other tokens") != std::string::npos, other.out);
    CHECK(slurp(out + "/results.json") == json);

    // the time phase: each setting's model timed alone, the table's wall-clock from those timings
    Run timed = study(out, 20, "0.003 0.006", "1 0.1", "SEEDS='1337 1338' PHASES='short time' TIME_STEPS=5");
    INFO(timed.out);
    REQUIRE(timed.rc == 0);
    CHECK(timed.out.find("(new)") == std::string::npos);
    res = read_results(out + "/results.json");
    int timed_runs = 0;
    for (auto& [name, o] : res) {
        std::string setting = o["setting"];
        if (o["phase"] == "grid") {
            CHECK_MESSAGE(o["clock"] == "own", name);
            continue;
        }
        REQUIRE_MESSAGE(file_exists(out + "/times/" + setting + ".jsonl"), setting);
        CHECK(slurp(out + "/times/" + setting + ".meta").find("\nmachine ") != std::string::npos);
        std::vector<double> ms;  // the steps after the first two, as the report takes them
        for (auto& [step, f] : read_log(out + "/times/" + setting + ".jsonl", false))
            if (step > 2) ms.push_back(std::stod(f.at("ms")));
        REQUIRE(ms.size() == 3);
        std::sort(ms.begin(), ms.end());
        CHECK_MESSAGE(o["clock"] == "measured alone", name);
        CHECK_MESSAGE(num(o, "ms_per_step_median") == doctest::Approx(ms[1]).epsilon(1e-2), name);
        CHECK_MESSAGE(num(o, "wall_clock_s") == doctest::Approx(num(o, "steps") * ms[1] / 1000).epsilon(1e-3), name);
        timed_runs++;
    }
    CHECK(timed_runs == (int)res.size() - 10);  // every run but the grid's 10, transitions (from --load) included
    // timed once: a rerun measures nothing again
    Run timed_again = study(out, 20, "0.003 0.006", "1 0.1", "SEEDS='1337 1338' PHASES='short time' TIME_STEPS=5");
    CHECK(timed_again.rc == 0);
    CHECK_MESSAGE(timed_again.out.find("timing ") == std::string::npos, timed_again.out);

    // the long phase into the same folder: only its runs train (dense and the best MoT at each of their
    // rates, token choice at its one, then dense and the MoT at their best rates at the other seed), the
    // tables list them, and the plot draws them in a row of their own
    const std::string png_before = slurp(out + "/loss.png");
    Run longer = study(out, 20, "0.003 0.006", "1 0.1",
                       "SEEDS='1337 1338' PHASES='short long' LONG_STEPS=20 LONG_LRS_DENSE='0.003 0.006' "
                       "LONG_LRS_MOT='0.006 0.003' LONG_LR_TC=0.006 LONG_SEEDS='1337 1338'");
    INFO(longer.out);
    REQUIRE(longer.rc == 0);
    size_t trained = 0;
    for (size_t at = longer.out.find("(new)"); at != std::string::npos; at = longer.out.find("(new)", at + 1)) trained++;
    CHECK(trained == 5 + 2);
    res = read_results(out + "/results.json");
    int long_runs = 0, other_seed = 0;
    for (auto& [name, o] : res)
        if (o["phase"] == "long") {
            long_runs++;
            CHECK_MESSAGE(o["finished"] == "true", name);
            CHECK_MESSAGE(num(o, "steps") == 20, name);
            if (num(o, "seed") == 1338) {
                other_seed++;
                CHECK(name.size() > 6);
                CHECK(name.substr(name.size() - 6) == "-s1338");
                CHECK(res.count(name.substr(0, name.size() - 6)));  // the same setting at the first seed
            }
        }
    CHECK(long_runs == 5 + 2);
    CHECK(other_seed == 2);
    const std::string long_md = slurp(out + "/results.md");
    size_t table = long_md.find("Long runs (S)"), at_seeds = long_md.find("Long runs at every seed (S)");
    REQUIRE(table != std::string::npos);
    REQUIRE(at_seeds != std::string::npos);
    auto table_rows = [&](size_t from) {  // the rows of the first table after `from`, its header first
        std::vector<std::string> rows;
        bool in = false;
        for (const std::string& line : text_lines(long_md.substr(from))) {
            if (line.rfind("| ", 0) == 0) rows.push_back(line), in = true;
            else if (in && line.rfind("|-", 0) != 0) break;
        }
        return rows;
    };
    CHECK(table_rows(table).size() == 1 + 5);  // the header, the runs at the first seed (the rule starts "|---")
    std::vector<std::string> seed_rows = table_rows(at_seeds);
    REQUIRE(seed_rows.size() == 1 + 2);
    for (size_t i = 1; i < seed_rows.size(); i++) CHECK(seed_rows[i].find("1337 ") != std::string::npos);
    CHECK(slurp(out + "/loss.png") != png_before);
}

TEST_CASE("a grid of learning rates widens past the edge that holds the best rate until it lies inside") {
    // The long phase alone (the short phase's grid uses the same function): dense at rates far too small
    // for 10 steps, so its best is the top edge every time and the rates double LR_WIDEN times; the MoT at
    // rates around its usual one, where either its best ends inside or the widening ran out.
    const std::string out = "build/study_test_widen";
    run_cmd("rm -rf " + out);
    const int widen = 2;
    Run r = study(out, 10, "0.003", "0.1",
                  "PHASES=long LONG_SEEDS=1337 LONG_STEPS=10 LR_WIDEN=" + std::to_string(widen) +
                      " LONG_LRS_DENSE='1e-05 2e-05' LONG_LRS_MOT='0.003 0.0015 0.006' LONG_LR_TC=0.003");
    INFO(r.out);
    REQUIRE(r.rc == 0);
    std::map<std::string, Obj> res = read_results(out + "/results.json");
    for (const std::string family : {"dense", "mot256"}) {
        const std::vector<double> given = family == "dense" ? std::vector<double>{1e-5, 2e-5}
                                                            : std::vector<double>{0.003, 0.0015, 0.006};
        std::vector<std::pair<double, double>> rate_loss;  // (rate, final validation loss), each long run of the family
        for (auto& [name, o] : res)
            if (o["phase"] == "long" && name.rfind("S-long-" + family + "-lr", 0) == 0)
                rate_loss.push_back({num(o, "lr"), num(o, "final_val_loss")});
        std::sort(rate_loss.begin(), rate_loss.end());
        REQUIRE(rate_loss.size() >= given.size());
        size_t best = 0;
        for (size_t i = 0; i < rate_loss.size(); i++)
            if (rate_loss[i].second < rate_loss[best].second) best = i;
        const bool inside = best > 0 && best + 1 < rate_loss.size();
        const size_t added = rate_loss.size() - given.size();
        CHECK_MESSAGE((inside || added == (size_t)widen), family, ": best rate ", rate_loss[best].first,
                      " at an edge after ", added, " widenings");
        CHECK(added <= (size_t)widen);
        // every rate beyond the given ones lies a factor 2 beyond its neighbour towards them
        const double lo = *std::min_element(given.begin(), given.end()), hi = *std::max_element(given.begin(), given.end());
        for (size_t i = 0; i < rate_loss.size(); i++) {
            const double lr = rate_loss[i].first;
            if (lr < lo) CHECK(rate_loss[i + 1].first == doctest::Approx(2 * lr));
            if (lr > hi) CHECK(lr == doctest::Approx(2 * rate_loss[i - 1].first));
        }
        const std::string line = "reproduce: S long " + family + ": best lr ";
        size_t at = r.out.find(line);
        REQUIRE(at != std::string::npos);
        CHECK(std::stod(r.out.substr(at + line.size())) == doctest::Approx(rate_loss[best].first));
        if (family == "dense") {  // too small everywhere: doubled at the top each time
            REQUIRE(rate_loss.size() == given.size() + widen);
            CHECK(rate_loss.back().first == doctest::Approx(2e-5 * (1 << widen)));
            CHECK(best == rate_loss.size() - 1);
        }
    }
}

TEST_CASE("a stopped run continues from its checkpoint; a transition resumes without --load") {
    // The program behind a wrapper that stops the transition the first time,
    // as an interrupt would: 2 of its 4 steps (checkpointed every step), then
    // exit status 130.
    const std::string out = "build/study_resume", wrapper = "build/study_resume_wrapper.sh";
    run_cmd("rm -rf " + out + " " + out + ".stopped");
    std::string prog = train_mot_path();
    write_file_atomic(wrapper, "#!/bin/sh\n"
                               "case \" $* \" in *' --transition '*)\n"
                               "  if [ ! -e " + out + ".stopped ]; then touch " + out + ".stopped\n"
                               "    for a; do shift; if [ \"$prev\" = --steps ]; then a=2; fi; set -- \"$@\" \"$a\"; prev=$a; done\n"
                               "    " + prog + " \"$@\"; exit 130; fi ;;\n"
                               "esac\nexec " + prog + " \"$@\"\n");
    run_cmd("chmod +x " + wrapper);
    Run r = study(out, 40, "0.006", "1", "SEEDS=1337 MOT_TRAIN_MOT=" + wrapper);
    INFO(r.out);
    REQUIRE(r.rc == 130);
    CHECK(r.out.find("S-transition stopped (exit status 130)") != std::string::npos);
    CHECK(!file_exists(out + "/runs/S-transition.done"));
    CHECK(!file_exists(out + "/results.json"));

    Run again = study(out, 40, "0.006", "1", "SEEDS=1337 MOT_TRAIN_MOT=" + wrapper);
    INFO(again.out);
    REQUIRE(again.rc == 0);
    // the stopped transition resumed from its checkpoint, without --load; what started anew are
    // only the three transitions that come after it
    for (size_t p = 0; (p = again.out.find("(new)", p)) != std::string::npos; p++) {
        size_t bol = again.out.rfind('\n', p) + 1;
        std::string l = again.out.substr(bol, p - bol);
        CHECK_MESSAGE((l == "reproduce: S-transition-threshold-one " || l == "reproduce: S-transition-softmax " ||
                       l == "reproduce: S-transition-distill "),
                      l);
    }
    std::string line = after(again.out, "reproduce: S-transition (--resume):");
    CHECK(!line.empty());
    CHECK(line.find("--load") == std::string::npos);
    CHECK(line.find("--transition") == std::string::npos);
    // its log: one run row, and each step once
    LogRows rows = read_log(out + "/runs/S-transition.jsonl");
    CHECK(rows.size() == 5);  // the transition's loss at the switch (step 0), steps 1..4
    for (int s = 1; s <= 4; s++) CHECK_MESSAGE(rows.count(s), "step ", s);
    size_t n_run_rows = 0;
    for (const JsonRow& row : jsonl_read(out + "/runs/S-transition.jsonl")) n_run_rows += row.count("params");
    CHECK(n_run_rows == 1);
    std::map<std::string, Obj> res = read_results(out + "/results.json");
    CHECK(res.size() == 16);  // 5 grid runs, 4 MoT main runs, 3 promoted from the grid, 4 transitions
    CHECK(num(res["S-transition"], "tokens_seen") == 4 * 32 * 32);
}

// reproduce.sh's default text mirrors common/data_path.h: MOT_DATA alone
// when set (from the caller's folder), the novels before tinyshakespeare.
// Both cases stop before training (a text that is not there, a folder
// without texts), so the messages show which default was taken.
TEST_CASE("the study's default text comes from the data folder (MOT_DATA)") {
    run_cmd("rm -rf build/study_bad build/study_data && mkdir -p build/study_data");
    Run r = run_cmd("cd build && QUICK=1 MOT_DATA=study_data OUT=study_bad ../study/reproduce.sh");
    CHECK(r.rc == 2);
    CHECK_MESSAGE(r.out.find("/build/study_data/tinyshakespeare.txt: no such file or folder") != std::string::npos,
                  r.out);
    run_cmd("mkdir -p build/study_data/novels && touch build/study_data/tinyshakespeare.txt");
    r = run_cmd("QUICK=1 MOT_DATA=build/study_data/ OUT=build/study_bad study/reproduce.sh");
    CHECK(r.rc == 2);
    CHECK_MESSAGE(r.out.find("/build/study_data/novels: a folder without .txt files") != std::string::npos, r.out);
    CHECK(!file_exists("build/study_bad"));
    run_cmd("rm -rf build/study_data");
}

TEST_CASE("the study refuses bad settings before it writes anything") {
    run_cmd("rm -rf build/study_bad");
    Run r = run_cmd("QUICK=1 TEXT=build/no_such_text.txt OUT=build/study_bad study/reproduce.sh");
    CHECK(r.rc == 2);
    CHECK_MESSAGE(r.out.find("TEXT=build/no_such_text.txt: no such file or folder") != std::string::npos, r.out);
    CHECK(!file_exists("build/study_bad"));
    r = run_cmd("QUICK=2 OUT=build/study_bad study/reproduce.sh");
    CHECK(r.rc == 2);
    CHECK_MESSAGE(r.out.find("QUICK=2") != std::string::npos, r.out);
    CHECK(!file_exists("build/study_bad"));
    // each was accepted before, and failed late (unbound variables after the slow prepare) or wrote
    // 0-step runs with -nan into the table
    for (auto [env, needle] : {std::pair{"STEPS_S=0", "STEPS_S=0: give a whole number of at least 10"},
                               {"STEPS_S=abc", "STEPS_S=abc"}, {"STEPS_S=-5", "STEPS_S=-5"},
                               {"SIZES=XS", "unknown size 'XS'"}, {"SIZES='S;x'", "unknown size 'S;x'"},
                               {"LR_GRID=0", "LR_GRID=0: give positive numbers"}, {"TAUS=abc", "TAUS=abc"},
                               {"PHASES=foo", "unknown phase 'foo'"}, {"SEEDS=1.5", "SEEDS=1.5"}}) {
        r = run_cmd(std::string("QUICK=1 ") + env + " OUT=build/study_bad study/reproduce.sh");
        CHECK_MESSAGE(r.rc == 2, env);
        CHECK_MESSAGE(r.out.find(needle) != std::string::npos, env, ": ", r.out);
        CHECK(!file_exists("build/study_bad"));
    }
}
