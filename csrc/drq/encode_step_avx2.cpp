// AVX2 kernel of the per-iteration greedy step (encode_step.h). Compiled with -mavx2 -mfma; no
// FMA is used: the step's float arithmetic is defined with separate roundings.
#include <immintrin.h>

#include <cstdint>
#include <limits>

#include "encode_step.h"

namespace drq {

size_t encode_step_avx2(const float* dots, const float* sq_norms, size_t K, const float* codebook, size_t d,
                        float scale, float* residual, double* xhat, double* norm) {
    const float minus_two_scale = -2.0f * scale;
    // Per lane: the smallest score and its first index (strict <, indices increase); then the
    // smallest over the lanes, ties to the smaller index: the first k of the smallest score.
    const __m256 m2s = _mm256_set1_ps(minus_two_scale);
    __m256 best_v = _mm256_set1_ps(std::numeric_limits<float>::infinity());
    __m256i best_i = _mm256_setzero_si256();
    __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i eight = _mm256_set1_epi32(8);
    size_t k = 0;
    for (; k + 8 <= K; k += 8) {
        const __m256 score = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(dots + k), m2s),
                                           _mm256_loadu_ps(sq_norms + k));
        const __m256 less = _mm256_cmp_ps(score, best_v, _CMP_LT_OQ);
        best_v = _mm256_blendv_ps(best_v, score, less);
        best_i = _mm256_blendv_epi8(best_i, index, _mm256_castps_si256(less));
        index = _mm256_add_epi32(index, eight);
    }
    alignas(32) float lane_v[8];
    alignas(32) int32_t lane_i[8];
    _mm256_store_ps(lane_v, best_v);
    _mm256_store_si256(reinterpret_cast<__m256i*>(lane_i), best_i);
    size_t best = 0;
    float best_score = std::numeric_limits<float>::infinity();
    for (int l = 0; l < 8; ++l) {
        const size_t i = static_cast<size_t>(lane_i[l]);
        if (lane_v[l] < best_score || (lane_v[l] == best_score && i < best)) {
            best_score = lane_v[l];
            best = i;
        }
    }
    for (; k < K; ++k) {  // later indices: strictly smaller only
        const float score = dots[k] * minus_two_scale + sq_norms[k];
        if (score < best_score) {
            best_score = score;
            best = k;
        }
    }

    const float* codeword = codebook + best * d;
    const __m256 s = _mm256_set1_ps(scale);
    __m256d part_lo = _mm256_setzero_pd();  // part[0..3]
    __m256d part_hi = _mm256_setzero_pd();  // part[4..7]
    size_t j = 0;
    for (; j + 8 <= d; j += 8) {
        const __m256 step = _mm256_mul_ps(_mm256_loadu_ps(codeword + j), s);
        _mm256_storeu_ps(residual + j, _mm256_sub_ps(_mm256_loadu_ps(residual + j), step));
        const __m256d lo = _mm256_add_pd(_mm256_loadu_pd(xhat + j), _mm256_cvtps_pd(_mm256_castps256_ps128(step)));
        const __m256d hi = _mm256_add_pd(_mm256_loadu_pd(xhat + j + 4), _mm256_cvtps_pd(_mm256_extractf128_ps(step, 1)));
        _mm256_storeu_pd(xhat + j, lo);
        _mm256_storeu_pd(xhat + j + 4, hi);
        part_lo = _mm256_add_pd(part_lo, _mm256_mul_pd(lo, lo));
        part_hi = _mm256_add_pd(part_hi, _mm256_mul_pd(hi, hi));
    }
    alignas(32) double part[8];
    _mm256_store_pd(part, part_lo);
    _mm256_store_pd(part + 4, part_hi);
    for (; j < d; ++j) {
        const float step = codeword[j] * scale;
        residual[j] -= step;
        xhat[j] += static_cast<double>(step);
        part[j % 8] += xhat[j] * xhat[j];
    }
    *norm = ((part[0] + part[4]) + (part[2] + part[6])) + ((part[1] + part[5]) + (part[3] + part[7]));
    return best;
}

}  // namespace drq
