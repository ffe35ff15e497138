// Products of many rows with a matrix of columns: the per-iteration query tables (and the
// projection of queries onto a subspace basis) computed by the core's own threads.
//
// Why not BLAS: the look-up tables of an IVF search are computed between the coarse search
// (faiss's OpenMP threads) and the scan (the core's threads); numpy's OpenBLAS threads keep
// spinning after a product and slowed the next coarse search ~2x on 2 cores.
//
// Why columns (d x K, the codewords transposed) and not codewords (K x d) as the encoder's dot
// kernel (encode_dots.h): a table entry is then a lane of an 8-wide accumulator, with no
// horizontal reduction per entry; those reductions made the dot kernel run at ~8-14 GFMA/s per
// core for the 64- and 128-dimensional codebooks of a subspace model (vs ~30 here).
//
// One evaluation order, so the result does not depend on the SIMD level, the thread count or
// the blocking:  out[i][k] = fma(rows[i][d-1], columns[d-1][k], ... fma(rows[i][0], columns[0][k], 0)).
#pragma once

#include <cstddef>

#include "parallel.h"
#include "simd_level.h"

namespace drq {

//   rows:    nrows rows of d floats, row i at rows + i * row_stride (row_stride >= d)
//   columns: d rows of K floats, columns[t * column_stride + k] (column_stride >= K)
//   out:     nrows rows of K floats, out[i * out_stride + k] = sum_t rows[i][t] * columns[t][k]
//            (the order above; out_stride >= K: tables of several iterations written in place)
void inner_products(const float* rows, size_t nrows, size_t row_stride, const float* columns, size_t K,
                    size_t column_stride, size_t d, float* out, size_t out_stride,
                    const InterruptCallback& interrupt, int nthreads, SimdLevel level);

// Columns packed in panels of kInnerProductsPanel: panel p holds columns p * 16 .. p * 16 + 15 as
// d rows of 16 contiguous floats (panels * d * 16 floats; the last panel zero-padded past K).
// inner_products packs strided columns itself for each call of 16 rows or more; a caller that
// reuses the same columns (the query tables of a model) packs them once with pack_panels and
// calls inner_products_packed, whose K is npanels * 16 (prefixes of whole panels are valid).
constexpr size_t kInnerProductsPanel = 16;
//   columns: as above; panels (out): ceil(K / 16) * d * 16 floats
void pack_panels(const float* columns, size_t K, size_t column_stride, size_t d, float* panels);
//   panels: npanels * d * 16 floats; out: nrows rows of npanels * 16 floats, out_stride apart
void inner_products_packed(const float* rows, size_t nrows, size_t row_stride, const float* panels, size_t npanels,
                           size_t d, float* out, size_t out_stride, const InterruptCallback& interrupt, int nthreads,
                           SimdLevel level);

// One block of rows, single-threaded (same arguments as above):
// the scalar reference and the AVX2 kernel, which must agree bit for bit.
using InnerProductsFn = void (*)(const float* rows, size_t nrows, size_t row_stride, const float* columns,
                                 size_t K, size_t column_stride, size_t d, float* out, size_t out_stride);
void inner_products_ref(const float* rows, size_t nrows, size_t row_stride, const float* columns, size_t K,
                        size_t column_stride, size_t d, float* out, size_t out_stride);
#if defined(DRQ_HAVE_X86_SIMD)
void inner_products_avx2(const float* rows, size_t nrows, size_t row_stride, const float* columns, size_t K,
                         size_t column_stride, size_t d, float* out, size_t out_stride);
#endif

}  // namespace drq
