// Float code tables of the 4-bit fast scan, computed inside the search's parallel region.
//
// Table j of a query q is q . C_j[c] for the 16 codewords c of iteration j (times the metric's
// factor, folded into the codebooks): nq * iters * 16 * d multiply-adds, the only dense
// arithmetic of a search. It used to be one BLAS matmul per query chunk in Python, which ran
// serially before the scan and, with OpenBLAS threads, left them spinning while the scan's
// workers needed the cores; here each worker computes the tables of its own query group.
//
// Every entry is one chain of fused multiply-adds in dimension order,
//     acc = 0;  for k < d:  acc = fma(queries[q][k], codebooks_t[j][k][c], acc)
// so the scalar reference (std::fma) and the AVX2 kernel (_mm256_fmadd_ps, one lane per entry)
// return the same bits, and search results stay independent of the SIMD level. The AVX2 kernel
// skips dimensions where its queries are 0 (fma(0, c, acc) = acc): the same bits for FINITE
// codebooks only (0 * inf = NaN), which the callers guarantee (set_codebooks, read_index). (AVX-512 CPUs
// use the AVX2 kernel: the work is small next to the scan.)
//
// Codebook layout (codebooks_t): iteration j's 16 x d codebook transposed to d x 16 at
// codebooks_t + j * d * 16, so one 64-byte row holds dimension k of the 16 codewords; a prefix
// of m iterations is the first m * d * 16 floats (truncation needs no other copy).
#pragma once

#include <cstddef>

#include "simd_level.h"

namespace drq {

//   queries:     nq * d (query q at queries + q * d)
//   codebooks_t: iters * d * 16, layout above
//   tables (out): query q's tables at tables + q * table_stride: iters * 16 floats, table j at + 16 j
using FastScanTablesFn = void (*)(const float* queries, size_t nq, size_t d, const float* codebooks_t,
                                  size_t iters, float* tables, size_t table_stride);

void fastscan_tables_ref(const float* queries, size_t nq, size_t d, const float* codebooks_t,
                         size_t iters, float* tables, size_t table_stride);
#if defined(DRQ_HAVE_X86_SIMD)
void fastscan_tables_avx2(const float* queries, size_t nq, size_t d, const float* codebooks_t,
                          size_t iters, float* tables, size_t table_stride);
#endif

// The table kernel for a level (AVX-512 -> AVX2). The caller must have checked simd_level_supported(level).
FastScanTablesFn fastscan_tables_for(SimdLevel level);

}  // namespace drq
