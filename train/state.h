// Training checkpoints: the model file (common/checkpoint.h, the contract)
// plus a training-state file beside it with everything else a bit-exact
// resume needs. Both are written atomically (temp file, then rename); the
// state first, so a model file only exists once its state is complete.
//
// State file, little-endian:
//   int64 header[32]: [0] magic 20261130, [1] version 5, [2] step (the number
//     of optimizer steps done), [3] number of parameters, [4..7] train loader
//     epoch, shard, position, seed, [8] sampling RNG state, [9] batch B,
//     [10] sequence T, [11] updates skipped for non-finite values,
//     [12] shuffle (0/1), [13] total steps of the run (the schedule's length),
//     [14] fingerprint of the training data (version 2), [15] micro-batches
//     per step over all ranks (version 2), [16] ranks that trained it (version
//     3; the data position [4..7] is every rank's, docs/design.md section 11);
//     [17..25] the optimizer settings it trained with (version 4): --lr,
//     --lr-min-frac, --warmup, --wd, --grad-clip, --beta1, --beta2,
//     --adam-eps, --aux-loss (the floats as float32 bits), so that --resume
//     can say which of them changed; [26] --router-balance, the threshold
//     routers' controller gain (version 5, float32 bits), which --resume
//     keeps unless given; [27] --precision (version 6: 0 fp32, 1 tf32,
//     2 bf16), which --resume keeps unless given; [28] --distill-weight
//     (version 7, float32 bits; 0: no --distill), which --resume checks
//     against (a run that distilled goes on only with its teacher given
//     again); every other slot 0
//   float32 AdamW m (num_params), then v (num_params)
// Files of versions 1 to 6 (without [14], [15], [16], [17..25], [26], [27]
// or [28]) still load; those fields are then unknown (the gain read as 0: off).
// Loading checks every field, so a damaged or foreign file is refused with
// the field that is wrong, never trained from.
#pragma once
#include <dirent.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "common/checkpoint.h"
#include "common/fileio.h"
#include "data/dataloader.h"

constexpr int64_t STATE_MAGIC = 20261130;
constexpr int64_t STATE_VERSION = 7;

// The optimizer settings of a run (the options of the same names).
struct TrainSettings {
    bool known = false;  // false: from a file of version 1 to 3
    float lr = 0, lr_min_frac = 0, wd = 0, grad_clip = 0, beta1 = 0, beta2 = 0, adam_eps = 0, aux_loss = 0;
    int64_t warmup = 0;
    bool router_balance_known = false;  // false: from a file of version 1 to 4 (router_balance 0)
    float router_balance = 0;
    int precision = -1;  // index into STATE_PRECISIONS; -1: from a file of version 1 to 5
    float distill_weight = 0;  // --distill-weight of a run with --distill, else 0 (and from versions 1 to 6)
};

// --precision as slot [27] stores it.
inline const char* const STATE_PRECISIONS[] = {"fp32", "tf32", "bf16"};

struct TrainState {
    int64_t step = 0;
    DataLoaderState loader;
    uint64_t rng = 0;
    int64_t B = 0, T = 0, skipped = 0, shuffle = 0, total_steps = 0;
    uint64_t data_id = 0;  // data_fingerprint of the training shards; 0: unknown (version 1)
    int64_t accum = 0;     // micro-batches per optimizer step, all ranks; 0: unknown (version 1)
    int64_t ranks = 0;     // ranks that trained it; 0: unknown (versions 1, 2)
    TrainSettings settings;  // known from version 4
    std::vector<float> m, v;  // (num_params) each
};

inline void train_state_save(const std::string& path, const TrainState& s) {
    std::vector<int64_t> h(32, 0);
    h[0] = STATE_MAGIC;
    h[1] = STATE_VERSION;
    h[2] = s.step;
    h[3] = (int64_t)s.m.size();
    h[4] = s.loader.epoch;
    h[5] = s.loader.shard;
    h[6] = s.loader.position;
    h[7] = (int64_t)s.loader.seed;
    h[8] = (int64_t)s.rng;
    h[9] = s.B;
    h[10] = s.T;
    h[11] = s.skipped;
    h[12] = s.shuffle;
    h[13] = s.total_steps;
    h[14] = (int64_t)s.data_id;
    h[15] = s.accum;
    h[16] = s.ranks;
    const TrainSettings& o = s.settings;
    int k = 17;
    for (float f : {o.lr, o.lr_min_frac}) std::memcpy(&h[k++], &f, 4);  // the low half of the slot
    h[k++] = o.warmup;
    for (float f : {o.wd, o.grad_clip, o.beta1, o.beta2, o.adam_eps, o.aux_loss, o.router_balance})
        std::memcpy(&h[k++], &f, 4);
    h[27] = o.precision;
    std::memcpy(&h[28], &o.distill_weight, 4);
    write_file_atomic(path, {{h.data(), h.size() * 8}, {s.m.data(), s.m.size() * 4}, {s.v.data(), s.v.size() * 4}});
}

// Reads the state written with a checkpoint of `expected_step` steps for a
// model of expected_params parameters, checking every field.
inline TrainState train_state_load(const std::string& path, size_t expected_params, int64_t expected_step) {
    std::string bytes = read_file(path, "training state");
    const char* name = path.c_str();
    if (bytes.size() < 256) fail(strf("%s: truncated training state (%zu bytes)", name, bytes.size()));
    int64_t h[32];
    std::memcpy(h, bytes.data(), 256);
    if (h[0] != STATE_MAGIC) fail(strf("%s: not a mot training-state file (magic %lld)", name, (long long)h[0]));
    if (h[1] < 1 || h[1] > STATE_VERSION)
        fail(strf("%s: training-state version %lld, this build reads 1 to %lld", name, (long long)h[1],
                  (long long)STATE_VERSION));
    if (h[3] != (int64_t)expected_params)
        fail(strf("%s: holds moments for %lld parameters, the model has %zu", name, (long long)h[3], expected_params));
    if (bytes.size() != 256 + 8 * expected_params)
        fail(strf("%s: size %zu does not match its header", name, bytes.size()));
    auto need = [&](bool ok, const char* field, int64_t value) {
        if (!ok) fail(strf("%s: damaged training state: %s is %lld", name, field, (long long)value));
    };
    // counts within what the options allow (--steps, --batch, --seq up to 2^30, 2^20, 2^20;
    // micro-batches per step at most --total-batch's 2^30); ranks at most 2^20
    const int64_t M = int64_t(1) << 30, K = int64_t(1) << 20;
    need(h[2] == expected_step, "the step (the file name says a different one)", h[2]);
    need(h[2] >= 0 && h[2] <= M, "the step", h[2]);
    need(h[5] >= 0, "the data shard", h[5]);
    need(h[6] >= 0, "the data position", h[6]);
    need(h[9] > 0 && h[9] <= K, "the batch size", h[9]);
    need(h[10] > 0 && h[10] <= K, "the sequence length", h[10]);
    need(h[11] >= 0 && h[11] <= h[2], "the count of skipped updates", h[11]);
    need(h[12] == 0 || h[12] == 1, "the shuffle flag", h[12]);
    need(h[13] >= 0 && h[13] <= M, "the planned number of steps", h[13]);
    need(h[15] >= 0 && h[15] <= M, "the micro-batches per step", h[15]);
    need(h[16] >= 0 && h[16] <= K, "the number of ranks", h[16]);
    // the ranks share each step's micro-batches evenly
    need(h[15] == 0 || h[16] == 0 || h[15] % h[16] == 0, "the number of ranks (not a divisor of the micro-batches per step)", h[16]);
    // a micro-batch moves the data on by at most one epoch
    need(h[4] >= 0 && (h[15] == 0 || h[4] <= h[2] * h[15]), "the data epoch", h[4]);
    TrainState s;
    if (h[1] >= 4) {  // the optimizer settings, each within its option's range
        TrainSettings& o = s.settings;
        o.known = true;
        o.router_balance_known = h[1] >= 5;
        const char* names[] = {"--lr", "--lr-min-frac", "--warmup", "--wd", "--grad-clip", "--beta1", "--beta2",
                               "--adam-eps", "--aux-loss", "--router-balance"};
        float* floats[] = {&o.lr, &o.lr_min_frac, nullptr, &o.wd, &o.grad_clip, &o.beta1, &o.beta2, &o.adam_eps,
                           &o.aux_loss, &o.router_balance};
        const double high[] = {10, 1, 1 << 30, 10, 1e9, 1, 1, 1, 1e6, 1e6};
        for (int i = 0; i < (o.router_balance_known ? 10 : 9); i++) {
            int64_t slot = h[17 + i];
            double v = (double)slot;
            if (floats[i]) {
                uint32_t bits = (uint32_t)slot;
                std::memcpy(floats[i], &bits, 4);
                v = slot == (int64_t)bits ? (double)*floats[i] : NAN;
            }
            if (!(v >= 0 && v <= high[i]))
                fail(strf("%s: damaged training state: the %s it trained with is %s (slot %d)", name, names[i],
                          std::isfinite(v) ? strf("%g", v).c_str() : "not a number", 17 + i));
        }
        o.warmup = h[19];
        if (h[1] >= 6) {
            need(h[27] >= 0 && h[27] <= 2, "the precision it trained with (slot 27)", h[27]);
            o.precision = (int)h[27];
        }
        if (h[1] >= 7) {
            uint32_t bits = (uint32_t)h[28];
            std::memcpy(&o.distill_weight, &bits, 4);
            if (h[28] != (int64_t)bits || !(o.distill_weight >= 0 && o.distill_weight <= 1))
                fail(strf("%s: damaged training state: the --distill-weight it trained with is not in [0, 1] "
                          "(slot 28)",
                          name));
        }
    }
    s.step = h[2];
    s.loader = {h[4], h[5], h[6], (uint64_t)h[7]};
    s.rng = (uint64_t)h[8];
    s.B = h[9], s.T = h[10], s.skipped = h[11], s.shuffle = h[12], s.total_steps = h[13];
    s.data_id = h[1] >= 2 ? (uint64_t)h[14] : 0;
    s.accum = h[1] >= 2 ? h[15] : 0;
    s.ranks = h[1] >= 3 ? h[16] : 0;
    s.m.resize(expected_params);
    s.v.resize(expected_params);
    std::memcpy(s.m.data(), bytes.data() + 256, 4 * expected_params);
    std::memcpy(s.v.data(), bytes.data() + 256 + 4 * expected_params, 4 * expected_params);
    for (size_t i = 0; i < expected_params; i++)
        if (!std::isfinite(s.m[i]) || !std::isfinite(s.v[i]) || s.v[i] < 0)
            fail(strf("%s: damaged training state: AdamW moment %zu is m %g, v %g (must be finite, v >= 0)", name, i,
                      (double)s.m[i], (double)s.v[i]));
    return s;
}

// DIR/step_00000100.ckpt and DIR/step_00000100.state
inline std::string checkpoint_name(const std::string& dir, int64_t step, const char* ext) {
    return strf("%s/step_%08lld.%s", dir.c_str(), (long long)step, ext);
}

// Steps that have a complete checkpoint (both files) in dir, ascending.
inline std::vector<int64_t> checkpoint_steps(const std::string& dir) {
    std::vector<int64_t> steps;
    DIR* d = opendir(dir.c_str());
    if (!d) return steps;
    while (dirent* e = readdir(d)) {
        long long step;
        char ext[16];
        if (std::sscanf(e->d_name, "step_%lld.%15s", &step, ext) == 2 && std::strcmp(ext, "ckpt") == 0 &&
            file_exists(checkpoint_name(dir, step, "state")))
            steps.push_back(step);
    }
    closedir(d);
    std::sort(steps.begin(), steps.end());
    return steps;
}

// The checkpoint files in dir (step_N.ckpt or step_N.state, complete pairs
// or not), sorted by name: a new run refuses a folder that holds any.
inline std::vector<std::string> checkpoint_files(const std::string& dir) {
    std::vector<std::string> names;
    DIR* d = opendir(dir.c_str());
    if (!d) return names;
    while (dirent* e = readdir(d)) {
        long long step;
        int end = 0;
        const char* n = e->d_name;
        if (std::sscanf(n, "step_%lld%n", &step, &end) == 1 && n[5] >= '0' && n[5] <= '9' &&
            (std::strcmp(n + end, ".ckpt") == 0 || std::strcmp(n + end, ".state") == 0))
            names.push_back(n);
    }
    closedir(d);
    std::sort(names.begin(), names.end());
    return names;
}

// Writes step's checkpoint pair, then deletes all but the newest `keep` of
// the pairs up to this step. A pair of a later step is not this run's past
// (a damaged newest pair that --resume skipped): it is left, so the run
// never deletes the pair it just wrote in favour of one it did not write.
inline void checkpoint_dir_save(const std::string& dir, const Config& c, const float* params, const TrainState& s,
                                int keep) {
    std::string bad = first_nonfinite_tensor(c, params);  // before any file is written
    if (!bad.empty()) fail(strf("step %lld: the parameters are not finite (%s); no checkpoint written", (long long)s.step, bad.c_str()));
    make_dirs(dir);
    train_state_save(checkpoint_name(dir, s.step, "state"), s);
    checkpoint_save(checkpoint_name(dir, s.step, "ckpt"), c, params);
    std::vector<int64_t> steps = checkpoint_steps(dir);
    steps.erase(std::upper_bound(steps.begin(), steps.end(), s.step), steps.end());
    for (size_t i = 0; keep > 0 && i + keep < steps.size(); i++) {
        std::remove(checkpoint_name(dir, steps[i], "ckpt").c_str());
        std::remove(checkpoint_name(dir, steps[i], "state").c_str());
    }
}

// Identifies the training data for --resume: FNV-1a over each shard's file
// name (without its folder) and token count, in order. It starts from its
// own value, not FNV's offset basis: the state files already written hold
// fingerprints made from it.
inline uint64_t data_fingerprint(const DataLoader& L) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < L.files.size(); i++) {
        std::string base = L.files[i].substr(L.files[i].find_last_of('/') + 1);
        h = fnv1a64(base.data(), base.size() + 1, h);
        h = fnv1a64(&L.shard_tokens[i], sizeof(int64_t), h);
    }
    return h;
}

// --resume: the newest checkpoint pair in dir that loads and validates; a
// damaged one is skipped, saying which and why.
inline int64_t find_resume_checkpoint(const std::string& dir, Config* c, std::vector<float>* params, TrainState* state) {
    std::vector<int64_t> steps = checkpoint_steps(dir);
    if (steps.empty()) fail(strf("--resume: no complete checkpoint in %s", dir.c_str()));
    std::string reasons;
    for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
        try {
            checkpoint_load(checkpoint_name(dir, *it, "ckpt"), c, params);
            *state = train_state_load(checkpoint_name(dir, *it, "state"), num_params(*c), *it);
            return *it;
        } catch (const std::exception& e) {
            std::printf("--resume: skipping the checkpoint of step %lld: %s\n", (long long)*it, e.what());
            reasons += strf("\n  step %lld: %s", (long long)*it, e.what());
        }
    }
    fail(strf("--resume: no valid checkpoint in %s:%s", dir.c_str(), reasons.c_str()));
}
