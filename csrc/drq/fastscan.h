// 4-bit fast-scan kernels: uint8 look-up tables, byte shuffles, uint16 accumulation.
//
// A scan over blocks laid out as in fastscan_codes.h computes, for each of the 32 vectors i of
// each block and query j,
//     c = 0;  for p < nbytes:  c = (c << shifts[j][p]) + luts[2p][lo(byte p of i)] + luts[2p+1][hi(byte p of i)]
//     codes_i = c mod 2^16
//     extra_i = extra != nullptr ? (extra byte of i) * extra_factors[j] >> 8 : 0
//     acc[i]  = min(65535, codes_i + extra_i)
// Shifts (Horner form) give each code byte its own power-of-two scale: residual tables shrink
// with the iteration, and one uint8 scale for all left the late ones a few levels each. The
// caller picks shifts that keep the true sum below 2^16; the arithmetic mod 2^16 keeps every ISA
// bit-identical anyway. shifts == nullptr: all 0, a plain sum (at most 257 tables of values
// <= 255 fit; the store's M <= 254 gives at most 254).
// The extra byte (the quantised norm) is NOT looked up in uint8 tables: its range in table units
// is wider than any code table's (Fashion-MNIST: 2x the first one's), and sharing one uint8
// scale with it coarsened all code tables. Instead the caller gives a 16-bit fixed-point factor
// (8 fractional bits) per query and the kernel adds the product in 16 bits, saturating: a sum
// that reaches 65535 ranks last instead of wrapping to a small value.
// Integer arithmetic is exact, so every ISA returns the same bits and search results do not
// depend on the SIMD level.
//
// Tables: `luts` holds 16 uint8 per table, table t at luts + 16 t (no alignment needed). A prefix
// of odd length m passes nbytes = (m + 1) / 2 and an all-zero table for iteration m.
//
// The SIMD files include no C++ standard library templates (see adc.h: ODR merging of inline
// functions compiled with wider instructions).
#pragma once

#include <cstddef>
#include <cstdint>

#include "simd_level.h"

namespace drq {

// Queries per kernel call, at most: the codes of a block are loaded and split into nibbles once
// for all of them (4 queries = 8 accumulator registers on AVX2).
constexpr size_t kFastScanMaxQueries = 4;

//   codes:       first block; block b starts at codes + b * block_stride, its byte p of the 32
//                vectors at + p * 32
//   nblocks:     blocks to scan
//   nbytes:      code bytes (2 iterations each) to accumulate per vector
//   extra:       nullptr, or a 32-byte group per block (block b at extra + b * extra_stride): the
//                quantised norm levels, added as level * extra_factors[j] >> 8
//   extra_factors: nq uint16 (unused when extra is nullptr)
//   shifts:      nullptr, or query j's nbytes shift counts (0..15) at shifts + j * nbytes
//   luts:        query j's tables at luts + j * lut_stride: 2 nbytes * 16 bytes each
//   nq:          queries, 1..kFastScanMaxQueries
//   acc (out):   query j's sums at acc + j * acc_stride: nblocks * 32 uint16, vector order
using FastScanFn = void (*)(const uint8_t* codes, size_t nblocks, size_t block_stride,
                            size_t nbytes, const uint8_t* extra, size_t extra_stride,
                            const uint16_t* extra_factors, const uint8_t* shifts,
                            const uint8_t* luts, size_t lut_stride,
                            size_t nq, uint16_t* acc, size_t acc_stride);

#define DRQ_FASTSCAN_ARGS                                                                     \
    const uint8_t *codes, size_t nblocks, size_t block_stride, size_t nbytes,                \
        const uint8_t *extra, size_t extra_stride, const uint16_t *extra_factors,          \
        const uint8_t *shifts,                                                               \
        const uint8_t *luts, size_t lut_stride, size_t nq, uint16_t *acc, size_t acc_stride

void fastscan_scan_ref(DRQ_FASTSCAN_ARGS);
#if defined(DRQ_HAVE_X86_SIMD)
void fastscan_scan_avx2(DRQ_FASTSCAN_ARGS);
void fastscan_scan_avx512(DRQ_FASTSCAN_ARGS);
#endif

// Candidate filter over scan results: bit i of masks[b] is set iff acc[32 b + i] <= threshold.
// Lets the search skip, with one test per block, the blocks where no vector can enter the best k.
//   acc: nblocks * 32 uint16; masks (out): nblocks uint32
using FastScanFilterFn = void (*)(const uint16_t* acc, size_t nblocks, uint16_t threshold,
                                  uint32_t* masks);

void fastscan_filter_ref(const uint16_t* acc, size_t nblocks, uint16_t threshold, uint32_t* masks);
#if defined(DRQ_HAVE_X86_SIMD)
void fastscan_filter_avx2(const uint16_t* acc, size_t nblocks, uint16_t threshold, uint32_t* masks);
void fastscan_filter_avx512(const uint16_t* acc, size_t nblocks, uint16_t threshold, uint32_t* masks);
#endif

// The kernels for a level. The caller must have checked simd_level_supported(level).
FastScanFn fastscan_scan_for(SimdLevel level);
FastScanFilterFn fastscan_filter_for(SimdLevel level);

}  // namespace drq
