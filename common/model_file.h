// Models in and out of the engine: the mot checkpoint (common/checkpoint.h)
// and the safetensors file (common/safetensors.h) that PyTorch and Hugging
// Face tooling read; in only, llm.c's GPT-2 model file (common/llmc.h).
// model_file_load() tells the formats apart by their first bytes, so that
// --load takes any of them.
//
// A model as safetensors (README, "Using the models elsewhere"): one tensor
// per engine parameter, in nn.Linear orientation (out, in) as the engine
// stores them, named as GPT-2's PyTorch code names the shared parts:
//
//   name                          shape        engine (layout.h)
//   wte                           (Vp, C)      wte: padded rows kept, also the LM head
//   wpe                           (maxT, C)    wpe
//   h.N.ln_1.weight / .bias       (C)          ln1w / ln1b
//   h.N.attn.c_attn.weight        (3C, C)      qkvw
//   h.N.attn.c_attn.bias          (3C)         qkvb
//   h.N.attn.c_proj.weight        (C, C)       attprojw
//   h.N.attn.c_proj.bias          (C)          attprojb
//   h.N.ln_2.weight / .bias       (C)          ln2w / ln2b
//   the feed-forward layer's tensors, named by its kind (common/ffn_kinds.h, exports()):
//   h.N.mlp.c_fc.weight           (dff, C)     DENSE fcw
//   h.N.mlp.c_fc.bias             (dff)        DENSE fcb
//   h.N.mlp.c_proj.weight         (C, dff)     DENSE fcprojw
//   h.N.mlp.c_proj.bias           (C)          DENSE fcprojb
//   h.N.mot.controller.weight     (E, C)       MOT wc
//   h.N.mot.w1                    (E, f, C)    MOT w1
//   h.N.mot.w2                    (E, C, f)    MOT w2
//   h.N.moe.router.weight         (E, C)       TOKEN_CHOICE wc
//   h.N.moe.router.bias           (E)          TOKEN_CHOICE bc (threshold routers only)
//   h.N.moe.w1                    (E, f, C)    TOKEN_CHOICE w1
//   h.N.moe.w2                    (E, C, f)    TOKEN_CHOICE w2
//   ln_f.weight / ln_f.bias       (C)          lnfw / lnfb
//
// N is the block, 0-based. The metadata holds the whole configuration as
// strings (model_metadata): format "mot", format_version "1", the sizes,
// the layer kinds, the MoT and token-choice settings (floats as "%.9g",
// which reads back as the same float32), the activation, LayerNorm's
// epsilon, the tokenizer's file name and the dtype.
#pragma once
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/checkpoint.h"
#include "common/config.h"
#include "common/layout.h"
#include "common/llmc.h"
#include "common/safetensors.h"

constexpr const char* MODEL_FORMAT_VERSION = "1";

// One parameter tensor as safetensors names it, where it lies in the
// engine's parameter block, and its shape.
struct ExportTensor {
    std::string name;
    size_t offset, numel;
    std::vector<int64_t> shape;
};

// The tensors of a model in the engine's order (visit_params), each named by
// which Weights slot visit_params hands over: the order and sizes come from
// layout.h alone, the names and shapes from the table above (a feed-forward
// layer's from its kind's exports(), common/ffn_kinds.h).
inline std::vector<ExportTensor> export_tensors(const Config& c) {
    using S = std::vector<int64_t>;
    const int64_t C = c.C;
    Weights<float> w;
    std::vector<ExportTensor> out;
    size_t offset = 0;
    visit_params(w, c, [&](const std::string& engine_name, float*& slot, size_t n, int, Init) {
        std::string name;
        S shape;
        if (&slot == &w.wte) name = "wte", shape = {c.Vp, C};
        else if (&slot == &w.wpe) name = "wpe", shape = {c.maxT, C};
        else if (&slot == &w.lnfw) name = "ln_f.weight", shape = {C};
        else if (&slot == &w.lnfb) name = "ln_f.bias", shape = {C};
        for (int l = 0; l < c.L && name.empty(); l++) {
            LayerWeights<float>& lw = w.layer[l];
            const std::string h = "h." + std::to_string(l) + ".";
            const struct { float** slot; std::string name; S shape; } table[] = {
                {&lw.ln1w, "ln_1.weight", {C}},
                {&lw.ln1b, "ln_1.bias", {C}},
                {&lw.qkvw, "attn.c_attn.weight", {3 * C, C}},
                {&lw.qkvb, "attn.c_attn.bias", {3 * C}},
                {&lw.attprojw, "attn.c_proj.weight", {C, C}},
                {&lw.attprojb, "attn.c_proj.bias", {C}},
                {&lw.ln2w, "ln_2.weight", {C}},
                {&lw.ln2b, "ln_2.bias", {C}},
            };
            for (const auto& t : table)
                if (&slot == t.slot) name = h + t.name, shape = t.shape;
            // the feed-forward layer's tensors: its kind names them (common/ffn_kinds.h, exports)
            with_ffn_kind(c.kinds[l], [&](auto kind) {
                kind.exports(lw, c, [&](float*& kslot, const char* kname, const S& kshape) {
                    if (&slot == &kslot) name = h + kname, shape = kshape;
                });
            });
        }
        // a tensor added to layout.h without a row above, or a row whose shape disagrees, stops here
        if (name.empty() || st_numel(shape) != n)
            fail(strf("export: the engine's tensor %s (%zu elements) has no safetensors name of that size",
                      engine_name.c_str(), n));
        out.push_back({name, offset, n, shape});
        offset += n;
    });
    return out;
}

// A kind's name in the "kinds" metadata (common/ffn_kinds.h, stored).
inline std::string kind_name(int kind) {
    std::string name;
    with_ffn_kind(kind, [&](auto k) { name = k.stored; });
    return name;
}

// "%.9g": nine significant digits read back as the same float32.
inline std::string float_text(float x) { return strf("%.9g", (double)x); }

// The configuration as safetensors metadata (every value a string).
// tokenizer: the file name of the tokenizer the model was trained with, or "".
inline std::vector<std::pair<std::string, std::string>> model_metadata(const Config& c, const std::string& tokenizer,
                                                                       const std::string& dtype) {
    std::string kinds;
    for (int l = 0; l < c.L; l++) kinds += (l ? "," : "") + kind_name(c.kinds[l]);
    auto i = [](int x) { return std::to_string(x); };
    std::vector<std::pair<std::string, std::string>> m = {{"format", "mot"},
            {"format_version", MODEL_FORMAT_VERSION},
            {"vocab_size", i(c.V)},
            {"padded_vocab_size", i(c.Vp)},
            {"max_seq_len", i(c.maxT)},
            {"n_layer", i(c.L)},
            {"n_head", i(c.NH)},
            {"n_embd", i(c.C)},
            {"dense_ffn_width", i(c.dff)},
            {"kinds", kinds},
            {"experts", i(c.E)},
            {"expert_width", i(c.f)},
            {"activation", "gelu_tanh"},
            {"layernorm_eps", "1e-05"},
            {"tokenizer", tokenizer},
            {"dtype", dtype}};
    // each kind's hyperparameters (common/ffn_kinds.h, metadata_write), every kind's in every file
    auto text = [&](const char* key, auto v) {
        if constexpr (std::is_same_v<decltype(v), std::string>) m.push_back({key, v});
        else if constexpr (std::is_floating_point_v<decltype(v)>) m.push_back({key, float_text(v)});
        else m.push_back({key, i(v)});
    };
    for_each_ffn_kind([&](auto k) { k.metadata_write(c, text); });
    return m;
}

// Writes the model (num_params(c) floats in engine order) as safetensors,
// dtype "f32" or "bf16" (rounded to nearest even).
inline void model_export(const std::string& path, const Config& c, const float* params, const std::string& dtype,
                         const std::string& tokenizer) {
    if (dtype != "f32" && dtype != "bf16") fail(strf("%s: dtype %s (must be f32 or bf16)", path.c_str(), dtype.c_str()));
    std::vector<ExportTensor> ts = export_tensors(c);
    std::vector<uint16_t> half;
    if (dtype == "bf16") {
        half.resize(num_params(c));
        for (size_t i = 0; i < half.size(); i++) half[i] = bf16_from_float(params[i]);
    }
    std::vector<StTensorOut> out;
    for (const ExportTensor& t : ts) {
        const void* data = dtype == "f32" ? (const void*)(params + t.offset) : (const void*)(half.data() + t.offset);
        out.push_back({t.name, dtype == "f32" ? "F32" : "BF16", t.shape, data});
    }
    safetensors_write(path, out, model_metadata(c, tokenizer, dtype));
}

// What a model file said besides the configuration and the weights.
struct ModelFileInfo {
    std::string format;     // "checkpoint", "safetensors", "llm.c"
    std::string tokenizer;  // safetensors: the tokenizer's file name in the metadata, "" when not known
    std::string dtype;      // safetensors: "f32" or "bf16"
};

// Reads safetensors metadata values written whole: "12x", " 12", "+12" or ""
// is refused, not read as 12 or 0; a missing key, a value out of range,
// fails naming the file and the key. The kinds' metadata_read read through
// it (common/ffn_kinds.h).
struct MetadataReader {
    const char* file;
    const std::map<std::string, std::string>* metadata;
    std::string text(const char* key) const {
        auto it = metadata->find(key);
        if (it == metadata->end()) fail(strf("%s: metadata lacks \"%s\"", file, key));
        return it->second;
    }
    int integer(const char* key, int lo, int hi) const {
        std::string s = text(key);
        char* end = nullptr;
        errno = 0;
        long v = std::strtol(s.c_str(), &end, 10);
        // strtol would skip leading spaces and take a '+': a digit or '-' must come first
        bool whole = !s.empty() && (std::isdigit((unsigned char)s[0]) || s[0] == '-');
        if (!whole || *end != '\0' || errno == ERANGE || v < lo || v > hi)
            fail(strf("%s: metadata %s \"%s\" (must be a whole number %d..%d)", file, key, s.c_str(), lo, hi));
        return (int)v;
    }
    // lo 0: any positive, finite, normal float (the router temperature, as in a checkpoint)
    float real(const char* key, float lo) const {
        std::string s = text(key);
        char* end = nullptr;
        float v = std::strtof(s.c_str(), &end);
        bool in = !s.empty() && !std::isspace((unsigned char)s[0]) && s[0] != '+' &&
                  (lo > 0 ? v >= lo && v <= 1e6f : std::isnormal(v) && v > 0);
        if (s.empty() || *end != '\0' || !in)
            fail(strf("%s: metadata %s \"%s\" (must be a %s)", file, key, s.c_str(),
                      lo > 0 ? "number, 1e-6..1e6" : "positive, finite, normal number"));
        return v;
    }
};

// A model from a safetensors file of this program's metadata: the metadata
// checked as strictly as a checkpoint's header, every tensor present with
// its shape, none other, every weight finite.
inline void safetensors_model_load(const std::string& path, Config* c, std::vector<float>* params,
                                   ModelFileInfo* info = nullptr) {
    SafeTensors st = safetensors_read(path);
    const char* name = path.c_str();
    if (!st.has_metadata || !st.metadata.count("format"))
        fail(strf("%s: a safetensors file without this program's metadata (no \"format\" in __metadata__): the "
                  "model's configuration is unknown",
                  name));
    if (st.metadata["format"] != "mot")
        fail(strf("%s: metadata format \"%s\", this program reads \"mot\"", name, st.metadata["format"].c_str()));
    MetadataReader r{name, &st.metadata};
    if (r.text("format_version") != MODEL_FORMAT_VERSION)
        fail(strf("%s: metadata format_version \"%s\", this build reads version %s", name,
                  r.text("format_version").c_str(), MODEL_FORMAT_VERSION));
    Config k;
    k.V = r.integer("vocab_size", BOUND_VOCAB.lo, BOUND_VOCAB.hi);
    k.Vp = r.integer("padded_vocab_size", BOUND_VOCAB.lo, BOUND_VOCAB.hi);
    if (k.Vp != pad_vocab(k.V))
        fail(strf("%s: metadata padded_vocab_size %d, expected %d for vocab_size %d", name, k.Vp, pad_vocab(k.V), k.V));
    k.maxT = r.integer("max_seq_len", BOUND_SEQ.lo, BOUND_SEQ.hi);
    k.L = r.integer("n_layer", 1, MAX_LAYERS);
    k.NH = r.integer("n_head", BOUND_HEADS.lo, BOUND_HEADS.hi);
    k.C = r.integer("n_embd", BOUND_WIDTH.lo, BOUND_WIDTH.hi);
    k.dff = r.integer("dense_ffn_width", BOUND_DFF.lo, BOUND_DFF.hi);
    k.E = r.integer("experts", BOUND_EXPERTS.lo, BOUND_EXPERTS.hi);
    k.f = r.integer("expert_width", BOUND_EXPERT_WIDTH.lo, BOUND_EXPERT_WIDTH.hi);
    for_each_ffn_kind([&](auto kind) { kind.metadata_read(r, &k); });
    if (r.text("activation") != "gelu_tanh")
        fail(strf("%s: metadata activation \"%s\": this program computes gelu_tanh only", name,
                  r.text("activation").c_str()));
    if (r.text("layernorm_eps") != "1e-05")
        fail(strf("%s: metadata layernorm_eps \"%s\": this program's LayerNorm uses 1e-05", name,
                  r.text("layernorm_eps").c_str()));
    k.activation = 0;
    std::string kinds = r.text("kinds") + ",";
    for (size_t pos = 0, comma; (comma = kinds.find(',', pos)) != std::string::npos; pos = comma + 1) {
        std::string kind = kinds.substr(pos, comma - pos);
        const int layer_kind = ffn_kind_named(kind, true);
        if (layer_kind < 0)
            fail(strf("%s: metadata kinds \"%s\": \"%s\" is not %s", name, r.text("kinds").c_str(), kind.c_str(),
                      name_list(ffn_kind_names(true)).c_str()));
        k.kinds.push_back(layer_kind);
    }
    if ((int)k.kinds.size() != k.L)
        fail(strf("%s: metadata kinds \"%s\" names %zu layers, n_layer is %d", name, r.text("kinds").c_str(),
                  k.kinds.size(), k.L));
    try {
        config_validate(k);
    } catch (const std::exception& e) {
        fail(strf("%s: inconsistent metadata: %s", name, e.what()));
    }
    std::vector<ExportTensor> ts = export_tensors(k);
    for (const auto& [key, e] : st.tensors) {
        bool known = false;
        for (const ExportTensor& t : ts) known = known || t.name == key;
        if (!known) fail(strf("%s: tensor %s is not a tensor of the model its metadata describes", name, key.c_str()));
    }
    // every tensor present with its shape and a float dtype before the
    // parameters are allocated: the metadata alone could ask for any size
    for (const ExportTensor& t : ts) {
        auto it = st.tensors.find(t.name);
        if (it == st.tensors.end()) fail(strf("%s: missing tensor %s", name, t.name.c_str()));
        const StEntry& e = it->second;
        if (e.shape != t.shape)
            fail(strf("%s: tensor %s has shape %s, the model needs %s", name, t.name.c_str(),
                      st_shape_text(e.shape).c_str(), st_shape_text(t.shape).c_str()));
        if (e.dtype != "F32" && e.dtype != "BF16")
            fail(strf("%s: tensor %s has dtype %s; a model's tensors are F32 or BF16", name, t.name.c_str(),
                      e.dtype.c_str()));
    }
    std::vector<float> p(num_params(k));
    for (const ExportTensor& t : ts) safetensors_get_f32(st, t.name, t.shape, p.data() + t.offset);
    std::string bad = first_nonfinite_tensor(k, p.data());
    if (!bad.empty()) fail(strf("%s: a parameter is not finite (%s)", name, bad.c_str()));
    *c = k;
    params->swap(p);
    if (info) {
        info->format = "safetensors";
        info->tokenizer = st.metadata.count("tokenizer") ? st.metadata["tokenizer"] : "";
        info->dtype = st.metadata.count("dtype") ? st.metadata["dtype"] : "";
    }
}

// The formats model_file_load tells apart by their first bytes.
enum ModelFileFormat { MODEL_FILE_UNKNOWN, MODEL_FILE_CHECKPOINT, MODEL_FILE_SAFETENSORS, MODEL_FILE_LLMC };

inline ModelFileFormat sniff_model_file(const std::string& path) {
    unsigned char b[16] = {0};
    // open_or_fail refuses a FIFO or a device instead of blocking on it; a
    // file that cannot be opened is left to checkpoint_load's message
    if (!file_exists(path)) return MODEL_FILE_UNKNOWN;
    FILE* fp = open_or_fail(path, "checkpoint");
    size_t n = std::fread(b, 1, sizeof b, fp);
    std::fclose(fp);
    int32_t magic = 0;
    if (n >= 4) std::memcpy(&magic, b, 4);
    if (magic == CHECKPOINT_MAGIC) return MODEL_FILE_CHECKPOINT;
    if (magic == LLMC_MODEL_MAGIC) return MODEL_FILE_LLMC;
    // safetensors: a little-endian u64 header length, then the JSON's opening brace
    if (n >= 9 && b[8] == '{') return MODEL_FILE_SAFETENSORS;
    return MODEL_FILE_UNKNOWN;
}

// Reads a model from a mot checkpoint or a safetensors file, whichever the
// file's first bytes say it is; fills the configuration and the parameters
// (num_params(c) floats in engine order). A file of neither kind is read as
// a checkpoint, whose errors then say what is wrong with it.
inline void model_file_load(const std::string& path, Config* c, std::vector<float>* params,
                            ModelFileInfo* info = nullptr) {
    ModelFileInfo none;
    if (!info) info = &none;
    switch (sniff_model_file(path)) {
        case MODEL_FILE_SAFETENSORS:
            safetensors_model_load(path, c, params, info);
            return;
        case MODEL_FILE_LLMC:
            llmc_model_load(path, c, params);
            info->format = "llm.c";
            return;
        // another format: a value above, a test in sniff_model_file, a case here
        case MODEL_FILE_CHECKPOINT:
        case MODEL_FILE_UNKNOWN:
            break;
    }
    checkpoint_load(path, c, params);
    info->format = "checkpoint";
}
