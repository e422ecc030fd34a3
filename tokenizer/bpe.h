// Byte-level BPE (byte pair encoding): train, encode, decode, save, load.
//
// Tokens. Ids 0..255 are the 256 byte values. Each merge (a, b) adds one
// token whose bytes are bytes(a) + bytes(b); merge i gets id 256 + i. The
// last id is the end-of-text token (eot), which no text encodes to: it only
// separates documents in the token shards. So
//     vocab_size = 256 + n_merges + 1,    eot = vocab_size - 1.
// With zero merges this is a plain byte tokenizer (vocab 257), the fallback.
//
// Training (bpe_train): pre-split the text into pieces (pretokenize.h), count
// each distinct piece, then repeatedly merge the most frequent adjacent pair
// of tokens over all pieces. Occurrences are counted with overlap ("aaa" has
// two (a,a) pairs) and merged left to right without overlap ("aaa" -> "Xa").
// Ties go to the smallest (a, b), so training is deterministic. bpe_plain.h
// is the same training as plain loops (read it first); this one updates the
// pair counts incrementally.
//
// Encoding (bpe_encode): pre-split the same way, then within each piece keep
// applying the lowest-id merge present until none applies. That replays
// training's merges in order, so a piece seen in training encodes exactly as
// training left it. decode(encode(s)) == s for every byte string.
//
// Tokenizer file format (little-endian int32 throughout), version 1:
//     [0] magic     20261129
//     [1] version   1
//     [2] vocab_size = 256 + n_merges + 1
//     [3] n_merges
//     then n_merges pairs (a, b): merge i creates token 256 + i, and a, b
//     must be ids < 256 + i. File size is exactly 16 + 8 * n_merges bytes.
// Version 1 implies the pre-split rules of pretokenize.h and eot = last id.
//
// tokenizer_load also reads llm.c's GPT-2 tokenizer file (little-endian):
//     uint32 header[256]: [0] magic 20240328, [1] version 1 or 2,
//     [2] vocab_size, [3] (version 2) the end-of-text token's id
//     then per token: a uint8 length and that many bytes.
// Version 1 has no end-of-text slot; its eot is the last id, as GPT-2's
// 50256 of 50257. The file holds each token's bytes but not GPT-2's merges
// (nor its pre-split rules), so such a tokenizer decodes (samples, bits per
// byte) and refuses to encode (Tokenizer::cannot_encode says why).
#pragma once
#include <algorithm>
#include <climits>
#include <cstring>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "common/error.h"
#include "common/fileio.h"
#include "tokenizer/pretokenize.h"

constexpr int32_t TOKENIZER_MAGIC = 20261129;
constexpr int32_t TOKENIZER_VERSION = 1;
// What bpe_decode writes for the end-of-text token (encode never produces it).
constexpr const char* EOT_TEXT = "<|endoftext|>";

struct Tokenizer {
    std::vector<std::pair<int, int>> merges;  // merges[i] = (a, b) creates token 256 + i
    int vocab_size = 257;
    int eot = 256;
    // lookup tables, filled by tokenizer_from_merges
    std::vector<std::string> token_bytes;       // bytes of each token (eot: empty)
    std::unordered_map<uint64_t, int> merge_id; // pair_key(a, b) -> id of the merged token
    std::string cannot_encode;  // empty when bpe_encode works; else why not (llm.c's file: no merges)
};

inline uint64_t pair_key(int a, int b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

// Builds a tokenizer (with its lookup tables) from a merge list.
inline Tokenizer tokenizer_from_merges(const std::vector<std::pair<int, int>>& merges) {
    Tokenizer tok;
    tok.merges = merges;
    tok.vocab_size = 256 + int(merges.size()) + 1;
    tok.eot = tok.vocab_size - 1;
    tok.token_bytes.resize(tok.vocab_size);
    for (int i = 0; i < 256; i++) tok.token_bytes[i] = std::string(1, char(i));
    for (size_t i = 0; i < merges.size(); i++) {
        int id = 256 + int(i), a = merges[i].first, b = merges[i].second;
        if (a < 0 || b < 0 || a >= id || b >= id)
            fail(strf("tokenizer: merge %d (%d, %d) refers to a token not yet defined", int(i), a, b));
        tok.token_bytes[id] = tok.token_bytes[a] + tok.token_bytes[b];
        tok.merge_id[pair_key(a, b)] = id;
    }
    return tok;
}

// Replaces every non-overlapping occurrence of (a, b), left to right, by t.
inline void merge_pair_in(std::vector<int>& ids, int a, int b, int t) {
    size_t w = 0, n = ids.size();
    for (size_t r = 0; r < n;) {
        if (r + 1 < n && ids[r] == a && ids[r + 1] == b) {
            ids[w++] = t;
            r += 2;
        } else {
            ids[w++] = ids[r++];
        }
    }
    ids.resize(w);
}

// ---------------------------------------------------------------- training

// A candidate in the max-heap of pair counts. Entries go stale when a count
// changes; a fresh entry is pushed on every change and stale ones are
// skipped when popped (their count no longer matches the table).
struct PairEntry {
    int64_t count;
    int a, b;
};
struct PairEntryWorse {  // "x ranks below y": lower count, or equal count and larger pair
    bool operator()(const PairEntry& x, const PairEntry& y) const {
        if (x.count != y.count) return x.count < y.count;
        if (x.a != y.a) return x.a > y.a;
        return x.b > y.b;
    }
};

// Trains from a piece -> count table (see count_pieces). Stops early, with a
// smaller vocabulary, if the pieces run out of pairs to merge.
inline Tokenizer bpe_train_counts(const std::unordered_map<std::string, int64_t>& piece_counts,
                                  int vocab_size, bool verbose) {
    if (vocab_size < 257) fail(strf("bpe_train: vocab size %d is below 257 (256 bytes + end-of-text)", vocab_size));
    int n_merges = vocab_size - 257;

    // Sorting the pieces makes the run independent of hash-table order (the
    // merges would be the same anyway; this also fixes the work order).
    std::vector<std::pair<std::string, int64_t>> sorted(piece_counts.begin(), piece_counts.end());
    std::sort(sorted.begin(), sorted.end());
    std::vector<std::vector<int>> words(sorted.size());
    std::vector<int64_t> word_count(sorted.size());
    for (size_t w = 0; w < sorted.size(); w++) {
        for (unsigned char c : sorted[w].first) words[w].push_back(c);
        word_count[w] = sorted[w].second;
    }

    // pair -> total count over all pieces, and pair -> pieces that contain it
    // (may list a piece twice, or a piece that lost the pair: checked on use).
    std::unordered_map<uint64_t, int64_t> stats;
    std::unordered_map<uint64_t, std::vector<int>> where;
    for (size_t w = 0; w < words.size(); w++)
        for (size_t i = 0; i + 1 < words[w].size(); i++) {
            uint64_t k = pair_key(words[w][i], words[w][i + 1]);
            stats[k] += word_count[w];
            where[k].push_back(int(w));
        }
    std::priority_queue<PairEntry, std::vector<PairEntry>, PairEntryWorse> heap;
    for (const auto& kv : stats) heap.push({kv.second, int(kv.first >> 32), int(uint32_t(kv.first))});

    std::vector<std::pair<int, int>> merges;
    std::vector<std::string> bytes(256);  // only for verbose output
    for (int i = 0; i < 256; i++) bytes[i] = std::string(1, char(i));
    std::vector<int> last_seen(words.size(), -1);            // dedupes `where` lists
    std::vector<std::pair<uint64_t, int64_t>> delta;          // pair count changes in one piece
    for (int m = 0; m < n_merges; m++) {
        // most frequent pair, skipping stale heap entries
        PairEntry best{0, 0, 0};
        while (!heap.empty()) {
            PairEntry e = heap.top();
            auto it = stats.find(pair_key(e.a, e.b));
            if (it != stats.end() && it->second == e.count) { best = e; break; }
            heap.pop();
        }
        if (heap.empty()) {
            if (verbose) std::fprintf(stderr, "bpe_train: no pairs left after %d merges\n", m);
            break;
        }
        heap.pop();
        int a = best.a, b = best.b, t = 256 + m;
        uint64_t key = pair_key(a, b);
        merges.push_back({a, b});
        if (verbose) {
            bytes.push_back(bytes[a] + bytes[b]);
            if (m < 10 || (m + 1) % 500 == 0 || m + 1 == n_merges)
                std::fprintf(stderr, "merge %d/%d: (%d, %d) -> %d \"%s\" count %lld\n", m + 1, n_merges, a, b, t,
                             bytes[t].c_str(), (long long)best.count);
        }

        // Update only the pieces that contain (a, b): subtract their old
        // pairs, merge, add their new pairs. Net changes go to stats + heap.
        std::vector<int> ws = std::move(where[key]);
        where.erase(key);
        for (int w : ws) {
            if (last_seen[w] == m) continue;
            last_seen[w] = m;
            std::vector<int>& ids = words[w];
            int64_t c = word_count[w];
            delta.clear();
            auto add = [&](uint64_t k, int64_t d) {
                for (auto& kd : delta)
                    if (kd.first == k) { kd.second += d; return; }
                delta.push_back({k, d});
            };
            for (size_t i = 0; i + 1 < ids.size(); i++) add(pair_key(ids[i], ids[i + 1]), -c);
            merge_pair_in(ids, a, b, t);
            for (size_t i = 0; i + 1 < ids.size(); i++) {
                add(pair_key(ids[i], ids[i + 1]), +c);
                if (ids[i] == t || ids[i + 1] == t) where[pair_key(ids[i], ids[i + 1])].push_back(w);
            }
            for (const auto& kd : delta) {
                if (kd.second == 0) continue;
                int64_t& s = stats[kd.first];
                s += kd.second;
                if (s == 0) stats.erase(kd.first);
                else heap.push({s, int(kd.first >> 32), int(uint32_t(kd.first))});
            }
        }
        stats.erase(key);  // already 0 and erased; kept for clarity
    }
    return tokenizer_from_merges(merges);
}

inline Tokenizer bpe_train(const std::string& text, int vocab_size, bool verbose) {
    std::unordered_map<std::string, int64_t> counts;
    count_pieces(text, counts);
    return bpe_train_counts(counts, vocab_size, verbose);
}

// ---------------------------------------------------------------- encode / decode

// Appends the tokens of one piece s[0, n) to out.
inline void bpe_encode_piece(const Tokenizer& tok, const char* s, size_t n, std::vector<int>& out) {
    std::vector<int> ids(n);
    for (size_t i = 0; i < n; i++) ids[i] = (unsigned char)s[i];
    while (ids.size() >= 2) {
        int best = INT_MAX, ba = 0, bb = 0;  // lowest-id merge among adjacent pairs
        for (size_t i = 0; i + 1 < ids.size(); i++) {
            auto it = tok.merge_id.find(pair_key(ids[i], ids[i + 1]));
            if (it != tok.merge_id.end() && it->second < best) {
                best = it->second;
                ba = ids[i];
                bb = ids[i + 1];
            }
        }
        if (best == INT_MAX) break;
        merge_pair_in(ids, ba, bb, best);
    }
    out.insert(out.end(), ids.begin(), ids.end());
}

// Encodes text. Pieces are split into one contiguous range per thread and
// encoded in parallel, each thread with its own piece -> tokens cache (most
// pieces repeat). progress(bytes_done, bytes_total), if given, is called
// after each block of pieces.
inline std::vector<int> bpe_encode(const Tokenizer& tok, const std::string& text,
                                   const std::function<void(size_t, size_t)>& progress = nullptr) {
    if (!tok.cannot_encode.empty()) fail(tok.cannot_encode);
    std::vector<std::pair<size_t, size_t>> pieces = split_pieces(text);
    int nthreads = 1;
#ifdef _OPENMP
    nthreads = omp_get_max_threads();
#endif
    std::vector<std::unordered_map<std::string_view, std::vector<int>>> cache(nthreads);
    std::vector<std::vector<int>> part(nthreads);
    std::vector<int> out;
    out.reserve(text.size() / 3);
    const size_t block = size_t(1) << 18;  // pieces per progress step
    for (size_t start = 0; start < pieces.size(); start += block) {
        size_t end = std::min(pieces.size(), start + block);
#pragma omp parallel num_threads(nthreads)
        {
            int th = 0, nth = 1;
#ifdef _OPENMP
            th = omp_get_thread_num();
            nth = omp_get_num_threads();
#endif
            size_t lo = start + (end - start) * th / nth, hi = start + (end - start) * (th + 1) / nth;
            std::vector<int>& o = part[th];
            auto& c = cache[th];
            o.clear();
            for (size_t p = lo; p < hi; p++) {
                std::string_view sv(text.data() + pieces[p].first, pieces[p].second);
                auto it = c.find(sv);
                if (it != c.end()) {
                    o.insert(o.end(), it->second.begin(), it->second.end());
                    continue;
                }
                size_t before = o.size();
                bpe_encode_piece(tok, sv.data(), sv.size(), o);
                if (c.size() > (1u << 20)) c.clear();  // bound memory on huge corpora
                c.emplace(sv, std::vector<int>(o.begin() + before, o.end()));
            }
        }
        for (int th = 0; th < nthreads; th++) out.insert(out.end(), part[th].begin(), part[th].end());
        if (progress) progress(end < pieces.size() ? pieces[end].first : text.size(), text.size());
    }
    return out;
}

// Decodes ids back to bytes. The end-of-text token decodes to EOT_TEXT;
// an id outside [0, vocab_size) is an error.
inline std::string bpe_decode(const Tokenizer& tok, const int* ids, size_t n) {
    std::string out;
    for (size_t i = 0; i < n; i++) {
        int id = ids[i];
        if (id < 0 || id >= tok.vocab_size)
            fail(strf("bpe_decode: token id %d out of range [0, %d)", id, tok.vocab_size));
        if (id == tok.eot) out += EOT_TEXT;
        else out += tok.token_bytes[id];
    }
    return out;
}

// ---------------------------------------------------------------- file I/O

inline void tokenizer_save(const Tokenizer& tok, const std::string& path) {
    std::vector<int32_t> data = {TOKENIZER_MAGIC, TOKENIZER_VERSION, tok.vocab_size, int32_t(tok.merges.size())};
    for (const auto& m : tok.merges) {
        data.push_back(m.first);
        data.push_back(m.second);
    }
    write_file_atomic(path, {{data.data(), data.size() * sizeof(int32_t)}});
}

constexpr uint32_t LLMC_TOKENIZER_MAGIC = 20240328;
constexpr size_t LLMC_TOKENIZER_HEADER_INTS = 256;

// llm.c's tokenizer file (the format above), already read into s.
inline Tokenizer llmc_tokenizer_parse(const std::string& path, const std::string& s) {
    const char* p = path.c_str();
    const size_t header_bytes = LLMC_TOKENIZER_HEADER_INTS * 4;
    if (s.size() < header_bytes)
        fail(strf("%s: truncated llm.c tokenizer file: %zu bytes, shorter than the 1024-byte header", p, s.size()));
    std::vector<uint32_t> h(LLMC_TOKENIZER_HEADER_INTS);
    std::memcpy(h.data(), s.data(), header_bytes);
    if (h[1] != 1 && h[1] != 2)
        fail(strf("%s: llm.c tokenizer version %u, this build reads versions 1 and 2", p, h[1]));
    if (h[2] < 2 || h[2] > (1u << 24))
        fail(strf("%s: vocabulary size %u in the llm.c tokenizer header (must be 2..%d)", p, h[2], 1 << 24));
    Tokenizer tok;
    tok.vocab_size = (int)h[2];
    if (h[1] == 2 && h[3] >= h[2])
        fail(strf("%s: end-of-text token %u in the llm.c tokenizer header is outside the vocabulary 0..%u", p, h[3],
                  h[2] - 1));
    tok.eot = h[1] == 2 ? (int)h[3] : tok.vocab_size - 1;
    tok.token_bytes.resize(tok.vocab_size);
    size_t at = header_bytes;
    for (int id = 0; id < tok.vocab_size; id++) {
        if (at >= s.size())
            fail(strf("%s: truncated llm.c tokenizer file: it ends before token %d of %d", p, id, tok.vocab_size));
        size_t n = (unsigned char)s[at++];
        if (at + n > s.size())
            fail(strf("%s: truncated llm.c tokenizer file: token %d of %d has %zu bytes, %zu are left", p, id,
                      tok.vocab_size, n, s.size() - at));
        // the end-of-text token is a separator, no text: it has no bytes (bytes per token counts none,
        // bpe_decode writes EOT_TEXT for it)
        if (id != tok.eot) tok.token_bytes[id] = s.substr(at, n);
        at += n;
    }
    if (at != s.size())
        fail(strf("%s: %zu bytes of trailing data after the %d tokens of the llm.c tokenizer file", p, s.size() - at,
                  tok.vocab_size));
    tok.cannot_encode = strf("%s is llm.c's tokenizer file: it holds each token's bytes but not GPT-2's merges, so "
                             "it decodes token ids but cannot encode text; give a prompt with a tokenizer of this "
                             "program (./prepare), or sample without --prompt",
                             p);
    return tok;
}

// Reads a tokenizer file: this program's (the format above) or llm.c's.
inline Tokenizer tokenizer_load(const std::string& path) {
    std::string s = read_file(path, "tokenizer file");
    const char* p = path.c_str();
    uint32_t magic = 0;
    if (s.size() >= 4) std::memcpy(&magic, s.data(), 4);
    if (magic == LLMC_TOKENIZER_MAGIC) return llmc_tokenizer_parse(path, s);
    if (s.size() < 16) fail(strf("%s: truncated tokenizer header (%zu of 16 bytes)", p, s.size()));
    auto at = [&](size_t i) {
        int32_t v;
        std::memcpy(&v, s.data() + 4 * i, 4);
        return v;
    };
    if (at(0) != TOKENIZER_MAGIC)
        fail(strf("%s: not a mot tokenizer file (magic %d, expected %d; or llm.c's tokenizer, magic %u)", p, at(0),
                  TOKENIZER_MAGIC, LLMC_TOKENIZER_MAGIC));
    if (at(1) != TOKENIZER_VERSION)
        fail(strf("%s: unsupported tokenizer version %d (this build reads version %d)", p, at(1), TOKENIZER_VERSION));
    int32_t vocab = at(2), n = at(3);
    if (n < 0 || int64_t(vocab) != 256 + int64_t(n) + 1)
        fail(strf("%s: inconsistent sizes: vocab_size %d with %d merges (expected vocab_size = 256 + merges + 1)", p,
                  vocab, n));
    uint64_t expect = 16 + 8 * uint64_t(n);
    if (s.size() < expect)
        fail(strf("%s: truncated: %zu bytes, expected %llu for %d merges", p, s.size(), (unsigned long long)expect, n));
    if (s.size() > expect)
        fail(strf("%s: %zu bytes, expected %llu for %d merges (trailing data)", p, s.size(),
                  (unsigned long long)expect, n));
    std::vector<std::pair<int, int>> merges(n);
    for (int i = 0; i < n; i++) {
        int a = at(4 + 2 * size_t(i)), b = at(5 + 2 * size_t(i)), id = 256 + i;
        if (a < 0 || b < 0 || a >= id || b >= id)
            fail(strf("%s: merge %d (token %d) = (%d, %d) refers to a token not yet defined", p, i, id, a, b));
        merges[i] = {a, b};
    }
    return tokenizer_from_merges(merges);
}
