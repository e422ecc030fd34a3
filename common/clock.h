// A monotonic clock in milliseconds, for the times the program reports
// (a training step, the ranks' gradient exchange).
#pragma once
#include <chrono>

inline double now_ms() {
    using namespace std::chrono;
    return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}
