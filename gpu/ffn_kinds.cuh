// The arithmetic of every feed-forward kind on the GPU, one file per kind
// (common/ffn_kinds.h has the table of kinds; cpu/ffn_kinds.h lists the CPU's):
// each defines gpu::ffn_kind_forward(Tag, ...) and gpu::ffn_kind_backward(Tag,
// ...) for its kind's tag, which block.cuh calls.
#pragma once
#include "ffn.cuh"
#include "mot.cuh"
#include "token_choice.cuh"
