// AVX2 + FMA kernel of the fast-scan float tables (fastscan_tables.h). Compiled with -mavx2 -mfma.
//
// Register block: up to 6 queries x the 16 codewords of one iteration = 12 accumulators of 8
// lanes; per dimension k, 2 loads of the codebook row (64 bytes) and 6 query broadcasts feed 12
// independent FMA chains (more chains than FMA latency x throughput, so the FMA units stay busy:
// 4 queries, 8 chains, measured 1.3-1.5x slower). Iterations are the outer loop so that iteration
// j's d x 16 codebook (50 KB at d = 784) is read from memory once per call and from L2 by the
// other query blocks.
#include <immintrin.h>

#include "fastscan_tables.h"

namespace drq {

namespace {

// Queries per register block: 12 accumulators + 2 codebook halves + 1 broadcast = 15 of the 16 ymm registers.
constexpr int kTableQueries = 6;

// Named accumulators instead of arrays: GCC 12 keeps an array of 5 or more __m256 in memory and
// stores it every iteration (measured 2x slower).
template <int NQ>
void tables_block(const float* queries, size_t d, const float* cb, float* out, size_t table_stride) {
    static_assert(NQ >= 1 && NQ <= kTableQueries, "1..kTableQueries queries");
    __m256 lo0 = _mm256_setzero_ps(), hi0 = lo0, lo1 = lo0, hi1 = lo0, lo2 = lo0, hi2 = lo0;
    __m256 lo3 = lo0, hi3 = lo0, lo4 = lo0, hi4 = lo0, lo5 = lo0, hi5 = lo0;
    for (size_t k = 0; k < d; ++k) {
        const __m256 c0 = _mm256_loadu_ps(cb + 16 * k);
        const __m256 c1 = _mm256_loadu_ps(cb + 16 * k + 8);
        const auto chain = [&](int q, __m256& lo, __m256& hi) {
            const __m256 x = _mm256_broadcast_ss(queries + q * d + k);
            lo = _mm256_fmadd_ps(x, c0, lo);
            hi = _mm256_fmadd_ps(x, c1, hi);
        };
        chain(0, lo0, hi0);
        if constexpr (NQ > 1) chain(1, lo1, hi1);
        if constexpr (NQ > 2) chain(2, lo2, hi2);
        if constexpr (NQ > 3) chain(3, lo3, hi3);
        if constexpr (NQ > 4) chain(4, lo4, hi4);
        if constexpr (NQ > 5) chain(5, lo5, hi5);
    }
    const auto store = [&](int q, __m256 lo, __m256 hi) {
        _mm256_storeu_ps(out + q * table_stride, lo);
        _mm256_storeu_ps(out + q * table_stride + 8, hi);
    };
    store(0, lo0, hi0);
    if constexpr (NQ > 1) store(1, lo1, hi1);
    if constexpr (NQ > 2) store(2, lo2, hi2);
    if constexpr (NQ > 3) store(3, lo3, hi3);
    if constexpr (NQ > 4) store(4, lo4, hi4);
    if constexpr (NQ > 5) store(5, lo5, hi5);
}

}  // namespace

void fastscan_tables_avx2(const float* queries, size_t nq, size_t d, const float* codebooks_t,
                          size_t iters, float* tables, size_t table_stride) {
    for (size_t j = 0; j < iters; ++j) {
        const float* cb = codebooks_t + j * d * 16;
        for (size_t q0 = 0; q0 < nq; q0 += kTableQueries) {
            const float* x = queries + q0 * d;
            float* out = tables + q0 * table_stride + 16 * j;
            switch (nq - q0) {
                case 1: tables_block<1>(x, d, cb, out, table_stride); break;
                case 2: tables_block<2>(x, d, cb, out, table_stride); break;
                case 3: tables_block<3>(x, d, cb, out, table_stride); break;
                case 4: tables_block<4>(x, d, cb, out, table_stride); break;
                case 5: tables_block<5>(x, d, cb, out, table_stride); break;
                default: tables_block<kTableQueries>(x, d, cb, out, table_stride); break;
            }
        }
    }
}

}  // namespace drq
