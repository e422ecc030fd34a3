// The bf16 emulation: the rounding of common/bf16.h, which the CPU's bf16
// training (cpu/bf16_kernels.h) applies wherever a bf16 run stores a value.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "common/bf16.h"

static float float_of_bits(uint32_t u) {
    float x;
    std::memcpy(&x, &u, 4);
    return x;
}

static uint32_t bits_of_float(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    return u;
}

static uint16_t bf16_of_bits(uint32_t u) { return bf16_from_float(float_of_bits(u)); }

TEST_CASE("bf16: rounding to nearest, ties to even, both signs") {
    CHECK(bf16_of_bits(0x3f800000u) == 0x3f80);  // 1, exact
    CHECK(bf16_of_bits(0x3f807fffu) == 0x3f80);  // below the half: down
    CHECK(bf16_of_bits(0x3f808001u) == 0x3f81);  // above the half: up
    CHECK(bf16_of_bits(0x3f808000u) == 0x3f80);  // a tie, even below: down
    CHECK(bf16_of_bits(0x3f818000u) == 0x3f82);  // a tie, odd below: up to even
    CHECK(bf16_of_bits(0xbf818000u) == 0xbf82);  // negative ties alike, away from zero to the even one
    CHECK(bf16_of_bits(0xbf808000u) == 0xbf80);  // negative tie, even: toward zero
    CHECK(bf16_of_bits(0xbf807fffu) == 0xbf80);
    CHECK(bf16_of_bits(0xbf808001u) == 0xbf81);
}

TEST_CASE("bf16: the carry reaches the exponent") {
    CHECK(bf16_of_bits(0x3fffffffu) == 0x4000);  // just under 2 -> 2
    CHECK(bf16_of_bits(0x3f7f8000u) == 0x3f80);  // a tie whose even side is 1.0, one binade up
    CHECK(bf16_of_bits(0xbf7f8000u) == 0xbf80);
    CHECK(bf16_of_bits(0x007fffffu) == 0x0080);  // the largest subnormal float -> the smallest normal
}

TEST_CASE("bf16: overflow: the largest finite floats round to infinity or stay finite by the tie rule") {
    // the largest finite bf16 is 0x7f7f; half an ulp above it is 0x7f7f8000,
    // a tie whose even neighbour is 0x7f80, infinity
    CHECK(bf16_of_bits(0x7f7f0000u) == 0x7f7f);
    CHECK(bf16_of_bits(0x7f7f7fffu) == 0x7f7f);  // the largest float that stays finite
    CHECK(bf16_of_bits(0x7f7f8000u) == 0x7f80);  // the smallest that goes to infinity
    CHECK(bf16_of_bits(0x7f7fffffu) == 0x7f80);  // FLT_MAX
    CHECK(bf16_of_bits(0xff7f7fffu) == 0xff7f);
    CHECK(bf16_of_bits(0xff7f8000u) == 0xff80);
    CHECK(std::isinf(bf16_round(std::numeric_limits<float>::max())));
    CHECK(bf16_round(-std::numeric_limits<float>::max()) == -INFINITY);
}

TEST_CASE("bf16: infinities stay; NaN stays NaN with its sign") {
    CHECK(bf16_of_bits(0x7f800000u) == 0x7f80);
    CHECK(bf16_of_bits(0xff800000u) == 0xff80);
    CHECK(bf16_round(INFINITY) == INFINITY);
    CHECK(bf16_round(-INFINITY) == -INFINITY);
    // payloads only in the low half would truncate to infinity; they must not
    for (uint32_t nan : {0x7fc00000u, 0x7f800001u, 0x7fffffffu, 0xff800001u, 0x7f80ffffu, 0xffc00000u, 0xff80ffffu}) {
        INFO(nan);
        uint16_t h = bf16_of_bits(nan);
        CHECK(std::isnan(bf16_to_float(h)));
        CHECK((h & 0x8000) == (nan >> 16 & 0x8000));
        float r = bf16_round(float_of_bits(nan));
        CHECK(std::isnan(r));
        CHECK(std::signbit(r) == bool(nan >> 31));
    }
}

TEST_CASE("bf16: subnormals, their ties, and signed zeros") {
    CHECK(bf16_of_bits(0x00008000u) == 0x0000);  // tie between 0 and the smallest subnormal: to 0 (even)
    CHECK(bf16_of_bits(0x00008001u) == 0x0001);  // just above: the smallest bf16 subnormal
    CHECK(bf16_of_bits(0x00018000u) == 0x0002);  // tie, odd below: up
    CHECK(bf16_of_bits(0x00028000u) == 0x0002);  // tie, even below: down
    CHECK(bf16_of_bits(0x80018000u) == 0x8002);  // negative subnormal tie
    CHECK(bf16_of_bits(0x00000001u) == 0x0000);  // the smallest float subnormal: to +0
    CHECK(bf16_of_bits(0x80000001u) == 0x8000);  // its negative: to -0, the sign kept
    CHECK(bf16_of_bits(0x00000000u) == 0x0000);
    CHECK(bf16_of_bits(0x80000000u) == 0x8000);  // -0 stays -0
    float nz = bf16_round(-0.0f);
    CHECK(nz == 0.0f);
    CHECK(std::signbit(nz));
    CHECK(bf16_round(float_of_bits(0x00010000u)) == float_of_bits(0x00010000u));  // a bf16 subnormal is exact
}

TEST_CASE("bf16: every bf16 value survives float and back; bf16_round is idempotent") {
    CHECK(bf16_to_float(0x3f80) == 1.0f);
    CHECK(bf16_to_float(0xc040) == -3.0f);
    for (uint32_t h = 0; h < 0x10000; h++) {
        float x = bf16_to_float((uint16_t)h);
        if (std::isnan(x)) continue;
        CHECK_MESSAGE(bf16_from_float(x) == h, h);
        CHECK(bits_of_float(bf16_round(x)) == bits_of_float(x));
        CHECK(is_bf16(x));
    }
}

TEST_CASE("bf16: the nearest of the two neighbours, over a sweep of floats") {
    // for every float x: r = bf16_round(x) is a bf16 value, and no bf16 value
    // lies closer (the two candidates are the truncation and the next one up)
    for (uint32_t u = 0x00000000u; u < 0x7f800000u; u += 0x00012345u) {
        for (uint32_t sign : {0u, 0x80000000u}) {
            float x = float_of_bits(u | sign);
            float r = bf16_round(x);
            REQUIRE(is_bf16(r));
            float lo = float_of_bits((u | sign) & 0xffff0000u);
            float hi = float_of_bits(((u | sign) & 0xffff0000u) + 0x10000u);
            double dr = std::fabs((double)r - x), dlo = std::fabs((double)lo - x), dhi = std::fabs((double)hi - x);
            CHECK(dr <= dlo);
            CHECK(dr <= dhi);
        }
    }
}

TEST_CASE("bf16: the in-place array rounding matches the scalar one, float and double") {
    std::vector<float> x = {1.0f, float_of_bits(0x3f818000u), -3.14159f, 1e-40f, -0.0f, NAN, INFINITY, 65504.0f,
                            float_of_bits(0x7f7f8000u)};
    std::vector<float> want(x.size());
    for (size_t i = 0; i < x.size(); i++) want[i] = bf16_round(x[i]);
    bf16_round(x.data(), x.size());
    for (size_t i = 0; i < x.size(); i++) {
        INFO(i);
        if (std::isnan(want[i])) CHECK(std::isnan(x[i]));
        else CHECK(bits_of_float(x[i]) == bits_of_float(want[i]));
    }
    std::vector<double> d = {1.0, -3.14159, 0.1, 1e300};
    bf16_round(d.data(), d.size());
    CHECK(d[0] == 1.0);
    CHECK(d[1] == (double)bf16_round(-3.14159f));
    CHECK(d[2] == (double)bf16_round(0.1f));
    CHECK(std::isinf(d[3]));  // beyond the float range: infinity, as in a float run
}
