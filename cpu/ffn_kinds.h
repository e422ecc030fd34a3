// The arithmetic of every feed-forward kind on the CPU, one file per kind
// (common/ffn_kinds.h has the table of kinds): each defines
// ffn_kind_forward<Kernels>(Tag, ...) and ffn_kind_backward<Kernels>(Tag, ...)
// for its kind's tag, which block.h calls.
#pragma once
#include "ffn.h"
#include "mot.h"
#include "token_choice.h"
