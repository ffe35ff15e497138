// Scalar reference of the per-iteration greedy step (encode_step.h): the definition the AVX2
// kernel must match bit for bit. The core is built with -ffp-contract=off, so a * b + c here is
// two roundings, as the kernel's separate multiply and add.
#include <limits>

#include "encode_step.h"

namespace drq {

size_t encode_step_ref(const float* dots, const float* sq_norms, size_t K, const float* codebook, size_t d,
                       float scale, float* residual, double* xhat, double* norm) {
    const float minus_two_scale = -2.0f * scale;  // exact: a power-of-two multiple
    size_t best = 0;
    float best_score = std::numeric_limits<float>::infinity();
    for (size_t k = 0; k < K; ++k) {
        const float score = dots[k] * minus_two_scale + sq_norms[k];
        if (score < best_score) {
            best_score = score;
            best = k;
        }
    }
    const float* codeword = codebook + best * d;
    double part[8] = {};
    for (size_t j = 0; j < d; ++j) {
        const float step = codeword[j] * scale;
        residual[j] -= step;
        xhat[j] += static_cast<double>(step);
        part[j % 8] += xhat[j] * xhat[j];
    }
    *norm = ((part[0] + part[4]) + (part[2] + part[6])) + ((part[1] + part[5]) + (part[3] + part[7]));
    return best;
}

}  // namespace drq
