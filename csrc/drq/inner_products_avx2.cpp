// AVX2 + FMA kernel of the row x column products (inner_products.h). Compiled with -mavx2 -mfma.
//
// Register block: 6 rows x 16 columns = 12 accumulators (two 8-lane vectors per row), 2 column
// vectors and 1 broadcast row value: 15 of the 16 ymm registers, 8 loads per 12 FMAs (the inner
// loop is FMA-bound: ~30-40 GFMA/s per Zen 3 core, as OpenBLAS's sgemm on one thread here).
// Called per panel (d x 16 contiguous floats, inner_products.cpp), which stays in L1 or L2 while
// the rows of a work item (at most 64, in L2) stream past it. Columns past K (K % 16 != 0) use
// masked loads and stores.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "inner_products.h"

namespace drq {

namespace {

constexpr size_t kRows = 6;

// NR rows x (NV 8-lane vectors) columns; mask0/mask1 select the valid lanes of each vector.
template <size_t NR, size_t NV, bool Masked>
void tile(const float* rows, size_t row_stride, const float* columns, size_t column_stride, size_t d, float* out,
          size_t out_stride, __m256i mask0, __m256i mask1) {
    static_assert(NR >= 1 && NR <= kRows && (NV == 1 || NV == 2), "tile size");
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00;
    __m256 a30 = a00, a31 = a00, a40 = a00, a41 = a00, a50 = a00, a51 = a00;
    const float* x0 = rows;
    const float* x1 = rows + (NR > 1 ? 1 : 0) * row_stride;
    const float* x2 = rows + (NR > 2 ? 2 : 0) * row_stride;
    const float* x3 = rows + (NR > 3 ? 3 : 0) * row_stride;
    const float* x4 = rows + (NR > 4 ? 4 : 0) * row_stride;
    const float* x5 = rows + (NR > 5 ? 5 : 0) * row_stride;
    for (size_t t = 0; t < d; ++t) {
        const float* w = columns + t * column_stride;
        __m256 w0, w1 = _mm256_setzero_ps();
        if constexpr (Masked) {
            w0 = _mm256_maskload_ps(w, mask0);
            if constexpr (NV > 1) w1 = _mm256_maskload_ps(w + 8, mask1);
        } else {
            w0 = _mm256_loadu_ps(w);
            if constexpr (NV > 1) w1 = _mm256_loadu_ps(w + 8);
        }
        const auto row = [&](const float* x, __m256& b0, __m256& b1) {
            const __m256 v = _mm256_broadcast_ss(x + t);
            b0 = _mm256_fmadd_ps(v, w0, b0);
            if constexpr (NV > 1) b1 = _mm256_fmadd_ps(v, w1, b1);
        };
        row(x0, a00, a01);
        if constexpr (NR > 1) row(x1, a10, a11);
        if constexpr (NR > 2) row(x2, a20, a21);
        if constexpr (NR > 3) row(x3, a30, a31);
        if constexpr (NR > 4) row(x4, a40, a41);
        if constexpr (NR > 5) row(x5, a50, a51);
    }
    const auto store = [&](size_t i, __m256 b0, __m256 b1) {
        float* o = out + i * out_stride;
        if constexpr (Masked) {
            _mm256_maskstore_ps(o, mask0, b0);
            if constexpr (NV > 1) _mm256_maskstore_ps(o + 8, mask1, b1);
        } else {
            _mm256_storeu_ps(o, b0);
            if constexpr (NV > 1) _mm256_storeu_ps(o + 8, b1);
        }
    };
    store(0, a00, a01);
    if constexpr (NR > 1) store(1, a10, a11);
    if constexpr (NR > 2) store(2, a20, a21);
    if constexpr (NR > 3) store(3, a30, a31);
    if constexpr (NR > 4) store(4, a40, a41);
    if constexpr (NR > 5) store(5, a50, a51);
}

template <size_t NV, bool Masked>
void column_block(const float* rows, size_t nrows, size_t row_stride, const float* columns, size_t column_stride,
                  size_t d, float* out, size_t out_stride, __m256i mask0, __m256i mask1) {
    size_t i = 0;
    for (; i + kRows <= nrows; i += kRows) {
        tile<kRows, NV, Masked>(rows + i * row_stride, row_stride, columns, column_stride, d, out + i * out_stride, out_stride,
                                mask0, mask1);
    }
    const float* r = rows + i * row_stride;
    float* o = out + i * out_stride;
    switch (nrows - i) {
        case 5: tile<5, NV, Masked>(r, row_stride, columns, column_stride, d, o, out_stride, mask0, mask1); break;
        case 4: tile<4, NV, Masked>(r, row_stride, columns, column_stride, d, o, out_stride, mask0, mask1); break;
        case 3: tile<3, NV, Masked>(r, row_stride, columns, column_stride, d, o, out_stride, mask0, mask1); break;
        case 2: tile<2, NV, Masked>(r, row_stride, columns, column_stride, d, o, out_stride, mask0, mask1); break;
        case 1: tile<1, NV, Masked>(r, row_stride, columns, column_stride, d, o, out_stride, mask0, mask1); break;
        default: break;
    }
}

__m256i lanes_below(size_t n) {  // lanes l < n set
    alignas(32) int32_t m[8];
    for (size_t l = 0; l < 8; ++l) m[l] = l < n ? -1 : 0;
    return _mm256_load_si256(reinterpret_cast<const __m256i*>(m));
}

}  // namespace

void inner_products_avx2(const float* rows, size_t nrows, size_t row_stride, const float* columns, size_t K,
                         size_t column_stride, size_t d, float* out, size_t out_stride) {
    const __m256i all = _mm256_set1_epi32(-1);
    size_t c = 0;
    for (; c + 16 <= K; c += 16) {
        column_block<2, false>(rows, nrows, row_stride, columns + c, column_stride, d, out + c, out_stride, all, all);
    }
    const size_t left = K - c;
    if (left == 8) {
        column_block<1, false>(rows, nrows, row_stride, columns + c, column_stride, d, out + c, out_stride, all, all);
    } else if (left > 8) {
        column_block<2, true>(rows, nrows, row_stride, columns + c, column_stride, d, out + c, out_stride, all,
                              lanes_below(left - 8));
    } else if (left > 0) {
        column_block<1, true>(rows, nrows, row_stride, columns + c, column_stride, d, out + c, out_stride,
                              lanes_below(left), all);
    }
}

}  // namespace drq
