// tests/bad_input.h: the one harness for bad input, through the program and
// through the library.
//
//   expect_error(run, needles)    a run of a program (tests/program.h) failed
//   expect_error(args, needles)   cleanly: an error exit (not 0, not a crash,
//                                 not a timeout) whose output holds every needle
//   expect_throw(f, needles)      f() threw a std::runtime_error whose message
//                                 holds every needle
//   patched(bytes, offset, v)     a file's bytes with v written at offset
//   patch_file(path, offset, v)   the same, in place
//   with_checksum(ckpt)           a checkpoint's bytes with its checksum made
//                                 anew after a change: the file stands for
//                                 the changed model
//   BadFile                       one broken variant of a good file, for tables
#pragma once
#include <doctest/doctest.h>

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/checkpoint.h"
#include "tests/program.h"

inline void expect_error(const Run& r, const std::vector<std::string>& needles) {
    INFO("output: ", r.out);
    CHECK(r.rc != 0);
    CHECK(r.rc < 124);  // an error exit: not a timeout (124; 137 = KILL) and not a crash (128 + signal)
    for (const std::string& n : needles) CHECK_MESSAGE(r.out.find(n) != std::string::npos, "missing: ", n);
}

// ./train_mot args
inline void expect_error(const std::string& args, const std::vector<std::string>& needles) {
    INFO("args: ", args);
    expect_error(run(args), needles);
}

template <typename F>
void expect_throw(F&& f, const std::vector<std::string>& needles) {
    bool threw = false;
    std::string message;
    try {
        f();
    } catch (const std::runtime_error& e) {
        threw = true;
        message = e.what();
    }
    INFO("message: ", message);
    CHECK_MESSAGE(threw, "no std::runtime_error was thrown");
    for (const std::string& n : needles) CHECK_MESSAGE(message.find(n) != std::string::npos, "missing: ", n);
}

template <typename T>
std::string patched(std::string bytes, size_t offset, T value) {
    REQUIRE(offset + sizeof(T) <= bytes.size());
    std::memcpy(&bytes[offset], &value, sizeof(T));
    return bytes;
}

template <typename T>
void patch_file(const std::string& path, size_t offset, T value) {
    write_bytes(path, patched(slurp(path), offset, value));
}

// One broken variant of a good file: a file name, its bytes, and what the
// error must say about it.
struct BadFile {
    std::string name, bytes, needle;
};

inline std::string with_checksum(std::string ckpt) {
    std::vector<int32_t> h(256);
    std::memcpy(h.data(), ckpt.data(), 1024);
    uint64_t sum = checkpoint_checksum(h, ckpt.data() + 1024, ckpt.size() - 1024);
    int32_t lo = (int32_t)(uint32_t)sum, hi = (int32_t)(uint32_t)(sum >> 32);
    std::memcpy(&ckpt[4 * 30], &lo, 4);  // slots 30 and 31
    std::memcpy(&ckpt[4 * 31], &hi, 4);
    return ckpt;
}
