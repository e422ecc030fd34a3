// Model checkpoint file (docs/design.md section 5, a contract: tools outside the
// project read it). Little-endian:
//   int32 header[256]: [0] magic 20261128, [1] version 2 (1: no checksum),
//     [2..11] V, Vp, maxT, L, NH, C, dff, E, G, f, [12] tau as float32 bits,
//     [13] activation (0 = gelu tanh), [14] TOKEN_CHOICE top-k (0 = 1),
//     [15] TOKEN_CHOICE capacity factor as float32 bits (0 = 1.25), [16] TOKEN_CHOICE
//     router (0 softmax, 1 threshold, 2 threshold with gate 1), [17] its gate
//     temperature as float32 bits (0 = 1), [32 + l] kind of layer l
//     (0 DENSE, 1 MOT, 2 TOKEN_CHOICE), [30..31] (version 2) the low and high
//     32 bits of checksum64 (common/fileio.h) of the header, with these two
//     slots 0, followed by the parameters; every other slot 0
//   float32 parameters, in the order of visit_params() (layout.h)
// A file whose size does not match its header, whose header holds a field
// outside what the program's options allow, or whose checksum differs, is
// rejected; a version 1 file loads with a note that nothing checked its body.
// Each kind's slots (10, 12, 14..17) are written and read by its descriptor
// (common/ffn_kinds.h, header_write / header_read).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "config.h"
#include "layout.h"
#include "fileio.h"

constexpr int CHECKPOINT_MAGIC = 20261128;
constexpr int CHECKPOINT_VERSION = 2;
constexpr size_t CHECKPOINT_HEADER_INTS = 256;

inline std::vector<int32_t> checkpoint_header(const Config& c) {
    std::vector<int32_t> h(CHECKPOINT_HEADER_INTS, 0);
    h[0] = CHECKPOINT_MAGIC;
    h[1] = CHECKPOINT_VERSION;
    int32_t fields[7] = {c.V, c.Vp, c.maxT, c.L, c.NH, c.C, c.dff};
    for (int i = 0; i < 7; i++) h[2 + i] = fields[i];
    h[9] = c.E;
    h[11] = c.f;
    h[13] = c.activation;
    for_each_ffn_kind([&](auto k) { k.header_write(c, h.data()); });  // slots 10, 12, 14..29: each kind's own
    for (int l = 0; l < c.L; l++) h[32 + l] = c.kinds[l];
    return h;
}

// The first tensor holding a NaN or an infinity, with the element's index
// in it; "" when every parameter is finite.
inline std::string first_nonfinite_tensor(const Config& c, const float* params) {
    for (const TensorSpec& s : param_specs(c))
        for (size_t i = 0; i < s.numel; i++)
            if (!std::isfinite(params[s.offset + i]))
                return strf("%s[%zu] = %g", s.name.c_str(), i, (double)params[s.offset + i]);
    return "";
}

// The checksum of a version 2 file: of the header with slots 30 and 31 zero, then the parameters.
inline uint64_t checkpoint_checksum(std::vector<int32_t> h, const void* params, size_t bytes) {
    h[30] = h[31] = 0;
    return checksum64(params, bytes, checksum64(h.data(), h.size() * 4));
}

// params: num_params(c) floats in checkpoint order. A model with a NaN or an
// infinity is never written: it could only mislead whoever loads it.
inline void checkpoint_save(const std::string& path, const Config& c, const float* params) {
    std::string bad = first_nonfinite_tensor(c, params);
    if (!bad.empty()) fail(strf("%s: not written: the parameters are not finite (%s)", path.c_str(), bad.c_str()));
    std::vector<int32_t> h = checkpoint_header(c);
    uint64_t sum = checkpoint_checksum(h, params, num_params(c) * 4);
    h[30] = (int32_t)(uint32_t)sum;
    h[31] = (int32_t)(uint32_t)(sum >> 32);
    make_parent_dirs(path);
    write_file_atomic(path, {{h.data(), h.size() * 4}, {params, num_params(c) * 4}});
}

// Reads a checkpoint, checking magic, version, every shape field and the
// file size; fills the config and the parameters.
inline void checkpoint_load(const std::string& path, Config* c, std::vector<float>* params) {
    std::string bytes = read_file(path, "checkpoint");
    const char* name = path.c_str();
    if (bytes.size() < CHECKPOINT_HEADER_INTS * 4)
        fail(strf("%s: truncated checkpoint: %zu bytes, shorter than the 1024-byte header", name, bytes.size()));
    std::vector<int32_t> h(CHECKPOINT_HEADER_INTS);
    std::memcpy(h.data(), bytes.data(), CHECKPOINT_HEADER_INTS * 4);
    if (h[0] != CHECKPOINT_MAGIC)
        fail(strf("%s: not a mot checkpoint (magic %d, expected %d)", name, h[0], CHECKPOINT_MAGIC));
    if (h[1] != 1 && h[1] != CHECKPOINT_VERSION)
        fail(strf("%s: checkpoint version %d, this build reads versions 1 and %d", name, h[1], CHECKPOINT_VERSION));
    // every field within what the options allow (train/options.h): a damaged
    // field that leaves the size unchanged is caught here or by the checksum
    struct Field { const char* what; int value; SizeBound b; };
    for (Field f : {Field{"vocabulary size", h[2], BOUND_VOCAB}, Field{"padded vocabulary", h[3], BOUND_VOCAB},
                    Field{"maximum sequence length", h[4], BOUND_SEQ}, Field{"heads", h[6], BOUND_HEADS},
                    Field{"model width", h[7], BOUND_WIDTH}, Field{"dense FFN width", h[8], BOUND_DFF},
                    Field{"experts", h[9], BOUND_EXPERTS}, Field{"expert width", h[11], BOUND_EXPERT_WIDTH}})
        if (f.value < f.b.lo || f.value > f.b.hi)
            fail(strf("%s: %s %d in header (must be %d..%d)", name, f.what, f.value, f.b.lo, f.b.hi));
    if (h[3] != pad_vocab(h[2]))
        fail(strf("%s: padded vocabulary %d in header, expected %d for vocabulary %d", name, h[3], pad_vocab(h[2]), h[2]));
    Config k;
    k.V = h[2], k.Vp = h[3], k.maxT = h[4], k.L = h[5], k.NH = h[6];
    k.C = h[7], k.dff = h[8], k.E = h[9], k.f = h[11];
    k.activation = h[13];
    for_each_ffn_kind([&](auto kind) { kind.header_read(h.data(), &k, name); });
    if (k.activation != 0) fail(strf("%s: unknown activation %d in header", name, k.activation));
    if (k.L < 1 || k.L > MAX_LAYERS) fail(strf("%s: header says %d layers (must be 1..%d)", name, k.L, MAX_LAYERS));
    k.kinds.assign(h.begin() + 32, h.begin() + 32 + k.L);
    try {
        config_validate(k);
    } catch (const std::exception& e) {
        fail(strf("%s: inconsistent header: %s", name, e.what()));
    }
    size_t n = num_params(k);
    size_t expected = CHECKPOINT_HEADER_INTS * 4 + n * 4;
    if (bytes.size() != expected)
        fail(strf("%s: size %zu bytes does not match its header (%zu parameters, %zu bytes expected)", name,
                  bytes.size(), n, expected));
    params->resize(n);
    std::memcpy(params->data(), bytes.data() + CHECKPOINT_HEADER_INTS * 4, n * 4);
    std::string bad = first_nonfinite_tensor(k, params->data());
    if (!bad.empty()) fail(strf("%s: damaged checkpoint: a parameter is not finite (%s)", name, bad.c_str()));
    // a non-finite parameter is named above; any other change is found by the checksum
    if (h[1] == 1) {
        std::printf("note: %s: a version 1 checkpoint, written before checksums: a damaged parameter cannot be "
                    "told\n", name);
    } else {
        uint64_t want = (uint64_t)(uint32_t)h[30] | (uint64_t)(uint32_t)h[31] << 32;
        if (checkpoint_checksum(h, bytes.data() + CHECKPOINT_HEADER_INTS * 4, n * 4) != want)
            fail(strf("%s: damaged checkpoint: its checksum does not match its contents (a changed byte in the "
                      "header or the parameters)",
                      name));
    }
    *c = k;
}
