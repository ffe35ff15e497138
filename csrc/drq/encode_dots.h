// Dot products of a block of residuals with one iteration's codebook: the dense arithmetic of
// per-iteration greedy encoding (encode_per_iteration.h), rows * K * d multiply-adds per call.
//
// Every dot product has one fixed evaluation order, so the scalar reference and the AVX2 kernel
// return the same bits and the codes never depend on the SIMD level or the thread count:
//     lane l (l < 8) = fused multiply-add chain over the dimensions k = l, l + 8, l + 16, ... < d,
//                      starting from 0 (dimensions past d count as 0 * 0);
//     dot = ((lane0 + lane4) + (lane2 + lane6)) + ((lane1 + lane5) + (lane3 + lane7))
// (the order of an 8-lane vector accumulator followed by halving reductions). Eight partial
// sums are also more accurate than one chain over d.
#pragma once

#include <cstddef>

#include "simd_level.h"

namespace drq {

//   rows:      nrows * d (row i at rows + i * d)
//   codewords: K * d (codeword k at codewords + k * d)
//   dots (out): nrows * K, dots[i * K + k] = <row i, codeword k>
using EncodeDotsFn = void (*)(const float* rows, size_t nrows, const float* codewords, size_t K,
                              size_t d, float* dots);

void encode_dots_ref(const float* rows, size_t nrows, const float* codewords, size_t K, size_t d,
                     float* dots);
#if defined(DRQ_HAVE_X86_SIMD)
void encode_dots_avx2(const float* rows, size_t nrows, const float* codewords, size_t K, size_t d,
                      float* dots);
#endif

// The kernel for a level (AVX-512 -> AVX2). The caller must have checked simd_level_supported(level).
EncodeDotsFn encode_dots_for(SimdLevel level);

}  // namespace drq
