// Byte-level BPE training written the plain way, to read before bpe.h.
//
// bpe_train (bpe.h) and bpe_train_plain compute the same merges: the tests
// hold one against the other. This one recounts every pair of every piece
// after every merge, which is obviously right and costs O(merges x text);
// bpe.h keeps the counts in a table and a heap and touches only the pieces
// that contain the merged pair, so it trains tinyshakespeare in a fraction of
// a second.
//
// The algorithm (bpe.h's top comment has the tokens and the file format):
//   1. pre-split the text into pieces (pretokenize.h) and count each distinct
//      piece; a piece is a list of byte ids 0..255
//   2. count every adjacent pair (a, b) of ids over all pieces, each piece
//      weighted by how often it occurs; overlapping occurrences count ("aaa"
//      has two (a, a) pairs)
//   3. the most frequent pair becomes token 256 + i (ties: the smallest
//      (a, b)); replace its occurrences in every piece, left to right without
//      overlap ("aaa" -> "X a")
//   4. repeat from 2 until the vocabulary is full or no pair is left
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/error.h"
#include "tokenizer/bpe.h"
#include "tokenizer/pretokenize.h"

inline Tokenizer bpe_train_plain(const std::string& text, int vocab_size) {
    if (vocab_size < 257) fail(strf("bpe_train: vocab size %d is below 257 (256 bytes + end-of-text)", vocab_size));

    // 1. the distinct pieces as lists of byte ids, and how often each occurs
    std::unordered_map<std::string, int64_t> counts;
    count_pieces(text, counts);
    std::vector<std::vector<int>> pieces;
    std::vector<int64_t> freq;
    for (const auto& [piece, count] : counts) {
        std::vector<int> ids;
        for (unsigned char byte : piece) ids.push_back(byte);
        pieces.push_back(ids);
        freq.push_back(count);
    }

    std::vector<std::pair<int, int>> merges;
    for (int t = 256; t < vocab_size - 1; t++) {  // the last id is end-of-text
        // 2. count every pair; std::map keeps the pairs sorted, so the first
        // pair with the highest count is the smallest one
        std::map<std::pair<int, int>, int64_t> pair_counts;
        for (size_t w = 0; w < pieces.size(); w++)
            for (size_t i = 0; i + 1 < pieces[w].size(); i++) pair_counts[{pieces[w][i], pieces[w][i + 1]}] += freq[w];
        if (pair_counts.empty()) break;  // every piece is one token: a smaller vocabulary

        // 3. the most frequent pair becomes token t
        std::pair<int, int> best;
        int64_t best_count = 0;
        for (const auto& [pair, count] : pair_counts)
            if (count > best_count) best = pair, best_count = count;
        merges.push_back(best);
        for (std::vector<int>& ids : pieces) merge_pair_in(ids, best.first, best.second, t);
    }
    return tokenizer_from_merges(merges);
}
