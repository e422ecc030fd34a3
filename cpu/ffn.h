// Dense feed-forward block: out = gelu(inp fcw^T + fcb) fcprojw^T + fcprojb,
// its layers from the kernel set Kernels (kernels.h).
#pragma once
#include "../common/layout.h"
#include "kernels.h"

template <typename Kernels = PlainKernels, typename real>
void ffn_forward(real* out,             // (B,T,C)
                 real* fch,             // (B,T,dff) pre-activation
                 real* fch_gelu,        // (B,T,dff)
                 const real* inp,       // (B,T,C)
                 const real* fcw,       // (dff,C)
                 const real* fcb,       // (dff)
                 const real* fcprojw,   // (C,dff)
                 const real* fcprojb,   // (C)
                 int B, int T, int C, int dff) {
    Kernels::matmul_forward(fch, inp, fcw, fcb, B, T, C, dff);
    Kernels::gelu_forward(fch_gelu, fch, (size_t)B * T * dff);
    Kernels::matmul_forward(out, fch_gelu, fcprojw, fcprojb, B, T, dff, C);
}

template <typename Kernels = PlainKernels, typename real>
void ffn_backward(real* dinp,            // (B,T,C)
                  real* dfcw,            // (dff,C)
                  real* dfcb,            // (dff)
                  real* dfcprojw,        // (C,dff)
                  real* dfcprojb,        // (C)
                  real* dfch,            // (B,T,dff) scratch, zeroed by the caller
                  real* dfch_gelu,       // (B,T,dff) scratch, zeroed by the caller
                  const real* dout,      // (B,T,C)
                  const real* inp,       // (B,T,C)
                  const real* fch,       // (B,T,dff)
                  const real* fch_gelu,  // (B,T,dff)
                  const real* fcw,       // (dff,C)
                  const real* fcprojw,   // (C,dff)
                  int B, int T, int C, int dff) {
    Kernels::matmul_backward(dfch_gelu, dfcprojw, dfcprojb, dout, fch_gelu, fcprojw, B, T, dff, C);
    Kernels::gelu_backward(dfch, fch, dfch_gelu, (size_t)B * T * dff);
    Kernels::matmul_backward(dinp, dfcw, dfcb, dfch, inp, fcw, B, T, C, dff);
}

// DENSE as a block's feed-forward layer (common/ffn_kinds.h, DenseFfn): the
// layer functions above on the block's tensors.
template <typename Kernels, typename real>
void ffn_kind_forward(DenseFfn, real* out, const real* inp, const LayerWeights<real>& w, LayerActs<real>& a,
                      int B, int T, const Config& c, const FfnMode&) {
    ffn_forward<Kernels>(out, a.fch, a.fch_gelu, inp, w.fcw, w.fcb, w.fcprojw, w.fcprojb, B, T, c.C, c.dff);
}

template <typename Kernels, typename real>
void ffn_kind_backward(DenseFfn, real* dinp, LayerWeights<real>& dw, LayerActs<real>& da, const real* dout,
                       const real* inp, const LayerWeights<real>& w, const LayerActs<real>& a, int B, int T,
                       const Config& c, const FfnMode&) {
    ffn_backward<Kernels>(dinp, dw.fcw, dw.fcb, dw.fcprojw, dw.fcprojb, da.fch, da.fch_gelu, dout, inp, a.fch,
                          a.fch_gelu, w.fcw, w.fcprojw, B, T, c.C, c.dff);
}
