// Scalar reference of the encoding dot products (encode_dots.h): the definition the AVX2 kernel
// must match bit for bit (std::fma: one rounding per term, as _mm256_fmadd_ps).
#include <cmath>

#include "encode_dots.h"

namespace drq {

void encode_dots_ref(const float* rows, size_t nrows, const float* codewords, size_t K, size_t d,
                     float* dots) {
    for (size_t i = 0; i < nrows; ++i) {
        const float* x = rows + i * d;
        for (size_t c = 0; c < K; ++c) {
            const float* w = codewords + c * d;
            float lane[8] = {};
            for (size_t k0 = 0; k0 < d; k0 += 8) {
                for (size_t l = 0; l < 8; ++l) {
                    const size_t k = k0 + l;
                    // Past d: 0 * 0, as the masked loads of the AVX2 tail (also keeps a -0 lane's sign the same).
                    lane[l] = k < d ? std::fma(x[k], w[k], lane[l]) : std::fma(0.0f, 0.0f, lane[l]);
                }
            }
            const float a0 = lane[0] + lane[4], a1 = lane[1] + lane[5];
            const float a2 = lane[2] + lane[6], a3 = lane[3] + lane[7];
            dots[i * K + c] = (a0 + a2) + (a1 + a3);
        }
    }
}

}  // namespace drq
