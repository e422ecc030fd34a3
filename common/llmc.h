// llm.c's GPT-2 model file, read into this engine's model. Little-endian:
//   int32 header[256]: [0] magic 20240326, [1] version (3: float32
//     parameters, 5: bfloat16 parameters), [2] maxT, [3] V, [4] L, [5] NH,
//     [6] C, [7] Vp (V padded, 50304 for GPT-2's 50257); every other slot 0
//   the parameters, each tensor stacked over the L layers:
//     wte (Vp,C), wpe (maxT,C), ln1w (L,C), ln1b (L,C), qkvw (L,3C,C),
//     qkvb (L,3C), attprojw (L,C,C), attprojb (L,C), ln2w (L,C), ln2b (L,C),
//     fcw (L,4C,C), fcb (L,4C), fcprojw (L,C,4C), fcprojb (L,C), lnfw (C),
//     lnfb (C)
// That is a GPT-2 of L DENSE blocks with dff = 4C, and its math is this
// engine's (cpu/): LayerNorm with eps 1e-5 before attention and before the
// FFN, q, k, v packed as (3C) rows with head h at h*hs of each, scores scaled
// by 1/sqrt(hs), GELU's tanh approximation, biases on every linear layer but
// the LM head, which is wte (tied). So a file maps onto visit_params()
// (common/layout.h) tensor by tensor, with no arithmetic: float32 copies
// bit for bit, and bfloat16 (the high 16 bits of a float32) widens exactly.
//
// The padded vocabulary: llm.c pads V to a multiple of 128, this engine to a
// multiple of 64 (pad_vocab), and a checkpoint whose Vp is not pad_vocab(V)
// is refused (common/checkpoint.h), as the GPU kernels and every tool assume
// it. Rows V..Vp-1 of wte are never a token: their logits never enter the
// softmax (cpu/crossentropy.h), so they get no gradient and change no loss
// and no sample. The loader therefore re-pads: it keeps wte's first V rows
// and zeroes rows V..pad_vocab(V)-1, whatever the file's Vp. The model then
// trains, saves and reloads as any model of this engine; for GPT-2's V 50257
// both paddings are 50304 and wte is copied whole.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <string>
#include <vector>

#include "checkpoint.h"
#include "config.h"
#include "fileio.h"
#include "layout.h"
#include "safetensors.h"  // bf16_to_float: bfloat16 widens exactly (the high half of a float32)

constexpr int LLMC_MODEL_MAGIC = 20240326;
constexpr int LLMC_VERSION_F32 = 3;
constexpr int LLMC_VERSION_BF16 = 5;
constexpr size_t LLMC_HEADER_INTS = 256;

// The config of llm.c's GPT-2 with the given shape: L DENSE blocks, dff 4C,
// no experts; Vp is this engine's padding of V.
inline Config llmc_config(int V, int maxT, int L, int NH, int C) {
    Config c;
    c.V = V;
    c.Vp = pad_vocab(V);
    c.maxT = maxT;
    c.L = L;
    c.NH = NH;
    c.C = C;
    c.dff = 4 * C;
    c.E = c.mot.G = c.f = 0;
    c.mot.tau = 1;
    c.tc.topk = 1;
    c.tc.capacity_factor = 1.25f;
    c.tc.router = ROUTER_SOFTMAX;
    c.tc.router_tau = 1;
    c.activation = 0;
    c.kinds.assign(L, DENSE);
    return c;
}

// Reads llm.c's model file: checks magic, version, every shape field and the
// file size; fills the config (llmc_config) and the parameters in the order
// of visit_params().
inline void llmc_model_load(const std::string& path, Config* c, std::vector<float>* params) {
    std::string bytes = read_file(path, "llm.c model file");
    const char* name = path.c_str();
    if (bytes.size() < LLMC_HEADER_INTS * 4)
        fail(strf("%s: truncated llm.c model file: %zu bytes, shorter than the 1024-byte header", name,
                  bytes.size()));
    std::vector<int32_t> h(LLMC_HEADER_INTS);
    std::memcpy(h.data(), bytes.data(), LLMC_HEADER_INTS * 4);
    if (h[0] != LLMC_MODEL_MAGIC)
        fail(strf("%s: not an llm.c model file (magic %d, expected %d)", name, h[0], LLMC_MODEL_MAGIC));
    if (h[1] != LLMC_VERSION_F32 && h[1] != LLMC_VERSION_BF16)
        fail(strf("%s: llm.c model file version %d, this build reads versions %d (float32) and %d (bfloat16)", name,
                  h[1], LLMC_VERSION_F32, LLMC_VERSION_BF16));
    const bool bf16 = h[1] == LLMC_VERSION_BF16;
    const int maxT = h[2], V = h[3], L = h[4], NH = h[5], C = h[6], Vp = h[7];
    // the same bounds as a mot checkpoint's (common/checkpoint.h)
    struct Field { const char* what; int value; SizeBound b; };
    for (Field f : {Field{"maximum sequence length", maxT, BOUND_SEQ}, Field{"vocabulary size", V, BOUND_VOCAB},
                    Field{"layers", L, {1, MAX_LAYERS}}, Field{"heads", NH, BOUND_HEADS},
                    Field{"model width", C, BOUND_WIDTH}, Field{"padded vocabulary", Vp, BOUND_VOCAB}})
        if (f.value < f.b.lo || f.value > f.b.hi)
            fail(strf("%s: %s %d in the llm.c header (must be %d..%d)", name, f.what, f.value, f.b.lo, f.b.hi));
    if (C % NH != 0) fail(strf("%s: model width %d in the llm.c header is not divisible by its %d heads", name, C, NH));
    if (Vp < V)
        fail(strf("%s: padded vocabulary %d in the llm.c header is smaller than the vocabulary %d", name, Vp, V));

    // llm.c's tensors in file order: name, elements per layer, stacked over the layers or not
    struct Tensor { const char* key; size_t numel; bool per_layer; };
    const size_t sC = C, s4C = 4 * sC;
    const Tensor tensors[] = {
        {"wte", (size_t)Vp * sC, false}, {"wpe", (size_t)maxT * sC, false},
        {"ln1w", sC, true}, {"ln1b", sC, true}, {"qkvw", 3 * sC * sC, true}, {"qkvb", 3 * sC, true},
        {"attprojw", sC * sC, true}, {"attprojb", sC, true}, {"ln2w", sC, true}, {"ln2b", sC, true},
        {"fcw", s4C * sC, true}, {"fcb", s4C, true}, {"fcprojw", sC * s4C, true}, {"fcprojb", sC, true},
        {"lnfw", sC, false}, {"lnfb", sC, false}};
    std::vector<size_t> start;  // (16) first element of each tensor in the file
    size_t total = 0;
    for (const Tensor& t : tensors) {
        start.push_back(total);
        total += t.numel * (t.per_layer ? L : 1);
    }
    const size_t elem = bf16 ? 2 : 4;
    const size_t expected = LLMC_HEADER_INTS * 4 + total * elem;
    if (bytes.size() != expected)
        fail(strf("%s: %s: %zu bytes, expected %zu for its header (%zu %s parameters of a GPT-2 with maxT %d, V %d "
                  "padded to %d, L %d, NH %d, C %d)",
                  name, bytes.size() < expected ? "truncated llm.c model file" : "llm.c model file too long",
                  bytes.size(), expected, total, bf16 ? "bfloat16" : "float32", maxT, V, Vp, L, NH, C));
    const char* data = bytes.data() + LLMC_HEADER_INTS * 4;
    // n elements from element `from` of the file into dst, widened to float
    auto read = [&](float* dst, size_t from, size_t n) {
        if (!bf16) {
            std::memcpy(dst, data + from * 4, n * 4);
            return;
        }
        for (size_t i = 0; i < n; i++) {
            uint16_t b;
            std::memcpy(&b, data + (from + i) * 2, 2);
            dst[i] = bf16_to_float(b);
        }
    };

    Config k = llmc_config(V, maxT, L, NH, C);
    config_validate(k);
    params->assign(num_params(k), 0.0f);
    Weights<float> w;
    float* dst = params->data();
    visit_params(w, k, [&](const std::string& tensor, float*&, size_t n, int, Init) {
        if (tensor == "wte") {
            read(dst, start[0], (size_t)V * sC);  // rows V..Vp-1 stay 0 (the re-padding above)
            dst += n;
            return;
        }
        // "h<l>.<key>" for a block's tensor, "<key>" otherwise
        int layer = 0;
        std::string key = tensor;
        size_t dot = tensor.find('.');
        if (dot != std::string::npos) {
            layer = std::stoi(tensor.substr(1, dot - 1));
            key = tensor.substr(dot + 1);
        }
        for (size_t i = 0; i < std::size(tensors); i++) {
            if (key != tensors[i].key) continue;
            if (tensors[i].numel != n)  // the engine's layout and llm.c's disagree: a bug here, not in the file
                fail(strf("%s: tensor %s has %zu elements in llm.c's layout and %zu in this engine's", name,
                          tensor.c_str(), tensors[i].numel, n));
            read(dst, start[i] + (size_t)layer * n, n);
            dst += n;
            return;
        }
        fail(strf("%s: this engine's tensor %s has no counterpart in llm.c's GPT-2", name, tensor.c_str()));
    });
    std::string bad = first_nonfinite_tensor(k, params->data());
    if (!bad.empty()) fail(strf("%s: a parameter of the llm.c model is not finite (%s)", name, bad.c_str()));
    *c = k;
}
