// Text -> tokenizer + token shards, with a cache. Used by the `prepare`
// program and by train_mot (which prepares the default data on first run).
//
// Given text files, prepare_data writes into cfg.out_dir:
//     tokenizer.bin                   BPE trained on the training text only
//     <name>_train_000000.bin ...     token shards (shard.h), at most
//     <name>_val_000000.bin ...       cfg.shard_tokens tokens each
//     manifest.txt                    what was made from what (the cache key)
// Validation split, deterministic: with one input file, the last val_fraction
// of its bytes (moved forward to just after a newline); with several files
// (e.g. the novels), whole files are held out, taken in the order of a hash
// of their file names until val_fraction of the bytes is reached.
// Each document (file, or part of a file) is preceded by the end-of-text
// token, as llm.c's data scripts do.
// Cache: manifest.txt records the inputs (path, size, 64-bit FNV-1a hash of
// the contents) and every setting. If it matches and the outputs exist, they
// are reused as they are; otherwise everything is made again.
// All or nothing (data/staging.h): the data set is built in a folder beside
// the output and swapped in whole, so a run that fails halfway leaves the old
// data set as it was.
#pragma once
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <string>
#include <system_error>
#include <vector>

#include "common/data_path.h"
#include "common/error.h"
#include "data/dataloader.h"
#include "common/fileio.h"
#include "data/shard.h"
#include "data/staging.h"
#include "tokenizer/bpe.h"

// Default vocabulary: 2048. The default model is small and tinyshakespeare
// has only about 1.1M bytes: at this size BPE already packs most of what a
// larger vocabulary would (the README's "Tokenizer" figures under "Speed"
// compare 2048 with 4096), while the embedding table stays small next to the
// transformer blocks and every token is seen often enough to learn.
constexpr int PREPARE_DEFAULT_VOCAB = 2048;
constexpr int PREPARE_MANIFEST_VERSION = 1;

struct PrepareConfig {
    std::vector<std::string> inputs;          // text files
    std::string out_dir = "data/cache";
    int vocab_size = PREPARE_DEFAULT_VOCAB;
    double val_fraction = 0.1;
    int64_t shard_tokens = 100000000;
    std::string name;                         // "" = from the input's name
    bool verbose = true;                      // progress and summary on stderr
};

struct PrepareResult {
    std::string tokenizer_path;
    std::string train_pattern, val_pattern;   // glob patterns for dataloader_init
    std::vector<std::string> train_files, val_files;
    int64_t bytes = 0, train_tokens = 0, val_tokens = 0;
    bool reused = false;                      // true: cache hit, nothing was made
};

// The default text: tinyshakespeare.txt in the data folder (common/data_path.h).
inline std::string find_default_text() {
    std::string p = data_path("tinyshakespeare.txt");
    if (!p.empty()) return p;
    fail("tinyshakespeare.txt not found in " + data_dirs_text() + ": put the text at " + data_dirs()[0] +
         "/tinyshakespeare.txt (on a machine with internet: run data/get_tinyshakespeare.sh)");
}

inline std::string path_basename(const std::string& p) {
    size_t s = p.find_last_of('/');
    return s == std::string::npos ? p : p.substr(s + 1);
}

// Writes tokens as shards <prefix>_000000.bin ..., splitting them evenly so no
// shard is a tiny tail; returns the file names written.
inline std::vector<std::string> write_shards(const std::string& dir, const std::string& prefix,
                                             const std::vector<uint16_t>& tokens, int64_t shard_tokens) {
    int64_t total = int64_t(tokens.size());
    int64_t n = std::max<int64_t>(1, (total + shard_tokens - 1) / shard_tokens);
    std::vector<std::string> names;
    for (int64_t i = 0; i < n; i++) {
        int64_t lo = total * i / n, hi = total * (i + 1) / n;
        std::string name = prefix + strf("_%06lld.bin", (long long)i);
        std::lock_guard<std::mutex> writing(staging_mutex());  // dir is the staging folder
        write_shard(dir + "/" + name, tokens.data() + lo, size_t(hi - lo));
        names.push_back(name);
    }
    return names;
}

// Reads the outputs listed in a manifest whose key matches; false if stale.
inline bool prepare_try_reuse(const std::string& dir, const std::string& key, PrepareResult& r) {
    std::string manifest = dir + "/manifest.txt";
    if (!file_exists(manifest)) return false;
    std::string m = read_file(manifest);
    if (m.compare(0, key.size(), key) != 0) return false;
    r = PrepareResult{};
    size_t i = key.size();
    while (i < m.size()) {
        size_t e = m.find('\n', i);
        if (e == std::string::npos) e = m.size();
        std::string line = m.substr(i, e - i);
        i = e + 1;
        size_t sp = line.find(' ');
        if (sp == std::string::npos) continue;
        std::string k = line.substr(0, sp), v = line.substr(sp + 1);
        if (k == "train") r.train_files.push_back(dir + "/" + v);
        else if (k == "val") r.val_files.push_back(dir + "/" + v);
        else if (k == "tokenizer") r.tokenizer_path = dir + "/" + v;
        else if (k == "train_pattern") r.train_pattern = dir + "/" + v;
        else if (k == "val_pattern") r.val_pattern = dir + "/" + v;
        else if (k == "counts") {
            long long b, t, vt;
            if (std::sscanf(v.c_str(), "%lld %lld %lld", &b, &t, &vt) == 3) r.bytes = b, r.train_tokens = t, r.val_tokens = vt;
        }
    }
    if (r.tokenizer_path.empty() || r.train_files.empty() || !file_exists(r.tokenizer_path)) return false;
    try {  // every listed shard must still be there and intact
        for (const auto& f : r.train_files) shard_token_count(f);
        for (const auto& f : r.val_files) shard_token_count(f);
    } catch (const std::exception&) {
        return false;
    }
    r.reused = true;
    return true;
}

// A shard name prefix (--name) names files inside the output folder: a
// name with '/' or a name of "." or ".." would put the shards outside it,
// beyond the data set's all-or-nothing swap; a control character would
// break the manifest's one name per line.
inline void check_prepare_name(const std::string& name) {
    if (name.find('/') != std::string::npos)
        fail(strf("prepare: --name '%s': a name, not a path: it may not contain '/' (the shards are written into "
                  "--out; give the folder there)",
                  name.c_str()));
    if (name == "." || name == "..")
        fail(strf("prepare: --name '%s': not a name (the shards are <name>_train_000000.bin ... in --out)", name.c_str()));
    for (unsigned char ch : name)
        if (ch < 0x20 || ch == 0x7f)
            fail(strf("prepare: --name: the name holds a control character (byte %u); give a plain file name", ch));
}

inline PrepareResult prepare_data(const PrepareConfig& cfg) {
    if (cfg.inputs.empty()) fail("prepare: no input text files");
    if (!cfg.name.empty()) check_prepare_name(cfg.name);
    if (cfg.vocab_size < 257 || cfg.vocab_size > 65536)
        fail(strf("prepare: vocab size %d out of range (257..65536, tokens are stored as uint16)", cfg.vocab_size));
    if (!(cfg.val_fraction >= 0 && cfg.val_fraction < 1))
        fail(strf("prepare: val fraction %g out of range [0, 1)", cfg.val_fraction));
    if (cfg.shard_tokens < 1) fail("prepare: shard tokens must be at least 1");
    auto t0 = std::chrono::steady_clock::now();

    // inputs in sorted order, so the result does not depend on argument order
    std::vector<std::string> paths = cfg.inputs;
    std::sort(paths.begin(), paths.end());
    paths.erase(std::unique(paths.begin(), paths.end()), paths.end());
    std::vector<std::string> texts;
    for (const auto& p : paths) {
        if (!file_exists(p)) fail(strf("%s: input text not found", p.c_str()));
        texts.push_back(read_file(p, "input text"));
    }
    std::string name = cfg.name;
    if (name.empty()) {
        if (paths.size() == 1) {
            name = path_basename(paths[0]);
            name = name.substr(0, name.find('.'));
        } else {
            std::string parent = paths[0].substr(0, paths[0].find_last_of('/') + 1);
            if (!parent.empty()) parent.pop_back();
            name = path_basename(parent);
        }
        if (name.empty()) name = "data";
    }

    std::string key = strf("mot-prepare-manifest %d\ntokenizer_version %d\nvocab_size %d\nval_fraction %.17g\n"
                           "shard_tokens %lld\nname %s\n",
                           PREPARE_MANIFEST_VERSION, TOKENIZER_VERSION, cfg.vocab_size, cfg.val_fraction,
                           (long long)cfg.shard_tokens, name.c_str());
    for (size_t i = 0; i < paths.size(); i++)
        key += strf("input %zu %016llx %s\n", texts[i].size(), (unsigned long long)fnv1a64(texts[i]), paths[i].c_str());
    key += "---\n";
    PrepareResult r;
    if (prepare_try_reuse(cfg.out_dir, key, r)) {
        if (cfg.verbose)
            std::fprintf(stderr, "prepare: reusing %s (inputs unchanged): %lld train + %lld val tokens\n",
                         cfg.out_dir.c_str(), (long long)r.train_tokens, (long long)r.val_tokens);
        return r;
    }
    // the output folder by name: the new data set is built beside it
    std::string dest = cfg.out_dir;
    while (dest.size() > 1 && dest.back() == '/') dest.pop_back();
    std::string last = path_basename(dest);
    if (dest.empty() || dest == "/" || last == "." || last == "..")
        fail(strf("prepare: output folder '%s': give it by name (the data set is built beside it and renamed into place)",
                  cfg.out_dir.c_str()));
    // a link to / is / too: what it resolves to is what gets swapped
    if (resolved_path(dest) == "/")
        fail(strf("prepare: output folder '%s' is / (through a symlink): give a folder below it (the data set is built "
                  "beside the folder and swapped in, and whatever else it holds moved over)",
                  cfg.out_dir.c_str()));
    struct stat out_st;
    if (stat(dest.c_str(), &out_st) == 0 && !S_ISDIR(out_st.st_mode))  // before the slow part
        fail(strf("%s: the output folder exists and is not a directory", dest.c_str()));
    {  // the folder to build in can be made, with the output folder's owner: tried before the slow part
        std::lock_guard<std::mutex> probing(staging_mutex());
        remove_tree(prepare_staging(dest).tmp);
    }

    // split into training and validation documents
    std::vector<std::string> train_docs, val_docs;
    if (paths.size() == 1) {
        const std::string& t = texts[0];
        size_t cut = t.size() - size_t(double(t.size()) * cfg.val_fraction);
        if (cut < t.size()) {
            size_t nl = t.find('\n', cut);
            if (nl != std::string::npos && nl + 1 < t.size()) cut = nl + 1;
        }
        train_docs.push_back(t.substr(0, cut));
        if (cut < t.size()) val_docs.push_back(t.substr(cut));
    } else {
        std::vector<size_t> idx(paths.size());
        for (size_t i = 0; i < idx.size(); i++) idx[i] = i;
        std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
            uint64_t ha = fnv1a64(path_basename(paths[a])), hb = fnv1a64(path_basename(paths[b]));
            return ha != hb ? ha < hb : paths[a] < paths[b];
        });
        int64_t total = 0, held = 0;
        for (const auto& t : texts) total += int64_t(t.size());
        std::vector<bool> is_val(paths.size(), false);
        for (size_t k = 0; k + 1 < idx.size() && held < double(total) * cfg.val_fraction; k++) {
            is_val[idx[k]] = true;
            held += int64_t(texts[idx[k]].size());
        }
        for (size_t i = 0; i < paths.size(); i++) (is_val[i] ? val_docs : train_docs).push_back(std::move(texts[i]));
    }
    texts.clear();
    if (cfg.val_fraction > 0 && val_docs.empty()) fail("prepare: the validation split came out empty (text too short?)");

    // tokenizer, trained on the training documents only
    std::unordered_map<std::string, int64_t> counts;
    for (const auto& d : train_docs) count_pieces(d, counts);
    Tokenizer tok = bpe_train_counts(counts, cfg.vocab_size, false);
    counts.clear();

    // everything is written into tmp; on any failure or stop signal tmp goes
    // and dest stays as it was. Every file operation in tmp holds
    // staging_mutex() (data/staging.h), the encoding does not.
    std::unique_lock<std::mutex> writing(staging_mutex());
    const PrepareStaging staging = prepare_staging(dest);
    const std::string& tmp = staging.tmp;
    staging_folder() = tmp;
    writing.unlock();
    try {
        r.tokenizer_path = cfg.out_dir + "/tokenizer.bin";
        writing.lock();
        tokenizer_save(tok, tmp + "/tokenizer.bin");
        writing.unlock();
        auto t1 = std::chrono::steady_clock::now();

        // encode, with a progress bar when stderr is a terminal
        int64_t total_bytes = 0, done = 0;
        for (const auto& d : train_docs) total_bytes += int64_t(d.size());
        for (const auto& d : val_docs) total_bytes += int64_t(d.size());
        bool bar = cfg.verbose && isatty(2);
        auto encode_all = [&](const std::vector<std::string>& docs) {
            std::vector<uint16_t> out;
            for (const auto& d : docs) {
                out.push_back(uint16_t(tok.eot));
                std::vector<int> ids = bpe_encode(tok, d, [&](size_t at, size_t) {
                    if (bar)
                        std::fprintf(stderr, "\rencoding %5.1f%% of %.1f MB", 100.0 * double(done + int64_t(at)) / double(std::max<int64_t>(1, total_bytes)),
                                     double(total_bytes) / 1e6);
                });
                done += int64_t(d.size());
                out.insert(out.end(), ids.begin(), ids.end());
            }
            return out;
        };
        std::vector<uint16_t> train_tokens = encode_all(train_docs);
        std::vector<uint16_t> val_tokens = encode_all(val_docs);
        if (bar) std::fprintf(stderr, "\n");
        auto t2 = std::chrono::steady_clock::now();

        std::string manifest = key + "tokenizer tokenizer.bin\n";
        for (const auto& f : write_shards(tmp, name + "_train", train_tokens, cfg.shard_tokens)) {
            r.train_files.push_back(cfg.out_dir + "/" + f);
            manifest += "train " + f + "\n";
        }
        r.train_pattern = cfg.out_dir + "/" + name + "_train_*.bin";
        manifest += "train_pattern " + name + "_train_*.bin\n";
        if (!val_tokens.empty()) {
            for (const auto& f : write_shards(tmp, name + "_val", val_tokens, cfg.shard_tokens)) {
                r.val_files.push_back(cfg.out_dir + "/" + f);
                manifest += "val " + f + "\n";
            }
            r.val_pattern = cfg.out_dir + "/" + name + "_val_*.bin";
            manifest += "val_pattern " + name + "_val_*.bin\n";
        }
        r.bytes = total_bytes;
        r.train_tokens = int64_t(train_tokens.size());
        r.val_tokens = int64_t(val_tokens.size());
        manifest += strf("counts %lld %lld %lld\n", (long long)r.bytes, (long long)r.train_tokens, (long long)r.val_tokens);
        writing.lock();
        write_file_atomic(tmp + "/manifest.txt", manifest);
        prepare_commit(staging);
        staging_folder().clear();
        writing.unlock();

        if (cfg.verbose) {
            auto t3 = std::chrono::steady_clock::now();
            auto sec = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
            int64_t text_tokens = r.train_tokens + r.val_tokens - int64_t(train_docs.size() + val_docs.size());
            std::fprintf(stderr,
                         "prepare: %s: %zu file(s), %lld bytes -> %lld train tokens (%zu shard(s)) + %lld val tokens%s; "
                         "vocab %d, %.3f bytes/token; tokenizer %.2fs, encode %.2fs, total %.2fs\n",
                         name.c_str(), paths.size(), (long long)r.bytes, (long long)r.train_tokens, r.train_files.size(),
                         (long long)r.val_tokens,
                         paths.size() > 1 ? strf(" (%zu files held out)", val_docs.size()).c_str() : "", tok.vocab_size,
                         double(r.bytes) / double(std::max<int64_t>(1, text_tokens)), sec(t0, t1), sec(t1, t2),
                         sec(t0, t3));
        }
        return r;
    } catch (...) {
        if (!writing.owns_lock()) writing.lock();
        remove_tree(tmp);
        staging_folder().clear();
        throw;
    }
}
