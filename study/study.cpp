// build/study: the bookkeeping of the MoT-against-dense study
// (study/reproduce.sh runs the training; this reads what the runs logged).
//
//   study final LOG           the last validation loss in a train_mot --log file
//   study best DIR PREFIX     the finished run DIR/PREFIX*.jsonl (main phase)
//                             with the lowest final validation loss
//   study report OUT          OUT/results.json, OUT/results.md and OUT/loss.png
//                             from the runs in OUT/runs (and a transition's
//                             NAME.decode: its loss decoding each sequence alone)
//
// A run is DIR/NAME.jsonl (its log: the first row describes the run, then a
// row per step and per validation) with DIR/NAME.meta (size, family, phase,
// the command) and DIR/NAME.done once it finished. Wall-clock is training
// time, without the validations and checkpoints, so it compares the models'
// speed: steps times the step time of the run's model measured alone
// (OUT/times/SETTING.jsonl, a short run of that model with nothing else
// running: its median step after the first two), or, for a run with none,
// the sum of its own steps' times (the "ms" of each train row), which
// counts whatever else the machine did meanwhile.
#include <glob.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/fileio.h"
#include "common/jsonl.h"
#include "train/plot.h"

using Row = std::map<std::string, double>;

// The numeric fields of a log row (null ones left out).
static Row numbers_of(const JsonRow& row) {
    Row numbers;
    for (const auto& [key, value] : row)
        if (value.kind == JsonValue::NUMBER) numbers[key] = value.number;
    return numbers;
}

struct ValPoint {
    int step;
    double loss;
    double seconds;  // training time up to this step
};

struct RunLog {
    std::string name;
    std::map<std::string, std::string> meta;  // size, family, phase, command
    Row header;                               // the log's first row
    std::vector<ValPoint> val;
    int steps_done = 0;
    double train_seconds = 0, median_ms = 0;
    bool timed_alone = false;  // train_seconds, median_ms and val's seconds from the step time measured alone
    bool done = false;
    double loss_before_switch = NAN, loss_at_switch = NAN;  // a transition: its MoT model's loss, then routed
    double decode_loss = NAN;  // NAME.decode: validation loss decoding each sequence alone (eval --decode)
    double final_val() const { return val.empty() ? NAN : val.back().loss; }
    // the loss of the first validation at or after step (NaN: none)
    double val_at(double step) const {
        for (const ValPoint& v : val)
            if (v.step >= step) return v.loss;
        return NAN;
    }
};

// The upper median of v (not empty): the step time a report quotes.
static double median(std::vector<double> v) {
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
}

static RunLog read_run(const std::string& log_path) {
    RunLog r;
    std::string base = log_path.substr(0, log_path.rfind(".jsonl"));
    r.name = base.substr(base.find_last_of('/') + 1);
    r.done = file_exists(base + ".done");
    if (file_exists(base + ".decode")) r.decode_loss = std::strtod(read_file(base + ".decode", "decode loss").c_str(), nullptr);
    if (file_exists(base + ".meta")) {
        std::string text = read_file(base + ".meta", "run description");
        size_t pos = 0;
        while (pos < text.size()) {
            size_t nl = text.find('\n', pos);
            std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
            pos = nl == std::string::npos ? text.size() : nl + 1;
            size_t sp = line.find(' ');
            if (sp != std::string::npos) r.meta[line.substr(0, sp)] = line.substr(sp + 1);
        }
    }
    std::map<int, double> ms;  // step -> its time (a resumed run logs each step once)
    std::vector<std::pair<int, double>> val;
    for (const JsonRow& json : jsonl_read(log_path)) {  // without a row still being written (a run going or killed)
        Row row = numbers_of(json);
        if (!row.count("step")) continue;
        int step = (int)row["step"];
        if (row.count("params")) r.header = row;
        else if (row.count("transition_loss"))
            r.loss_before_switch = row["transition_mot_loss"], r.loss_at_switch = row["transition_loss"];
        else if (row.count("val_loss")) val.push_back({step, row["val_loss"]});
        else if (row.count("ms")) ms[step] = row["ms"];
    }
    std::vector<double> times;
    double sum = 0;
    auto it = ms.begin();
    for (auto& [step, loss] : val) {
        for (; it != ms.end() && it->first <= step; ++it) sum += it->second / 1000;
        r.val.push_back({step, loss, sum});
    }
    for (auto& [step, t] : ms) times.push_back(t), r.steps_done = std::max(r.steps_done, step);
    r.train_seconds = 0;
    for (double t : times) r.train_seconds += t / 1000;
    if (!times.empty()) r.median_ms = median(times);
    // a stored run (docs/study/runs holds finished runs only, without NAME.done) is finished
    // when its log reaches the steps of its description
    if (!r.done && r.meta.count("steps")) r.done = r.steps_done > 0 && r.steps_done >= std::stoi(r.meta.at("steps"));
    return r;
}

static std::vector<std::string> glob_paths(const std::string& pattern) {
    glob_t g{};
    std::vector<std::string> out;
    if (glob(pattern.c_str(), 0, nullptr, &g) == 0)
        for (size_t i = 0; i < g.gl_pathc; i++) out.push_back(g.gl_pathv[i]);
    globfree(&g);
    return out;
}

static std::vector<RunLog> read_runs(const std::string& dir) {
    std::vector<RunLog> runs;
    for (const std::string& p : glob_paths(dir + "/*.jsonl")) runs.push_back(read_run(p));
    return runs;
}

// A run at another seed than its setting's first is named SETTING-sSEED.
static std::string setting_of(const std::string& name) {
    size_t p = name.rfind("-s");
    if (p == std::string::npos || p + 2 == name.size()) return name;
    for (size_t i = p + 2; i < name.size(); i++)
        if (name[i] < '0' || name[i] > '9') return name;
    return name.substr(0, p);
}

// The median time of a step after the first two in a timing log (NaN: fewer
// than three steps).
static double median_step_ms(const std::string& log) {
    std::vector<double> ms;
    for (const JsonRow& json : jsonl_read(log)) {
        Row row = numbers_of(json);
        if (row.count("step") && row.count("ms") && !row.count("params") && row["step"] > 2) ms.push_back(row["ms"]);
    }
    return ms.empty() ? NAN : median(ms);
}

// Gives each run that has a timing of its model measured alone (DIR/NAME.jsonl,
// or its setting's, the same model at another seed) the wall-clock of its
// steps at that step time.
static void use_times_alone(std::vector<RunLog>* runs, const std::string& dir) {
    for (RunLog& r : *runs) {
        for (const std::string& name : {r.name, setting_of(r.name)}) {
            std::string log = dir + "/" + name + ".jsonl";
            if (!file_exists(log)) continue;
            double ms = median_step_ms(log);
            if (!std::isfinite(ms)) fail(strf("%s: a timing log with fewer than three steps", log.c_str()));
            r.timed_alone = true;
            r.median_ms = ms;
            r.train_seconds = r.steps_done * ms / 1000;
            for (ValPoint& v : r.val) v.seconds = v.step * ms / 1000;
            break;
        }
    }
}

static int cmd_final(const std::string& log) {
    RunLog r = read_run(log);
    if (r.val.empty()) fail(strf("%s: no validation rows", log.c_str()));
    std::printf("%.6f\n", r.final_val());
    return 0;
}

static int cmd_best(const std::string& dir, const std::string& prefix) {
    const RunLog* best = nullptr;
    std::vector<RunLog> runs = read_runs(dir);
    for (const RunLog& r : runs)
        if (r.done && r.name.rfind(prefix, 0) == 0 && setting_of(r.name) == r.name && r.meta.count("phase") &&
            r.meta.at("phase") == "main" && !r.val.empty() && (!best || r.final_val() < best->final_val()))
            best = &r;
    if (!best) fail(strf("%s: no finished run named %s*", dir.c_str(), prefix.c_str()));
    std::printf("%s\n", best->name.c_str());
    return 0;
}

// ---- the report ----

static std::string kind_of(const RunLog& r) {
    const std::string& fam = r.meta.at("family");
    if (fam == "transition") return "transition";
    return fam == "dense" ? "dense" : fam.rfind("mot", 0) == 0 ? "mot" : "token-choice";
}

// "all", "second-half" (the layers of the MoT or token-choice kind), "none"
static std::string layers_of(const RunLog& r) {
    double n = r.header.count("mot_layers") ? r.header.at("mot_layers") + r.header.at("token_choice_layers") : 0;
    double L = r.header.count("layers") ? r.header.at("layers") : 0;
    if (n == 0) return "none";
    if (n == L) return "all";
    return r.meta.at("command").find("second-half") != std::string::npos ? "second-half" : strf("%g of %g", n, L);
}

static std::string json_num(double x, const char* fmt = "%.6g") {
    return std::isfinite(x) ? strf(fmt, x) : std::string("null");
}

static std::string json_str(const std::string& s) {
    std::string o = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') o += '\\';
        if ((unsigned char)c < 0x20) { o += strf("\\u%04x", (unsigned)c); continue; }
        o += c;
    }
    return o + "\"";
}

// The first validation at which the run's loss is at or below target: its
// step and the training time until then (none: NaN).
static const ValPoint* first_reaching(const RunLog& r, double target) {
    for (const ValPoint& v : r.val)
        if (v.loss <= target) return &v;
    return nullptr;
}
static double steps_to_reach(const RunLog& r, double target) {
    const ValPoint* v = first_reaching(r, target);
    return v ? v->step : NAN;
}
static double seconds_to_reach(const RunLog& r, double target) {
    const ValPoint* v = first_reaching(r, target);
    return v ? v->seconds : NAN;
}

static double hv(const RunLog& r, const char* key) { return r.header.count(key) ? r.header.at(key) : NAN; }

// a token-choice layer's router, from the run row (logs from before routers: softmax)
static std::string router_of(const RunLog& r) {
    double k = r.header.count("router") ? r.header.at("router") : 0;
    return k == 1 ? "threshold" : k == 2 ? "threshold-one" : "softmax";
}

// --distill's weight (0: none; logs from before --distill have none)
static double distill_of(const RunLog& r) { return r.header.count("distill_weight") ? r.header.at("distill_weight") : 0; }

// the router, and the teacher when the run distilled
static std::string tuning_of(const RunLog& r) {
    return router_of(r) + (distill_of(r) > 0 ? strf(" + distill %g", distill_of(r)) : "");
}

struct Size {
    std::string name;
    double dense_final = NAN;
    int dense_steps = 0;
    double dense_seconds = NAN;  // the dense run's training time to its last validation
};

static std::vector<Size> sizes_of(const std::vector<RunLog>& runs) {
    std::vector<Size> sizes;
    for (const RunLog& r : runs) {
        std::string s = r.meta.count("size") ? r.meta.at("size") : "";
        auto it = std::find_if(sizes.begin(), sizes.end(), [&](const Size& z) { return z.name == s; });
        if (it == sizes.end()) sizes.push_back({s}), it = sizes.end() - 1;
        if (r.meta.count("family") && r.meta.at("family") == "dense" && r.meta.at("phase") == "main" && r.done)
            it->dense_final = r.final_val(), it->dense_steps = r.val.empty() ? 0 : r.val.back().step,
            it->dense_seconds = r.val.empty() ? NAN : r.val.back().seconds;
    }
    // smallest model first
    auto width = [&](const Size& z) {
        for (const RunLog& r : runs)
            if (r.meta.count("size") && r.meta.at("size") == z.name && r.header.count("d_model"))
                return r.header.at("d_model") * 1e6 + (r.header.count("layers") ? r.header.at("layers") : 0);
        return 0.0;
    };
    std::stable_sort(sizes.begin(), sizes.end(), [&](const Size& a, const Size& b) { return width(a) < width(b); });
    return sizes;
}

static std::string results_json(const std::vector<RunLog>& runs, const std::vector<Size>& sizes) {
    std::string js = "[\n";
    bool first = true;
    for (const RunLog& r : runs) {
        const Size& z = *std::find_if(sizes.begin(), sizes.end(), [&](const Size& s) { return s.name == r.meta.at("size"); });
        bool sparse = kind_of(r) != "dense";
        bool compared = r.meta.at("phase") == "main" && kind_of(r) != "transition";
        double steps_to = compared ? steps_to_reach(r, z.dense_final) : NAN;
        double seconds_to = compared ? seconds_to_reach(r, z.dense_final) : NAN;
        js += first ? "  {" : ",\n  {";
        first = false;
        js += "\"name\": " + json_str(r.name) + ", \"setting\": " + json_str(setting_of(r.name)) +
              ", \"seed\": " + (r.meta.count("seed") ? r.meta.at("seed") : std::string("null")) +
              ", \"size\": " + json_str(z.name) + ", \"phase\": " +
              json_str(r.meta.at("phase")) + ", \"family\": " + json_str(r.meta.at("family")) +
              ", \"kind\": " + json_str(kind_of(r)) + ", \"layers\": " + json_str(layers_of(r));
        if (r.meta.count("from")) js += ", \"from\": " + json_str(r.meta.at("from"));
        js += ", \"n_layers\": " + json_num(hv(r, "layers")) + ", \"d_model\": " + json_num(hv(r, "d_model")) +
              ", \"d_ff\": " + json_num(hv(r, "d_ff")) + ", \"seq\": " + json_num(hv(r, "seq"));
        js += ", \"E\": " + (sparse ? json_num(hv(r, "experts")) : "null") +
              ", \"G\": " + (kind_of(r) == "mot" ? json_num(hv(r, "group")) : "null") +
              ", \"f\": " + (sparse ? json_num(hv(r, "expert_size")) : "null") +
              ", \"tau\": " + (kind_of(r) == "mot" ? json_num(hv(r, "temperature")) : "null") +
              ", \"top_k\": " + (kind_of(r) == "token-choice" || kind_of(r) == "transition" ? json_num(hv(r, "topk")) : "null");
        js += ", \"lr\": " + json_num(hv(r, "peak_lr")) + ", \"parameters\": " + json_num(hv(r, "params"), "%.0f") +
              ", \"flops_per_token\": " + json_num(hv(r, "flops_per_token"), "%.0f") +
              ", \"steps\": " + json_num(r.steps_done) +
              ", \"tokens_seen\": " + json_num(r.steps_done * hv(r, "tokens_per_step"), "%.0f") +
              ", \"final_val_loss\": " + json_num(r.final_val()) +
              ", \"loss_before_switch\": " + json_num(r.loss_before_switch) +
              ", \"loss_at_switch\": " + json_num(r.loss_at_switch) +
              ", \"router\": " + (kind_of(r) == "token-choice" || kind_of(r) == "transition" ? json_str(router_of(r)) : "null") +
              ", \"distill_weight\": " + json_num(distill_of(r)) +
              ", \"val_loss_after_2pct\": " + json_num(kind_of(r) == "transition" ? r.val_at(r.steps_done / 5.0) : NAN) +
              ", \"val_loss_after_5pct\": " + json_num(kind_of(r) == "transition" ? r.val_at(r.steps_done / 2.0) : NAN) +
              ", \"decode_val_loss\": " + json_num(r.decode_loss) +
              ", \"dense_final_val_loss\": " + json_num(z.dense_final) +
              ", \"steps_to_dense_final\": " + json_num(steps_to) +
              ", \"wall_clock_to_dense_final_s\": " + json_num(seconds_to, "%.4g") +
              ", \"wall_clock_s\": " + json_num(r.train_seconds, "%.4g") +
              ", \"ms_per_step_median\": " + json_num(r.median_ms, "%.2f") +
              ", \"clock\": " + json_str(r.timed_alone ? "measured alone" : "own") +
              ", \"finished\": " + (r.done ? "true" : "false") + "}";
    }
    return js + "\n]\n";
}

static std::string label_of(const RunLog& r) {
    std::string k = kind_of(r);
    if (k == "dense") return "dense";
    if (k == "transition")
        return strf("transition of %s to token choice, %s router, k %g%s (validation loss %.3f, at the switch %.3f)",
                    r.meta.count("from") ? r.meta.at("from").c_str() : "?", router_of(r).c_str(), hv(r, "topk"),
                    distill_of(r) > 0 ? strf(", distilled at weight %g", distill_of(r)).c_str() : "",
                    r.loss_before_switch, r.loss_at_switch);
    if (k == "token-choice") return strf("token choice top-%g, E %g, f %g", hv(r, "topk"), hv(r, "experts"), hv(r, "expert_size"));
    return strf("MoT E %g G %g f %g, tau %g, %s", hv(r, "experts"), hv(r, "group"), hv(r, "expert_size"),
                hv(r, "temperature"), layers_of(r).c_str());
}

static std::string results_md(const std::vector<RunLog>& runs, const std::vector<Size>& sizes) {
    std::string md = "# MoT against dense: results\n\n";
    md += "Validation loss in nats per token on the same held-out tokens for every run. *Steps to dense* is the "
          "first validation step at which the run's loss is at or below the dense run's final loss (of the same "
          "size), as a count and as a fraction of the dense run's steps; *time to dense* the training time until "
          "then, in minutes and as a fraction of the dense run's. Wall-clock (no validation or checkpoints): the "
          "steps times the median step of the run's model measured alone (times/, with the machine it ran on); "
          "a run marked * has no such timing and gives the sum of its own steps' times, which counts whatever "
          "else the machine did meanwhile.\n";
    for (const Size& z : sizes) {
        std::vector<const RunLog*> main, grid, longr, trans;
        std::map<std::string, std::vector<const RunLog*>> seeds;  // setting -> its runs at every seed
        for (const RunLog& r : runs) {
            if (r.meta.at("size") != z.name) continue;
            const std::string& ph = r.meta.at("phase");
            if (ph == "main" || ph == "long") seeds[setting_of(r.name)].push_back(&r);
            if (setting_of(r.name) != r.name) continue;  // another seed: in the seeds table
            (ph == "grid" ? grid : ph == "long" ? longr : main).push_back(&r);
            if (kind_of(r) == "transition") trans.push_back(&r);
        }
        if (main.empty() && grid.empty() && longr.empty()) continue;
        const RunLog* any = !main.empty() ? main[0] : !grid.empty() ? grid[0] : longr[0];
        md += strf("\n## Size %s: %g layers, d_model %g, d_ff %g, T %g, %g tokens per step\n\n", z.name.c_str(),
                   hv(*any, "layers"), hv(*any, "d_model"), hv(*any, "d_ff"), hv(*any, "seq"), hv(*any, "tokens_per_step"));
        std::stable_sort(main.begin(), main.end(), [](const RunLog* a, const RunLog* b) {
            bool da = kind_of(*a) == "dense", db = kind_of(*b) == "dense";
            if (da != db) return da;
            double fa = a->final_val(), fb = b->final_val();
            return std::isfinite(fa) && (!std::isfinite(fb) || fa < fb);
        });
        if (!main.empty())  // (the long phase alone has none)
            md += "| run | lr | params (M) | MFLOP/token | tokens (M) | final val loss | vs dense | steps to dense | "
                  "time to dense (min) | wall-clock (min) | ms/step |\n|---|---|---|---|---|---|---|---|---|---|---|\n";
        for (const RunLog* r : main) {
            double st = kind_of(*r) == "transition" ? NAN : steps_to_reach(*r, z.dense_final);
            double tt = kind_of(*r) == "transition" ? NAN : seconds_to_reach(*r, z.dense_final);
            std::string to = std::isfinite(st) ? strf("%g (%.2f)", st, st / z.dense_steps) : "—";
            std::string tto = std::isfinite(tt) ? strf("%.2f (%.2f)", tt / 60, tt / z.dense_seconds) : "—";
            if (kind_of(*r) == "transition") to = tto = "n/a";
            md += strf("| %s%s%s | %g | %.2f | %.2f | %.2f | %.4f | %+.4f | %s | %s | %.2f | %.1f |\n", label_of(*r).c_str(),
                       r->done ? "" : " (unfinished)", r->timed_alone ? "" : " *", hv(*r, "peak_lr"), hv(*r, "params") / 1e6,
                       hv(*r, "flops_per_token") / 1e6, r->steps_done * hv(*r, "tokens_per_step") / 1e6,
                       r->final_val(), r->final_val() - z.dense_final, to.c_str(), tto.c_str(), r->train_seconds / 60,
                       r->median_ms);
        }
        std::string seed_rows;
        const std::vector<const RunLog*>& dense_seeds = seeds[z.name + "-dense"];
        auto stats = [](const std::vector<const RunLog*>& rs, double* mean, double* lo, double* hi) {
            *mean = 0, *lo = 1e300, *hi = -1e300;
            for (const RunLog* r : rs) *mean += r->final_val() / rs.size(), *lo = std::min(*lo, r->final_val()),
                                       *hi = std::max(*hi, r->final_val());
        };
        double dmean = NAN, dlo, dhi;
        if (!dense_seeds.empty()) stats(dense_seeds, &dmean, &dlo, &dhi);
        // a row per run of `list` that ran at two seeds or more: against `ref`'s mean
        auto rows_at_seeds = [&](const std::vector<const RunLog*>& list, double ref) {
            std::string rows;
            for (const RunLog* r : list) {
                std::vector<const RunLog*> rs = seeds[r->name];
                if (rs.size() < 2) continue;
                auto seed_of = [](const RunLog* x) { return x->meta.count("seed") ? std::stol(x->meta.at("seed")) : -1L; };
                std::sort(rs.begin(), rs.end(), [&](const RunLog* a, const RunLog* b) { return seed_of(a) < seed_of(b); });
                double mean, lo, hi;
                stats(rs, &mean, &lo, &hi);
                std::string each;
                for (const RunLog* x : rs)
                    each += strf("%s%s %.4f", each.empty() ? "" : ", ",
                                 x->meta.count("seed") ? x->meta.at("seed").c_str() : "?", x->final_val());
                rows += strf("| %s | %g | %zu | %.4f | %.4f to %.4f | %+.4f | %s |\n", label_of(*r).c_str(),
                             hv(*r, "peak_lr"), rs.size(), mean, lo, hi, mean - ref, each.c_str());
            }
            return rows;
        };
        seed_rows = rows_at_seeds(main, dmean);
        if (!seed_rows.empty())
            md += strf("\nThe headline runs at every seed (%s): final validation loss, mean over the seeds, its range, "
                       "the mean against dense's mean, and each seed's\n\n| run | lr | seeds | mean | range | vs dense | "
                       "seed: loss |\n|---|---|---|---|---|---|---|\n%s",
                       z.name.c_str(), seed_rows.c_str());
        if (!trans.empty()) {
            md += strf("\nTransition tuning (%s): validation loss of the MoT model, of the routed model at the switch "
                       "and after 2%%, 5%% and 10%% more steps (of the MoT run's), and of the routed model decoding "
                       "each sequence alone (nothing dropped)\n\n| router | k | cf | before | at the switch | +2%% | +5%% | "
                       "+10%% | decoded alone |\n|---|---|---|---|---|---|---|---|---|\n",
                       z.name.c_str());
            for (const RunLog* r : trans)
                md += strf("| %s | %g | %g | %.4f | %.4f | %.4f | %.4f | %.4f | %s |\n", tuning_of(*r).c_str(),
                           hv(*r, "topk"), hv(*r, "capacity_factor"), r->loss_before_switch, r->loss_at_switch,
                           r->val_at(r->steps_done / 5.0), r->val_at(r->steps_done / 2.0), r->final_val(),
                           std::isfinite(r->decode_loss) ? strf("%.4f", r->decode_loss).c_str() : "—");
        }
        if (!grid.empty()) {
            md += strf("\nLearning-rate grid (%s, %d steps each): final validation loss\n\n| family | lr | final val loss |\n|---|---|---|\n",
                       z.name.c_str(), grid[0]->steps_done);
            for (const RunLog* r : grid)
                md += strf("| %s | %g | %.4f |\n", r->meta.at("family").c_str(), hv(*r, "peak_lr"), r->final_val());
        }
        if (!longr.empty()) {
            md += strf("\nLong runs (%s): validation loss along the way\n\n| run | lr | steps | at 250 | at 1000 | final |%s\n"
                       "|---|---|---|---|---|---|\n",
                       z.name.c_str(), "");
            for (const RunLog* r : longr)
                md += strf("| %s%s | %g | %d | %.4f | %.4f | %.4f |\n", label_of(*r).c_str(), r->done ? "" : " (unfinished)",
                           hv(*r, "peak_lr"), r->steps_done, r->val_at(250), r->val_at(1000), r->final_val());
            // against the mean of the long dense run that ran at the most seeds (the best rate's)
            double long_dense = NAN;
            size_t most = 1;
            for (const RunLog* r : longr)
                if (kind_of(*r) == "dense" && seeds[r->name].size() > most) {
                    double lo, hi;
                    most = seeds[r->name].size();
                    stats(seeds[r->name], &long_dense, &lo, &hi);
                }
            std::string long_rows = rows_at_seeds(longr, long_dense);
            if (!long_rows.empty())
                md += strf("\nLong runs at every seed (%s): final validation loss, mean, range, the mean against "
                           "that of the long dense run at the most seeds, and each seed's\n\n| run | lr | seeds | mean | "
                           "range | vs dense | seed: loss |\n|---|---|---|---|---|---|---|\n%s",
                           z.name.c_str(), long_rows.c_str());
        }
    }
    return md;
}

// loss.png: per size, validation loss against steps (left) and against
// wall-clock (right); dense, token choice, the transition, and of each MoT
// shape and placement the temperature that ended lowest. Then per size with
// long runs: their validation loss against steps (left), and each one's
// loss minus that of the long dense run that ended lowest, at the same
// step (right): whether a lead in steps lasts or fades.
static void plot_report(const std::vector<RunLog>& runs, const std::vector<Size>& sizes, const std::string& png) {
    // the sizes with main runs to show, each with one run per family and placement
    std::vector<std::pair<const Size*, std::map<std::string, const RunLog*>>> panels;
    for (const Size& z : sizes) {
        std::map<std::string, const RunLog*> shown;
        for (const RunLog& r : runs) {
            if (r.meta.at("size") != z.name || r.meta.at("phase") != "main" || r.val.empty()) continue;
            std::string key = r.meta.at("family") + " " + layers_of(r);
            if (!shown.count(key) || r.final_val() < shown[key]->final_val()) shown[key] = &r;
        }
        if (!shown.empty()) panels.push_back({&z, shown});
    }
    std::vector<std::pair<const Size*, std::vector<const RunLog*>>> longs;
    for (const Size& z : sizes) {
        std::vector<const RunLog*> rs;
        for (const RunLog& r : runs)
            if (r.meta.at("size") == z.name && r.meta.at("phase") == "long" && !r.val.empty()) rs.push_back(&r);
        if (!rs.empty()) longs.push_back({&z, rs});
    }
    size_t rows = std::max<size_t>(1, panels.size() + longs.size());
    std::string script = strf("set terminal pngcairo size 1400,%d noenhanced\nset multiplot layout %zu,2\n",
                              500 * (int)rows, rows);
    script += "set grid\nset key top right font ',8'\nset ylabel 'validation loss (nats per token)'\n";
    // a transition's legend without its losses (the table has them)
    auto title = [](const RunLog& r) {
        if (kind_of(r) != "transition") return gp_quote(label_of(r));
        return gp_quote(strf("transition to token choice, %s router%s", router_of(r).c_str(),
                             distill_of(r) > 0 ? strf(", distilled at weight %g", distill_of(r)).c_str() : ""));
    };
    int block = 0;
    for (auto& [z, shown] : panels) {
        std::string data_steps, data_time;
        for (auto& [key, r] : shown) {
            // a transition continues its MoT run: its points start where that run ended
            double step0 = 0, t0 = 0;
            if (kind_of(*r) == "transition" && r->meta.count("from"))
                for (const RunLog& b : runs)
                    if (b.name == r->meta.at("from") && !b.val.empty()) step0 = b.val.back().step, t0 = b.train_seconds;
            std::string d = strf("$d%d << EOD\n", block);
            for (const ValPoint& v : r->val) d += strf("%g %g %.9g\n", v.step + step0, (v.seconds + t0) / 60, v.loss);
            script += d + "EOD\n";
            std::string name = strf("$d%d", block++);
            data_steps += name + " using 1:3 with linespoints pt 7 ps 0.5 title " + title(*r) + ", ";
            data_time += name + " using 2:3 with linespoints pt 7 ps 0.5 title " + title(*r) + ", ";
        }
        script += "set title " + gp_quote("size " + z->name + ": validation loss against steps") + "\nset xlabel 'step'\n";
        script += "plot " + data_steps.substr(0, data_steps.size() - 2) + "\n";
        script += "set title " + gp_quote("size " + z->name + ": against training time") + "\nset xlabel 'minutes'\n";
        script += "plot " + data_time.substr(0, data_time.size() - 2) + "\n";
    }
    for (auto& [z, rs] : longs) {
        const RunLog* ref = nullptr;  // the long dense run that ended lowest, at the first seed
        for (const RunLog* r : rs)
            if (r->meta.at("family") == "dense" && setting_of(r->name) == r->name &&
                (!ref || r->final_val() < ref->final_val()))
                ref = r;
        std::string data_loss, data_diff;
        for (const RunLog* r : rs) {
            // a run at another seed (NAME-sSEED) against the reference's run at that seed, if it ran
            const std::string seed_suffix = r->name.substr(setting_of(r->name).size());
            const RunLog* base_run = nullptr;
            if (ref)
                for (const RunLog* b : rs)
                    if (b->name == ref->name + seed_suffix) base_run = b;
            std::string d = strf("$d%d << EOD\n", block);
            for (const ValPoint& v : r->val) {
                double base = NAN;  // the reference's loss at this very step
                if (base_run)
                    for (const ValPoint& b : base_run->val)
                        if (b.step == v.step) base = b.loss;
                d += strf("%d %.9g %s\n", (int)v.step, v.loss, std::isnan(base) ? "NaN" : strf("%.9g", v.loss - base).c_str());
            }
            script += d + "EOD\n";
            std::string name = strf("$d%d", block++);
            std::string t = gp_quote(strf("%s, lr %g%s", label_of(*r).c_str(), hv(*r, "peak_lr"),
                                          seed_suffix.empty() ? "" : (", seed " + seed_suffix.substr(2)).c_str()));
            data_loss += name + " using 1:2 with linespoints pt 7 ps 0.4 title " + t + ", ";
            data_diff += name + " using 1:3 with linespoints pt 7 ps 0.4 title " + t + ", ";
        }
        script += "set title " + gp_quote("size " + z->name + ", long runs: validation loss against steps") +
                  "\nset xlabel 'step'\n";
        script += "plot " + data_loss.substr(0, data_loss.size() - 2) + "\n";
        script += "set title " + gp_quote(ref ? strf("size %s, long runs: loss minus dense's (lr %g, same seed) at the same step",
                                                      z->name.c_str(), hv(*ref, "peak_lr"))
                                                : "size " + z->name + ", long runs: no dense run to compare with") +
                  "\nset ylabel 'difference (nats per token)'\n";
        script += "plot " + data_diff.substr(0, data_diff.size() - 2) + "\n";
        script += "set ylabel 'validation loss (nats per token)'\n";
    }
    script += "unset multiplot\n";
    std::string tmp;
    int fd = open_plot_output(png, &tmp);
    render_plot(script, fd, tmp, png);
}

static int cmd_report(const std::string& out) {
    std::vector<RunLog> all = read_runs(out + "/runs"), runs;
    for (RunLog& r : all) {
        if (!r.meta.count("size") || !r.meta.count("family") || !r.meta.count("phase"))
            fail(strf("%s/runs/%s.meta: missing or incomplete (size, family, phase)", out.c_str(), r.name.c_str()));
        if (!r.header.count("params"))
            fail(strf("%s/runs/%s.jsonl: no run row (params) at its start: not a log of this train_mot", out.c_str(),
                      r.name.c_str()));
        runs.push_back(r);
    }
    if (runs.empty()) fail(strf("%s/runs: no run logs", out.c_str()));
    use_times_alone(&runs, out + "/times");
    std::vector<Size> sizes = sizes_of(runs);
    write_file_atomic(out + "/results.json", results_json(runs, sizes));
    write_file_atomic(out + "/results.md", results_md(runs, sizes));
    plot_report(runs, sizes, out + "/loss.png");
    std::printf("study: %zu runs -> %s/results.json, results.md, loss.png\n", runs.size(), out.c_str());
    return 0;
}

int main(int argc, char** argv) {
    try {
        std::string cmd = argc > 1 ? argv[1] : "";
        if (cmd == "final" && argc == 3) return cmd_final(argv[2]);
        if (cmd == "best" && argc == 4) return cmd_best(argv[2], argv[3]);
        if (cmd == "report" && argc == 3) return cmd_report(argv[2]);
        std::fprintf(stderr, "usage: study final LOG | study best DIR PREFIX | study report OUT\n");
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "study: %s\n", e.what());
        return 1;
    }
}
