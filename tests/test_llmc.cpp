// llm.c's files in (common/llmc.h, tokenizer/bpe.h): GPT-2 model files in
// float32 and bfloat16, tokenizer files of versions 1 and 2, and token shards.
// The files are written here by a writer of their format that shares no code
// with the readers; a model read from one gives the logits of the engine's own
// model with the same weights, bit for bit, and the program evaluates, samples
// and trains from it.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "common/checkpoint.h"
#include "common/llmc.h"
#include "common/model_file.h"
#include "cpu/gpt.h"
#include "tests/bad_input.h"
#include "tests/llmc_files.h"
#include "tests/models.h"
#include "tests/program.h"
#include "tokenizer/bpe.h"
#include "train/report.h"

// A vocabulary of V tokens: token i is "<i>" with a space every seventh,
// one holds a NUL and a byte above 0x7f; the last is GPT-2's end-of-text.
static std::vector<std::string> test_vocab(int V) {
    std::vector<std::string> v(V);
    for (int i = 0; i < V; i++) v[i] = "<" + std::to_string(i) + ">" + (i % 7 == 0 ? " " : "");
    v[5] = std::string("a\0\xe9", 3);
    v[V - 1] = "<|endoftext|>";
    return v;
}

// ---------------------------------------------------------------- models

// A GPT-2 in miniature: V 50 (llm.c pads it to 128, this engine to 64), maxT
// 16, 2 layers, 2 heads, C 16, dff 4C.
static Config gpt2_mini(int V = 50) { return llmc_config(V, 16, 2, 2, 16); }

static std::string tmp(const std::string& name) { return "build/llmc_" + name; }

// The engine's model with random weights (tests/models.h), wider than the
// training init so that the layers' outputs differ clearly.
static void random_model(GPT<float>* m, const Config& c, uint64_t seed) { build_random(m, c, seed, 0.3); }

// The parameters that loading should give: the model's, with wte's rows V..Vp-1 zero.
static std::vector<float> expected_params(const GPT<float>& m) {
    std::vector<float> p = m.params_memory;
    const Config& c = m.cfg;
    for (size_t i = (size_t)c.V * c.C; i < (size_t)c.Vp * c.C; i++) p[i] = 0;
    return p;
}

// Bytes equal, float by float (so a mismatch names its index).
static void check_same_bits(const std::vector<float>& got, const std::vector<float>& want) {
    REQUIRE(got.size() == want.size());
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < got.size(); i++)
        if (std::memcmp(&got[i], &want[i], 4) != 0 && bad++ == 0) first = i;
    INFO("first difference at element ", first, ": ", got[first], " vs ", want[first]);
    CHECK(bad == 0);
}

// Forward of both models on one batch: the first V logits of every position
// and the loss agree bit for bit.
static void check_same_logits(GPT<float>* a, GPT<float>* b) {
    const Config& c = a->cfg;
    REQUIRE(b->cfg.V == c.V);
    int B = 3, T = c.maxT;
    TestRng r(5);
    std::vector<int> x = r.tokens((size_t)B * T, c.V), y = r.tokens((size_t)B * T, c.V);
    gpt_forward(a, x.data(), y.data(), B, T);
    gpt_forward(b, x.data(), y.data(), B, T);
    size_t bad = 0;
    for (size_t bt = 0; bt < (size_t)B * T; bt++)
        bad += std::memcmp(a->acts.logits + bt * c.Vp, b->acts.logits + bt * b->cfg.Vp, (size_t)c.V * 4) != 0;
    CHECK(bad == 0);
    CHECK(a->mean_loss == b->mean_loss);
    CHECK(std::isfinite(a->mean_loss));
}

static void load_model(const std::string& path, Config* c, std::vector<float>* p) { llmc_model_load(path, c, p); }

// ---------------------------------------------------------------- the model file

TEST_CASE("float32: llm.c's layout loads to the engine's model, the same logits bit for bit") {
    Config c = gpt2_mini();
    CHECK(c.Vp == 64);
    GPT<float> ref;
    random_model(&ref, c, 11);
    std::string path = tmp("f32.bin");
    // llm.c's padding to 128 rows; its rows beyond V hold junk, which must not reach the model
    write_bytes(path, llmc_model_bytes(c, ref.params_memory, 128, false, 7.5f));
    CHECK(sniff_model_file(path) == MODEL_FILE_LLMC);
    Config k;
    std::vector<float> p;
    load_model(path, &k, &p);
    CHECK(k.V == 50);
    CHECK(k.Vp == 64);
    CHECK(k.maxT == 16);
    CHECK(k.L == 2);
    CHECK(k.NH == 2);
    CHECK(k.C == 16);
    CHECK(k.dff == 64);
    CHECK(k.kinds == std::vector<int>{DENSE, DENSE});
    check_same_bits(p, expected_params(ref));
    GPT<float> got;
    gpt_build(&got, k);
    got.params_memory = p;
    check_same_logits(&ref, &got);  // ref's own rows V..Vp-1 are random: they reach no logit that counts
}

TEST_CASE("bfloat16: each parameter widens exactly; the logits of the rounded weights bit for bit") {
    Config c = gpt2_mini();
    GPT<float> ref;
    random_model(&ref, c, 12);
    std::string path = tmp("bf16.bin");
    write_bytes(path, llmc_model_bytes(c, ref.params_memory, 128, true, -3.0f));
    // the model the file holds: every weight rounded to bfloat16
    for (float& x : ref.params_memory) x = writer_from_bf16(writer_to_bf16(x));
    Config k;
    std::vector<float> p;
    load_model(path, &k, &p);
    check_same_bits(p, expected_params(ref));
    size_t changed = 0;  // the rounding is real: most random weights are not bfloat16 numbers
    GPT<float> unrounded;
    random_model(&unrounded, c, 12);
    for (size_t i = 0; i < p.size(); i++) changed += p[i] != unrounded.params_memory[i];
    CHECK(changed > p.size() / 2);
    GPT<float> got;
    gpt_build(&got, k);
    got.params_memory = p;
    check_same_logits(&ref, &got);
}

TEST_CASE("GPT-2's vocabulary: 50257 padded to 50304 by both, wte copied whole") {
    Config c = llmc_config(50257, 8, 1, 2, 8);
    CHECK(c.Vp == 50304);
    GPT<float> ref;
    random_model(&ref, c, 13);
    std::string path = tmp("gpt2vocab.bin");
    write_bytes(path, llmc_model_bytes(c, ref.params_memory, 50304, false));
    Config k;
    std::vector<float> p;
    load_model(path, &k, &p);
    CHECK(k.Vp == 50304);
    check_same_bits(p, expected_params(ref));
    std::remove(path.c_str());
}

TEST_CASE("a padded vocabulary equal to the engine's keeps wte's rows; wider ones drop rows the engine pads") {
    // V 100: both pad to 128
    Config c = gpt2_mini(100);
    GPT<float> ref;
    random_model(&ref, c, 14);
    write_bytes(tmp("v100.bin"), llmc_model_bytes(c, ref.params_memory, 128, false));
    Config k;
    std::vector<float> p;
    load_model(tmp("v100.bin"), &k, &p);
    CHECK(k.Vp == 128);
    check_same_bits(p, expected_params(ref));
    // no padding at all (Vp = V) and a padding of 1000 rows
    Config c50 = gpt2_mini();
    GPT<float> r50;
    random_model(&r50, c50, 15);
    for (int vp : {50, 1050}) {
        write_bytes(tmp("vp.bin"), llmc_model_bytes(c50, r50.params_memory, vp, false, 1.0f));
        load_model(tmp("vp.bin"), &k, &p);
        CHECK(k.Vp == 64);
        check_same_bits(p, expected_params(r50));
    }
}

TEST_CASE("a bad llm.c model file is refused, naming the file and the problem") {
    Config c = gpt2_mini();
    GPT<float> ref;
    random_model(&ref, c, 16);
    const std::string good = llmc_model_bytes(c, ref.params_memory, 128, false);
    const std::string path = tmp("bad.bin");
    auto header = [&](int slot, int32_t v) { return patched(good, 4 * slot, v); };
    struct Case { const char* what; std::string bytes; std::vector<std::string> needles; };
    float nan = std::nanf("");
    std::vector<Case> cases = {
        {"wrong magic", header(0, 20240520), {"not an llm.c model file", "magic 20240520"}},
        {"unknown version", header(1, 4), {"version 4", "versions 3 (float32) and 5 (bfloat16)"}},
        {"bf16 version over float32 data", header(1, 5), {"bytes, expected", "bfloat16"}},
        {"maxT 0", header(2, 0), {"maximum sequence length 0"}},
        {"V 1", header(3, 1), {"vocabulary size 1"}},
        {"0 layers", header(4, 0), {"layers 0"}},
        {"too many layers", header(4, MAX_LAYERS + 1), {"layers 225"}},
        {"negative heads", header(5, -2), {"heads -2"}},
        {"heads not dividing C", header(5, 3), {"not divisible by its 3 heads"}},
        {"huge C", header(6, 1 << 20), {"model width 1048576"}},
        {"Vp below V", header(7, 40), {"padded vocabulary 40", "smaller than the vocabulary 50"}},
        {"one layer more than the data", header(4, 3), {"truncated", "expected"}},
        {"a wider Vp than the data", header(7, 192), {"truncated"}},
        {"truncated by a byte", good.substr(0, good.size() - 1), {"truncated", std::to_string(good.size() - 1)}},
        {"truncated header", good.substr(0, 100), {"truncated", "1024-byte header"}},
        {"empty", "", {"truncated"}},
        {"a byte too many", good + "x", {"too long"}},
        {"a NaN weight", patched(good, good.size() - 4, nan), {"not finite", "lnfb"}},
    };
    for (const Case& k : cases) {
        INFO("case: ", std::string(k.what));
        write_bytes(path, k.bytes);
        std::vector<std::string> needles = k.needles;
        needles.push_back(path);
        expect_throw([&] { Config cc; std::vector<float> p; load_model(path, &cc, &p); }, needles);
    }
    expect_throw([&] { Config cc; std::vector<float> p; load_model(tmp("missing.bin"), &cc, &p); },
                 {tmp("missing.bin"), "cannot open"});
    std::remove(path.c_str());
}

TEST_CASE("model_file_load tells llm.c's files by their magic") {
    Config c = gpt2_mini();
    GPT<float> m;
    random_model(&m, c, 17);
    checkpoint_save(tmp("mot.ckpt"), c, m.params_memory.data());
    CHECK(sniff_model_file(tmp("mot.ckpt")) == MODEL_FILE_CHECKPOINT);
    write_bytes(tmp("short.bin"), "ab");
    CHECK(sniff_model_file(tmp("short.bin")) == MODEL_FILE_UNKNOWN);
    write_bytes(tmp("magic.bin"), patched(std::string(8, '\0'), 0, int32_t(20240326)));
    CHECK(sniff_model_file(tmp("magic.bin")) == MODEL_FILE_LLMC);
    // through the dispatcher: the llm.c reader's checks and its format
    expect_throw([&] { Config k; std::vector<float> p; model_file_load(tmp("magic.bin"), &k, &p); },
                 {tmp("magic.bin"), "truncated llm.c model file"});
    write_bytes(tmp("whole.bin"), llmc_model_bytes(c, m.params_memory, 128, false));
    Config k;
    std::vector<float> p;
    ModelFileInfo info;
    model_file_load(tmp("whole.bin"), &k, &p, &info);
    CHECK(info.format == "llm.c");
    check_same_bits(p, expected_params(m));
    for (const char* n : {"mot.ckpt", "short.bin", "magic.bin", "whole.bin"}) std::remove(tmp(n).c_str());
}

// ---------------------------------------------------------------- the tokenizer file

TEST_CASE("llm.c tokenizer, versions 1 and 2: each token's bytes, the end-of-text token, decoding") {
    std::vector<std::string> vocab = test_vocab(40);
    SUBCASE("version 2, the end-of-text token in the middle") {
        std::string path = tmp("tok2.bin");
        write_bytes(path, llmc_tokenizer_bytes(vocab, 2, 9));
        Tokenizer t = tokenizer_load(path);
        CHECK(t.vocab_size == 40);
        CHECK(t.eot == 9);
        for (int i = 0; i < 40; i++) CHECK(t.token_bytes[i] == (i == 9 ? "" : vocab[i]));
        std::vector<int> ids = {5, 9, 0, 39, 12};
        CHECK(bpe_decode(t, ids.data(), ids.size()) == vocab[5] + "<|endoftext|>" + vocab[0] + vocab[39] + vocab[12]);
        expect_throw([&] { bpe_encode(t, "hello"); }, {path, "cannot encode"});
    }
    SUBCASE("version 1: the end-of-text token is the last") {
        std::string path = tmp("tok1.bin");
        write_bytes(path, llmc_tokenizer_bytes(vocab, 1, 0));
        Tokenizer t = tokenizer_load(path);
        CHECK(t.vocab_size == 40);
        CHECK(t.eot == 39);
        CHECK(t.token_bytes[39].empty());
        CHECK(t.token_bytes[5] == vocab[5]);
        std::vector<int> ids = {39, 1, 2};
        CHECK(bpe_decode(t, ids.data(), ids.size()) == "<|endoftext|>" + vocab[1] + vocab[2]);
    }
    // this program's own tokenizer still loads and encodes
    Tokenizer own = bpe_train("the cat the hat the bat", 260, false);
    tokenizer_save(own, tmp("own_tok.bin"));
    Tokenizer back = tokenizer_load(tmp("own_tok.bin"));
    CHECK(back.cannot_encode.empty());
    CHECK(bpe_encode(back, "the hat") == bpe_encode(own, "the hat"));
}

TEST_CASE("a bad llm.c tokenizer file is refused, naming the file and the problem") {
    std::vector<std::string> vocab = test_vocab(20);
    const std::string good = llmc_tokenizer_bytes(vocab, 2, 19);
    const std::string path = tmp("tok_bad.bin");
    struct Case { const char* what; std::string bytes; std::vector<std::string> needles; };
    std::vector<Case> cases = {
        {"version 3", patched(good, 4, uint32_t(3)), {"llm.c tokenizer version 3"}},
        {"vocabulary 1", patched(good, 8, uint32_t(1)), {"vocabulary size 1"}},
        {"eot outside", patched(good, 12, uint32_t(20)), {"end-of-text token 20", "outside the vocabulary 0..19"}},
        {"short header", good.substr(0, 500), {"truncated", "1024-byte header"}},
        {"ends before a token", good.substr(0, good.size() - 1 - vocab[19].size()), {"truncated", "before token 19"}},
        {"ends inside a token", good.substr(0, good.size() - 2), {"truncated", "token 19 of 20"}},
        {"more tokens than the header says", patched(patched(good, 8, uint32_t(19)), 12, uint32_t(18)),
         {"trailing data"}},
        {"a byte too many", good + "x", {"1 bytes of trailing data"}},
        {"neither magic", patched(good, 0, uint32_t(77)), {"not a mot tokenizer file", "llm.c's tokenizer"}},
    };
    for (const Case& k : cases) {
        INFO("case: ", std::string(k.what));
        write_bytes(path, k.bytes);
        std::vector<std::string> needles = k.needles;
        needles.push_back(path);
        expect_throw([&] { tokenizer_load(path); }, needles);
    }
    std::remove(path.c_str());
}

TEST_CASE("bytes per token of an llm.c shard counts each token's bytes, none for the end-of-text token") {
    std::vector<std::string> vocab = test_vocab(30);
    write_bytes(tmp("tok_bpt.bin"), llmc_tokenizer_bytes(vocab, 2, 29));
    Tokenizer t = tokenizer_load(tmp("tok_bpt.bin"));
    std::vector<uint16_t> ids = {29, 1, 2, 3, 7, 14, 5, 29, 28, 10};
    write_raw_shard(tmp("bpt_000.bin"), ids);
    double bytes = 0;
    for (uint16_t id : ids) bytes += id == 29 ? 0 : vocab[id].size();
    CHECK(bytes_per_token(t, tmp("bpt_000.bin")) == bytes / ids.size());
}

// ---------------------------------------------------------------- the program

// The one number after `key` in out (the first occurrence); NaN if absent.
static double number_after(const std::string& out, const std::string& key, size_t from = 0) {
    size_t at = out.find(key, from);
    if (at == std::string::npos) return std::nan("");
    return std::atof(out.c_str() + at + key.size());
}

// The text of sample n (1-based) in sample's output.
static std::string sample_text(const std::string& out, int n) {
    std::string mark = "---- sample " + std::to_string(n) + " ----\n";
    size_t at = out.find(mark);
    if (at == std::string::npos) return "(no sample " + std::to_string(n) + ")";
    at += mark.size();
    size_t end = out.find("\n----", at);
    return out.substr(at, end == std::string::npos ? std::string::npos : end - at);
}

// A model, its llm.c files (float32, bfloat16), the same weights as mot
// checkpoints, a tokenizer of its vocabulary, and shards of its tokens.
struct Files {
    Config c = gpt2_mini();
    std::string f32 = tmp("cli_f32.bin"), bf16 = tmp("cli_bf16.bin"), ckpt = tmp("cli_f32.ckpt"),
                ckpt_bf16 = tmp("cli_bf16.ckpt"), tok = tmp("cli_tok.bin"), train = tmp("cli_train_000.bin"),
                val = tmp("cli_val_000.bin");
    std::vector<std::string> vocab = test_vocab(50);
    Files() {
        GPT<float> m;
        random_model(&m, c, 21);
        write_bytes(f32, llmc_model_bytes(c, m.params_memory, 128, false, 2.0f));
        write_bytes(bf16, llmc_model_bytes(c, m.params_memory, 128, true, 2.0f));
        std::vector<float> p = expected_params(m);
        checkpoint_save(ckpt, c, p.data());
        for (float& x : p) x = writer_from_bf16(writer_to_bf16(x));
        checkpoint_save(ckpt_bf16, c, p.data());
        write_bytes(tok, llmc_tokenizer_bytes(vocab, 2, 49));
        TestRng r(22);
        std::vector<uint16_t> t(3000), v(600);
        for (uint16_t& x : t) x = (uint16_t)r.below(50);
        for (uint16_t& x : v) x = (uint16_t)r.below(50);
        write_raw_shard(train, t);
        write_raw_shard(val, v);
    }
};

TEST_CASE("eval --load an llm.c file: the loss of the same weights as a mot checkpoint") {
    Files f;
    for (auto [llmc, ckpt] : {std::pair{f.f32, f.ckpt}, std::pair{f.bf16, f.ckpt_bf16}}) {
        std::string args = " --data " + f.val + " --batch 4 --seq 16 --batches 3 --device cpu";
        Run a = run("eval --load " + llmc + args), b = run("eval --load " + ckpt + args);
        INFO(a.out, b.out);
        REQUIRE(a.rc == 0);
        REQUIRE(b.rc == 0);
        double la = number_after(a.out, ": loss "), lb = number_after(b.out, ": loss ");
        CHECK(std::isfinite(la));
        CHECK(la == lb);  // the same printed digits
        CHECK(la > 1.0);  // random weights: far from a trained model
    }
    // export writes the model as safetensors, which evaluates the same
    std::string st = tmp("cli_f32.safetensors");
    std::remove(st.c_str());
    Run x = run("export --load " + f.f32 + " -o " + st + " --tokenizer " + f.tok);
    INFO(x.out);
    REQUIRE(x.rc == 0);
    std::string args = " --data " + f.val + " --batch 4 --seq 16 --batches 3 --device cpu";
    Run e1 = run("eval --load " + f.f32 + args), e2 = run("eval --load " + st + args);
    INFO(e1.out, e2.out);
    CHECK(number_after(e1.out, ": loss ") == number_after(e2.out, ": loss "));
    std::remove(st.c_str());
    // the float32 and bfloat16 models are different models
    Run a = run("eval --load " + f.f32 + " --data " + f.val + " --batch 4 --seq 16 --batches 3 --device cpu");
    Run b = run("eval --load " + f.bf16 + " --data " + f.val + " --batch 4 --seq 16 --batches 3 --device cpu");
    CHECK(a.out.substr(a.out.find(": loss")) != b.out.substr(b.out.find(": loss")));
}

TEST_CASE("sample --load an llm.c file --tokenizer llm.c's: the samples decoded through its tokens") {
    Files f;
    std::string args = " --num 2 --length 12 --seed 3 --temperature 1";
    // without a tokenizer the program prints the token ids; the end-of-text token that starts a sample is V-1
    // either way (the tokenizer's, 49)
    Run ids = run("sample --load " + f.f32 + args);
    Run text = run("sample --load " + f.f32 + " --tokenizer " + f.tok + args);
    INFO(ids.out, text.out);
    REQUIRE(ids.rc == 0);
    REQUIRE(text.rc == 0);
    for (int n : {1, 2}) {
        std::string s = sample_text(ids.out, n);
        REQUIRE(s.find("(token ids") != std::string::npos);
        std::string want;
        int count = 0;
        for (size_t at = 0; at < s.size() && std::isdigit((unsigned char)s[at]);) {
            int id = std::atoi(s.c_str() + at);
            want += id == 49 ? "<|endoftext|>" : f.vocab[id];
            count++;
            at = s.find(' ', at) + 1;
        }
        CHECK(count == 12);
        CHECK(sample_text(text.out, n) == want);
    }
    // encoding a prompt needs merges that llm.c's file does not hold
    expect_error(run("sample --load " + f.f32 + " --tokenizer " + f.tok + " --prompt hello"),
                 {"--prompt", f.tok, "cannot encode"});
    // a tokenizer of another vocabulary
    write_bytes(tmp("tok_small.bin"), llmc_tokenizer_bytes(test_vocab(40), 2, 39));
    expect_error(run("sample --load " + f.f32 + " --tokenizer " + tmp("tok_small.bin")), {"40 tokens", "50"});
}

TEST_CASE("train --load an llm.c file: steps, bits per byte through llm.c's tokenizer, a checkpoint") {
    Files f;
    std::string save = tmp("trained.ckpt");
    std::remove(save.c_str());
    Run r = run("--load " + f.f32 + " --data " + f.train + " --val-data " + f.val + " --tokenizer " + f.tok +
                " --steps 2 --batch 4 --seq 16 --val-every 2 --val-batches 2 --sample-every 2 --sample-len 6"
                " --device cpu --save " + save);
    INFO(r.out);
    REQUIRE(r.rc == 0);
    CHECK(r.out.find("loaded " + f.f32) != std::string::npos);
    double loss = number_after(r.out, "val loss "), bpb = number_after(r.out, " | ", r.out.find("val loss "));
    REQUIRE(std::isfinite(loss));
    // bits per byte = loss / ln 2 / (bytes per token of the validation shard through the tokenizer)
    Tokenizer t = tokenizer_load(f.tok);
    double bpt = bytes_per_token(t, f.val);
    CHECK(bpt > 3);  // "<12>" and the like
    CHECK(std::fabs(bpb - loss / std::log(2.0) / bpt) < 1e-3);
    CHECK(r.out.find("bits per byte") != std::string::npos);
    Config k;
    std::vector<float> p;
    checkpoint_load(save, &k, &p);
    CHECK(k.V == 50);
    CHECK(k.Vp == 64);
    CHECK(k.kinds == std::vector<int>{DENSE, DENSE});
    Config k0;
    std::vector<float> p0;
    llmc_model_load(f.f32, &k0, &p0);
    REQUIRE(p.size() == p0.size());
    size_t moved = 0;
    for (size_t i = 0; i < p.size(); i++) moved += p[i] != p0[i];
    CHECK(moved > p.size() / 2);  // two AdamW steps move nearly every weight
    std::remove(save.c_str());
    // --save writes a mot checkpoint: not over the llm.c file --load reads
    std::string before = slurp(f.f32);
    expect_error(run("--load " + f.f32 + " --data " + f.train + " --steps 1 --batch 4 --seq 16 --val-every 0"
                     " --sample-every 0 --device cpu --save " + f.f32),
                 {"--save " + f.f32, "llm.c model", "--load"});
    CHECK(slurp(f.f32) == before);
}
