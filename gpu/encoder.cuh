// Token + position embedding on the GPU: x[b,t] = wte[tok[b,t]] + wpe[t].
#pragma once
#include <algorithm>
#include <vector>

#include "common.cuh"

namespace gpu {

// out[b,t,i] = wte[inp[b,t], i] + wpe[t, i]; one thread per output element.
__global__ void encoder_forward_kernel(float* out,        // (B,T,C)
                                       const int* inp,    // (B,T)
                                       const float* wte,  // (Vp,C)
                                       const float* wpe,  // (maxT,C)
                                       int B, int T, int C) {
    size_t n = (size_t)B * T * C;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
        size_t bt = idx / C;
        int i = (int)(idx % C);
        int t = (int)(bt % T);
        out[idx] = wte[(size_t)inp[bt] * C + i] + wpe[(size_t)t * C + i];
    }
}

// The batch's token ids grouped by token, built on the host (where the ids
// are known) so that the wte gradient can be summed without atomics, in a
// fixed order: bucket k holds token[k], whose positions bt = b*T + t are
// pos[start[k] .. start[k+1]) in increasing order. Packed in one int buffer:
//   [token (n), start (n + 1), pos (B*T)]; at most 3*B*T + 1 ints.
inline int token_buckets_build(std::vector<int>* packed, const int* inp, size_t BT) {
    std::vector<int> order(BT);
    for (size_t i = 0; i < BT; i++) order[i] = (int)i;
    std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return inp[x] < inp[y]; });
    std::vector<int> token, start;
    for (size_t i = 0; i < BT; i++)
        if (i == 0 || inp[order[i]] != inp[order[i - 1]]) {
            token.push_back(inp[order[i]]);
            start.push_back((int)i);
        }
    start.push_back((int)BT);
    packed->clear();
    packed->insert(packed->end(), token.begin(), token.end());
    packed->insert(packed->end(), start.begin(), start.end());
    packed->insert(packed->end(), order.begin(), order.end());
    return (int)token.size();
}

// Device view of a packed bucket buffer with n buckets.
struct TokenBuckets {
    const int* token;  // (n) distinct token ids
    const int* start;  // (n + 1) offsets into pos
    const int* pos;    // (B*T) positions b*T + t, grouped by token
    int n;
};

inline TokenBuckets token_buckets(const int* packed, int n) { return {packed, packed + n, packed + 2 * n + 1, n}; }

// dwte[token, i] += dout[bt, i] over the positions bt of each token, added one
// by one in increasing bt: the same order (hence bit for bit the same sums) as
// cpu/encoder.h, and the same in every run. Grid (buckets, ceil(C / 128)),
// one thread per (token, channel).
__global__ void encoder_backward_wte_kernel(float* dwte,        // (Vp,C)
                                            const float* dout,  // (B,T,C)
                                            TokenBuckets buckets, int C) {
    int k = blockIdx.x;
    int i = blockIdx.y * blockDim.x + threadIdx.x;
    if (i >= C) return;
    float* row = dwte + (size_t)buckets.token[k] * C;
    float acc = row[i];
    for (int j = buckets.start[k]; j < buckets.start[k + 1]; j++) acc += dout[(size_t)buckets.pos[j] * C + i];
    row[i] = acc;
}

// dwpe[t, i] += dout[b,t,i] for b = 0, 1, ..., added one by one in that order
// (as cpu/encoder.h does); one thread per (t, i).
__global__ void encoder_backward_wpe_kernel(float* dwpe,        // (maxT,C)
                                            const float* dout,  // (B,T,C)
                                            int B, int T, int C) {
    size_t n = (size_t)T * C;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
        float acc = dwpe[idx];  // idx = t*C + i
        for (int b = 0; b < B; b++) acc += dout[(size_t)b * T * C + idx];
        dwpe[idx] = acc;
    }
}

// inp is a device pointer (B,T).
inline void encoder_forward(float* out,        // (B,T,C)
                            const int* inp,    // (B,T) token ids, device
                            const float* wte,  // (Vp,C)
                            const float* wpe,  // (maxT,C)
                            int B, int T, int C) {
    size_t n = (size_t)B * T * C;
    encoder_forward_kernel<<<grid_for(n, 256), 256>>>(out, inp, wte, wpe, B, T, C);
    CUDA_CHECK_LAUNCH();
}

// buckets: the token ids of the batch grouped by token (token_buckets_build).
inline void encoder_backward(float* dwte,          // (Vp,C)
                             float* dwpe,          // (maxT,C)
                             const float* dout,    // (B,T,C)
                             TokenBuckets buckets,  // the batch's (B,T) ids by token, device
                             int B, int T, int C) {
    if (buckets.n > 0) {
        encoder_backward_wte_kernel<<<dim3(buckets.n, ceil_div(C, 128)), 128>>>(dwte, dout, buckets, C);
        CUDA_CHECK_LAUNCH();
    }
    encoder_backward_wpe_kernel<<<grid_for((size_t)T * C, 256), 256>>>(dwpe, dout, B, T, C);
    CUDA_CHECK_LAUNCH();
}

}  // namespace gpu
