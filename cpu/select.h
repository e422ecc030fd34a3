// Which form a layer function runs: the plain loops of its cpu/<layer>.h, or
// the fast float kernel of cpu/fast/<layer>.h.
//
// The layer functions of cpu/ are templated on the scalar type. Written as
// plain loops, they are the reference a reader learns from and the oracle the
// tests run in double against finite differences. Training runs in float,
// where the loops are too slow, so every function that has a fast form starts
// with the same two lines:
//
//     if constexpr (std::is_same_v<real, float>)
//         if (use_fast<real>()) return fast::name(args...);
//
// `if constexpr` keeps the float-only fast kernels out of the double build;
// use_fast() is the one run-time switch. The fast form computes the same
// formula; what differs is rounding (summation order, and the polynomial exp
// of cpu/fast/exp.h, about one float ulp).
#pragma once
#include <type_traits>

// The one on/off setting: true (the default) runs the fast kernels in float;
// false runs the reference loops in float too (tests, bench_train's reference
// rows). Set it between steps, from one thread.
inline bool fast_kernels_on = true;

// true when real is float and the fast kernels are on
template <typename real>
inline bool use_fast() {
    return std::is_same_v<real, float> && fast_kernels_on;
}
