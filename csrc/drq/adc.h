// Asymmetric distance computation (ADC) scans over blocked sequential codes.
//
// Code layout (see codes.h): vectors are grouped in blocks of kBlockSize; inside a block the
// codes are iteration-major, codes[j * kBlockSize + i] = code of vector i at iteration j, so a
// scan over the first m iterations reads the first m * kBlockSize bytes of each block.
//
// A scan computes, for every vector i of each block,
//     acc[i] = sum_{j < m} scales[j] * lut[j * lut_stride + code_j(i)]
// in this exact order: acc = 0; for j = 0..m-1: acc = acc + lut_value * scales[j], with a
// separate rounding for the product and the sum (no fused multiply-add, and the kernel files
// are compiled with -ffp-contract=off). Every lane of every ISA performs the same operations in
// the same order, so all kernels return bit-identical results: search results do not depend on
// the SIMD level or the thread count.
//
// The kernels for AVX2 and AVX-512 live in their own translation units, compiled with ISA flags;
// those files include no C++ standard library templates, because inline functions instantiated
// there would be compiled with wider instructions and could be picked by the linker for the
// scalar code path (ODR merging).
#pragma once

#include <cstddef>
#include <cstdint>

#include "simd_level.h"

namespace drq {

// Vectors per code block. 32 = four 8-lane AVX2 registers or two 16-lane AVX-512 registers per
// block: enough independent gathers in flight, and a small padding waste for the last block.
constexpr size_t kBlockSize = 32;

// Scans `nblocks` consecutive blocks.
//   codes:       first block, nblocks * block_stride bytes (block_stride = M * kBlockSize)
//   m:           iterations to accumulate, 1 <= m <= M
//   lut:         lookup table(s); table j starts at lut + j * lut_stride. lut_stride = 0 shares
//                one table for all iterations (shared DRQ codebook); lut_stride = K uses one
//                table per iteration. Every code value must index inside its table.
//   scales:      m floats, the per-iteration factor
//   acc (out):   nblocks * kBlockSize floats, one per vector slot (padding slots included)
using AdcScanFn = void (*)(const uint8_t* codes, size_t nblocks, size_t block_stride, size_t m,
                           const float* lut, size_t lut_stride, const float* scales, float* acc);

void adc_scan_ref(const uint8_t* codes, size_t nblocks, size_t block_stride, size_t m,
                  const float* lut, size_t lut_stride, const float* scales, float* acc);

#if defined(DRQ_HAVE_X86_SIMD)
void adc_scan_avx2(const uint8_t* codes, size_t nblocks, size_t block_stride, size_t m,
                   const float* lut, size_t lut_stride, const float* scales, float* acc);

void adc_scan_avx512(const uint8_t* codes, size_t nblocks, size_t block_stride, size_t m,
                     const float* lut, size_t lut_stride, const float* scales, float* acc);
#endif

// The kernel for a level. The caller must have checked simd_level_supported(level).
AdcScanFn adc_scan_for(SimdLevel level);

// Multi-query scan: the same blocks for nluts queries at once. Each code byte is loaded and
// split into a table index once and then used for every query, which takes the index
// arithmetic (the bottleneck of a one-query scan, see adc_avx2.cpp) off the per-lookup path.
// Per query and lane the operations are exactly those of AdcScanFn, so the results are
// bit-identical to nluts single-query scans.
//   luts:        nluts pointers; query q's table for iteration j starts at luts[q] + j * lut_stride
//   acc (out):   query q's nblocks * kBlockSize sums start at acc + q * acc_stride
using AdcScanQueriesFn = void (*)(const uint8_t* codes, size_t nblocks, size_t block_stride,
                                  size_t m, const float* const* luts, size_t nluts,
                                  size_t lut_stride, const float* scales, float* acc,
                                  size_t acc_stride);

// Queries per multi-query call that the kernels are tuned for: four 8-lane accumulators, the
// eight table indices and four table pointers fit the AVX2 registers. Callers may pass any
// count; larger ones are split into groups of this size inside the kernels.
constexpr size_t kScanQueries = 4;

void adc_scan_queries_ref(const uint8_t* codes, size_t nblocks, size_t block_stride, size_t m,
                          const float* const* luts, size_t nluts, size_t lut_stride,
                          const float* scales, float* acc, size_t acc_stride);

#if defined(DRQ_HAVE_X86_SIMD)
void adc_scan_queries_avx2(const uint8_t* codes, size_t nblocks, size_t block_stride, size_t m,
                           const float* const* luts, size_t nluts, size_t lut_stride,
                           const float* scales, float* acc, size_t acc_stride);

void adc_scan_queries_avx512(const uint8_t* codes, size_t nblocks, size_t block_stride, size_t m,
                             const float* const* luts, size_t nluts, size_t lut_stride,
                             const float* scales, float* acc, size_t acc_stride);
#endif

// The multi-query kernel for a level (same condition as adc_scan_for).
AdcScanQueriesFn adc_scan_queries_for(SimdLevel level);

// Query-interleaved scan with distances: the SIMD lanes run over queries instead of database
// vectors.
//
// The tables of kInterleavedQueries queries are stored entry-major, lut8[c * 8 + q] = entry c
// of query q, so one contiguous 32-byte load fetches code c's value for all 8 queries: one load
// per code byte instead of one load plus one lane insert per (code byte, query), which is what
// limits the vector-lane kernels above (AVX2 has no fast gather on AMD Zen, and assembling a
// vector from scalar loads costs a shuffle per lane). On the Zen 3 development machine (shared,
// 1 thread) this raised Fashion-MNIST search queries/s (k = 100, 60k vectors) 1.7x at 8 bytes,
// 2.5x at 16, 2.9x at 32 and 3.5x at 64 over the multi-query kernel.
//
// Per query and database vector the sum is computed exactly as by AdcScanFn (acc = 0; then
// acc = acc + lut value * scales[j], product and sum rounded separately, j ascending), so it is
// bit-identical to kInterleavedQueries single-query scans. The kernel then turns it into the
// search distance while it is still in registers (the separate pass over every query's sums
// cost as much as the lookups at 8 bytes) and flags the blocks that hold a candidate:
//   L2 (norms given): dist = (qnorms[q] + norms[i]) - 2 * sum, may enter when dist <= bound[q]
//   inner product (norms == nullptr): dist = sum, may enter when dist >= bound[q]
// (the rounding of search.cpp's distance_from_ip and the test of Ranking::may_enter; a NaN bound
// flags nothing).
constexpr size_t kInterleavedQueries = 8;

struct AdcDistanceParams {
    const float* norms;   // nblocks * kBlockSize floats, padding slots included; nullptr: inner product
    const float* qnorms;  // kInterleavedQueries floats (read for L2 only)
    const float* bounds;  // kInterleavedQueries floats: the top-k threshold of each query
};

//   lut8:        interleaved tables (see interleave_tables); table j starts at lut8 + j * lut8_stride
//                (lut8_stride = 0: one table shared by all iterations; else >= K * 8)
//   dist (out):  query q's nblocks * kBlockSize distances start at dist + q * dist_stride, for
//                every q < kInterleavedQueries (queries past the real ones see zero tables)
//   block_masks (out): nblocks bytes; bit q of byte b is set when some slot of block b (padding
//                slots included) may enter for query q
using AdcScanInterleavedFn = void (*)(const uint8_t* codes, size_t nblocks, size_t block_stride,
                                      size_t m, const float* lut8, size_t lut8_stride,
                                      const float* scales, const AdcDistanceParams& params,
                                      float* dist, size_t dist_stride, uint8_t* block_masks);

// Writes the interleaved tables of nluts <= kInterleavedQueries queries.
//   luts:        nluts pointers; query q's table t starts at luts[q] + t * lut_stride, K floats
//   ntables:     tables per query to interleave (1 when lut_stride = 0)
//   lut8 (out):  ntables * K * kInterleavedQueries floats; table t at lut8 + t * K * 8, entry c of
//                query q at [c * 8 + q]; the lanes q >= nluts are zero
void interleave_tables(const float* const* luts, size_t nluts, size_t K, size_t ntables,
                       size_t lut_stride, float* lut8);

void adc_scan_interleaved_ref(const uint8_t* codes, size_t nblocks, size_t block_stride, size_t m,
                              const float* lut8, size_t lut8_stride, const float* scales,
                              const AdcDistanceParams& params, float* dist, size_t dist_stride,
                              uint8_t* block_masks);

#if defined(DRQ_HAVE_X86_SIMD)
void adc_scan_interleaved_avx2(const uint8_t* codes, size_t nblocks, size_t block_stride,
                               size_t m, const float* lut8, size_t lut8_stride,
                               const float* scales, const AdcDistanceParams& params, float* dist,
                               size_t dist_stride, uint8_t* block_masks);
#endif

// The interleaved kernel for a level (same condition as adc_scan_for). The AVX-512 level uses
// the AVX2 kernel: the 8 queries fill one 256-bit row load exactly, and a 512-bit version would
// need a lane insert per pair of rows.
AdcScanInterleavedFn adc_scan_interleaved_for(SimdLevel level);

}  // namespace drq
