// Pre-splitting text into pieces before BPE, roughly as GPT-2 does.
//
// BPE never merges across a piece boundary, so a token never spans a word and
// the following space, or a word and its punctuation. That keeps the
// vocabulary from filling up with "dog." / "dog!" / "dog?" variants.
//
// The rules, applied greedily from left to right (a hand-written version of
// GPT-2's regex  's|'t|'re|'ve|'m|'ll|'d| ?L+| ?N+| ?[^\sLN]+|\s+(?!\S)|\s+ ):
//   1. contractions: 's 't 're 've 'm 'll 'd (lowercase, as in GPT-2)
//   2. an optional single space, then a run of letters    (" hello")
//   3. an optional single space, then a run of digits     (" 1997")
//   4. an optional single space, then a run of other bytes (" ...", "!?")
//   5. a run of whitespace; if more text follows, the last whitespace byte is
//      left out, so that a space can attach to the next word as in rule 2-4
//   6. (not in GPT-2) no piece is longer than MAX_PIECE bytes: a longer run is
//      cut. Encoding a piece costs O(length^2), so a megabyte of "=====" must
//      not become one piece; normal text never gets near the limit.
// Letters are ASCII a-z A-Z and every byte >= 0x80 (so UTF-8 multi-byte
// characters stay inside words; no Unicode tables needed). Digits are 0-9.
// Whitespace is space, \t, \n, \v, \f, \r. Every byte of the input lands in
// exactly one piece, so concatenating the pieces gives back the text.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

constexpr size_t MAX_PIECE = 256;

enum ByteClass { BC_LETTER, BC_DIGIT, BC_SPACE, BC_OTHER };

inline ByteClass byte_class_slow(unsigned char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80) return BC_LETTER;
    if (c >= '0' && c <= '9') return BC_DIGIT;
    if (c == ' ' || (c >= '\t' && c <= '\r')) return BC_SPACE;
    return BC_OTHER;
}

// The same as a 256-entry table: splitting is on the serial path of encode.
struct ByteClassTable {
    unsigned char c[256];
    ByteClassTable() {
        for (int i = 0; i < 256; i++) c[i] = (unsigned char)byte_class_slow((unsigned char)i);
    }
};
inline ByteClass byte_class(unsigned char c) {
    static const ByteClassTable table;
    return ByteClass(table.c[c]);
}

// Length of a contraction starting at s[i] (which is '\''), or 0 if none.
inline size_t contraction_length(const char* s, size_t i, size_t n) {
    if (i + 1 >= n) return 0;
    char a = s[i + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (i + 2 < n) {
        char b = s[i + 2];
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    }
    return 0;
}

// Length of the piece that starts at s[i] (i < n). Always >= 1.
inline size_t piece_length(const char* s, size_t i, size_t n) {
    const unsigned char* u = reinterpret_cast<const unsigned char*>(s);
    if (s[i] == '\'') {
        size_t c = contraction_length(s, i, n);
        if (c) return c;
    }
    size_t j = i, end = std::min(n, i + MAX_PIECE);
    // rules 2-4: an optional space glued to the following run
    if (s[j] == ' ' && j + 1 < n && byte_class(u[j + 1]) != BC_SPACE) j++;
    ByteClass k = byte_class(u[j]);
    if (k != BC_SPACE) {
        while (j < end && byte_class(u[j]) == k) j++;
        return j - i;
    }
    // rule 5: whitespace run, minus its last byte when text follows
    while (j < end && byte_class(u[j]) == BC_SPACE) j++;
    if (j < n && j - i > 1 && byte_class(u[j]) != BC_SPACE) j--;
    return j - i;
}

// Calls f(offset, length) for every piece of text[0, n), in order.
template <typename F>
void for_each_piece(const char* s, size_t n, F f) {
    size_t i = 0;
    while (i < n) {
        size_t len = piece_length(s, i, n);
        f(i, len);
        i += len;
    }
}

// The pieces of a text as (offset, length) pairs.
inline std::vector<std::pair<size_t, size_t>> split_pieces(const std::string& text) {
    std::vector<std::pair<size_t, size_t>> out;
    out.reserve(text.size() / 4);
    for_each_piece(text.data(), text.size(), [&](size_t off, size_t len) { out.push_back({off, len}); });
    return out;
}

// Adds the pieces of text to a piece -> occurrence count table. Training only
// needs each distinct piece once with its count (text has ~100x fewer
// distinct pieces than pieces), which is what makes BPE training fast.
inline void count_pieces(const std::string& text, std::unordered_map<std::string, int64_t>& counts) {
    for_each_piece(text.data(), text.size(),
                   [&](size_t off, size_t len) { counts[text.substr(off, len)]++; });
}
