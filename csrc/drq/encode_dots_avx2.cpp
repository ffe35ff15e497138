// AVX2 + FMA kernel of the encoding dot products (encode_dots.h). Compiled with -mavx2 -mfma.
//
// Register block: 2 rows x 6 codewords = 12 accumulators (8 lanes over the dimensions), 2 row
// vectors and 1 codeword vector: 15 of the 16 ymm registers, 8 loads per 12 FMAs. Codewords are
// the outer loop so that a group of 6 codewords (18.8 KB at d = 784) stays in L1 while the rows of
// the block stream from L2 past it; each row load then serves 6 FMAs instead of 4 in a 3 x 4
// block (3 x 4 was not measurably different on this shared machine). In isolation it runs at
// ~38-44 GFMA/s on one Zen 3 core (close to the 2 x 8 FMAs per cycle peak); the next group's
// codewords are prefetched while the current one runs, since the codebooks (M * K * d floats)
// come from memory: 26-27 -> 33-35 GFMA/s when streaming the 64 Fashion-MNIST codebooks.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "encode_dots.h"

namespace drq {

namespace {

constexpr size_t kRows = 2;
constexpr size_t kCodewords = 6;

// The reduction order of encode_dots.h: (l, l + 4), then (l, l + 2), then (0, 1).
inline float reduce(__m256 v) {
    const __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 b = _mm_add_ps(a, _mm_movehl_ps(a, a));
    return _mm_cvtss_f32(_mm_add_ss(b, _mm_shuffle_ps(b, b, 1)));
}

// Named accumulators instead of arrays: GCC keeps arrays of __m256 in memory (see
// fastscan_tables_avx2.cpp).
template <size_t NR, size_t NW>
void dots_block(const float* rows, const float* codewords, size_t K, size_t d, __m256i tail_mask,
                float* dots) {
    static_assert(NR >= 1 && NR <= kRows && NW >= 1 && NW <= kCodewords, "block size");
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a04 = a00, a05 = a00;
    __m256 a10 = a00, a11 = a00, a12 = a00, a13 = a00, a14 = a00, a15 = a00;
    const float* r0 = rows;
    const float* r1 = rows + (NR > 1 ? d : 0);
    const float* w0 = codewords;
    const float* w1 = codewords + (NW > 1 ? d : 0);
    const float* w2 = codewords + (NW > 2 ? 2 * d : 0);
    const float* w3 = codewords + (NW > 3 ? 3 * d : 0);
    const float* w4 = codewords + (NW > 4 ? 4 * d : 0);
    const float* w5 = codewords + (NW > 5 ? 5 * d : 0);
    const auto step = [&](__m256 x0, __m256 x1, auto load) {
        const auto column = [&](const float* w, __m256& b0, __m256& b1) {
            __m256 c = load(w);
            // Keeps c in a register: GCC would otherwise fold the load into both FMAs (twice
            // the loads, and the kernel is load-bound then).
            __asm__("" : "+x"(c));
            b0 = _mm256_fmadd_ps(x0, c, b0);
            if constexpr (NR > 1) b1 = _mm256_fmadd_ps(x1, c, b1);
        };
        column(w0, a00, a10);
        if constexpr (NW > 1) column(w1, a01, a11);
        if constexpr (NW > 2) column(w2, a02, a12);
        if constexpr (NW > 3) column(w3, a03, a13);
        if constexpr (NW > 4) column(w4, a04, a14);
        if constexpr (NW > 5) column(w5, a05, a15);
    };
    const size_t full = d & ~size_t{7};
    size_t k = 0;
    for (; k < full; k += 8) {
        const auto load = [k](const float* p) { return _mm256_loadu_ps(p + k); };
        const __m256 x0 = load(r0);
        const __m256 x1 = NR > 1 ? load(r1) : x0;
        step(x0, x1, load);
    }
    if (k < d) {  // masked lanes load 0: fma(0, 0, acc), as the reference
        const auto load = [k, tail_mask](const float* p) { return _mm256_maskload_ps(p + k, tail_mask); };
        const __m256 x0 = load(r0);
        const __m256 x1 = NR > 1 ? load(r1) : x0;
        step(x0, x1, load);
    }
    const auto store = [&](size_t i, __m256 b0, __m256 b1, __m256 b2, __m256 b3, __m256 b4, __m256 b5) {
        float* out = dots + i * K;
        out[0] = reduce(b0);
        if constexpr (NW > 1) out[1] = reduce(b1);
        if constexpr (NW > 2) out[2] = reduce(b2);
        if constexpr (NW > 3) out[3] = reduce(b3);
        if constexpr (NW > 4) out[4] = reduce(b4);
        if constexpr (NW > 5) out[5] = reduce(b5);
    };
    store(0, a00, a01, a02, a03, a04, a05);
    if constexpr (NR > 1) store(1, a10, a11, a12, a13, a14, a15);
}

// next, next_floats: the codewords of the following group, prefetched a few cache lines per
// row block so that they are in cache when their turn comes (the codebooks come from memory:
// M * K * d floats are more than the L3 holds).
template <size_t NW>
void dots_columns(const float* rows, size_t nrows, const float* codewords, size_t K, size_t d,
                  __m256i tail_mask, float* dots, const float* next, size_t next_floats) {
    const size_t blocks = nrows / kRows + 1;
    const size_t floats_per_block = ((next_floats + blocks - 1) / blocks + 15) & ~size_t{15};
    size_t prefetched = 0;
    size_t i = 0;
    for (; i + kRows <= nrows; i += kRows) {
        for (size_t end = std::min(next_floats, prefetched + floats_per_block); prefetched < end; prefetched += 16) {
            _mm_prefetch(reinterpret_cast<const char*>(next + prefetched), _MM_HINT_T0);
        }
        dots_block<kRows, NW>(rows + i * d, codewords, K, d, tail_mask, dots + i * K);
    }
    if (i < nrows) dots_block<1, NW>(rows + i * d, codewords, K, d, tail_mask, dots + i * K);
}

}  // namespace

void encode_dots_avx2(const float* rows, size_t nrows, const float* codewords, size_t K, size_t d,
                      float* dots) {
    alignas(32) int32_t mask[8];
    for (size_t l = 0; l < 8; ++l) mask[l] = l < d % 8 ? -1 : 0;
    const __m256i tail_mask = _mm256_load_si256(reinterpret_cast<const __m256i*>(mask));
    size_t c = 0;
    for (; c + kCodewords <= K; c += kCodewords) {
        const size_t next_floats = std::min(kCodewords, K - c - kCodewords) * d;
        dots_columns<kCodewords>(rows, nrows, codewords + c * d, K, d, tail_mask, dots + c,
                                 codewords + (c + kCodewords) * d, next_floats);
    }
    switch (K - c) {
        case 5: dots_columns<5>(rows, nrows, codewords + c * d, K, d, tail_mask, dots + c, nullptr, 0); break;
        case 4: dots_columns<4>(rows, nrows, codewords + c * d, K, d, tail_mask, dots + c, nullptr, 0); break;
        case 3: dots_columns<3>(rows, nrows, codewords + c * d, K, d, tail_mask, dots + c, nullptr, 0); break;
        case 2: dots_columns<2>(rows, nrows, codewords + c * d, K, d, tail_mask, dots + c, nullptr, 0); break;
        case 1: dots_columns<1>(rows, nrows, codewords + c * d, K, d, tail_mask, dots + c, nullptr, 0); break;
        default: break;
    }
}

}  // namespace drq
