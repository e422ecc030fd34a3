// ./train_mot plot LOG... -o loss.png: train and validation loss of one or
// several runs on one PNG, drawn by gnuplot (Debian package gnuplot-nox).
// The logs are JSONL (common/jsonl.h); their rows go to gnuplot inline as
// data blocks, so no temporary files are made.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "error.h"
#include "fileio.h"

// The number after "key": in a JSON line, if present.
inline bool json_number(const std::string& line, const char* key, double* out) {
    std::string k = std::string("\"") + key + "\":";
    size_t p = line.find(k);
    if (p == std::string::npos) return false;
    const char* s = line.c_str() + p + k.size();
    char* end = nullptr;
    *out = std::strtod(s, &end);
    return end != s;
}

inline void plot_logs(const std::vector<std::string>& logs, const std::string& out_png, const std::string& title) {
    if (logs.empty()) fail("plot: give at least one log file");
    std::string script = "set terminal pngcairo size 1000,600 noenhanced\n";
    script += "set output '" + out_png + ".tmp'\n";
    script += "set title '" + title + "'\nset xlabel 'step'\nset ylabel 'loss (nats per token)'\nset grid\n";
    script += "set key outside right\n";
    std::string plots;
    for (size_t i = 0; i < logs.size(); i++) {
        std::string text = read_file(logs[i], "log");
        std::string train, val;
        size_t pos = 0;
        while (pos < text.size()) {
            size_t nl = text.find('\n', pos);
            std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
            pos = nl == std::string::npos ? text.size() : nl + 1;
            double step, loss;
            if (!json_number(line, "step", &step)) continue;
            if (json_number(line, "val_loss", &loss)) val += strf("%g %.9g\n", step, loss);
            else if (json_number(line, "loss", &loss)) train += strf("%g %.9g\n", step, loss);
        }
        if (train.empty() && val.empty()) fail(strf("%s: no loss rows (is it a train_mot --log file?)", logs[i].c_str()));
        std::string name = logs[i].substr(logs[i].find_last_of('/') + 1);  // runs/mot.jsonl -> mot
        name = name.substr(0, name.rfind(".jsonl"));
        int color = (int)i + 1;
        if (!train.empty()) {
            script += strf("$train%zu << EOD\n", i) + train + "EOD\n";
            plots += strf("$train%zu with lines lc %d lw 1 title '%s train', ", i, color, name.c_str());
        }
        if (!val.empty()) {
            script += strf("$val%zu << EOD\n", i) + val + "EOD\n";
            plots += strf("$val%zu with linespoints lc %d lw 2 pt 7 title '%s val', ", i, color, name.c_str());
        }
    }
    script += "plot " + plots.substr(0, plots.size() - 2) + "\n";
    FILE* gp = popen("gnuplot 2>&1", "w");
    if (!gp) fail("plot: cannot start gnuplot (install it: apt-get install gnuplot-nox)");
    std::fputs(script.c_str(), gp);
    int status = pclose(gp);
    std::string tmp = out_png + ".tmp";
    if (status != 0 || !file_exists(tmp)) {
        std::remove(tmp.c_str());
        fail(strf("plot: gnuplot failed (exit status %d); is gnuplot-nox installed?", status));
    }
    if (std::rename(tmp.c_str(), out_png.c_str()) != 0) fail(strf("%s: cannot write", out_png.c_str()));
}
