// The data loader: token shards -> (B, T) batches of inputs and targets.
//
// Shards are one file or a glob(3) pattern, taken in sorted file-name order;
// a file of exactly the name given is taken as it is, even where the name
// holds glob characters ('run[1]/a.bin' is that file, not 'run1/a.bin').
// Only the current shard is held in memory. Every shard's tokens are checked
// against the vocabulary when the loader is made (one pass over the files),
// so a bad id in the last shard stops the run before its first step, not
// hours into it; they are checked again when a shard is loaded, in case the
// file changed since. Every shard must hold at least B*T+1 tokens (one full
// batch plus the last target).
//
// Sequential mode (shuffle = false), exactly docs/design.md section 7: a batch
// reads B*T+1 tokens at position p of the current shard; inputs are tokens
// [p, p+B*T), targets [p+1, p+B*T+1), row b is the b-th run of T tokens. p
// starts at 0 and advances by B*T; when the next read would pass the end of
// the shard, the loader moves to the next shard at p = 0 (with one shard, p
// wraps to 0), and after the last shard back to the first: a new epoch.
//
// Shuffled mode (shuffle = true): a shard is cut into rows of T+1 tokens
// starting at multiples of T (row j: tokens [j*T, j*T+T+1)), so the rows cover
// the same tokens sequential mode would. Each epoch visits the shards in a
// permuted order, and within a shard takes the rows in a permuted order, B
// rows per batch; the last (rows mod B) rows of the permutation are skipped
// that epoch. Each permutation is derived from (seed, epoch[, shard]) alone,
// so the state below is all it takes to resume bit-exactly.
//
// State: epoch, shard (index into this epoch's shard order), position (token
// position p in sequential mode; index of the next row of the permutation in
// shuffled mode), seed.
#pragma once
#include <glob.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "common/error.h"
#include "data/shard.h"

struct DataLoaderState {
    int64_t epoch = 0;
    int64_t shard = 0;
    int64_t position = 0;
    uint64_t seed = 0;
};

struct DataLoader {
    int B = 0, T = 0;
    bool shuffle = false;
    uint64_t seed = 0;
    int vocab_size = 0;
    std::vector<std::string> files;     // sorted
    std::vector<int64_t> shard_tokens;  // token count of each file
    DataLoaderState st;
    std::vector<int> order;             // shard order of this epoch (indices into files)
    int loaded = -1;                    // file index whose tokens are in `tokens`
    std::vector<uint16_t> tokens;
    std::vector<int64_t> rows;          // shuffled mode: permuted row indices of the shard
};

// splitmix64: a tiny, good-enough generator for shuffling (Steele et al.).
inline uint64_t splitmix64(uint64_t& s) {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Fisher-Yates permutation of 0..n-1 from a seed. (The modulo has a bias of
// order n / 2^64: irrelevant here.)
inline std::vector<int64_t> permutation(int64_t n, uint64_t seed) {
    std::vector<int64_t> p((size_t)n);
    for (int64_t i = 0; i < n; i++) p[i] = i;
    uint64_t s = seed;
    for (int64_t i = n - 1; i > 0; i--) std::swap(p[i], p[splitmix64(s) % uint64_t(i + 1)]);
    return p;
}

// A seed for one (epoch, shard) permutation, mixed from the loader's seed.
inline uint64_t derive_seed(uint64_t seed, uint64_t a, uint64_t b) {
    uint64_t s = seed;
    s = splitmix64(s) ^ a;
    s = splitmix64(s) ^ b;
    return splitmix64(s);
}

// s with glob(3)'s special characters (* ? [ ] \\) escaped: a pattern that
// matches the file named s and nothing else.
inline std::string glob_escape(const std::string& s) {
    std::string out;
    for (char ch : s) {
        if (ch == '*' || ch == '?' || ch == '[' || ch == ']' || ch == '\\') out += '\\';
        out += ch;
    }
    return out;
}

// The files a --data argument names: the file of exactly that name when one
// exists (a name may hold glob characters, and a pattern that also matches
// another file must not take that one instead), else the files that match it
// as a glob(3) pattern, sorted.
inline std::vector<std::string> glob_files(const std::string& pattern) {
    struct stat st;
    if (lstat(pattern.c_str(), &st) == 0) return {pattern};
    glob_t g;
    std::memset(&g, 0, sizeof(g));
    int rc = glob(pattern.c_str(), 0, nullptr, &g);
    std::vector<std::string> out;
    if (rc == 0)
        for (size_t i = 0; i < g.gl_pathc; i++) out.push_back(g.gl_pathv[i]);
    globfree(&g);
    if (out.empty())
        fail(strf("%s: no such file, and no file matches it as a pattern (./prepare --out DIR makes token shards, "
                  "and prints the pattern that names them)",
                  pattern.c_str()));
    std::sort(out.begin(), out.end());
    return out;
}

inline int64_t dataloader_rows(const DataLoader* L, int file) { return (L->shard_tokens[file] - 1) / L->T; }

// Loads the shard at the current position of the shard order (if not
// already loaded) and, in shuffled mode, its row permutation for this epoch.
inline void dataloader_load_shard(DataLoader* L) {
    int file = L->order[size_t(L->st.shard)];
    if (L->loaded != file) {
        L->loaded = -1;
        L->tokens = read_shard(L->files[file]);
        check_token_ids(L->files[file], L->tokens.data(), L->tokens.size(), 0, L->vocab_size);
        L->loaded = file;
    }
    if (L->shuffle)
        L->rows = permutation(dataloader_rows(L, file), derive_seed(L->seed, uint64_t(L->st.epoch), uint64_t(file) + 1));
}

inline void dataloader_begin_epoch(DataLoader* L) {
    int n = int(L->files.size());
    L->order.resize(n);
    if (L->shuffle) {
        std::vector<int64_t> p = permutation(n, derive_seed(L->seed, uint64_t(L->st.epoch), 0));
        for (int i = 0; i < n; i++) L->order[i] = int(p[i]);
    } else {
        for (int i = 0; i < n; i++) L->order[i] = i;
    }
}

inline void dataloader_reset(DataLoader* L) {
    L->st = DataLoaderState{0, 0, 0, L->seed};
    dataloader_begin_epoch(L);
    dataloader_load_shard(L);
}

inline void dataloader_init(DataLoader* L, const std::string& pattern_or_path, int B, int T, bool shuffle,
                            uint64_t seed, int vocab_size) {
    if (B <= 0 || T <= 0) fail(strf("dataloader: batch %d and sequence length %d must be positive", B, T));
    if (vocab_size <= 0 || vocab_size > 65536)
        fail(strf("dataloader: vocab size %d does not fit uint16 tokens (1..65536)", vocab_size));
    *L = DataLoader{};
    L->B = B;
    L->T = T;
    L->shuffle = shuffle;
    L->seed = seed;
    L->vocab_size = vocab_size;
    L->files = glob_files(pattern_or_path);
    int64_t need = int64_t(B) * T + 1;
    for (const std::string& f : L->files) {
        int64_t n = shard_check(f, vocab_size);
        if (n < need)
            fail(strf("%s: %lld tokens, too short for one batch of B*T+1 = %lld tokens (B=%d, T=%d)", f.c_str(),
                      (long long)n, (long long)need, B, T));
        L->shard_tokens.push_back(n);
    }
    dataloader_reset(L);
}

// Moves to the next shard, or to the first shard of a new epoch.
inline void dataloader_advance_shard(DataLoader* L) {
    L->st.position = 0;
    L->st.shard++;
    if (L->st.shard == int64_t(L->files.size())) {
        L->st.shard = 0;
        L->st.epoch++;
        dataloader_begin_epoch(L);
    }
    dataloader_load_shard(L);
}

// Moves past the batch dataloader_next would return now, without reading
// it: a rank skips the micro-batches of the other ranks (docs/design.md
// section 11), and after either call the loader is in the same state.
inline void dataloader_skip(DataLoader* L) {
    if (!L->shuffle) {
        L->st.position += int64_t(L->B) * L->T;
        if (L->st.position + int64_t(L->B) * L->T + 1 > int64_t(L->tokens.size())) dataloader_advance_shard(L);
    } else {
        L->st.position += L->B;
        if (L->st.position + L->B > int64_t(L->rows.size())) dataloader_advance_shard(L);
    }
}

// Fills inputs and targets, each B*T ints (row-major (B, T)).
inline void dataloader_next(DataLoader* L, int* inputs, int* targets) {
    const int B = L->B, T = L->T;
    const int64_t BT = int64_t(B) * T;
    const uint16_t* tok = L->tokens.data();
    if (!L->shuffle) {
        const uint16_t* src = tok + L->st.position;
        for (int64_t i = 0; i < BT; i++) {
            inputs[i] = src[i];
            targets[i] = src[i + 1];
        }
    } else {
        for (int b = 0; b < B; b++) {
            const uint16_t* src = tok + L->rows[size_t(L->st.position + b)] * T;
            for (int t = 0; t < T; t++) {
                inputs[b * T + t] = src[t];
                targets[b * T + t] = src[t + 1];
            }
        }
    }
    dataloader_skip(L);  // the batch is read: move past it
}

inline DataLoaderState dataloader_get_state(const DataLoader* L) { return L->st; }

// Restores a state saved by dataloader_get_state (same files, B, T, mode).
inline void dataloader_set_state(DataLoader* L, const DataLoaderState& s) {
    if (s.shard < 0 || s.shard >= int64_t(L->files.size()) || s.epoch < 0 || s.position < 0)
        fail(strf("dataloader state: epoch %lld, shard %lld, position %lld out of range for %zu shards",
                  (long long)s.epoch, (long long)s.shard, (long long)s.position, L->files.size()));
    L->seed = s.seed;
    L->st = s;
    dataloader_begin_epoch(L);
    dataloader_load_shard(L);
    int64_t limit = L->shuffle ? int64_t(L->rows.size()) - L->B : int64_t(L->tokens.size()) - int64_t(L->B) * L->T - 1;
    if (s.position > limit)
        fail(strf("dataloader state: position %lld is past the last batch of %s", (long long)s.position,
                  L->files[L->order[size_t(s.shard)]].c_str()));
}

// Batches in one epoch (over all shards), e.g. to run a full validation pass.
inline int64_t dataloader_batches_per_epoch(const DataLoader* L) {
    int64_t n = 0, BT = int64_t(L->B) * L->T;
    for (size_t f = 0; f < L->files.size(); f++)
        n += L->shuffle ? dataloader_rows(L, int(f)) / L->B : (L->shard_tokens[f] - 1) / BT;
    return n;
}

// The batches of a pass over the data that reads n of them (n = 0: all of
// them, one epoch). Asking for more than the data holds would read some
// twice and average them in silently, so it is refused, naming the option
// and how many there are.
inline int64_t dataloader_pass_batches(const DataLoader* L, int64_t n, const char* option, const std::string& data) {
    int64_t have = dataloader_batches_per_epoch(L);
    if (n > have)
        fail(strf("%s %lld: %s holds %lld batches of %d x %d tokens; give at most %lld (0: all of them)", option,
                  (long long)n, data.c_str(), (long long)have, L->B, L->T, (long long)have));
    return n > 0 ? n : have;
}
