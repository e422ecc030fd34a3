// Tests of data/: token shards, the data loader (the exact order of
// docs/design.md section 7, multi-shard order, shuffling, resume) and prepare
// (splits, several shards, determinism, the cache, bad input).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "data/dataloader.h"
#include "data/prepare.h"
#include "data/shard.h"
#include "tests/bad_input.h"

namespace fs = std::filesystem;

// A fresh scratch directory per test case, removed afterwards.
struct TempDir {
    std::string path;
    TempDir() {
        static int n = 0;
        path = (fs::temp_directory_path() / ("mot_test_data_" + std::to_string(getpid()) + "_" + std::to_string(n++)))
                   .string();
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~TempDir() { fs::remove_all(path); }
    std::string operator/(const std::string& name) const { return path + "/" + name; }
};

static std::vector<uint16_t> iota_tokens(int n, int start = 0) {
    std::vector<uint16_t> v(n);
    for (int i = 0; i < n; i++) v[i] = uint16_t(start + i);
    return v;
}

// One batch as (inputs, targets).
struct Batch {
    std::vector<int> x, y;
    bool operator==(const Batch& o) const { return x == o.x && y == o.y; }
};
static Batch next_batch(DataLoader* L) {
    Batch b{std::vector<int>(size_t(L->B) * L->T), std::vector<int>(size_t(L->B) * L->T)};
    dataloader_next(L, b.x.data(), b.y.data());
    return b;
}

TEST_CASE("shard: write, read, exact size") {
    TempDir d;
    std::vector<uint16_t> t = {0, 1, 65535, 42, 7};
    write_shard(d / "s.bin", t);
    CHECK(read_shard(d / "s.bin") == t);
    CHECK(fs::file_size(d / "s.bin") == 1024 + 2 * t.size());
    std::string raw = read_file(d / "s.bin");
    int32_t h[3];
    std::memcpy(h, raw.data(), 12);
    CHECK(h[0] == 20240520);
    CHECK(h[1] == 1);
    CHECK(h[2] == 5);
    CHECK(leftover_temp_files(d / "s.bin").empty());
    write_shard(d / "empty.bin", std::vector<uint16_t>{});
    CHECK(read_shard(d / "empty.bin").empty());
}

TEST_CASE("shard: bad files are rejected, naming the file") {
    TempDir d;
    write_shard(d / "good.bin", iota_tokens(10));
    std::string good = read_file(d / "good.bin");
    std::vector<BadFile> cases = {
        {"short.bin", good.substr(0, 100), "shorter than the shard header"},
        {"magic.bin", patched(good, 0, int32_t(20240521)), "not a token shard"},
        {"version.bin", patched(good, 4, int32_t(7)), "unsupported shard version 7"},
        {"truncated.bin", good.substr(0, good.size() - 2), "truncated"},
        {"trailing.bin", good + "ab", "trailing data"},
        {"count.bin", patched(good, 8, int32_t(11)), "header says 11 tokens"},
    };
    for (const auto& c : cases) {
        std::string p = d / c.name;
        write_file_atomic(p, c.bytes);
        CAPTURE(c.name);
        expect_throw([&] { read_shard(p); }, {p, c.needle});
        expect_throw([&] { shard_token_count(p); }, {c.needle});
    }
    expect_throw([&] { read_shard(d / "missing.bin"); }, {"missing.bin"});
}

TEST_CASE("loader: sequential order exactly as docs/design.md section 7") {
    TempDir d;
    write_shard(d / "s.bin", iota_tokens(100));  // token i at position i
    DataLoader L;
    const int B = 2, T = 4;  // B*T = 8; a batch reads 9 tokens
    dataloader_init(&L, d / "s.bin", B, T, false, 0, 100);
    // p = 0, 8, ..., 88 (88 + 9 <= 100; 96 + 9 > 100), then wraps to 0
    CHECK(dataloader_batches_per_epoch(&L) == 12);
    for (int k = 0; k < 30; k++) {
        int p = (k % 12) * 8;
        Batch b = next_batch(&L);
        for (int r = 0; r < B; r++)
            for (int t = 0; t < T; t++) {
                CHECK(b.x[r * T + t] == p + r * T + t);      // row r = r-th run of T tokens
                CHECK(b.y[r * T + t] == p + r * T + t + 1);  // targets shifted by one
            }
        DataLoaderState s = dataloader_get_state(&L);
        CHECK(s.epoch == (k + 1) / 12);
        CHECK(s.position == ((k + 1) % 12) * 8);
    }
    dataloader_reset(&L);
    CHECK(next_batch(&L).x[0] == 0);
}

TEST_CASE("loader: several shards in sorted name order, then back to the first") {
    TempDir d;
    // written out of order; contents tell the shards apart
    write_shard(d / "x_000002.bin", iota_tokens(17, 2000));
    write_shard(d / "x_000000.bin", iota_tokens(20, 0));
    write_shard(d / "x_000001.bin", iota_tokens(35, 1000));
    write_shard(d / "y_000000.bin", iota_tokens(20, 3000));  // not matched by the pattern
    DataLoader L;
    dataloader_init(&L, d / "x_*.bin", 2, 4, false, 0, 4000);
    REQUIRE(L.files.size() == 3);
    // batches per shard: 20 tokens -> p 0, 8; 35 -> 0, 8, 16, 24; 17 -> 0, 8
    std::vector<int> starts = {0, 8, 1000, 1008, 1016, 1024, 2000, 2008};
    CHECK(dataloader_batches_per_epoch(&L) == 8);
    for (int k = 0; k < 20; k++) {
        Batch b = next_batch(&L);
        CHECK(b.x[0] == starts[k % 8]);
        CHECK(b.y[7] == starts[k % 8] + 8);
    }
    CHECK(dataloader_get_state(&L).epoch == 2);
}

TEST_CASE("loader: skip moves past a batch as next does (a rank skipping the others' micro-batches)") {
    TempDir d;
    write_shard(d / "x_000000.bin", iota_tokens(20, 0));
    write_shard(d / "x_000001.bin", iota_tokens(35, 1000));
    write_shard(d / "x_000002.bin", iota_tokens(17, 2000));
    for (bool shuffle : {false, true}) {
        INFO("shuffle ", shuffle);
        DataLoader all, ranks[2];
        dataloader_init(&all, d / "x_*.bin", 2, 4, shuffle, 7, 4000);
        for (DataLoader& r : ranks) dataloader_init(&r, d / "x_*.bin", 2, 4, shuffle, 7, 4000);
        // 25 batches: across shards and into the third epoch; rank k reads batches k, k + 2, ...
        for (int m = 0; m < 25; m++) {
            Batch want = next_batch(&all);
            for (int k = 0; k < 2; k++) {
                if (m % 2 == k) {
                    Batch got = next_batch(&ranks[k]);
                    CHECK(got.x == want.x);
                    CHECK(got.y == want.y);
                } else {
                    dataloader_skip(&ranks[k]);
                }
                DataLoaderState a = dataloader_get_state(&all), b = dataloader_get_state(&ranks[k]);
                CHECK(a.epoch == b.epoch);
                CHECK(a.shard == b.shard);
                CHECK(a.position == b.position);
            }
        }
        CHECK(dataloader_get_state(&all).epoch >= 2);
    }
}

TEST_CASE("loader: bad input is rejected with clear messages") {
    TempDir d;
    DataLoader L;
    std::string pattern = d / "nothing_*.bin";
    expect_throw([&] { dataloader_init(&L, pattern, 2, 4, false, 0, 100); }, {pattern});
    write_shard(d / "short.bin", iota_tokens(8));  // needs B*T+1 = 9
    expect_throw([&] { dataloader_init(&L, d / "short.bin", 2, 4, false, 0, 100); },
                 {"short.bin: 8 tokens, too short"});
    std::vector<uint16_t> t(100);
    for (int i = 0; i < 100; i++) t[i] = uint16_t(2 * i);  // first id >= 50 at position 25
    write_shard(d / "big_ids.bin", t);
    expect_throw([&] { dataloader_init(&L, d / "big_ids.bin", 2, 4, false, 0, 50); },
                 {"big_ids.bin: token 50 at position 25 is >= vocab size 50"});
    write_file_atomic(d / "bad.bin", std::string(50, 'x'));
    expect_throw([&] { dataloader_init(&L, d / "bad.bin", 2, 4, false, 0, 50); }, {"bad.bin"});
    // GPT-2 vocabulary shards (llm.c) are the same format: ids up to 50256 load
    write_shard(d / "gpt2.bin", iota_tokens(100, 50157));
    dataloader_init(&L, d / "gpt2.bin", 2, 4, false, 0, 50257);
    CHECK(next_batch(&L).x[0] == 50157);
    expect_throw([&] { dataloader_init(&L, d / "gpt2.bin", 2, 4, false, 0, 50256); }, {"token 50256 at position 99"});
}

TEST_CASE("glob_files: a file of exactly the name given wins over the pattern; glob_escape names one file") {
    // 'gl[1]/a.bin' once took gl1/a.bin even where gl[1]/a.bin existed, and a
    // name with brackets alone was not found at all
    TempDir d;
    fs::create_directories(d / "gl[1]");
    fs::create_directories(d / "gl1");
    write_shard(d / "gl[1]/a.bin", iota_tokens(20));
    write_shard(d / "gl1/a.bin", iota_tokens(20));
    CHECK(glob_files(d / "gl[1]/a.bin") == std::vector<std::string>{d / "gl[1]/a.bin"});
    CHECK(glob_files(d / "gl*/a.bin") == std::vector<std::string>{d / "gl1/a.bin", d / "gl[1]/a.bin"});
    fs::remove(d / "gl[1]/a.bin");
    CHECK(glob_files(d / "gl[1]/a.bin") == std::vector<std::string>{d / "gl1/a.bin"});  // no such file: a pattern
    // an escaped name matches that file alone, whatever glob characters it holds
    for (const std::string name : {"p[1]_x.bin", "p*q.bin", "p?.bin", "p\\q.bin"}) {
        write_shard(d / name, iota_tokens(20));
        CHECK(glob_files(glob_escape(d / name)) == std::vector<std::string>{d / name});
    }
    write_shard(d / "pq.bin", iota_tokens(20));  // matched by p*q.bin and p?.bin as patterns
    CHECK(glob_files(glob_escape(d / "p*q.bin")) == std::vector<std::string>{d / "p*q.bin"});
    CHECK(glob_files(glob_escape(d / "p?.bin")) == std::vector<std::string>{d / "p?.bin"});
    expect_throw([&] { glob_files(d / "none[1]_*.bin"); }, {d / "none[1]_*.bin", "no such file"});
}

TEST_CASE("loader: a pass reads at most the batches the data holds, counted in 64 bits") {
    TempDir d;
    DataLoader L;
    write_shard(d / "a.bin", iota_tokens(100));  // (100 - 1) / 8 = 12 batches of 2 x 4
    dataloader_init(&L, d / "a.bin", 2, 4, false, 0, 200);
    CHECK(dataloader_pass_batches(&L, 0, "--batches", "a.bin") == 12);
    CHECK(dataloader_pass_batches(&L, 12, "--batches", "a.bin") == 12);
    CHECK(dataloader_pass_batches(&L, 5, "--batches", "a.bin") == 5);
    // eval --batches 13 once read the first batch twice and said nothing
    expect_throw([&] { dataloader_pass_batches(&L, 13, "--batches", "a.bin"); },
                 {"--batches 13", "a.bin holds 12 batches of 2 x 4 tokens", "give at most 12"});
    // shards of 2^31 + 1 tokens in batches of 1 x 1: 2^32 batches, which eval
    // once cast to int (0 here; -4 over four such shards), the count it printed
    DataLoader huge;
    huge.B = huge.T = 1;
    huge.files = {"a", "b"};
    huge.shard_tokens = {(int64_t(1) << 31) + 1, (int64_t(1) << 31) + 1};
    CHECK(dataloader_pass_batches(&huge, 0, "--batches", "huge") == int64_t(1) << 32);
}

TEST_CASE("loader: shuffled mode is a seeded permutation, resumable from its state") {
    TempDir d;
    write_shard(d / "s_000000.bin", iota_tokens(101));         // 20 rows of T=5
    write_shard(d / "s_000001.bin", iota_tokens(61, 1000));    // 12 rows
    const int B = 2, T = 5;
    auto epoch_starts = [&](DataLoader* L) {  // row starts of one epoch, in order
        std::vector<int> s;
        for (int64_t k = 0; k < dataloader_batches_per_epoch(L); k++) {
            Batch b = next_batch(L);
            for (int r = 0; r < B; r++) {
                for (int t = 0; t < T; t++) {
                    REQUIRE(b.x[r * T + t] == b.x[r * T] + t);  // a row is T+1 consecutive tokens
                    REQUIRE(b.y[r * T + t] == b.x[r * T] + t + 1);
                }
                s.push_back(b.x[r * T]);
            }
        }
        return s;
    };
    DataLoader A, A2, C;
    dataloader_init(&A, d / "s_*.bin", B, T, true, 1234, 2000);
    dataloader_init(&A2, d / "s_*.bin", B, T, true, 1234, 2000);
    dataloader_init(&C, d / "s_*.bin", B, T, true, 99, 2000);
    CHECK(dataloader_batches_per_epoch(&A) == 16);
    std::vector<int> e0 = epoch_starts(&A), e1 = epoch_starts(&A);
    CHECK(dataloader_get_state(&A).epoch == 2);
    // every row exactly once per epoch (both row counts are multiples of B)
    std::vector<int> all;
    for (int j = 0; j < 20; j++) all.push_back(5 * j);
    for (int j = 0; j < 12; j++) all.push_back(1000 + 5 * j);
    std::vector<int> s0 = e0, s1 = e1;
    std::sort(s0.begin(), s0.end());
    std::sort(s1.begin(), s1.end());
    CHECK(s0 == all);
    CHECK(s1 == all);
    CHECK(e0 != e1);                   // a new order each epoch...
    auto shard0 = [](std::vector<int> e) {
        e.erase(std::remove_if(e.begin(), e.end(), [](int x) { return x >= 1000; }), e.end());
        return e;
    };
    CHECK(shard0(e0) != shard0(e1));   // ...also of the rows within a shard
    CHECK(epoch_starts(&A2) == e0);    // same seed, same order
    CHECK(epoch_starts(&C) != e0);     // another seed, another order
    // resume: save the state mid-epoch, restore it into a fresh loader
    dataloader_reset(&A);
    for (int k = 0; k < 11; k++) next_batch(&A);
    DataLoaderState s = dataloader_get_state(&A);
    DataLoader R;
    dataloader_init(&R, d / "s_*.bin", B, T, true, 0, 2000);  // seed comes from the state
    dataloader_set_state(&R, s);
    for (int k = 0; k < 40; k++) REQUIRE(next_batch(&R) == next_batch(&A));
    // the same in sequential mode
    DataLoader S, S2;
    dataloader_init(&S, d / "s_*.bin", B, T, false, 0, 2000);
    for (int k = 0; k < 7; k++) next_batch(&S);
    dataloader_init(&S2, d / "s_*.bin", B, T, false, 0, 2000);
    dataloader_set_state(&S2, dataloader_get_state(&S));
    for (int k = 0; k < 20; k++) REQUIRE(next_batch(&S2) == next_batch(&S));
    DataLoaderState bad = s;
    bad.shard = 5;
    expect_throw([&] { dataloader_set_state(&R, bad); }, {"out of range"});
}

// Decodes a list of shards back to text.
static std::string decode_shards(const Tokenizer& tok, const std::vector<std::string>& files) {
    std::string out;
    for (const auto& f : files) {
        std::vector<uint16_t> t = read_shard(f);
        std::vector<int> ids(t.begin(), t.end());
        out += bpe_decode(tok, ids.data(), ids.size());
    }
    return out;
}

TEST_CASE("resolved_path: one string per file, through links, . and .., existing or not") {
    TempDir d;
    std::string real = resolved_path(d.path);  // the temporary folder may itself be behind a link
    fs::create_directories(d / "a/b");
    fs::create_directory_symlink(real + "/a", d / "link");
    fs::create_directory_symlink("/", d / "root");
    CHECK(resolved_path(d / "a/b") == real + "/a/b");
    CHECK(resolved_path(d / "link/b") == real + "/a/b");
    CHECK(resolved_path(d / "link/./b/../b/") == real + "/a/b");
    CHECK(resolved_path(d / "link/new/file.txt") == real + "/a/new/file.txt");  // a missing tail as written
    CHECK(resolved_path(d / "a/new/../b") == real + "/a/b");
    CHECK(resolved_path(d / "root") == "/");
    CHECK(resolved_path(d / "root/tmp/..") == "/");
    char* cwd = getcwd(nullptr, 0);
    REQUIRE(cwd);
    CHECK(resolved_path("no_such_file_here") == resolved_path(cwd) + "/no_such_file_here");
    std::free(cwd);
}

TEST_CASE("prepare: split, several shards, round trip, determinism, cache") {
    TempDir d;
    std::string text;
    for (int i = 0; i < 300; i++) text += "Line " + std::to_string(i) + ": the quick brown fox, again and again.\n";
    write_file_atomic(d / "in.txt", text);
    PrepareConfig cfg;
    cfg.inputs = {d / "in.txt"};
    cfg.out_dir = d / "out1";
    cfg.vocab_size = 320;
    cfg.val_fraction = 0.1;
    cfg.shard_tokens = 1000;
    cfg.verbose = false;
    PrepareResult r = prepare_data(cfg);
    CHECK(!r.reused);
    CHECK(r.train_files.size() >= 3);
    CHECK(r.val_files.size() == 1);
    CHECK(r.train_pattern == d / "out1/in_train_*.bin");
    Tokenizer tok = tokenizer_load(r.tokenizer_path);
    CHECK(tok.vocab_size == 320);
    std::string train = decode_shards(tok, r.train_files), val = decode_shards(tok, r.val_files);
    std::string eot = EOT_TEXT;
    REQUIRE(train.compare(0, eot.size(), eot) == 0);
    REQUIRE(val.compare(0, eot.size(), eot) == 0);
    CHECK(train.substr(eot.size()) + val.substr(eot.size()) == text);  // val = the tail, cut after a newline
    CHECK(val.size() - eot.size() + 60 > text.size() / 10);  // at most one line short of 10%
    CHECK(val.substr(eot.size(), 5) == "Line ");
    // determinism: a second directory gets byte-identical files
    cfg.out_dir = d / "out2";
    PrepareResult r2 = prepare_data(cfg);
    CHECK(read_file(r2.tokenizer_path) == read_file(r.tokenizer_path));
    REQUIRE(r2.train_files.size() == r.train_files.size());
    for (size_t i = 0; i < r.train_files.size(); i++) CHECK(read_file(r2.train_files[i]) == read_file(r.train_files[i]));
    // cache: unchanged input is reused; a changed input is made again
    PrepareResult r3 = prepare_data(cfg);
    CHECK(r3.reused);
    CHECK(r3.train_files == r2.train_files);
    CHECK(r3.train_tokens == r2.train_tokens);
    write_file_atomic(d / "in.txt", text + "one more line\n");
    PrepareResult r4 = prepare_data(cfg);
    CHECK(!r4.reused);
    CHECK(decode_shards(tokenizer_load(r4.tokenizer_path), r4.val_files).find("one more line") != std::string::npos);
    cfg.shard_tokens = 1000000;  // fewer shards: stale ones must go
    PrepareResult r5 = prepare_data(cfg);
    CHECK(r5.train_files.size() == 1);
    for (const auto& e : fs::directory_iterator(cfg.out_dir)) {
        std::string n = e.path().filename().string();
        CHECK(n.find(".tmp") == std::string::npos);
        CHECK(n != "in_train_000001.bin");
    }
    // the loader reads what prepare wrote
    DataLoader L;
    dataloader_init(&L, r5.train_pattern, 2, 8, false, 0, tok.vocab_size);
    CHECK(next_batch(&L).x[0] == tok.eot);
}

TEST_CASE("prepare: several files hold out whole files") {
    TempDir d;
    std::vector<std::string> texts;
    for (int f = 0; f < 6; f++) {
        std::string t;
        for (int i = 0; i < 40; i++) t += "Book " + std::to_string(f) + " says hello number " + std::to_string(i) + ".\n";
        texts.push_back(t);
        write_file_atomic(d / ("book" + std::to_string(f) + ".txt"), t);
    }
    PrepareConfig cfg;
    for (int f = 5; f >= 0; f--) cfg.inputs.push_back(d / ("book" + std::to_string(f) + ".txt"));  // any order
    cfg.out_dir = d / "out";
    cfg.vocab_size = 300;
    cfg.val_fraction = 0.3;
    cfg.verbose = false;
    PrepareResult r = prepare_data(cfg);
    Tokenizer tok = tokenizer_load(r.tokenizer_path);
    std::string train = decode_shards(tok, r.train_files), val = decode_shards(tok, r.val_files);
    int n_val = 0;
    for (int f = 0; f < 6; f++) {
        bool in_train = train.find(texts[f]) != std::string::npos, in_val = val.find(texts[f]) != std::string::npos;
        CHECK(in_train != in_val);  // each book whole, in exactly one split
        n_val += in_val;
    }
    CHECK(n_val == 2);  // 30% of 6 equal-ish books
    size_t expect = 0;  // every book once, each after an end-of-text token
    for (const auto& t : texts) expect += std::strlen(EOT_TEXT) + t.size();
    CHECK(val.size() + train.size() == expect);
}

TEST_CASE("prepare: missing input and the default text") {
    TempDir d;
    PrepareConfig cfg;
    cfg.inputs = {d / "nope.txt"};
    cfg.out_dir = d / "out";
    cfg.verbose = false;
    expect_throw([&] { prepare_data(cfg); }, {"nope.txt: input text not found"});
    CHECK(!fs::exists(d / "out"));
    if (!data_path("tinyshakespeare.txt").empty()) {
        CHECK(find_default_text() == data_path("tinyshakespeare.txt"));
    } else {
        expect_throw([&] { find_default_text(); }, {"tinyshakespeare.txt not found", "get_tinyshakespeare.sh"});
    }
}

// Sets MOT_DATA (nullptr: unsets it) for one scope, then puts it back.
struct DataEnv {
    std::string old;
    bool had;
    explicit DataEnv(const char* value) {
        const char* o = std::getenv("MOT_DATA");
        had = o != nullptr;
        if (had) old = o;
        if (value) setenv("MOT_DATA", value, 1);
        else unsetenv("MOT_DATA");
    }
    ~DataEnv() {
        if (had) setenv("MOT_DATA", old.c_str(), 1);
        else unsetenv("MOT_DATA");
    }
};

TEST_CASE("data folder: MOT_DATA, else data/, then the shared folder beside the checkout") {
    TempDir d;
    {
        DataEnv env(nullptr);
        std::vector<std::string> dirs = data_dirs();
        REQUIRE(dirs.size() == 2);
        CHECK(dirs[0] == "data");
        CHECK(dirs[1].compare(0, 3, "../") == 0);  // outside the checkout, so every checkout shares it
        CHECK(data_dirs_text().find("data/ or " + dirs[1] + "/") != std::string::npos);
    }
    {
        DataEnv env("");  // empty counts as unset
        CHECK(data_dirs().size() == 2);
    }
    write_file_atomic(d / "tinyshakespeare.txt", "To be, or not to be");
    fs::create_directories(d / "novels");
    {
        DataEnv env(d.path.c_str());
        CHECK(data_dirs() == std::vector<std::string>{d.path});
        CHECK(data_path("tinyshakespeare.txt") == d / "tinyshakespeare.txt");
        CHECK(data_path("novels") == d / "novels");  // folders too
        CHECK(data_path("nope.txt") == "");
        CHECK(find_default_text() == d / "tinyshakespeare.txt");
    }
    {
        DataEnv env((d.path + "//").c_str());  // a trailing slash makes no double slash
        CHECK(data_path("tinyshakespeare.txt") == d / "tinyshakespeare.txt");
    }
    {
        // MOT_DATA is the only place looked at: the default folders are not
        // taken in its stead, and the message names it
        fs::create_directories(d / "empty");
        DataEnv env((d / "empty").c_str());
        CHECK(data_path("tinyshakespeare.txt") == "");
        expect_throw([&] { find_default_text(); },
                     {"tinyshakespeare.txt not found in MOT_DATA=" + d / "empty",
                      "put the text at " + d / "empty/tinyshakespeare.txt"});
    }
}
