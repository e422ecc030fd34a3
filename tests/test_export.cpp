// Models leaving and entering the engine as safetensors (common/safetensors.h,
// common/model_file.h): the tensor names and shapes of the README's table,
// bit-exact round trips for every kind, bfloat16 rounding, the reader's
// refusals of broken files, and the program's export, --load and eval --dump.
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
#include "common/model_file.h"
#include "common/safetensors.h"
#include "tests/bad_input.h"
#include "tests/models.h"
#include "tests/program.h"

static std::string tmp_path(const std::string& name) { return "build/export_" + name; }

static Config with_router(Config c, int router, float router_tau) {
    c.tc.router = router;
    c.tc.router_tau = router_tau;
    return c;
}

// The models of the round trips: each kind, each router, and a mix.
static std::vector<std::pair<std::string, Config>> kind_models() {
    Config tc = make_config(37, 8, 2, 16, 32, 4, 2, 12, 0.5f, {TOKEN_CHOICE, TOKEN_CHOICE}, 2, 1.5f);
    return {{"dense", make_config(37, 8, 2, 16, 32, 4, 2, 16, 1.0f, {DENSE, DENSE})},
            {"mot", make_config(37, 8, 2, 16, 32, 4, 2, 16, 0.1f, {MOT, MOT})},
            {"token choice, softmax", tc},
            {"token choice, threshold", with_router(tc, ROUTER_THRESHOLD, 0.3f)},
            {"token choice, threshold-one", with_router(tc, ROUTER_THRESHOLD_ONE, 1.0f)},
            {"mixed", with_router(make_config(37, 8, 2, 16, 32, 4, 2, 16, 0.75f, {MOT, DENSE, TOKEN_CHOICE, MOT}, 1, 2.0f),
                                  ROUTER_THRESHOLD, 0.7f)}};
}

static Config kind_model(const std::string& what) {
    for (const auto& [name, c] : kind_models())
        if (name == what) return c;
    FAIL("no model ", what);
    return Config();
}

// The README's table, written out again here from the sizes: name -> shape.
static std::map<std::string, std::vector<int64_t>> spec_tensors(const Config& c) {
    std::map<std::string, std::vector<int64_t>> m;
    const int64_t C = c.C, E = c.E, f = c.f, dff = c.dff;
    m["wte"] = {c.Vp, C};
    m["wpe"] = {c.maxT, C};
    m["ln_f.weight"] = m["ln_f.bias"] = {C};
    for (int l = 0; l < c.L; l++) {
        std::string h = "h." + std::to_string(l) + ".";
        m[h + "ln_1.weight"] = m[h + "ln_1.bias"] = m[h + "ln_2.weight"] = m[h + "ln_2.bias"] = {C};
        m[h + "attn.c_attn.weight"] = {3 * C, C};
        m[h + "attn.c_attn.bias"] = {3 * C};
        m[h + "attn.c_proj.weight"] = {C, C};
        m[h + "attn.c_proj.bias"] = {C};
        if (c.kinds[l] == DENSE) {
            m[h + "mlp.c_fc.weight"] = {dff, C};
            m[h + "mlp.c_fc.bias"] = {dff};
            m[h + "mlp.c_proj.weight"] = {C, dff};
            m[h + "mlp.c_proj.bias"] = {C};
        } else if (c.kinds[l] == MOT) {
            m[h + "mot.controller.weight"] = {E, C};
            m[h + "mot.w1"] = {E, f, C};
            m[h + "mot.w2"] = {E, C, f};
        } else if (c.kinds[l] == TOKEN_CHOICE) {
            m[h + "moe.router.weight"] = {E, C};
            if (c.tc.router != ROUTER_SOFTMAX) m[h + "moe.router.bias"] = {E};
            m[h + "moe.w1"] = {E, f, C};
            m[h + "moe.w2"] = {E, C, f};
        } else {
            FAIL("the README's table names no tensors of layer kind ", c.kinds[l]);
        }
    }
    return m;
}

// The engine's tensor that the README's name stands for (the named views of GPT, cpu/gpt.h).
static const float* engine_tensor(const GPT<float>& g, const std::string& name) {
    const Weights<float>& w = g.params;
    if (name == "wte") return w.wte;
    if (name == "wpe") return w.wpe;
    if (name == "ln_f.weight") return w.lnfw;
    if (name == "ln_f.bias") return w.lnfb;
    size_t dot = name.find('.', 2);
    const LayerWeights<float>& lw = w.layer[std::stoi(name.substr(2, dot - 2))];
    std::string rest = name.substr(dot + 1);
    const std::map<std::string, const float*> table = {
        {"ln_1.weight", lw.ln1w}, {"ln_1.bias", lw.ln1b}, {"attn.c_attn.weight", lw.qkvw},
        {"attn.c_attn.bias", lw.qkvb}, {"attn.c_proj.weight", lw.attprojw}, {"attn.c_proj.bias", lw.attprojb},
        {"ln_2.weight", lw.ln2w}, {"ln_2.bias", lw.ln2b}, {"mlp.c_fc.weight", lw.fcw}, {"mlp.c_fc.bias", lw.fcb},
        {"mlp.c_proj.weight", lw.fcprojw}, {"mlp.c_proj.bias", lw.fcprojb}, {"mot.controller.weight", lw.wc},
        {"mot.w1", lw.w1}, {"mot.w2", lw.w2}, {"moe.router.weight", lw.wc}, {"moe.router.bias", lw.bc},
        {"moe.w1", lw.w1}, {"moe.w2", lw.w2}};
    auto it = table.find(rest);
    REQUIRE_MESSAGE(it != table.end(), name);
    return it->second;
}

// The models below hold every kind of the table (common/ffn_kinds.h), so that
// a kind added to it fails here until its names enter spec_tensors.
TEST_CASE("the round-trip models cover every kind of the table") {
    for_each_ffn_kind([&](auto k) {
        bool held = false;
        for (const auto& [what, c] : kind_models()) held = held || has_kind(c, k.kind);
        CHECK_MESSAGE(held, "no model of kind ", std::string(k.option), " in kind_models()");
    });
}

TEST_CASE("every kind: checkpoint -> safetensors -> model is bit-exact, the names and shapes are the table's") {
    for (const auto& [what, c] : kind_models()) {
        INFO(what);
        GPT<float> g;
        build_random(&g, c, 7, 0.3);
        std::string ckpt = tmp_path("rt.ckpt"), st = tmp_path("rt.safetensors");
        checkpoint_save(ckpt, c, g.params_memory.data());
        Config c1;
        std::vector<float> p1;
        model_file_load(ckpt, &c1, &p1);
        model_export(st, c1, p1.data(), "f32", "some/tokenizer.bin");
        CHECK(leftover_temp_files(st).empty());

        // the file as a reader elsewhere sees it: the table's names and shapes, each tensor's own values
        SafeTensors file = safetensors_read(st);
        std::map<std::string, std::vector<int64_t>> want = spec_tensors(c);
        CHECK(file.tensors.size() == want.size());
        for (const auto& [name, shape] : want) {
            INFO(name);
            REQUIRE(file.tensors.count(name) == 1);
            CHECK(file.tensors[name].shape == shape);
            CHECK(file.tensors[name].dtype == "F32");
            std::vector<float> v(st_numel(shape));
            safetensors_get_f32(file, name, shape, v.data());
            CHECK(std::memcmp(v.data(), engine_tensor(g, name), v.size() * 4) == 0);
        }
        CHECK(file.data_start % 8 == 0);
        CHECK(file.metadata["format"] == "mot");
        CHECK(file.metadata["tokenizer"] == "some/tokenizer.bin");
        CHECK(file.metadata["dtype"] == "f32");
        CHECK(file.metadata["layernorm_eps"] == "1e-05");
        CHECK(file.metadata["activation"] == "gelu_tanh");

        Config c2;
        std::vector<float> p2;
        ModelFileInfo info;
        model_file_load(st, &c2, &p2, &info);
        CHECK(info.format == "safetensors");
        CHECK(info.tokenizer == "some/tokenizer.bin");
        check_same_config(c, c2);
        REQUIRE(p2.size() == g.params_memory.size());
        CHECK(std::memcmp(p2.data(), g.params_memory.data(), p2.size() * 4) == 0);
        // and back to a checkpoint: the same bytes as the first
        std::string ckpt2 = tmp_path("rt2.ckpt");
        checkpoint_save(ckpt2, c2, p2.data());
        CHECK(read_file(ckpt2) == read_file(ckpt));

        // bf16: every weight the float nearest-even rounding gives, exactly
        std::string sb = tmp_path("rt_bf16.safetensors");
        model_export(sb, c, g.params_memory.data(), "bf16", "");
        SafeTensors fb = safetensors_read(sb);
        for (const auto& [name, e] : fb.tensors) CHECK(e.dtype == "BF16");
        CHECK(fb.metadata["dtype"] == "bf16");
        Config c3;
        std::vector<float> p3;
        model_file_load(sb, &c3, &p3);
        check_same_config(c, c3);
        REQUIRE(p3.size() == p2.size());
        size_t exact = 0, changed = 0;
        for (size_t i = 0; i < p3.size(); i++) {
            float want_i = bf16_to_float(bf16_from_float(g.params_memory[i]));
            exact += std::memcmp(&p3[i], &want_i, 4) == 0;
            changed += p3[i] != g.params_memory[i];
            CHECK(std::fabs(p3[i] - g.params_memory[i]) <= std::ldexp(std::fabs(g.params_memory[i]), -8));
        }
        CHECK(exact == p3.size());
        CHECK(changed > p3.size() / 2);  // random weights: most lose bits
        for (const std::string& f : {ckpt, ckpt2, st, sb}) std::remove(f.c_str());
    }
}

// A file of the given header JSON (unpadded) and data section.
static std::string st_bytes(const std::string& json, const std::string& data) {
    uint64_t n = json.size();
    std::string b((const char*)&n, 8);
    return b + json + data;
}

static void expect_read_error(const std::string& bytes, const std::vector<std::string>& needles) {
    std::string path = tmp_path("bad.safetensors");
    write_bytes(path, bytes);
    std::vector<std::string> all = needles;
    all.push_back(path);
    expect_throw([&] { safetensors_read(path); }, all);
}

TEST_CASE("a broken safetensors header is refused, naming the file and what is wrong") {
    const std::string t = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    const std::string data8(8, '\0');
    // the good file reads
    write_bytes(tmp_path("good.safetensors"), st_bytes(t, data8));
    CHECK(safetensors_read(tmp_path("good.safetensors")).tensors.size() == 1);

    expect_read_error("abc", {"truncated"});
    expect_read_error(st_bytes(t, data8).substr(0, 40), {"header length", "beyond the file"});
    expect_read_error(st_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],", data8), {"bad safetensors header"});
    expect_read_error(st_bytes("[1,2]", ""), {"bad safetensors header", "expected '{'"});
    expect_read_error(st_bytes(t + "x", data8), {"bad safetensors header", "text after"});
    expect_read_error(st_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", data8),
                      {"bad safetensors header", "non-negative integer"});
    expect_read_error(st_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", data8),
                      {"bad safetensors header", "fraction"});
    expect_read_error(st_bytes("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", ""), {"\"k\" given twice"});
    expect_read_error(st_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", data8), {"tensor a lacks its data_offsets"});
    expect_read_error(st_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}", data8),
                      {"unknown field \"x\""});
    expect_read_error(st_bytes("{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", data8),
                      {"tensor a has dtype F64"});
    expect_read_error(st_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,16]}}", data8),
                      {"tensor a", "out of range"});
    expect_read_error(st_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", data8),
                      {"tensor a", "out of range"});
    expect_read_error(st_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", data8),
                      {"tensor a", "needs 12"});
    expect_read_error(st_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                               std::string(12, '\0')),
                      {"overlap"});
    expect_read_error(st_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", data8),
                      {"belong to no tensor"});
    expect_read_error(st_bytes(t, data8 + "xx"), {"bytes after its last tensor"});
    expect_read_error(st_bytes("{\"__metadata__\":{\"k\":1}}", ""), {"bad safetensors header", "expected '\"'"});
    // 2^32 x 2^32 elements wrap a 64-bit count to 0, which empty offsets would match
    expect_read_error(st_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", ""),
                      {"tensor a has shape [4294967296, 4294967296]", "does not fit in 64 bits"});
    expect_read_error(st_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[1099511627776,4194304],\"data_offsets\":[0,0]}}", ""),
                      {"tensor a has shape [1099511627776, 4194304]", "does not fit in 64 bits"});
    // a header of many keys is read (the check for repeated keys is not quadratic)
    std::string many = "{\"__metadata__\":{";
    for (int i = 0; i < 50000; i++) many += (i ? ",\"k" : "\"k") + std::to_string(i) + "\":\"v\"";
    write_bytes(tmp_path("many.safetensors"), st_bytes(many + "}}", ""));
    CHECK(safetensors_read(tmp_path("many.safetensors")).metadata.size() == 50000);

    // escapes in strings are read as JSON writes them
    write_bytes(tmp_path("esc.safetensors"), st_bytes("{\"__metadata__\":{\"k\\u00e9\\n\":\"a\\\"b\\\\\"}}", ""));
    SafeTensors e = safetensors_read(tmp_path("esc.safetensors"));
    CHECK(e.metadata["k\xc3\xa9\n"] == "a\"b\\");
}

TEST_CASE("a safetensors model that does not match its metadata is refused, naming the file and the tensor") {
    Config c = kind_model("mixed");
    GPT<float> g;
    build_random(&g, c, 3, 0.3);
    std::vector<ExportTensor> ts = export_tensors(c);
    auto meta = model_metadata(c, "", "f32");
    std::string path = tmp_path("model_bad.safetensors");
    // writes the model with tensor `drop` left out, tensor `reshape` given another shape, metadata key set
    auto write = [&](const std::string& drop, const std::string& reshape, const std::string& key,
                     const std::string& value) {
        std::vector<StTensorOut> out;
        std::vector<std::vector<float>> keep;
        for (const ExportTensor& t : ts) {
            if (t.name == drop) continue;
            std::vector<int64_t> shape = t.shape;
            if (t.name == reshape) shape = {(int64_t)t.numel};
            out.push_back({t.name, "F32", shape, g.params_memory.data() + t.offset});
        }
        auto m = meta;
        for (auto& kv : m)
            if (kv.first == key) kv.second = value;
        safetensors_write(path, out, m);
    };
    auto expect_model_error = [&](const std::vector<std::string>& needles) {
        std::vector<std::string> all = needles;
        all.push_back(path);
        Config k;
        std::vector<float> p;
        expect_throw([&] { model_file_load(path, &k, &p); }, all);
    };
    write("", "", "", "");
    Config k;
    std::vector<float> p;
    model_file_load(path, &k, &p);  // the unbroken file loads
    CHECK(p == g.params_memory);

    write("h.2.moe.router.bias", "", "", "");
    expect_model_error({"missing tensor h.2.moe.router.bias"});
    write("", "h.1.mlp.c_fc.weight", "", "");
    expect_model_error({"tensor h.1.mlp.c_fc.weight has shape [512]", "[32, 16]"});
    write("", "", "kinds", "mot,dense,mot,mot");
    expect_model_error({"tensor h.2.moe.router.bias is not a tensor of the model"});
    write("", "", "kinds", "mot,dense,moe,mot");
    expect_model_error({"metadata kinds", "\"moe\" is not " + name_list(ffn_kind_names(true))});
    write("", "", "n_layer", "3");
    expect_model_error({"names 4 layers, n_layer is 3"});
    write("", "", "n_embd", "16x");
    expect_model_error({"metadata n_embd \"16x\""});
    write("", "", "n_embd", "+16");
    expect_model_error({"metadata n_embd \"+16\"", "whole number"});
    write("", "", "n_embd", " 16");
    expect_model_error({"metadata n_embd \" 16\"", "whole number"});
    write("", "", "temperature", "+0.75");
    expect_model_error({"metadata temperature \"+0.75\""});
    write("", "", "n_head", "3");
    expect_model_error({"inconsistent metadata", "heads"});
    write("", "", "temperature", "nan");
    expect_model_error({"metadata temperature \"nan\""});
    write("", "", "router", "sparse");
    expect_model_error({"metadata router \"sparse\""});
    write("", "", "padded_vocab_size", "40");
    expect_model_error({"padded_vocab_size 40", "expected 64"});
    write("", "", "activation", "relu");
    expect_model_error({"activation \"relu\""});
    write("", "", "format_version", "2");
    expect_model_error({"format_version \"2\""});
    write("", "", "format", "gpt2");
    expect_model_error({"format \"gpt2\""});
    safetensors_write(path, {}, {});
    expect_model_error({"without this program's metadata"});
    // a non-finite weight is named
    g.params_memory[ts[3].offset + 1] = NAN;
    write("", "", "", "");
    expect_model_error({"not finite", "h0.ln1b[1]"});
    std::remove(path.c_str());
}

TEST_CASE("a tiny safetensors file whose metadata describes a huge model is refused before any allocation") {
    // 40 dense layers of C 8192, dff 32768: about 32e9 parameters, 128 GB of
    // floats, in a file of a few hundred bytes without a single tensor
    Config c = make_config(50257, 1024, 64, 8192, 32768, 0, 0, 0, 1.0f, std::vector<int>(40, DENSE));
    std::string path = tmp_path("huge.safetensors");
    safetensors_write(path, {}, model_metadata(c, "", "f32"));
    CHECK(read_file(path).size() < 2000);
    Config k;
    std::vector<float> p;
    expect_throw([&] { model_file_load(path, &k, &p); }, {path, "missing tensor wte"});
    // every tensor there but one too small: its shape is named, nothing allocated
    std::vector<float> zero(16);
    safetensors_write(path, {{"wte", "F32", {4, 4}, zero.data()}}, model_metadata(c, "", "f32"));
    expect_throw([&] { model_file_load(path, &k, &p); }, {path, "tensor wte has shape [4, 4]", "[50304, 8192]"});
    std::remove(path.c_str());
}

TEST_CASE("model_file_load tells the formats apart by their first bytes, whatever the file is called") {
    Config c = kind_models()[1].second;
    GPT<float> g;
    build_random(&g, c, 5, 0.3);
    std::string a = tmp_path("fmt_a.safetensors"), b = tmp_path("fmt_b.ckpt");
    checkpoint_save(a, c, g.params_memory.data());  // a checkpoint under a .safetensors name
    model_export(b, c, g.params_memory.data(), "f32", "");  // and the other way round
    CHECK(sniff_model_file(a) == MODEL_FILE_CHECKPOINT);
    CHECK(sniff_model_file(b) == MODEL_FILE_SAFETENSORS);
    for (const std::string& f : {a, b}) {
        Config k;
        std::vector<float> p;
        ModelFileInfo info;
        model_file_load(f, &k, &p, &info);
        CHECK(info.format == (f == a ? "checkpoint" : "safetensors"));
        CHECK(p == g.params_memory);
    }
    // neither: the checkpoint reader's errors speak
    write_bytes(a, "not a model at all, longer than sixteen bytes");
    Config k;
    std::vector<float> p;
    expect_throw([&] { model_file_load(a, &k, &p); }, {a, "truncated"});
    std::remove(a.c_str());
    std::remove(b.c_str());
}

// ---------------------------------------------------------------- the program

static std::vector<uint16_t> text_tokens(int n) {
    std::vector<uint16_t> t(n);
    for (int i = 0; i < n; i++) t[i] = (uint16_t)("the quick brown fox jumps over the lazy dog. "[i % 45]);
    return t;
}

// A tiny MoT model trained three steps, build/export.ckpt, on build/export_train.bin.
static void trained_model(const std::string& extra = "", const std::string& ckpt = "build/export.ckpt") {
    write_raw_shard("build/export_train.bin", text_tokens(2000));
    write_raw_shard("build/export_val.bin", text_tokens(500));
    Run r = run("--data build/export_train.bin --vocab 257 --layers 2 --heads 2 --d-model 16 --experts 4 --group 2 "
                "--batch 4 --seq 8 --steps 3 --val-every 0 --sample-every 0 --device cpu --save " + ckpt + extra);
    INFO(r.out);
    REQUIRE(r.rc == 0);
}

// The number after "loss " in eval's line.
static std::string printed_loss(const std::string& out) {
    size_t at = out.find(": loss ");
    REQUIRE(at != std::string::npos);
    return out.substr(at + 7, out.find(' ', at + 7) - at - 7);
}

TEST_CASE("export end to end: the file evaluates, samples and trains as the checkpoint does") {
    for (const char* kind : {" --ffn mot", " --ffn dense", " --ffn token-choice --router threshold",
                             " --ffn mot --ffn-layers 1"}) {
        INFO(kind);
        trained_model(kind);
        std::string st = "build/export.safetensors", sb = "build/export_bf16.safetensors";
        std::remove(st.c_str());
        Run x = run("export --load build/export.ckpt -o " + st);
        INFO(x.out);
        REQUIRE(x.rc == 0);
        CHECK(x.out.find("wrote " + st) != std::string::npos);
        REQUIRE(run("export --load build/export.ckpt -o " + sb + " --dtype bf16").rc == 0);
        Config c0, c1;
        std::vector<float> p0, p1;
        checkpoint_load("build/export.ckpt", &c0, &p0);
        model_file_load(st, &c1, &p1);
        CHECK(p0 == p1);
        // export of the export: the same file
        REQUIRE(run("export --load " + st + " -o build/export_again.safetensors").rc == 0);
        CHECK(read_file("build/export_again.safetensors") == read_file(st));

        const std::string e = " --data build/export_val.bin --batch 4 --seq 8 --device cpu --batches 3";
        Run from_ckpt = run("eval --load build/export.ckpt" + e);
        Run from_st = run("eval --load " + st + e);
        Run from_bf16 = run("eval --load " + sb + e);
        INFO(from_ckpt.out, from_st.out, from_bf16.out);
        REQUIRE(from_ckpt.rc == 0);
        REQUIRE(from_st.rc == 0);
        REQUIRE(from_bf16.rc == 0);
        CHECK(printed_loss(from_st.out) == printed_loss(from_ckpt.out));
        CHECK(std::fabs(std::stod(printed_loss(from_bf16.out)) - std::stod(printed_loss(from_ckpt.out))) < 0.05);

        Run s = run("sample --load " + sb + " --length 4");
        INFO(s.out);
        CHECK(s.rc == 0);
        CHECK(s.out.find("---- sample 1 ----") != std::string::npos);
        Run t = run("--data build/export_train.bin --load " + sb + " --batch 4 --seq 8 --steps 2 --val-every 0 "
                    "--sample-every 0 --device cpu --save build/export_trained.ckpt");
        INFO(t.out);
        CHECK(t.rc == 0);
        CHECK(t.out.find("loaded " + sb) != std::string::npos);
        Config c2;
        std::vector<float> p2;
        checkpoint_load("build/export_trained.ckpt", &c2, &p2);
        check_same_config(c0, c2);
    }
}

TEST_CASE("export refuses what it cannot write, and leaves no file") {
    trained_model();
    std::remove("build/export_no.safetensors");
    expect_error("export --load build/export.ckpt -o build/export_no.safetensors --dtype f16", {"--dtype"});
    expect_error("export --load build/no_such.ckpt -o build/export_no.safetensors", {"build/no_such.ckpt"});
    expect_error("export --load build/export.ckpt -o build/", {"-o build/", "folder"});
    expect_error("export --load build/export.ckpt -o build/export.ckpt/x.safetensors", {"-o"});
    expect_error("export --load build/export.ckpt", {"--out"});
    write_raw_shard("build/export_tok_not.bin", text_tokens(10));
    expect_error("export --load build/export.ckpt -o build/export_no.safetensors --tokenizer build/export_tok_not.bin",
                 {"build/export_tok_not.bin"});
    CHECK_FALSE(exists("build/export_no.safetensors"));
    CHECK(leftover_temp_files("build/export_no.safetensors").empty());

    // -o naming the file --load or --tokenizer reads is refused, and that file is kept
    std::string ckpt = read_file("build/export.ckpt");
    expect_error("export --load build/export.ckpt -o build/export.ckpt",
                 {"-o build/export.ckpt", "--load build/export.ckpt"});
    expect_error("export --load build/export.ckpt -o build/../build/export.ckpt",
                 {"-o build/../build/export.ckpt", "--load build/export.ckpt"});
    CHECK(read_file("build/export.ckpt") == ckpt);
    std::vector<int32_t> tok = {20261129, 1, 257, 0};
    const std::string tok_bytes((const char*)tok.data(), 16);
    write_bytes("build/export_tok_in.bin", tok_bytes);
    expect_error("export --load build/export.ckpt -o build/export_tok_in.bin --tokenizer build/export_tok_in.bin",
                 {"-o build/export_tok_in.bin", "tokenizer build/export_tok_in.bin", "--tokenizer"});
    CHECK(read_file("build/export_tok_in.bin") == tok_bytes);
    // the tokenizer a safetensors --load names, which the export would name too
    std::string st = "build/export_tok_in.safetensors";
    REQUIRE(run("export --load build/export.ckpt -o " + st + " --tokenizer build/export_tok_in.bin").rc == 0);
    std::string st_bytes_before = read_file(st);
    expect_error("export --load " + st + " -o build/export_tok_in.bin",
                 {"-o build/export_tok_in.bin", "tokenizer build/export_tok_in.bin", "--load's metadata"});
    expect_error("export --load " + st + " -o " + st, {"-o " + st, "--load " + st});
    CHECK(read_file("build/export_tok_in.bin") == tok_bytes);
    CHECK(read_file(st) == st_bytes_before);
}

TEST_CASE("eval --dump: the first batch's logits give the losses and the mean loss eval prints") {
    for (const char* kind : {" --ffn mot", " --ffn token-choice"}) {
        INFO(kind);
        trained_model(kind);
        const int B = 4, T = 8;
        std::string dump = "build/export_dump.safetensors";
        std::remove(dump.c_str());
        Run r = run("eval --load build/export.ckpt --data build/export_val.bin --batch 4 --seq 8 --device cpu "
                    "--batches 1 --dump " + dump);
        INFO(r.out);
        REQUIRE(r.rc == 0);
        SafeTensors d = safetensors_read(dump);
        CHECK(d.tensors.size() == 4);
        const int V = 257;
        std::vector<int32_t> x(B * T), y(B * T);
        std::vector<float> logits((size_t)B * T * V), losses(B * T);
        safetensors_get_i32(d, "tokens", {B, T}, x.data());
        safetensors_get_i32(d, "targets", {B, T}, y.data());
        safetensors_get_f32(d, "logits", {B, T, V}, logits.data());
        safetensors_get_f32(d, "losses", {B, T}, losses.data());
        // the loader reads the shard in order: row b starts at token b*T, each target the next token
        std::vector<uint16_t> text = text_tokens(500);
        for (int i = 0; i < B * T; i++) {
            CHECK(x[i] == text[i]);
            CHECK(y[i] == text[i + 1]);
        }
        // each loss is the cross-entropy of its row of logits (in double, then rounded to float)
        double sum = 0;
        for (int i = 0; i < B * T; i++) {
            const float* row = logits.data() + (size_t)i * V;
            double mx = row[0];
            for (int v = 1; v < V; v++) mx = std::max(mx, (double)row[v]);
            double z = 0;
            for (int v = 0; v < V; v++) z += std::exp(row[v] - mx);
            double ce = std::log(z) + mx - row[y[i]];
            CHECK(losses[i] == doctest::Approx(ce).epsilon(1e-5));
            sum += losses[i];
        }
        double mean = sum / (B * T);
        CHECK(d.metadata["loss"] == strf("%.9g", mean));
        CHECK(printed_loss(r.out) == strf("%.4f", mean));
        CHECK(r.out.find("wrote " + dump) != std::string::npos);
    }
    expect_error("eval --load build/export.ckpt --data build/export_val.bin --batch 4 --seq 8 --device cpu --decode "
                 "--dump build/export_dump2.safetensors",
                 {"--dump", "--decode"});
    CHECK_FALSE(exists("build/export_dump2.safetensors"));
    std::string shard = read_file("build/export_val.bin");
    expect_error("eval --load build/export.ckpt --data build/export_val.bin --batch 4 --seq 8 --device cpu --batches 1 "
                 "--dump build/export_val.bin",
                 {"--dump build/export_val.bin is a shard of --data"});
    expect_error("eval --load build/export.ckpt --data build/export_val.bin --batch 4 --seq 8 --device cpu --batches 1 "
                 "--dump build/export.ckpt",
                 {"--dump build/export.ckpt is the model --load reads"});
    CHECK(read_file("build/export_val.bin") == shard);
}

TEST_CASE("the tokenizer named in the metadata decodes samples; --save over a safetensors --load is refused") {
    trained_model();
    // a byte-level tokenizer without merges: vocabulary 256 + 0 + 1 = 257, the model's
    std::vector<int32_t> tok = {20261129, 1, 257, 0};
    write_bytes("build/export_tok.bin", std::string((const char*)tok.data(), 16));
    std::string st = "build/export_tok.safetensors";
    Run x = run("export --load build/export.ckpt -o " + st + " --tokenizer build/export_tok.bin");
    INFO(x.out);
    REQUIRE(x.rc == 0);
    CHECK(safetensors_read(st).metadata["tokenizer"] == "build/export_tok.bin");
    Run s = run("sample --load " + st + " --prompt 'the' --length 4");
    INFO(s.out);
    CHECK(s.rc == 0);
    CHECK(s.out.find("---- sample 1 ----\nthe") != std::string::npos);
    CHECK(s.out.find("token ids") == std::string::npos);
    // a checkpoint names no tokenizer: the same sample cannot encode its prompt
    expect_error("sample --load build/export.ckpt --prompt 'the' --length 4", {"--prompt needs --tokenizer"});

    std::string before = read_file(st);
    expect_error("--data build/export_train.bin --load " + st + " --save " + st +
                     " --batch 4 --seq 8 --steps 1 --val-every 0 --sample-every 0 --device cpu",
                 {"--save " + st, "safetensors", "--load"});
    CHECK(read_file(st) == before);
}
