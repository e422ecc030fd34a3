// Tests of the byte-level BPE tokenizer (tokenizer/): pre-splitting, merges
// worked out by hand, the fast trainer (bpe.h) against the plain one
// (bpe_plain.h), round trips, determinism, and rejection of bad tokenizer
// files.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "common/data_path.h"
#include "tokenizer/bpe.h"
#include "tokenizer/bpe_plain.h"
#include "tests/bad_input.h"
#include "tests/rng.h"

// the text, found as the program finds it (common/data_path.h: MOT_DATA,
// else data/, ...); tests that need it skip without it
static const std::string SHAKESPEARE = data_path("tinyshakespeare.txt");

static std::vector<std::string> pieces_of(const std::string& s) {
    std::vector<std::string> out;
    for (auto& p : split_pieces(s)) out.push_back(s.substr(p.first, p.second));
    return out;
}

// n bytes, any byte or from the alphabet
static std::string random_bytes(TestRng& rng, size_t n, const std::string& alphabet = "") {
    std::string s(n, '\0');
    for (auto& c : s) c = alphabet.empty() ? char(rng.next() & 0xff) : alphabet[rng.below((int)alphabet.size())];
    return s;
}

static std::string tmp_path(const std::string& name) {
    return (std::filesystem::temp_directory_path() / ("mot_test_tok_" + std::to_string(getpid()) + "_" + name)).string();
}

TEST_CASE("pre-split: GPT-2 style pieces") {
    using V = std::vector<std::string>;
    CHECK(pieces_of("Hello world!! 123 it's  \n\nok") == V{"Hello", " world", "!!", " 123", " it", "'s", "  \n", "\n", "ok"});
    CHECK(pieces_of("a  b") == V{"a", " ", " b"});
    CHECK(pieces_of("hi  ") == V{"hi", "  "});
    CHECK(pieces_of("caf\xc3\xa9 au lait.") == V{"caf\xc3\xa9", " au", " lait", "."});
    CHECK(pieces_of("we'll 've x'y") == V{"we", "'ll", " '", "ve", " x", "'", "y"});
    CHECK(pieces_of("ROMEO:\nO, she") == V{"ROMEO", ":", "\n", "O", ",", " she"});
    CHECK(pieces_of("").empty());
    // rule 6: long runs are cut at MAX_PIECE bytes
    CHECK(pieces_of(std::string(600, '=')) == V{std::string(256, '='), std::string(256, '='), std::string(88, '=')});
    CHECK(pieces_of(std::string(300, ' ') + "x") == V{std::string(256, ' '), std::string(43, ' '), " x"});
    // every byte lands in exactly one piece
    TestRng rng(1);
    for (int k = 0; k < 200; k++) {
        std::string s = random_bytes(rng, rng.below(100));
        std::string joined;
        for (auto& p : pieces_of(s)) {
            CHECK(!p.empty());
            joined += p;
        }
        CHECK(joined == s);
    }
}

TEST_CASE("merges of a tiny corpus, worked out by hand") {
    // "aaabdaaabac" is one piece. a=97 b=98 c=99 d=100. Pair counts (with
    // overlap): aa 4, ab 2, others 1 -> (97,97)=256: Z a b d Z a b a c.
    // Then Za 2 and ab 2 tie -> smaller pair (97,98)=257: Z Y d Z Y a c.
    // ZY 2 -> (256,257)=258: X d X a c. All pairs 1 -> smallest (97,99)=259:
    // X d X W. -> (100,258)=260: X V W. -> (258,260)=261, then (261,259)=262.
    Tokenizer tok = bpe_train("aaabdaaabac", 300, false);
    std::vector<std::pair<int, int>> expect = {{97, 97}, {97, 98}, {256, 257}, {97, 99}, {100, 258}, {258, 260}, {261, 259}};
    CHECK(tok.merges == expect);
    CHECK(tok.vocab_size == 256 + 7 + 1);  // ran out of pairs: smaller vocab
    CHECK(tok.eot == tok.vocab_size - 1);
    CHECK(bpe_encode(tok, "aaabdaaabac") == std::vector<int>{262});
    // Pieces "ab" x1 and " ab" x2: (97,98) 3 -> 256; then (32,256) 2 -> 257.
    // No merge ever crosses a piece boundary, so (98,32) never appears.
    Tokenizer t2 = bpe_train("ab ab ab", 1000, false);
    CHECK(t2.merges == std::vector<std::pair<int, int>>{{97, 98}, {32, 256}});
    CHECK(bpe_encode(t2, "ab ab") == std::vector<int>{256, 257});
    CHECK(bpe_encode(t2, "abab") == std::vector<int>{256, 256});
    // vocab stops exactly where asked
    CHECK(bpe_train("aaabdaaabac", 259, false).merges.size() == 2);
}

TEST_CASE("fast trainer (bpe.h) == plain trainer (bpe_plain.h)") {
    std::vector<std::pair<std::string, int>> corpora;
    TestRng rng(42);
    corpora.push_back({random_bytes(rng, 3000, "ab "), 460});         // many ties
    corpora.push_back({random_bytes(rng, 3000, "aaab \n"), 460});     // long runs: overlapping pairs
    corpora.push_back({random_bytes(rng, 2000), 560});                // arbitrary bytes
    corpora.push_back({std::string(500, 'a') + " aaaa aaa", 540});    // one run, every count a tie
    corpora.push_back({"the cat sat on the mat. the cat ate the rat!", 560});
    if (!SHAKESPEARE.empty()) {
        corpora.push_back({read_file(SHAKESPEARE).substr(0, 30000), 860});
    }
    for (const auto& c : corpora) {
        Tokenizer fast = bpe_train(c.first, c.second, false);
        Tokenizer plain = bpe_train_plain(c.first, c.second);
        CHECK(fast.merges.size() == plain.merges.size());
        CHECK(fast.merges == plain.merges);
        CHECK(fast.vocab_size == plain.vocab_size);
    }
}

TEST_CASE("round trip: random byte strings, invalid UTF-8 included") {
    TestRng rng(7);
    std::vector<Tokenizer> toks = {tokenizer_from_merges({}), bpe_train(random_bytes(rng, 20000), 600, false),
                                   bpe_train(random_bytes(rng, 20000, "ab \n\xc3\xa9\xff."), 600, false)};
    CHECK(toks[0].vocab_size == 257);
    CHECK(toks[0].eot == 256);
    for (const auto& tok : toks)
        for (int k = 0; k < 500; k++) {
            std::string s = random_bytes(rng, rng.below(300), k % 2 ? "" : "ab \n\xc3\xa9\xff\x80.");
            std::vector<int> ids = bpe_encode(tok, s);
            for (int id : ids) REQUIRE((id >= 0 && id < tok.eot));
            REQUIRE(bpe_decode(tok, ids.data(), ids.size()) == s);
        }
    CHECK(bpe_encode(toks[0], "hi") == std::vector<int>{104, 105});
    int eot = toks[0].eot, bad = 257;
    CHECK(bpe_decode(toks[0], &eot, 1) == EOT_TEXT);
    expect_throw([&] { bpe_decode(toks[0], &bad, 1); }, {"out of range"});
    expect_throw([&] { bpe_train("abc", 256, false); }, {"vocab size 256"});
}

// Skipped (and reported as skipped by doctest) when the text is not there.
TEST_CASE("round trip: all of tinyshakespeare; threads give the same tokens" *
          doctest::skip(SHAKESPEARE.empty())) {
    std::string text = read_file(SHAKESPEARE);
    Tokenizer tok = bpe_train(text, 2048, false);
    CHECK(tok.vocab_size == 2048);
    std::vector<int> ids = bpe_encode(tok, text);
    CHECK(bpe_decode(tok, ids.data(), ids.size()) == text);
    CHECK(double(text.size()) / double(ids.size()) > 2.5);  // BPE must actually compress
    // the piece-by-piece reference, one thread, no cache
    std::vector<int> ref;
    for (auto& p : split_pieces(text)) bpe_encode_piece(tok, text.data() + p.first, p.second, ref);
    CHECK(ids == ref);
#ifdef _OPENMP
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    CHECK(bpe_encode(tok, text) == ids);
    omp_set_num_threads(3);
    CHECK(bpe_encode(tok, text) == ids);
    omp_set_num_threads(nt);
#endif
}

TEST_CASE("save / load; determinism: same input -> byte-identical file") {
    TestRng rng(3);
    std::string text = random_bytes(rng, 20000, "abcd efg\n.,");
    std::string p1 = tmp_path("a.bin"), p2 = tmp_path("b.bin");
    tokenizer_save(bpe_train(text, 500, false), p1);
    tokenizer_save(bpe_train(text, 500, false), p2);
    std::string a = read_file(p1), b = read_file(p2);
    CHECK(a.size() == 16 + 8 * (500 - 257));
    CHECK(a == b);
    Tokenizer t = tokenizer_load(p1);
    CHECK(t.vocab_size == 500);
    CHECK(t.merges == bpe_train(text, 500, false).merges);
    CHECK(bpe_decode(t, bpe_encode(t, text).data(), bpe_encode(t, text).size()) == text);
    tokenizer_save(tokenizer_from_merges({}), p2);  // the byte-level fallback
    CHECK(tokenizer_load(p2).vocab_size == 257);
    CHECK(!file_exists(p1 + ".tmp"));
    std::remove(p1.c_str());
    std::remove(p2.c_str());
}

TEST_CASE("bad tokenizer files are rejected, naming the file") {
    TestRng rng(5);
    std::string good;
    {
        std::string p = tmp_path("good.bin");
        tokenizer_save(bpe_train(random_bytes(rng, 5000, "abc "), 300, false), p);
        good = read_file(p);
        std::remove(p.c_str());
    }
    std::vector<BadFile> cases = {
        {"short_header", good.substr(0, 10), "truncated tokenizer header"},
        {"truncated", good.substr(0, good.size() - 4), "truncated"},
        {"trailing", good + "xxxx", "trailing data"},
        {"magic", patched(good, 0, int32_t(12345)), "not a mot tokenizer file"},
        {"version", patched(good, 4, int32_t(2)), "unsupported tokenizer version 2"},
        {"sizes", patched(good, 8, int32_t(999)), "inconsistent sizes"},
        {"forward_ref", patched(good, 16, int32_t(256)), "not yet defined"},       // merge 0 uses token 256 (itself)
        {"negative_ref", patched(good, 20, int32_t(-1)), "not yet defined"},
    };
    for (const auto& c : cases) {
        std::string p = tmp_path(std::string(c.name) + ".bin");
        write_file_atomic(p, c.bytes);
        CAPTURE(c.name);
        expect_throw([&] { tokenizer_load(p); }, {p, c.needle});
        std::remove(p.c_str());
    }
    std::string missing = tmp_path("does_not_exist.bin");
    expect_throw([&] { tokenizer_load(missing); }, {missing});
}
