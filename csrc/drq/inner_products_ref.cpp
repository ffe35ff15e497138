// Scalar reference of the row x column products (inner_products.h): the definition the AVX2
// kernel must match bit for bit (std::fma: one rounding per term, as _mm256_fmadd_ps).
#include <cmath>

#include "inner_products.h"

namespace drq {

void inner_products_ref(const float* rows, size_t nrows, size_t row_stride, const float* columns, size_t K,
                        size_t column_stride, size_t d, float* out, size_t out_stride) {
    for (size_t i = 0; i < nrows; ++i) {
        const float* x = rows + i * row_stride;
        float* o = out + i * out_stride;
        for (size_t k = 0; k < K; ++k) o[k] = 0.0f;
        for (size_t t = 0; t < d; ++t) {
            const float* w = columns + t * column_stride;
            for (size_t k = 0; k < K; ++k) o[k] = std::fma(x[t], w[k], o[k]);
        }
    }
}

}  // namespace drq
