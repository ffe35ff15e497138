// Scalar reference of the fast-scan float tables (fastscan_tables.h): the definition the AVX2
// kernel must match bit for bit (std::fma: one rounding per term, as _mm256_fmadd_ps).
#include <cmath>

#include "fastscan_tables.h"

namespace drq {

void fastscan_tables_ref(const float* queries, size_t nq, size_t d, const float* codebooks_t,
                         size_t iters, float* tables, size_t table_stride) {
    for (size_t q = 0; q < nq; ++q) {
        const float* x = queries + q * d;
        for (size_t j = 0; j < iters; ++j) {
            const float* cb = codebooks_t + j * d * 16;
            float acc[16] = {};
            for (size_t k = 0; k < d; ++k) {
                for (size_t c = 0; c < 16; ++c) acc[c] = std::fma(x[k], cb[16 * k + c], acc[c]);
            }
            for (size_t c = 0; c < 16; ++c) tables[q * table_stride + 16 * j + c] = acc[c];
        }
    }
}

}  // namespace drq
