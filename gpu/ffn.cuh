// Dense feed-forward block on the GPU (cpu/ffn.h):
//   out = gelu(inp fcw^T + fcb) fcprojw^T + fcprojb.
// Its layers are called through a kernel set K (kernels.cuh).
#pragma once
#include "../common/layout.h"
#include "kernels.cuh"

namespace gpu {

template <typename K = Kernels>
inline void ffn_forward(float* out,              // (B,T,C)
                        float* fch,              // (B,T,dff) pre-activation
                        float* fch_gelu,         // (B,T,dff)
                        const float* inp,        // (B,T,C)
                        const float* fcw,        // (dff,C)
                        const float* fcb,        // (dff)
                        const float* fcprojw,    // (C,dff)
                        const float* fcprojb,    // (C)
                        int B, int T, int C, int dff) {
    K::matmul_forward(fch, inp, fcw, fcb, B, T, C, dff);
    K::gelu_forward(fch_gelu, fch, (size_t)B * T * dff);
    K::matmul_forward(out, fch_gelu, fcprojw, fcprojb, B, T, dff, C);
}

template <typename K = Kernels>
inline void ffn_backward(float* dinp,             // (B,T,C)
                         float* dfcw,             // (dff,C)
                         float* dfcb,             // (dff)
                         float* dfcprojw,         // (C,dff)
                         float* dfcprojb,         // (C)
                         float* dfch,             // (B,T,dff) scratch, zeroed by the caller
                         float* dfch_gelu,        // (B,T,dff) scratch, zeroed by the caller
                         const float* dout,       // (B,T,C)
                         const float* inp,        // (B,T,C)
                         const float* fch,        // (B,T,dff)
                         const float* fch_gelu,   // (B,T,dff)
                         const float* fcw,        // (dff,C)
                         const float* fcprojw,    // (C,dff)
                         int B, int T, int C, int dff) {
    K::matmul_backward(dfch_gelu, dfcprojw, dfcprojb, dout, fch_gelu, fcprojw, B, T, dff, C);
    K::gelu_backward(dfch, fch, dfch_gelu, (size_t)B * T * dff);
    K::matmul_backward(dinp, dfcw, dfcb, dfch, inp, fcw, B, T, C, dff);
}

}  // namespace gpu

namespace gpu {

// DENSE as a block's feed-forward layer (common/ffn_kinds.h, DenseFfn).
template <typename K>
inline void ffn_kind_forward(DenseFfn, float* out, const float* inp, const LayerWeights<float>& w,
                             LayerActs<float>& a, int B, int T, const Config& c, const FfnMode&) {
    ffn_forward<K>(out, a.fch, a.fch_gelu, inp, w.fcw, w.fcb, w.fcprojw, w.fcprojb, B, T, c.C, c.dff);
}

template <typename K>
inline void ffn_kind_backward(DenseFfn, float* dinp, LayerWeights<float>& dw, LayerActs<float>& da, const float* dout,
                              const float* inp, const LayerWeights<float>& w, const LayerActs<float>& a, int B, int T,
                              const Config& c, const FfnMode&) {
    ffn_backward<K>(dinp, dw.fcw, dw.fcb, dw.fcprojw, dw.fcprojb, da.fch, da.fch_gelu, dout, inp, a.fch, a.fch_gelu,
                 w.fcw, w.fcprojw, B, T, c.C, c.dff);
}

}  // namespace gpu
