// Checkpoint file (docs/design.md section 5): round trip to the last bit, the exact
// header layout, and rejection of truncated, foreign and inconsistent files.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common/checkpoint.h"
#include "cpu/gpt.h"
#include "tests/bad_input.h"
#include "tests/models.h"

static std::string tmp_path(const char* name) { return std::string("build/") + name; }

// checkpoint_load of path must fail with a message holding every needle
static void expect_load_error(const std::string& path, const std::vector<std::string>& needles) {
    Config c;
    std::vector<float> p;
    expect_throw([&] { checkpoint_load(path, &c, &p); }, needles);
}

TEST_CASE("save, load: same parameters and the same loss to the last bit") {
    Config c = mixed3_config();
    GPT<float> a;
    gpt_build(&a, c);
    gpt_init_weights(&a, 42);
    std::string path = tmp_path("ckpt_roundtrip.bin");
    checkpoint_save(path, c, a.params_memory.data());
    CHECK(leftover_temp_files(path).empty());

    Config c2;
    std::vector<float> params;
    checkpoint_load(path, &c2, &params);
    check_same_config(c2, c);
    REQUIRE(params.size() == a.params_memory.size());
    CHECK(std::memcmp(params.data(), a.params_memory.data(), params.size() * 4) == 0);

    GPT<float> b;
    gpt_build(&b, c2);
    b.params_memory = params;
    int B = 4, T = 8;
    std::vector<int> x(B * T), y(B * T);
    for (int i = 0; i < B * T; i++) { x[i] = (i * 7) % c.V; y[i] = (i * 11 + 3) % c.V; }
    gpt_forward(&a, x.data(), y.data(), B, T);
    gpt_forward(&b, x.data(), y.data(), B, T);
    CHECK(a.mean_loss == b.mean_loss);  // bit-exact, not approximately
    std::remove(path.c_str());
}

TEST_CASE("header layout is the contract: magic, version, shape, tau bits, kinds") {
    Config c = mixed3_config();
    std::vector<float> params(num_params(c), 0.5f);
    std::string path = tmp_path("ckpt_header.bin");
    checkpoint_save(path, c, params.data());
    std::string bytes = read_file(path);
    REQUIRE(bytes.size() == 1024 + num_params(c) * 4);
    int32_t h[256];
    std::memcpy(h, bytes.data(), 1024);
    CHECK(h[0] == 20261128);
    CHECK(h[1] == 2);
    int expect[10] = {37, 64, 8, 3, 2, 16, 32, 4, 2, 16};
    for (int i = 0; i < 10; i++) CHECK(h[2 + i] == expect[i]);
    float tau;
    std::memcpy(&tau, &h[12], 4);
    CHECK(tau == 0.75f);
    CHECK(h[13] == 0);
    CHECK(h[32] == 1);
    CHECK(h[33] == 0);
    CHECK(h[34] == 1);
    for (int i = 35; i < 256; i++)
        if (i != 30 && i != 31) CHECK(h[i] == 0);
    uint64_t sum = (uint64_t)(uint32_t)h[30] | (uint64_t)(uint32_t)h[31] << 32;
    CHECK(sum == checkpoint_checksum(std::vector<int32_t>(h, h + 256), bytes.data() + 1024, bytes.size() - 1024));
    // the first tensor is wte (Vp, C), stored right after the header
    float first;
    std::memcpy(&first, bytes.data() + 1024, 4);
    CHECK(first == 0.5f);
    std::remove(path.c_str());
}

TEST_CASE("bad checkpoints are rejected with the file name and the problem") {
    Config c = mixed3_config();
    std::vector<float> params(num_params(c), 0.25f);
    std::string good = tmp_path("ckpt_good.bin");
    checkpoint_save(good, c, params.data());
    std::string bytes = read_file(good);
    std::string bad = tmp_path("ckpt_bad.bin");

    SUBCASE("missing file") {
        expect_load_error(tmp_path("no_such_checkpoint.bin"), {"no_such_checkpoint.bin", "cannot open"});
    }
    SUBCASE("shorter than the header") {
        write_bytes(bad, bytes.substr(0, 100));
        expect_load_error(bad, {"ckpt_bad.bin", "truncated"});
    }
    SUBCASE("truncated parameters") {
        write_bytes(bad, bytes.substr(0, bytes.size() - 4));
        expect_load_error(bad, {"ckpt_bad.bin", "does not match its header"});
    }
    SUBCASE("trailing bytes") {
        write_bytes(bad, bytes + std::string(1, '\0'));
        expect_load_error(bad, {"does not match its header"});
    }
    SUBCASE("wrong magic") {
        write_bytes(bad, patched(bytes, 0, int32_t(20240520)));  // a token shard's magic
        expect_load_error(bad, {"ckpt_bad.bin", "magic"});
    }
    SUBCASE("unknown version") {
        write_bytes(bad, patched(bytes, 4, int32_t(99)));
        expect_load_error(bad, {"version 99"});
    }
    SUBCASE("inconsistent header: heads do not divide d_model") {
        write_bytes(bad, patched(bytes, 6 * 4, int32_t(3)));
        expect_load_error(bad, {"ckpt_bad.bin", "inconsistent header"});
    }
    SUBCASE("unknown layer kind") {
        write_bytes(bad, patched(bytes, 33 * 4, int32_t(7)));
        expect_load_error(bad, {"layer kind 7"});
    }
    // Fields that leave the size as it is were accepted when damaged (G 2 -> 1, tau 0.75 -> 1e30, a layer
    // kind MOT -> TOKEN_CHOICE, a negative d_ff, G 2^30), and a flipped bit in the parameters loaded as a
    // model: each is refused now, by its bound or by the checksum.
    SUBCASE("fields outside the options' bounds") {
        float huge = 1e30f;
        for (auto [offset, value, needle] :
             {std::tuple{8 * 4, std::string("\xff\xff\xff\xff", 4), "dense FFN width -1"},
              {10 * 4, std::string("\0\0\0\x40", 4), "group size 1073741824"},
              {12 * 4, std::string((const char*)&huge, 4), "MoT temperature 1e+30"},
              {3 * 4, std::string("\x80\0\0\0", 4), "padded vocabulary 128"}}) {
            std::string b = bytes;
            b.replace(offset, 4, value);
            write_bytes(bad, b);
            expect_load_error(bad, {"ckpt_bad.bin", needle});
        }
    }
    SUBCASE("a change within the bounds: the checksum") {
        write_bytes(bad, patched(bytes, 10 * 4, int32_t(1)));  // G 2 -> 1
        expect_load_error(bad, {"ckpt_bad.bin", "checksum does not match"});
        write_bytes(bad, patched(bytes, 32 * 4, int32_t(2)));  // layer 0 MOT -> TOKEN_CHOICE: the same tensors
        expect_load_error(bad, {"checksum does not match"});
        std::string flipped = bytes;
        flipped[1024 + 4 * 1000 + 2] ^= 0x10;  // one bit of one parameter
        write_bytes(bad, flipped);
        expect_load_error(bad, {"checksum does not match"});
    }
    SUBCASE("version 1 (before checksums) still loads") {
        std::string v1 = patched(bytes, 4, int32_t(1));
        v1.replace(30 * 4, 8, std::string(8, '\0'));
        write_bytes(bad, v1);
        Config k;
        std::vector<float> p;
        checkpoint_load(bad, &k, &p);
        CHECK(p == params);
    }
    std::remove(good.c_str());
    std::remove(bad.c_str());
}

// Two processes writing one path at once (the same checkpoint name from two
// runs): every read sees one writer's whole file, never a mix of both, and
// no temporary file is left.
TEST_CASE("two processes writing one file at once never leave a mixed file") {
    std::string path = "build/ckpt_race.bin";
    const size_t n = 4 << 20;  // 4 MB: a write takes long enough to overlap
    std::string a(n, 'a'), b(n, 'b');
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        for (int i = 0; i < 20; i++) write_file_atomic(path, b);
        _exit(0);
    }
    int mixed = 0;
    for (int i = 0; i < 20; i++) {
        write_file_atomic(path, a);
        std::string got = read_file(path);
        mixed += got != a && got != b;
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    std::string last = read_file(path);
    CHECK((last == a || last == b));
    CHECK(mixed == 0);
    CHECK(leftover_temp_files(path).empty());
    std::remove(path.c_str());
}

// The temporaries' names are predictable (<path>.tmp.<pid>.<count>): a file
// or symlink planted under the next ones is skipped, never written through.
// The temporary file was once opened with fopen("wb"), which follows a
// symlink and truncates its target.
TEST_CASE("a symlink or file planted at a temporary's name is never written through") {
    std::string path = "build/ckpt_planted.bin", victim = "build/ckpt_victim.txt";
    write_bytes(victim, "the victim's own bytes\n");
    std::vector<std::string> planted;
    unsigned next = temp_file_count().load();
    for (unsigned k = next; k < next + 5; k++) {
        std::string name = strf("%s.tmp.%d.%u", path.c_str(), (int)getpid(), k);
        std::remove(name.c_str());
        if ((k - next) % 2 == 0) REQUIRE(symlink("ckpt_victim.txt", name.c_str()) == 0);
        else write_bytes(name, "someone else's file\n");
        planted.push_back(name);
    }
    write_file_atomic(path, std::string("new contents"));
    CHECK(read_file(path) == "new contents");
    CHECK(read_file(victim) == "the victim's own bytes\n");
    for (size_t i = 0; i < planted.size(); i++)
        if (i % 2 == 1) CHECK(read_file(planted[i]) == "someone else's file\n");
    CHECK(leftover_temp_files(path).size() == planted.size());  // the planted ones, and none of ours
    for (const std::string& name : planted) std::remove(name.c_str());
    std::remove(path.c_str());
    std::remove(victim.c_str());
}

TEST_CASE("a failed save leaves no file behind") {
    Config c = mixed3_config();
    std::vector<float> params(num_params(c), 0.0f);
    // a plain file where the checkpoint's folder should be: the save must fail
    write_bytes("build/ckpt_blocker", "x");
    std::string path = "build/ckpt_blocker/ckpt.bin";
    expect_throw([&] { checkpoint_save(path, c, params.data()); }, {"build/ckpt_blocker"});
    CHECK_FALSE(file_exists(path));
    CHECK(leftover_temp_files(path).empty());
    std::remove("build/ckpt_blocker");
}

TEST_CASE("a save into a missing folder creates it") {
    Config c = mixed3_config();
    std::vector<float> params(num_params(c), 0.0f);
    std::string path = "build/ckpt_new_dir/sub/ckpt.bin";
    checkpoint_save(path, c, params.data());
    CHECK(file_exists(path));
    std::remove(path.c_str());
}
