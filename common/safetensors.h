// The safetensors file format (a public format, read by PyTorch and Hugging
// Face tooling), written and read here for models leaving and entering the
// engine (common/model_file.h) and for eval --dump. Little-endian:
//   u64 N                      the length of the header
//   N bytes of JSON            {"NAME": {"dtype": "F32", "shape": [2, 3],
//                                        "data_offsets": [BEGIN, END]}, ...,
//                               "__metadata__": {"KEY": "VALUE", ...}}
//                              padded with spaces so that 8 + N is a
//                              multiple of 8 (the data then starts aligned)
//   the data section           each tensor's raw little-endian elements, row
//                              major, at [BEGIN, END) relative to its start;
//                              the tensors cover it whole, without overlap
// The reader is strict: it parses only what such a header may hold
// (objects, arrays of integers, strings, integers) and refuses anything
// else, naming the file.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/bf16.h"
#include "common/error.h"
#include "common/fileio.h"

// ---------------------------------------------------------------- dtypes

// The element types this program writes and reads, with their sizes; any
// other dtype a file names is refused.
inline size_t st_dtype_size(const std::string& dtype) {
    if (dtype == "F32" || dtype == "I32") return 4;
    if (dtype == "BF16") return 2;
    return 0;
}

inline std::string st_shape_text(const std::vector<int64_t>& shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); i++) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

// The product of the dimensions into *n; false when it does not fit in 64
// bits (then *n is meaningless).
inline bool st_numel_fits(const std::vector<int64_t>& shape, uint64_t* n) {
    *n = 1;
    for (int64_t d : shape) {
        if (d < 0) return false;
        if (d != 0 && *n > UINT64_MAX / (uint64_t)d) return false;
        *n *= (uint64_t)d;
    }
    return true;
}

inline uint64_t st_numel(const std::vector<int64_t>& shape) {
    uint64_t n;
    if (!st_numel_fits(shape, &n))
        fail(strf("a tensor of shape %s has more elements than 64 bits count", st_shape_text(shape).c_str()));
    return n;
}

// ---------------------------------------------------------------- writer

// One tensor to write: its name, dtype, shape, and its bytes (numel times
// the dtype's size, little-endian).
struct StTensorOut {
    std::string name, dtype;
    std::vector<int64_t> shape;
    const void* data;
};

// s as a JSON string literal.
inline std::string json_quote(const std::string& s) {
    std::string q = "\"";
    for (unsigned char ch : s) {
        if (ch == '"') q += "\\\"";
        else if (ch == '\\') q += "\\\\";
        else if (ch < 0x20) q += strf("\\u%04x", ch);
        else q += (char)ch;
    }
    return q + "\"";
}

// The header's JSON, with offsets in the order of the tensors, padded with
// spaces to 8 + N a multiple of 8.
inline std::string safetensors_header(const std::vector<StTensorOut>& tensors,
                                      const std::vector<std::pair<std::string, std::string>>& metadata) {
    std::string j = "{\"__metadata__\":{";
    for (size_t i = 0; i < metadata.size(); i++)
        j += (i ? "," : "") + json_quote(metadata[i].first) + ":" + json_quote(metadata[i].second);
    j += "}";
    uint64_t offset = 0;
    for (const StTensorOut& t : tensors) {
        uint64_t bytes = st_numel(t.shape) * st_dtype_size(t.dtype);
        std::string shape;
        for (size_t i = 0; i < t.shape.size(); i++) shape += (i ? "," : "") + std::to_string(t.shape[i]);
        j += "," + json_quote(t.name) + ":{\"dtype\":" + json_quote(t.dtype) + ",\"shape\":[" + shape +
             "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + bytes) + "]}";
        offset += bytes;
    }
    j += "}";
    while ((8 + j.size()) % 8 != 0) j += ' ';
    return j;
}

// Writes a safetensors file atomically (common/fileio.h): tensors in the
// given order, metadata as given.
inline void safetensors_write(const std::string& path, const std::vector<StTensorOut>& tensors,
                              const std::vector<std::pair<std::string, std::string>>& metadata) {
    for (const StTensorOut& t : tensors)
        if (st_dtype_size(t.dtype) == 0) fail(strf("%s: tensor %s: unknown dtype %s", path.c_str(), t.name.c_str(), t.dtype.c_str()));
    std::string header = safetensors_header(tensors, metadata);
    uint64_t n = header.size();
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)(n >> (8 * i));
    std::vector<std::pair<const void*, size_t>> parts = {{len, 8}, {header.data(), header.size()}};
    for (const StTensorOut& t : tensors) parts.push_back({t.data, st_numel(t.shape) * st_dtype_size(t.dtype)});
    make_parent_dirs(path);
    write_file_atomic(path, parts);
}

// ---------------------------------------------------------------- reader

struct StEntry {
    std::string dtype;
    std::vector<int64_t> shape;
    uint64_t begin = 0, end = 0;  // into the data section
};

struct SafeTensors {
    std::string path;
    std::string bytes;      // the whole file
    size_t data_start = 0;  // 8 + N
    bool has_metadata = false;
    std::map<std::string, std::string> metadata;
    std::map<std::string, StEntry> tensors;
};

// A strict parser for the header's JSON: each error names the file and the
// byte of the header where parsing stopped.
struct StJson {
    const std::string& s;
    size_t i;
    const std::string& path;

    [[noreturn]] void bad(const std::string& what) {
        fail(strf("%s: bad safetensors header: %s at byte %zu of the JSON", path.c_str(), what.c_str(), i));
    }
    void ws() {
        while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
    }
    void expect(char ch) {
        ws();
        if (i >= s.size() || s[i] != ch) bad(strf("expected '%c'", ch));
        i++;
    }
    bool peek(char ch) {
        ws();
        return i < s.size() && s[i] == ch;
    }
    static void put_utf8(std::string* out, uint32_t cp) {
        if (cp < 0x80) {
            *out += (char)cp;
        } else if (cp < 0x800) {
            *out += (char)(0xc0 | (cp >> 6));
            *out += (char)(0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
            *out += (char)(0xe0 | (cp >> 12));
            *out += (char)(0x80 | ((cp >> 6) & 0x3f));
            *out += (char)(0x80 | (cp & 0x3f));
        } else {
            *out += (char)(0xf0 | (cp >> 18));
            *out += (char)(0x80 | ((cp >> 12) & 0x3f));
            *out += (char)(0x80 | ((cp >> 6) & 0x3f));
            *out += (char)(0x80 | (cp & 0x3f));
        }
    }
    uint32_t hex4() {
        if (i + 4 > s.size()) bad("a \\u escape cut short");
        uint32_t v = 0;
        for (int k = 0; k < 4; k++) {
            char ch = s[i++];
            int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                                                      : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
            if (d < 0) bad("a \\u escape with a non-hex digit");
            v = v * 16 + d;
        }
        return v;
    }
    std::string str() {
        expect('"');
        std::string out;
        while (true) {
            if (i >= s.size()) bad("a string without its closing quote");
            unsigned char ch = s[i++];
            if (ch == '"') return out;
            if (ch < 0x20) bad("a control character inside a string");
            if (ch != '\\') {
                out += (char)ch;
                continue;
            }
            if (i >= s.size()) bad("an escape cut short");
            char e = s[i++];
            switch (e) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    uint32_t cp = hex4();
                    if (cp >= 0xd800 && cp < 0xdc00) {  // a surrogate pair
                        if (i + 2 > s.size() || s[i] != '\\' || s[i + 1] != 'u') bad("a lone surrogate in a \\u escape");
                        i += 2;
                        uint32_t lo = hex4();
                        if (lo < 0xdc00 || lo >= 0xe000) bad("a lone surrogate in a \\u escape");
                        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    } else if (cp >= 0xdc00 && cp < 0xe000) {
                        bad("a lone surrogate in a \\u escape");
                    }
                    put_utf8(&out, cp);
                    break;
                }
                default: bad(strf("an unknown escape \\%c", e));
            }
        }
    }
    // A non-negative integer below 2^63, written without sign, fraction or exponent.
    uint64_t uint() {
        ws();
        if (i >= s.size() || s[i] < '0' || s[i] > '9') bad("expected a non-negative integer");
        if (s[i] == '0' && i + 1 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '9') bad("an integer with a leading zero");
        uint64_t v = 0;
        while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
            if (v > ((1ull << 63) - 1 - (s[i] - '0')) / 10) bad("an integer beyond 2^63 - 1");
            v = v * 10 + (s[i++] - '0');
        }
        if (i < s.size() && (s[i] == '.' || s[i] == 'e' || s[i] == 'E')) bad("expected an integer, found a fraction");
        return v;
    }
    std::vector<uint64_t> uints() {
        std::vector<uint64_t> v;
        expect('[');
        if (peek(']')) {
            i++;
            return v;
        }
        while (true) {
            v.push_back(uint());
            if (peek(',')) {
                i++;
                continue;
            }
            expect(']');
            return v;
        }
    }
    // Calls fn(key) for each member of an object, which fn must consume; refuses a repeated key.
    template <typename Fn>
    void object(Fn fn) {
        expect('{');
        std::set<std::string> seen;
        if (peek('}')) {
            i++;
            return;
        }
        while (true) {
            std::string key = str();
            if (!seen.insert(key).second) bad("the key \"" + key + "\" given twice");
            expect(':');
            fn(key);
            if (peek(',')) {
                i++;
                continue;
            }
            expect('}');
            return;
        }
    }
};

// Reads and checks a safetensors file: the header length against the file,
// the JSON, every tensor's dtype, shape and offsets, and that the tensors
// cover the data section whole without overlap.
inline SafeTensors safetensors_read(const std::string& path) {
    SafeTensors st;
    st.path = path;
    st.bytes = read_file(path, "safetensors file");
    const char* name = path.c_str();
    const std::string& b = st.bytes;
    if (b.size() < 8)
        fail(strf("%s: truncated safetensors file: %zu bytes, shorter than the 8-byte header length", name, b.size()));
    uint64_t n = 0;
    for (int k = 0; k < 8; k++) n |= (uint64_t)(unsigned char)b[k] << (8 * k);
    if (n > b.size() - 8)
        fail(strf("%s: safetensors header length %llu is beyond the file (%zu bytes after the length)", name,
                  (unsigned long long)n, b.size() - 8));
    st.data_start = 8 + n;
    const std::string json = b.substr(8, n);
    StJson p{json, 0, path};
    p.object([&](const std::string& key) {
        if (key == "__metadata__") {
            st.has_metadata = true;
            p.object([&](const std::string& k) { st.metadata[k] = p.str(); });
            return;
        }
        StEntry e;
        bool dtype = false, shape = false, offsets = false;
        p.object([&](const std::string& field) {
            if (field == "dtype") {
                e.dtype = p.str();
                dtype = true;
            } else if (field == "shape") {
                for (uint64_t d : p.uints()) e.shape.push_back((int64_t)d);
                shape = true;
            } else if (field == "data_offsets") {
                std::vector<uint64_t> o = p.uints();
                if (o.size() != 2) p.bad(strf("tensor %s: data_offsets holds %zu numbers, not 2", key.c_str(), o.size()));
                e.begin = o[0], e.end = o[1];
                offsets = true;
            } else {
                p.bad(strf("tensor %s: unknown field \"%s\"", key.c_str(), field.c_str()));
            }
        });
        if (!dtype || !shape || !offsets)
            fail(strf("%s: bad safetensors header: tensor %s lacks %s", name, key.c_str(),
                      !dtype ? "its dtype" : !shape ? "its shape" : "its data_offsets"));
        st.tensors[key] = e;
    });
    p.ws();
    if (p.i != json.size()) p.bad("text after the header's object");
    // each tensor: a known dtype, offsets that hold exactly its elements, within the data section
    const uint64_t data = b.size() - st.data_start;
    std::vector<std::pair<uint64_t, std::string>> order;
    for (const auto& [key, e] : st.tensors) {
        size_t size = st_dtype_size(e.dtype);
        if (size == 0)
            fail(strf("%s: tensor %s has dtype %s; this program reads F32, BF16 and I32", name, key.c_str(),
                      e.dtype.c_str()));
        for (int64_t d : e.shape)
            if (d > (int64_t)1 << 40) fail(strf("%s: tensor %s has shape %s, beyond any model", name, key.c_str(), st_shape_text(e.shape).c_str()));
        if (e.begin > e.end || e.end > data)
            fail(strf("%s: tensor %s: data_offsets [%llu, %llu] out of range (the data section holds %llu bytes)",
                      name, key.c_str(), (unsigned long long)e.begin, (unsigned long long)e.end,
                      (unsigned long long)data));
        uint64_t numel;
        if (!st_numel_fits(e.shape, &numel) || numel > UINT64_MAX / size)
            fail(strf("%s: tensor %s has shape %s of %s, whose size in bytes does not fit in 64 bits", name,
                      key.c_str(), st_shape_text(e.shape).c_str(), e.dtype.c_str()));
        const uint64_t want = numel * size;
        if (e.end - e.begin != want)
            fail(strf("%s: tensor %s: data_offsets [%llu, %llu] hold %llu bytes, its shape %s of %s needs %llu", name,
                      key.c_str(), (unsigned long long)e.begin, (unsigned long long)e.end,
                      (unsigned long long)(e.end - e.begin), st_shape_text(e.shape).c_str(), e.dtype.c_str(),
                      (unsigned long long)want));
        order.push_back({e.begin, key});
    }
    std::sort(order.begin(), order.end(), [&](const auto& x, const auto& y) {
        return x.first != y.first ? x.first < y.first : st.tensors[x.second].end < st.tensors[y.second].end;
    });
    uint64_t at = 0;
    std::string prev;
    for (const auto& [begin, key] : order) {
        const StEntry& e = st.tensors[key];
        if (begin < at)
            fail(strf("%s: tensor %s: data_offsets [%llu, %llu] overlap those of tensor %s", name, key.c_str(),
                      (unsigned long long)e.begin, (unsigned long long)e.end, prev.c_str()));
        if (begin > at)
            fail(strf("%s: bytes %llu..%llu of the data section belong to no tensor (data_offsets must cover it "
                      "whole)",
                      name, (unsigned long long)at, (unsigned long long)begin));
        at = e.end;
        prev = key;
    }
    if (at != data)
        fail(strf("%s: the data section holds %llu bytes, its tensors %llu: the file was cut short or has bytes "
                  "after its last tensor",
                  name, (unsigned long long)data, (unsigned long long)at));
    return st;
}

// Tensor `key` as float32 into out (numel of `shape` floats): an F32
// tensor copied, a BF16 one widened exactly. Fails, naming the file, when
// the tensor is missing, has another shape, or another dtype.
inline void safetensors_get_f32(const SafeTensors& st, const std::string& key, const std::vector<int64_t>& shape,
                                float* out) {
    auto it = st.tensors.find(key);
    if (it == st.tensors.end()) fail(strf("%s: missing tensor %s", st.path.c_str(), key.c_str()));
    const StEntry& e = it->second;
    if (e.shape != shape)
        fail(strf("%s: tensor %s has shape %s, the model needs %s", st.path.c_str(), key.c_str(),
                  st_shape_text(e.shape).c_str(), st_shape_text(shape).c_str()));
    const char* src = st.bytes.data() + st.data_start + e.begin;
    size_t n = st_numel(shape);
    if (e.dtype == "F32") {
        std::memcpy(out, src, n * 4);
    } else if (e.dtype == "BF16") {
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            std::memcpy(&h, src + 2 * i, 2);
            out[i] = bf16_to_float(h);
        }
    } else {
        fail(strf("%s: tensor %s has dtype %s; a model's tensors are F32 or BF16", st.path.c_str(), key.c_str(),
                  e.dtype.c_str()));
    }
}

// Tensor `key` as int32 (an I32 tensor of the given shape).
inline void safetensors_get_i32(const SafeTensors& st, const std::string& key, const std::vector<int64_t>& shape,
                                int32_t* out) {
    auto it = st.tensors.find(key);
    if (it == st.tensors.end()) fail(strf("%s: missing tensor %s", st.path.c_str(), key.c_str()));
    const StEntry& e = it->second;
    if (e.shape != shape)
        fail(strf("%s: tensor %s has shape %s, expected %s", st.path.c_str(), key.c_str(),
                  st_shape_text(e.shape).c_str(), st_shape_text(shape).c_str()));
    if (e.dtype != "I32")
        fail(strf("%s: tensor %s has dtype %s, expected I32", st.path.c_str(), key.c_str(), e.dtype.c_str()));
    std::memcpy(out, st.bytes.data() + st.data_start + e.begin, st_numel(shape) * 4);
}
