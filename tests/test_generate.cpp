// tests/test_generate.cpp: generation with the KV cache (cpu/gpt.h), the
// sampler (common/sampler.h) and the learning-rate schedule (common/schedule.h).
//   g++ -std=c++17 -O2 -march=native -fopenmp -Wall -Wextra -I. tests/test_generate.cpp -o build/test_generate
//
// - gpt_decode_step's logits equal gpt_forward's, position by position, for
//   dense, MoT and mixed models (double 1e-12; float, on the fast kernels of
//   training, close).
// - gpt_generate (cached) produces exactly the tokens of an uncached oracle
//   that reruns gpt_forward on the whole prefix for every new token: several
//   prompt lengths, temperature 1, greedy, top-k, past the model's maxT (the window slides).
// - sample_token: greedy is the argmax, top-k never leaves the top k, and the
//   draws follow softmax(logits / temperature) (chi-square, fixed seed).
// - generation refuses a number of sequences that is not a multiple of G.
// - lr_at: warmup, peak, cosine end point, monotone decay.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/schedule.h"
#include "cpu/fast/kernels.h"
#include "cpu/gpt.h"
#include "tests/bad_input.h"
#include "tests/close.h"
#include "tests/gradcheck.h"  // set_test_threads: one OpenMP thread
#include "tests/models.h"
#include "tests/rng.h"

struct Kinds {
    const char* name;
    std::vector<int> kinds;
    int router = ROUTER_SOFTMAX;  // of the token-choice layers
};
static const std::vector<Kinds> ALL_KINDS = {
    {"dense", {DENSE, DENSE}}, {"mot", {MOT, MOT}},          {"mixed", {DENSE, MOT}},
    {"mixed2", {MOT, DENSE}},  {"token choice", {TOKEN_CHOICE, DENSE}}, {"mot and token choice", {MOT, TOKEN_CHOICE}},
    {"token choice, threshold router", {TOKEN_CHOICE, TOKEN_CHOICE}, ROUTER_THRESHOLD}};

// tiny_config, with a capacity factor at which token choice drops nothing
// (cap = k N): then a full forward pass equals decoding, which never drops.
// Threshold routers choose up to 2 experts.
static Config kinds_config(const Kinds& k, float tau = 1.0f) {
    Config c = tiny_config(k.kinds, tau);
    c.tc.capacity_factor = (float)c.E;
    c.tc.router = k.router;
    if (k.router != ROUTER_SOFTMAX) c.tc.topk = 2, c.tc.router_tau = 0.5f;
    return c;
}

// ---------------------------------------------------------------------------
// decode step == full forward, position by position

// The decoded logits (the first V of every row and position) against
// gpt_forward's, within tol of their largest magnitude (scaled_tol).
template <typename real, typename Kernels = PlainKernels>
static void check_decode_vs_forward(const Config& c, int B, uint64_t seed, double tol) {
    GPT<real, Kernels> m;
    build_random(&m, c, seed, 0.6);
    const int T = c.maxT;
    std::vector<int> inp = TestRng(seed + 1).tokens((size_t)B * T, c.V);
    gpt_forward(&m, inp.data(), nullptr, B, T);
    std::vector<real> full(m.acts.logits, m.acts.logits + (size_t)B * T * c.Vp);

    Decoder<real> d;
    decoder_init(&d, c, B);
    std::vector<double> got, want;
    std::vector<int> col(B);
    for (int t = 0; t < T; t++) {
        for (int b = 0; b < B; b++) col[b] = inp[(size_t)b * T + t];
        const real* lg = gpt_decode_step(&m, &d, col.data(), t);
        for (int b = 0; b < B; b++)
            for (int v = 0; v < c.V; v++) {
                got.push_back(lg[(size_t)b * c.Vp + v]);
                want.push_back(full[((size_t)b * T + t) * c.Vp + v]);
            }
    }
    REQUIRE(max_abs(want) > 0.1);  // the logits are not trivially zero
    check_close(got, want, scaled_tol(tol, want), "decoded logits");
}

TEST_CASE("decode step logits equal the full forward's, position by position") {
    for (const Kinds& k : ALL_KINDS) {
        for (float tau : {1.0f, 0.5f}) {
            Config c = kinds_config(k, tau);
            for (int B : {2, 4, 6}) {
                INFO(k.name, " tau ", tau, " B ", B);
                check_decode_vs_forward<double>(c, B, 11 + B, 1e-12);
                check_decode_vs_forward<float, FastKernels>(c, B, 11 + B, 1e-5);
            }
        }
    }
    // a dense model decodes any number of sequences, including 1 and odd ones; so does token choice
    Config dense = tiny_config({DENSE, DENSE});
    check_decode_vs_forward<double>(dense, 1, 3, 1e-12);
    check_decode_vs_forward<double>(dense, 3, 3, 1e-12);
    for (const Kinds& k : ALL_KINDS)
        if (!has_kind(kinds_config(k), MOT)) {
            INFO(k.name, " B 1");
            check_decode_vs_forward<double>(kinds_config(k), 1, 5, 1e-12);
        }
}

// gpt_decode_loss (eval --decode): each sequence alone, token by token, gives
// the full forward's loss when nothing is dropped, and another loss when the
// full forward's capacity drops choices (decoding never drops).
TEST_CASE("decoding each sequence alone scores the full forward's loss when nothing is dropped") {
    const int B = 3, T = 8;
    for (const Kinds& k : ALL_KINDS) {
        Config c = kinds_config(k);
        if (has_kind(c, MOT)) continue;
        INFO(k.name);
        GPT<double> m;
        build_random(&m, c, 17, 0.6);
        std::vector<int> inp = TestRng(18).tokens((size_t)B * T, c.V), tgt = TestRng(19).tokens((size_t)B * T, c.V);
        gpt_forward(&m, inp.data(), tgt.data(), B, T);
        double full = m.mean_loss;
        CHECK(gpt_decode_loss(&m, inp.data(), tgt.data(), B, T) == doctest::Approx(full).epsilon(1e-12));
        if (has_kind(c, TOKEN_CHOICE)) {  // a small capacity drops choices in the full forward only
            Config small = c;
            small.tc.capacity_factor = 0.3f;
            GPT<double> ms;
            build_random(&ms, small, 17, 0.6);
            gpt_forward(&ms, inp.data(), tgt.data(), B, T);
            CHECK(std::abs(ms.mean_loss - full) > 1e-6);
            CHECK(gpt_decode_loss(&ms, inp.data(), tgt.data(), B, T) == doctest::Approx(full).epsilon(1e-12));
        }
    }
    GPT<double> mot;
    build_random(&mot, tiny_config({MOT, DENSE}), 1, 0.6);
    std::vector<int> two(2 * T, 1);
    expect_throw([&] { gpt_decode_loss(&mot, two.data(), two.data(), 2, T); }, {"MoT layers", "2 sequences"});
}

// ---------------------------------------------------------------------------
// cached generation == uncached oracle

// The oracle: every new token reruns gpt_forward on the whole (n_seq, window)
// batch and samples from the last position's logits, sequence by sequence, in
// the order gpt_generate draws them. The window is the sequence from `start`;
// when it would exceed maxT, it restarts at the last maxT/2 tokens.
template <typename real, typename Kernels>
static std::vector<std::vector<int>> generate_uncached(GPT<real, Kernels>* m, const std::vector<int>& prompt,
                                                       int n_seq, int len, float temperature, int top_k, Rng* rng) {
    const Config& c = m->cfg;
    std::vector<std::vector<int>> seqs(n_seq, prompt), out(n_seq);
    size_t start = 0;
    for (int n = 0; n < len; n++) {
        if (seqs[0].size() - start > (size_t)c.maxT) start = seqs[0].size() - c.maxT / 2;
        int T = (int)(seqs[0].size() - start);
        std::vector<int> inp((size_t)n_seq * T);
        for (int b = 0; b < n_seq; b++) std::copy(seqs[b].begin() + start, seqs[b].end(), inp.begin() + (size_t)b * T);
        gpt_forward(m, inp.data(), nullptr, n_seq, T);
        for (int b = 0; b < n_seq; b++) {
            const real* lg = m->acts.logits + ((size_t)b * T + T - 1) * c.Vp;
            int tok = sample_token(lg, c.V, temperature, top_k, rng);
            seqs[b].push_back(tok);
            out[b].push_back(tok);
        }
    }
    return out;
}

template <typename real, typename Kernels = PlainKernels>
static void check_generation(const Kinds& k, int n_seq, const std::vector<int>& prompt, int len, float temperature,
                             int top_k) {
    Config c = kinds_config(k);
    GPT<real, Kernels> m;
    build_random(&m, c, 42, 0.6);
    Rng r1 = rng_seed(7), r2 = rng_seed(7);
    std::vector<std::vector<int>> cached = gpt_generate(&m, prompt, n_seq, len, temperature, top_k, &r1);
    std::vector<std::vector<int>> oracle = generate_uncached(&m, prompt, n_seq, len, temperature, top_k, &r2);
    INFO(k.name, " n_seq ", n_seq, " prompt length ", prompt.size(), " len ", len, " temperature ", temperature,
         " top_k ", top_k);
    int expect_len = len;  // beyond maxT the window slides
    REQUIRE(cached.size() == (size_t)n_seq);
    for (int b = 0; b < n_seq; b++) {
        CHECK(cached[b].size() == (size_t)expect_len);
        CHECK(cached[b] == oracle[b]);
        for (int t : cached[b]) CHECK((t >= 0 && t < c.V));
    }
    CHECK(r1.state == r2.state);  // the same number of draws
}

TEST_CASE("cached generation produces the tokens of uncached generation") {
    const std::vector<std::vector<int>> prompts = {{10}, {3, 1, 4}, {1, 5, 9, 2, 6, 5, 3}};  // 7 = maxT - 1
    for (const Kinds& k : ALL_KINDS)
        for (const std::vector<int>& prompt : prompts)
            for (int n_seq : {2, 4}) {
                check_generation<double>(k, n_seq, prompt, 20, 1.0f, 0);  // past maxT: the window slides several times
                check_generation<double>(k, n_seq, prompt, 3, 1.0f, 0);
                check_generation<double>(k, n_seq, prompt, 20, 0.0f, 0);  // greedy
                check_generation<double>(k, n_seq, prompt, 20, 0.8f, 3);  // top-k
                check_generation<float, FastKernels>(k, n_seq, prompt, 20, 1.0f, 0);
                check_generation<float, FastKernels>(k, n_seq, prompt, 20, 0.0f, 0);
            }
    check_generation<double>(ALL_KINDS[0], 3, {2, 7}, 20, 1.0f, 0);  // dense: any number of sequences
    check_generation<double>(ALL_KINDS[0], 1, {2, 7}, 20, 1.0f, 5);
}

TEST_CASE("sequences of one generation differ, and the seed decides them") {
    Config c = tiny_config({MOT, DENSE});
    GPT<double> m;
    build_random(&m, c, 42, 0.6);
    Rng a = rng_seed(1), b = rng_seed(1), other = rng_seed(2);
    auto x = gpt_generate(&m, {3}, 4, 7, 1.0f, 0, &a);
    auto y = gpt_generate(&m, {3}, 4, 7, 1.0f, 0, &b);
    auto z = gpt_generate(&m, {3}, 4, 7, 1.0f, 0, &other);
    CHECK(x == y);
    CHECK(x != z);
    bool rows_differ = false;
    for (int i = 1; i < 4; i++) rows_differ |= x[i] != x[0];
    CHECK(rows_differ);
}

TEST_CASE("generation refuses bad shapes with a clear message") {
    Config c = tiny_config({DENSE, MOT});
    GPT<double> m;
    build_random(&m, c, 1, 0.6);
    Rng r = rng_seed(1);
    auto generate = [&](int n_seq, std::vector<int> prompt) {
        return [&m, &r, n_seq, prompt] { gpt_generate(&m, prompt, n_seq, 3, 1.0f, 0, &r); };
    };
    expect_throw(generate(3, {1}), {"3 sequences", "multiple of the group size 2"});
    expect_throw(generate(0, {1}), {"multiple of the group size"});
    expect_throw(generate(2, {}), {"prompt"});
    expect_throw(generate(2, std::vector<int>(8, 1)), {"maximum sequence length is 8"});
    expect_throw(generate(2, {1, 11}), {"token id 11"});  // outside V = 11
    CHECK_NOTHROW(generate(2, {1})());
    Decoder<double> d;
    expect_throw([&] { decoder_init(&d, c, 5); }, {"multiple of the group size 2"});
}

// ---------------------------------------------------------------------------
// sample_token

static std::vector<double> softmax(const std::vector<double>& logits, double temperature, int top_k) {
    std::vector<double> sorted = logits;
    std::sort(sorted.rbegin(), sorted.rend());
    double cutoff = top_k > 0 && top_k < (int)logits.size() ? sorted[top_k - 1] : -INFINITY;
    std::vector<double> p(logits.size(), 0.0);
    double sum = 0;
    for (size_t v = 0; v < logits.size(); v++)
        if (logits[v] >= cutoff) sum += p[v] = std::exp((logits[v] - sorted[0]) / temperature);
    for (double& x : p) x /= sum;
    return p;
}

static double chi_square(const std::vector<int>& counts, const std::vector<double>& p, int n) {
    double chi = 0;
    for (size_t v = 0; v < p.size(); v++) {
        if (p[v] == 0) {
            if (counts[v] > 0) return INFINITY;
            continue;
        }
        double e = n * p[v];
        chi += (counts[v] - e) * (counts[v] - e) / e;
    }
    return chi;
}

TEST_CASE("sample_token: greedy is the argmax") {
    TestRng tr(5);
    Rng r = rng_seed(5);
    for (int trial = 0; trial < 200; trial++) {
        int V = 2 + tr.below(60);
        std::vector<double> lg(V);
        for (double& x : lg) x = 3 * tr.sym();
        int argmax = int(std::max_element(lg.begin(), lg.end()) - lg.begin());
        uint64_t before = r.state;
        CHECK(sample_token(lg.data(), V, 0.0f, 0, &r) == argmax);
        CHECK(sample_token(lg.data(), V, -1.0f, 0, &r) == argmax);
        CHECK(sample_token(lg.data(), V, 0.0f, 3, &r) == argmax);
        CHECK(r.state == before);  // greedy draws nothing
        CHECK(sample_token(lg.data(), V, 1.0f, 1, &r) == argmax);  // top-1 is greedy too
        std::vector<float> lf(lg.begin(), lg.end());
        CHECK(sample_token(lf.data(), V, 0.0f, 0, &r) == argmax);
    }
    // only the first V logits count: padding beyond V is never chosen
    std::vector<double> padded = {0.1, 0.5, 0.2, 99, 99};
    CHECK(sample_token(padded.data(), 3, 0.0f, 0, &r) == 1);
    for (int i = 0; i < 200; i++) CHECK(sample_token(padded.data(), 3, 1.0f, 0, &r) < 3);
}

TEST_CASE("sample_token: top-k never leaves the top k") {
    TestRng tr(9);
    Rng r = rng_seed(9);
    const int V = 20;
    std::vector<double> lg(V);
    for (double& x : lg) x = tr.sym();  // nearly flat: every token is likely
    std::vector<int> by_rank(V);
    std::iota(by_rank.begin(), by_rank.end(), 0);
    std::sort(by_rank.begin(), by_rank.end(), [&](int a, int b) { return lg[a] > lg[b]; });
    for (int k : {2, 5, 13}) {
        std::vector<int> counts(V, 0);
        for (int i = 0; i < 4000; i++) counts[sample_token(lg.data(), V, 1.5f, k, &r)]++;
        int outside = 0, seen = 0;
        for (int rank = 0; rank < V; rank++) {
            if (rank >= k) outside += counts[by_rank[rank]];
            else seen += counts[by_rank[rank]] > 0;
        }
        INFO("k ", k);
        CHECK(outside == 0);
        CHECK(seen == k);  // and every one of the top k is drawn
    }
}

TEST_CASE("sample_token: draws follow softmax(logits / temperature)") {
    const std::vector<double> lg = {1.0, -0.5, 2.0, 0.3, -1.2, 0.8};
    const int V = (int)lg.size(), n = 20000;
    struct Case { float temperature; int top_k; };
    for (Case cs : {Case{1.0f, 0}, Case{0.5f, 0}, Case{2.0f, 0}, Case{0.7f, 4}}) {
        Rng r = rng_seed(123);
        std::vector<int> counts(V, 0);
        std::vector<float> lf(lg.begin(), lg.end());
        for (int i = 0; i < n; i++) counts[sample_token(lf.data(), V, cs.temperature, cs.top_k, &r)]++;
        double chi = chi_square(counts, softmax(lg, cs.temperature, cs.top_k), n);
        // the same draws against the untempered, uncut softmax: far off
        double chi_wrong = chi_square(counts, softmax(lg, cs.temperature == 1.0f ? 0.5 : 1.0, 0), n);
        INFO("temperature ", cs.temperature, " top_k ", cs.top_k, " chi2 ", chi, " against the wrong law ", chi_wrong);
        // 5 degrees of freedom: P(chi2 > 25) ~ 1.4e-4
        CHECK(chi < 25);
        CHECK(chi_wrong > 200);
    }
}

// ---------------------------------------------------------------------------
// learning-rate schedule (docs/design.md section 4.4)

TEST_CASE("lr_at: linear warmup, peak, cosine down to lr * min_frac") {
    const float lr = 3e-3f, min_frac = 0.1f;
    const int warmup = 10, total = 110;
    for (int s = 0; s < warmup; s++) CHECK(lr_at(s, total, lr, warmup, min_frac) == doctest::Approx(lr * (s + 1) / warmup).epsilon(1e-6));
    CHECK(lr_at(warmup - 1, total, lr, warmup, min_frac) == doctest::Approx(lr).epsilon(1e-6));  // warmup ends at the peak
    CHECK(lr_at(warmup, total, lr, warmup, min_frac) == doctest::Approx(lr).epsilon(1e-6));      // cosine starts at it
    // halfway through the cosine: the mean of peak and floor
    CHECK(lr_at(warmup + (total - warmup) / 2, total, lr, warmup, min_frac) ==
          doctest::Approx(lr * (1 + min_frac) / 2).epsilon(1e-6));
    // the cosine reaches lr * min_frac at step == total (one past the last
    // update) and stays there; the last update (total - 1) is just above it
    CHECK(lr_at(total, total, lr, warmup, min_frac) == doctest::Approx(lr * min_frac).epsilon(1e-6));
    CHECK(lr_at(total + 50, total, lr, warmup, min_frac) == doctest::Approx(lr * min_frac).epsilon(1e-6));
    float last = lr_at(total - 1, total, lr, warmup, min_frac);
    CHECK(last >= lr * min_frac);
    CHECK(last < lr * min_frac + lr * (1 - min_frac) * 1e-3);
    // monotone: up during warmup, never up afterwards, never below the floor
    for (int s = 1; s <= total; s++) {
        float a = lr_at(s - 1, total, lr, warmup, min_frac), b = lr_at(s, total, lr, warmup, min_frac);
        INFO("step ", s);
        if (s < warmup) CHECK(b > a);
        else CHECK(b <= a);
        CHECK(b >= lr * min_frac * (1 - 1e-6f));
    }
    // no warmup: the first step runs at the peak; min_frac 0 decays to 0
    CHECK(lr_at(0, 100, lr, 0, 0.0f) == doctest::Approx(lr).epsilon(1e-6));
    CHECK(lr_at(100, 100, lr, 0, 0.0f) == doctest::Approx(0.0).epsilon(1e-6));
    // warmup as long as the run: plain warmup, then the peak
    CHECK(lr_at(4, 5, lr, 5, min_frac) == doctest::Approx(lr).epsilon(1e-6));
}
