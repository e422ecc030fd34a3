// Writers of llm.c's files for the tests (test_llmc, test_python): a GPT-2
// model file in float32 or bfloat16 and a tokenizer file. They share no code
// with the readers in common/llmc.h and tokenizer/bpe.h, so a test that reads
// back what they wrote checks the readers against a second statement of the
// format.
#pragma once
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "common/layout.h"

// float32 -> bfloat16, rounding to nearest even (finite x).
inline uint16_t writer_to_bf16(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    u += 0x7FFF + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

inline float writer_from_bf16(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float x;
    std::memcpy(&x, &u, 4);
    return x;
}

template <typename T>
inline void append_raw(std::string* out, const T& v) {
    out->append((const char*)&v, sizeof v);
}

// llm.c's model file for an engine model of DENSE layers with dff 4C: the
// header, then llm.c's tensors in its order, each stacked over the layers.
// wte gets Vp_file rows: the model's first V, then rows that hold `pad`.
inline std::string llmc_model_bytes(const Config& c, const std::vector<float>& params, int Vp_file, bool bf16,
                                    float pad = 0) {
    REQUIRE(c.dff == 4 * c.C);
    for (int k : c.kinds) REQUIRE(k == DENSE);
    std::map<std::string, TensorSpec> spec;
    for (const TensorSpec& s : param_specs(c)) spec[s.name] = s;
    std::string out;
    std::vector<int32_t> h(256, 0);
    h[0] = 20240326, h[1] = bf16 ? 5 : 3, h[2] = c.maxT, h[3] = c.V, h[4] = c.L, h[5] = c.NH, h[6] = c.C;
    h[7] = Vp_file;
    out.append((const char*)h.data(), 1024);
    auto put = [&](float x) {
        if (bf16) append_raw(&out, writer_to_bf16(x));
        else append_raw(&out, x);
    };
    auto put_tensor = [&](const std::string& name, size_t n) {
        const TensorSpec& s = spec.at(name);
        REQUIRE(n <= s.numel);
        for (size_t i = 0; i < n; i++) put(params[s.offset + i]);
    };
    put_tensor("wte", (size_t)c.V * c.C);
    for (size_t i = (size_t)c.V * c.C; i < (size_t)Vp_file * c.C; i++) put(pad);
    put_tensor("wpe", (size_t)c.maxT * c.C);
    for (const char* key : {"ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb", "ln2w", "ln2b", "fcw", "fcb",
                            "fcprojw", "fcprojb"})
        for (int l = 0; l < c.L; l++) {
            std::string name = "h" + std::to_string(l) + "." + key;
            put_tensor(name, spec.at(name).numel);
        }
    put_tensor("lnfw", c.C);
    put_tensor("lnfb", c.C);
    return out;
}

// llm.c's tokenizer file: version 1 (no end-of-text slot) or 2 (eot in [3]).
inline std::string llmc_tokenizer_bytes(const std::vector<std::string>& tokens, int version, int eot) {
    std::vector<uint32_t> h(256, 0);
    h[0] = 20240328, h[1] = version, h[2] = (uint32_t)tokens.size();
    if (version == 2) h[3] = eot;
    std::string out((const char*)h.data(), 1024);
    for (const std::string& t : tokens) {
        REQUIRE(t.size() < 256);
        out.push_back((char)(unsigned char)t.size());
        out += t;
    }
    return out;
}
