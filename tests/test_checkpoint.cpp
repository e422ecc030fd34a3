// Checkpoint file (DESIGN.md section 3): round trip to the last bit, the exact
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

static Config small_config() {
    Config c;
    c.V = 37; c.Vp = 64; c.maxT = 8; c.L = 3; c.NH = 2; c.C = 16; c.dff = 32;
    c.E = 4; c.G = 2; c.f = 16; c.tau = 0.75f;
    c.kinds = {MOT, DENSE, MOT};
    return c;
}

static std::string tmp_path(const char* name) { return std::string("build/") + name; }

static void write_bytes(const std::string& path, const std::string& bytes) {
    FILE* fp = std::fopen(path.c_str(), "wb");
    REQUIRE(fp);
    std::fwrite(bytes.data(), 1, bytes.size(), fp);
    std::fclose(fp);
}

static std::string load_error(const std::string& path) {
    Config c;
    std::vector<float> p;
    try {
        checkpoint_load(path, &c, &p);
    } catch (const std::exception& e) {
        return e.what();
    }
    return "";
}

TEST_CASE("save, load: same parameters and the same loss to the last bit") {
    Config c = small_config();
    GPT<float> a;
    gpt_build(&a, c);
    gpt_init_weights(&a, 42);
    std::string path = tmp_path("ckpt_roundtrip.bin");
    checkpoint_save(path, c, a.params_memory.data());
    CHECK(leftover_temp_files(path).empty());

    Config c2;
    std::vector<float> params;
    checkpoint_load(path, &c2, &params);
    CHECK(c2.V == c.V);
    CHECK(c2.Vp == c.Vp);
    CHECK(c2.maxT == c.maxT);
    CHECK(c2.L == c.L);
    CHECK(c2.NH == c.NH);
    CHECK(c2.C == c.C);
    CHECK(c2.dff == c.dff);
    CHECK(c2.E == c.E);
    CHECK(c2.G == c.G);
    CHECK(c2.f == c.f);
    CHECK(c2.tau == c.tau);
    CHECK(c2.kinds == c.kinds);
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
    Config c = small_config();
    std::vector<float> params(num_params(c), 0.5f);
    std::string path = tmp_path("ckpt_header.bin");
    checkpoint_save(path, c, params.data());
    std::string bytes = read_file(path);
    REQUIRE(bytes.size() == 1024 + num_params(c) * 4);
    int32_t h[256];
    std::memcpy(h, bytes.data(), 1024);
    CHECK(h[0] == 20261128);
    CHECK(h[1] == 1);
    int expect[10] = {37, 64, 8, 3, 2, 16, 32, 4, 2, 16};
    for (int i = 0; i < 10; i++) CHECK(h[2 + i] == expect[i]);
    float tau;
    std::memcpy(&tau, &h[12], 4);
    CHECK(tau == 0.75f);
    CHECK(h[13] == 0);
    CHECK(h[32] == 1);
    CHECK(h[33] == 0);
    CHECK(h[34] == 1);
    for (int i = 35; i < 256; i++) CHECK(h[i] == 0);
    // the first tensor is wte (Vp, C), stored right after the header
    float first;
    std::memcpy(&first, bytes.data() + 1024, 4);
    CHECK(first == 0.5f);
    std::remove(path.c_str());
}

TEST_CASE("bad checkpoints are rejected with the file name and the problem") {
    Config c = small_config();
    std::vector<float> params(num_params(c), 0.25f);
    std::string good = tmp_path("ckpt_good.bin");
    checkpoint_save(good, c, params.data());
    std::string bytes = read_file(good);
    std::string bad = tmp_path("ckpt_bad.bin");

    SUBCASE("missing file") {
        std::string e = load_error(tmp_path("no_such_checkpoint.bin"));
        CHECK(e.find("no_such_checkpoint.bin") != std::string::npos);
        CHECK(e.find("cannot open") != std::string::npos);
    }
    SUBCASE("shorter than the header") {
        write_bytes(bad, bytes.substr(0, 100));
        std::string e = load_error(bad);
        CHECK(e.find("ckpt_bad.bin") != std::string::npos);
        CHECK(e.find("truncated") != std::string::npos);
    }
    SUBCASE("truncated parameters") {
        write_bytes(bad, bytes.substr(0, bytes.size() - 4));
        std::string e = load_error(bad);
        CHECK(e.find("ckpt_bad.bin") != std::string::npos);
        CHECK(e.find("does not match its header") != std::string::npos);
    }
    SUBCASE("trailing bytes") {
        std::string more = bytes;
        more.push_back(0);
        write_bytes(bad, more);
        CHECK(load_error(bad).find("does not match its header") != std::string::npos);
    }
    SUBCASE("wrong magic") {
        std::string b = bytes;
        int32_t m = 20240520;  // a token shard's magic
        std::memcpy(b.data(), &m, 4);
        write_bytes(bad, b);
        std::string e = load_error(bad);
        CHECK(e.find("ckpt_bad.bin") != std::string::npos);
        CHECK(e.find("magic") != std::string::npos);
    }
    SUBCASE("unknown version") {
        std::string b = bytes;
        int32_t v = 99;
        std::memcpy(b.data() + 4, &v, 4);
        write_bytes(bad, b);
        CHECK(load_error(bad).find("version 99") != std::string::npos);
    }
    SUBCASE("inconsistent header: heads do not divide d_model") {
        std::string b = bytes;
        int32_t nh = 3;
        std::memcpy(b.data() + 6 * 4, &nh, 4);
        write_bytes(bad, b);
        std::string e = load_error(bad);
        CHECK(e.find("ckpt_bad.bin") != std::string::npos);
        CHECK(e.find("inconsistent header") != std::string::npos);
    }
    SUBCASE("unknown layer kind") {
        std::string b = bytes;
        int32_t k = 7;
        std::memcpy(b.data() + 33 * 4, &k, 4);
        write_bytes(bad, b);
        CHECK(load_error(bad).find("layer kind 7") != std::string::npos);
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

TEST_CASE("a failed save leaves no file behind") {
    Config c = small_config();
    std::vector<float> params(num_params(c), 0.0f);
    // a plain file where the checkpoint's folder should be: the save must fail
    write_bytes("build/ckpt_blocker", "x");
    std::string path = "build/ckpt_blocker/ckpt.bin";
    CHECK_THROWS_WITH_AS(checkpoint_save(path, c, params.data()), doctest::Contains("build/ckpt_blocker"),
                         std::runtime_error);
    CHECK_FALSE(file_exists(path));
    CHECK(leftover_temp_files(path).empty());
    std::remove("build/ckpt_blocker");
}

TEST_CASE("a save into a missing folder creates it") {
    Config c = small_config();
    std::vector<float> params(num_params(c), 0.0f);
    std::string path = "build/ckpt_new_dir/sub/ckpt.bin";
    checkpoint_save(path, c, params.data());
    CHECK(file_exists(path));
    std::remove(path.c_str());
}
