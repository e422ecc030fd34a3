// Errors: every failure the user can cause (bad file, bad option) is thrown as
// std::runtime_error whose message names the file or option and the problem;
// main() catches it, prints "error: <message>" and exits non-zero.
#pragma once
#include <cstdio>
#include <stdexcept>
#include <string>

// fail("data.bin: truncated header (12 of 1024 bytes)") -- throws, never returns.
[[noreturn]] inline void fail(const std::string& message) { throw std::runtime_error(message); }

// printf-style formatting into a std::string, for error messages.
template <typename... Args>
std::string strf(const char* fmt, Args... args) {
    int n = std::snprintf(nullptr, 0, fmt, args...);
    std::string s(n > 0 ? n : 0, '\0');
    if (n > 0) std::snprintf(s.data(), n + 1, fmt, args...);
    return s;
}
