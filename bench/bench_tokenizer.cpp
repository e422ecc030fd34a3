// Tokenizer benchmark on tinyshakespeare: training time at the default vocab
// and at 4096, encode throughput (one thread and all threads), bytes/token.
//   bench_tokenizer [path/to/text]   (default: find_default_text())
#include <chrono>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "data/prepare.h"
#include "tokenizer/bpe.h"

static double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Best of `reps` encodes of text with nthreads threads; returns MB/s.
static double encode_mb_per_s(const Tokenizer& tok, const std::string& text, int nthreads, int reps, size_t* ntok) {
#ifdef _OPENMP
    omp_set_num_threads(nthreads);
#else
    (void)nthreads;
#endif
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        auto t0 = std::chrono::steady_clock::now();
        std::vector<int> ids = bpe_encode(tok, text);
        best = std::min(best, seconds_since(t0));
        *ntok = ids.size();
    }
    return double(text.size()) / 1e6 / best;
}

int main(int argc, char** argv) {
    try {
        std::string path = argc > 1 ? argv[1] : find_default_text();
        std::string text = read_file(path, "input text");
        int max_threads = 1;
#ifdef _OPENMP
        max_threads = omp_get_max_threads();
#endif
        std::printf("text: %s, %zu bytes, %d threads available\n", path.c_str(), text.size(), max_threads);
        for (int vocab : {PREPARE_DEFAULT_VOCAB, 4096}) {
            auto t0 = std::chrono::steady_clock::now();
            Tokenizer tok = bpe_train(text, vocab, false);
            double train_s = seconds_since(t0);
            size_t ntok = 0;
            double mb1 = encode_mb_per_s(tok, text, 1, 3, &ntok);
            double mbn = encode_mb_per_s(tok, text, max_threads, 3, &ntok);
            std::printf("vocab %5d%s: train %.3f s | encode %.1f MB/s (1 thread), %.1f MB/s (%d threads) | "
                        "%zu tokens, %.3f bytes/token\n",
                        tok.vocab_size, vocab == PREPARE_DEFAULT_VOCAB ? " (default)" : "", train_s, mb1, mbn,
                        max_threads, ntok, double(text.size()) / double(ntok));
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
