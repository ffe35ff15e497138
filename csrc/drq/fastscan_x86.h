// Scalar helpers shared by the fast-scan kernels (fastscan_avx2.cpp, fastscan_avx512.cpp).
// Internal linkage (anonymous namespace): each per-ISA file gets its own copy compiled with its
// own flags, so an AVX-512 build of a helper can never be linked into an AVX2 caller.
#pragma once

#include <cstddef>
#include <cstdint>

namespace drq {
namespace {

// Code bytes before which the group's sums are shifted (Horner, fastscan.h): bytes p >= 1 where
// some query's shift is non-zero, then nbytes; returns their count, or 0 if more than
// kMaxShiftPoints would be needed (then every byte is a point). Between two points the byte
// loop runs without a shift test: testing every (byte, query) cost a load and a branch per
// shuffle pair and made GCC spill accumulators; points are few (each query's shifts sum to at
// most 8, so at most 8 per query).
//   shifts: nq * nbytes (query q's shift before byte p at shifts[q * nbytes + p]), or nullptr
//   points (out): room for kMaxShiftPoints
constexpr size_t kMaxShiftPoints = 64;

inline size_t shift_points(const uint8_t* shifts, size_t nbytes, size_t nq, size_t* points) {
    size_t n = 0;
    for (size_t p = 1; p < nbytes && shifts != nullptr; ++p) {
        bool any = false;
        for (size_t q = 0; q < nq; ++q) any = any || shifts[q * nbytes + p] != 0;
        if (!any) continue;
        if (n + 1 == kMaxShiftPoints) return 0;
        points[n++] = p;
    }
    points[n++] = nbytes;
    return n;
}

}  // namespace
}  // namespace drq
