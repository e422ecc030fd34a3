// tests/close.h: the one closeness measure of the test suites, and its check.
//
// Measure: worst = max_i |got_i - want_i| / (tol.abs + tol.rel * |want_i|),
// an element equal to its reference counting 0 and a non-finite one (NaN or
// infinity, in got or want) infinity. check_close passes when worst < 1, i.e.
// when every element is finite and satisfies
//     |got_i - want_i| < tol.abs + tol.rel * |want_i|.
// The tolerance forms in use:
//   Tol{a, r}                 elementwise, absolute a plus relative r
//   Tol{t / 2, t / 2}         implies |d_i| < t * max(1, |want_i|): relative
//                             for large entries, absolute below 1
//   scaled_tol(t, want)       Tol{t * max_i |want_i|, 0}: every difference
//                             against the tensor's largest magnitude (entries
//                             near zero are held to the tensor's scale)
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <string>

struct Tol {
    double abs, rel;
};

// A view of n values at p, for slices of larger buffers.
template <typename T>
struct Span {
    const T* p;
    size_t n;
    size_t size() const { return n; }
    T operator[](size_t i) const { return p[i]; }
};
template <typename T>
Span<T> span(const T* p, size_t n) { return {p, n}; }

// max_i |want_i| (NaN propagates)
template <typename W>
double max_abs(const W& want) {
    double m = 0;
    for (size_t i = 0; i < want.size(); i++) {
        double x = std::fabs((double)want[i]);
        if (!(x <= m)) m = x;
    }
    return m;
}

template <typename W>
Tol scaled_tol(double t, const W& want) { return {t * max_abs(want), 0.0}; }

struct Closeness {
    double worst = 0;  // the measure above
    size_t at = 0;     // where it is reached
};

template <typename G, typename W>
Closeness closeness(const G& got, const W& want, Tol tol) {
    Closeness c;
    for (size_t i = 0; i < want.size(); i++) {
        double g = (double)got[i], w = (double)want[i];
        double e = !std::isfinite(g) || !std::isfinite(w) ? INFINITY
                   : g == w                               ? 0.0
                                                          : std::fabs(g - w) / (tol.abs + tol.rel * std::fabs(w));
        if (!(e <= c.worst)) c.worst = e, c.at = i;  // NaN sticks
    }
    return c;
}

// The check: same sizes, and every element within tol (see the top).
template <typename G, typename W>
void check_close(const G& got, const W& want, Tol tol, const std::string& what) {
    REQUIRE_MESSAGE(got.size() == want.size(), what << ": " << got.size() << " values against " << want.size());
    Closeness c = closeness(got, want, tol);
    INFO(what << ": worst " << c.worst << " of the tolerance (abs " << tol.abs << ", rel " << tol.rel << ") at ["
              << c.at << "]: " << (want.size() ? (double)got[c.at] : 0.0) << " against "
              << (want.size() ? (double)want[c.at] : 0.0));
    CHECK(c.worst < 1.0);
}
