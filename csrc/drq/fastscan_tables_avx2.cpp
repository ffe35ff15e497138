// AVX2 + FMA kernel of the fast-scan float tables (fastscan_tables.h). Compiled with -mavx2 -mfma.
//
// Register block: up to 4 queries x the 16 codewords of one iteration = 8 accumulators of 8
// lanes; per dimension k, 2 loads of the codebook row (64 bytes) and 4 query broadcasts feed 8
// independent FMA chains. (6 queries, 12 chains, measured 2.5x slower with GCC 12: spills.) Iterations are the outer loop so that iteration j's d x 16 codebook
// (50 KB at d = 784) is read from memory once per call and from L2 by the other query blocks.
#include <immintrin.h>

#include "fastscan_tables.h"

namespace drq {

namespace {

template <int NQ>
void tables_block(const float* queries, size_t d, const float* cb, float* out, size_t table_stride) {
    __m256 lo[NQ], hi[NQ];
    for (int q = 0; q < NQ; ++q) lo[q] = hi[q] = _mm256_setzero_ps();
    for (size_t k = 0; k < d; ++k) {
        const __m256 c0 = _mm256_loadu_ps(cb + 16 * k);
        const __m256 c1 = _mm256_loadu_ps(cb + 16 * k + 8);
        for (int q = 0; q < NQ; ++q) {
            const __m256 x = _mm256_broadcast_ss(queries + q * d + k);
            lo[q] = _mm256_fmadd_ps(x, c0, lo[q]);
            hi[q] = _mm256_fmadd_ps(x, c1, hi[q]);
        }
    }
    for (int q = 0; q < NQ; ++q) {
        _mm256_storeu_ps(out + q * table_stride, lo[q]);
        _mm256_storeu_ps(out + q * table_stride + 8, hi[q]);
    }
}

}  // namespace

void fastscan_tables_avx2(const float* queries, size_t nq, size_t d, const float* codebooks_t,
                          size_t iters, float* tables, size_t table_stride) {
    for (size_t j = 0; j < iters; ++j) {
        const float* cb = codebooks_t + j * d * 16;
        for (size_t q0 = 0; q0 < nq; q0 += 4) {
            const float* x = queries + q0 * d;
            float* out = tables + q0 * table_stride + 16 * j;
            switch (nq - q0) {
                case 1: tables_block<1>(x, d, cb, out, table_stride); break;
                case 2: tables_block<2>(x, d, cb, out, table_stride); break;
                case 3: tables_block<3>(x, d, cb, out, table_stride); break;
                default: tables_block<4>(x, d, cb, out, table_stride); break;
            }
        }
    }
}

}  // namespace drq
