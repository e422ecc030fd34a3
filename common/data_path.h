// Where input data (texts such as tinyshakespeare.txt, the study's novels) is
// found: the one setting the program, the data tool and the tests share.
//
// The folder named by the environment variable MOT_DATA when it is set and not
// empty (only there, so a run never silently takes other data than the one
// asked for); else data/ in the current directory (the repository root, where
// data/get_tinyshakespeare.sh writes), then ../shared/data, a data folder kept
// beside the checkout and shared by several checkouts. Relative paths are
// taken from the current directory. study/reproduce.sh, .ci/run and
// data/get_tinyshakespeare.sh look in the same folders in the same order.
#pragma once
#include <sys/stat.h>

#include <cstdlib>
#include <string>
#include <vector>

// The folders searched, in order, without a trailing slash.
inline std::vector<std::string> data_dirs() {
    const char* env = std::getenv("MOT_DATA");
    if (env && *env) {
        std::string d = env;
        while (d.size() > 1 && d.back() == '/') d.pop_back();
        return {d};
    }
    return {"data", "../shared/data"};
}

// The path of name (a file or a folder) in the first data folder that holds
// it, e.g. "data/tinyshakespeare.txt"; "" when none does.
inline std::string data_path(const std::string& name) {
    for (const std::string& d : data_dirs()) {
        std::string p = d + "/" + name;
        struct stat st;
        if (stat(p.c_str(), &st) == 0) return p;
    }
    return "";
}

// Where data_path looks, for messages: "MOT_DATA=DIR" or the default folders.
inline std::string data_dirs_text() {
    const char* env = std::getenv("MOT_DATA");
    if (env && *env) return std::string("MOT_DATA=") + env;
    std::string s;
    for (const std::string& d : data_dirs()) s += (s.empty() ? "" : " or ") + d + "/";
    return s + " (MOT_DATA unset)";
}
