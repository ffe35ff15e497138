// Scalar reference kernels of ternary.h: the definition every SIMD kernel must reproduce exactly.
#include "ternary.h"

namespace drq {

void ternary_dot_ref(const uint8_t* q, size_t nsamples, const int8_t* t, const uint16_t* /*offsets*/,
                     size_t d_out, size_t /*d_in*/, size_t stride, int32_t* P, int32_t* N) {
    for (size_t s = 0; s < nsamples; ++s) {
        const uint8_t* qs = q + s * stride;
        for (size_t r = 0; r < d_out; ++r) {
            const int8_t* tr = t + r * stride;
            int32_t p = 0, n = 0;
            for (size_t j = 0; j < stride; ++j) {
                // Selected additions: the weight's sign picks the sum, no weight multiply.
                p += tr[j] > 0 ? qs[j] : 0;
                n += tr[j] < 0 ? qs[j] : 0;
            }
            P[s * d_out + r] = p;
            N[s * d_out + r] = n;
        }
    }
}

void float_dot_ref(const float* x, size_t nsamples, const float* w, size_t d_out, size_t stride,
                   float* out) {
    for (size_t s = 0; s < nsamples; ++s) {
        const float* xs = x + s * stride;
        for (size_t r = 0; r < d_out; ++r) {
            const float* wr = w + r * stride;
            // The canonical 8-lane order (ternary.h), emulated lane by lane.
            float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (size_t j = 0; j < stride; j += 8) {
                for (size_t l = 0; l < 8; ++l) {
                    const float product = xs[j + l] * wr[j + l];
                    lane[l] = lane[l] + product;
                }
            }
            const float even = (lane[0] + lane[4]) + (lane[2] + lane[6]);
            const float odd = (lane[1] + lane[5]) + (lane[3] + lane[7]);
            out[s * d_out + r] = even + odd;
        }
    }
}

}  // namespace drq
