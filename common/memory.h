// Large buffers on 2 MB pages: the parameters, gradients, moments and
// activations are each one allocation of up to gigabytes, and the MoT
// layer's products read them with strides of S*T*E floats, a new 4 KB page at
// almost every row; on 2 MB pages they span far fewer pages (the README's
// "Speed" gives the gain). Linux hands out such pages to ranges advised
// MADV_HUGEPAGE (transparent huge pages in mode "madvise" or "always");
// elsewhere, or if the advice is refused, the buffer is the same on 4 KB
// pages.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>
#if defined(__linux__)
#include <sys/mman.h>
#endif

// v = n zeros; a new allocation is advised onto 2 MB pages before its first
// write (the write is what places the pages)
template <typename T>
void assign_zeros_huge(std::vector<T>& v, size_t n) {
    if (n > v.capacity()) {
        std::vector<T>().swap(v);
        v.reserve(n);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
        const uintptr_t huge = (uintptr_t)2 << 20;
        uintptr_t lo = ((uintptr_t)v.data() + huge - 1) & ~(huge - 1);
        uintptr_t hi = (uintptr_t)(v.data() + n) & ~(huge - 1);
        if (hi > lo) madvise((void*)lo, hi - lo, MADV_HUGEPAGE);  // advice: failure changes nothing
#endif
    }
    v.assign(n, T(0));
}
