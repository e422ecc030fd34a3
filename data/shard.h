// Token shards, the llm.c format (docs/design.md section 7, a contract):
//     256 int32 header: [0] magic 20240520, [1] version 1, [2] token count,
//                       the rest zero
//     then `token count` uint16 tokens.
// Little-endian. The file size must be exactly 1024 + 2 * count bytes.
// Shards written by llm.c's own tools (GPT-2 tokens, vocab 50257) read fine.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/fileio.h"

constexpr int32_t SHARD_MAGIC = 20240520;
constexpr int32_t SHARD_VERSION = 1;
constexpr int SHARD_HEADER_INTS = 256;
constexpr int64_t SHARD_HEADER_BYTES = SHARD_HEADER_INTS * 4;

inline void write_shard(const std::string& path, const uint16_t* tokens, size_t n) {
    if (n > size_t(INT32_MAX)) fail(strf("%s: %zu tokens do not fit one shard (max %d)", path.c_str(), n, INT32_MAX));
    int32_t header[SHARD_HEADER_INTS] = {0};
    header[0] = SHARD_MAGIC;
    header[1] = SHARD_VERSION;
    header[2] = int32_t(n);
    write_file_atomic(path, {{header, sizeof(header)}, {tokens, n * sizeof(uint16_t)}});
}

inline void write_shard(const std::string& path, const std::vector<uint16_t>& tokens) {
    write_shard(path, tokens.data(), tokens.size());
}

// Reads and checks the header of an open shard; returns its token count.
inline int64_t read_shard_header(FILE* f, const std::string& path) {
    const char* p = path.c_str();
    int64_t size = file_size(f);
    if (size < SHARD_HEADER_BYTES)
        fail(strf("%s: shorter than the shard header (%lld of %lld bytes)", p, (long long)size,
                  (long long)SHARD_HEADER_BYTES));
    int32_t header[SHARD_HEADER_INTS];
    if (std::fread(header, 4, SHARD_HEADER_INTS, f) != size_t(SHARD_HEADER_INTS))
        fail(strf("%s: read error in the shard header", p));
    if (header[0] != SHARD_MAGIC)
        fail(strf("%s: not a token shard (magic %d, expected %d)", p, header[0], SHARD_MAGIC));
    if (header[1] != SHARD_VERSION)
        fail(strf("%s: unsupported shard version %d (expected %d)", p, header[1], SHARD_VERSION));
    int64_t n = header[2];
    int64_t expect = SHARD_HEADER_BYTES + 2 * n;
    if (n < 0) fail(strf("%s: negative token count %lld in the shard header", p, (long long)n));
    if (size != expect)
        fail(strf("%s: header says %lld tokens (%lld bytes) but the file has %lld bytes (%s)", p, (long long)n,
                  (long long)expect, (long long)size, size < expect ? "truncated" : "trailing data"));
    return n;
}

// Token count of a shard, checking only its header and size.
inline int64_t shard_token_count(const std::string& path) {
    FILE* f = open_or_fail(path, "token shard");
    int64_t n = 0;
    try {
        n = read_shard_header(f, path);
    } catch (...) {
        std::fclose(f);
        throw;
    }
    std::fclose(f);
    return n;
}

// Fails unless every id in tokens[0, n) is below vocab_size; offset is the
// position of tokens[0] in the shard, for the message.
inline void check_token_ids(const std::string& path, const uint16_t* tokens, size_t n, size_t offset, int vocab_size) {
    for (size_t i = 0; i < n; i++)
        if (tokens[i] >= vocab_size)
            fail(strf("%s: token %d at position %zu is >= vocab size %d (shard made with another tokenizer?)",
                      path.c_str(), int(tokens[i]), offset + i, vocab_size));
}

// Token count of a shard, checking its header, its size and that every token
// id is below vocab_size. Reads the tokens in chunks (one pass, little
// memory), so a loader can check all its shards at the start.
inline int64_t shard_check(const std::string& path, int vocab_size) {
    FILE* f = open_or_fail(path, "token shard");
    int64_t n = 0;
    try {
        n = read_shard_header(f, path);
        std::vector<uint16_t> chunk(size_t(1) << 20);
        for (int64_t done = 0; done < n;) {
            size_t k = size_t(std::min<int64_t>(n - done, int64_t(chunk.size())));
            if (std::fread(chunk.data(), 2, k, f) != k) fail(strf("%s: read error in the token data", path.c_str()));
            check_token_ids(path, chunk.data(), k, size_t(done), vocab_size);
            done += int64_t(k);
        }
    } catch (...) {
        std::fclose(f);
        throw;
    }
    std::fclose(f);
    return n;
}

inline std::vector<uint16_t> read_shard(const std::string& path) {
    FILE* f = open_or_fail(path, "token shard");
    std::vector<uint16_t> tokens;
    try {
        int64_t n = read_shard_header(f, path);
        tokens.resize(size_t(n));
        if (n > 0 && std::fread(tokens.data(), 2, size_t(n), f) != size_t(n))
            fail(strf("%s: read error in the token data", path.c_str()));
    } catch (...) {
        std::fclose(f);
        throw;
    }
    std::fclose(f);
    return tokens;
}
