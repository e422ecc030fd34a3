// Reading a finished ./train_mot run's --log for the benchmarks that run the
// program itself (bench_load, bench_dist): one field of every step row, and
// the median.
#pragma once
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

// The values of `"key": ` in the log's rows that have it, skipping the first `skip`.
inline std::vector<double> log_values(const std::string& log, const char* key, int skip) {
    std::vector<double> values;
    std::string pattern = std::string("\"") + key + "\": ";
    FILE* fp = std::fopen(log.c_str(), "r");
    if (!fp) return values;
    char line[4096];
    int row = 0;
    while (std::fgets(line, sizeof line, fp)) {
        const char* p = std::strstr(line, pattern.c_str());
        if (!p) continue;
        if (row++ >= skip) values.push_back(std::atof(p + pattern.size()));
    }
    std::fclose(fp);
    return values;
}

inline double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}
