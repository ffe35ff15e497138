// Inner products of many rows with many codewords: the per-iteration query tables (and the
// projection of queries onto a subspace basis) computed by the core's own threads.
//
// Why not BLAS: the look-up tables of an IVF search are computed between the coarse search
// (faiss's OpenMP threads) and the scan (the core's threads); numpy's OpenBLAS threads keep
// spinning after a product and slowed the next coarse search ~2x on 2 cores. The encoder's dot
// kernel (encode_dots.h, ~38-44 GFMA/s per Zen 3 core) does the same arithmetic with threads
// that end with the call. Each dot product has encode_dots.h's fixed evaluation order, so the
// result does not depend on the SIMD level, the thread count or the block size.
#pragma once

#include <cstddef>

#include "parallel.h"
#include "simd_level.h"

namespace drq {

//   rows:      nrows * d (row i at rows + i * d)
//   codewords: K * d (codeword k at codewords + k * d)
//   out:       nrows * K, out[i * K + k] = <row i, codeword k>
void inner_products(const float* rows, size_t nrows, const float* codewords, size_t K, size_t d,
                    float* out, const InterruptCallback& interrupt, int nthreads, SimdLevel level);

}  // namespace drq
