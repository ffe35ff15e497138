// One greedy step of per-iteration encoding for one vector, given its dot products with the
// iteration's codewords (encode_dots.h): choose the codeword, update the residual and the float64
// reconstruction, return the reconstruction's squared norm. O(K + d) next to the K * d of the
// dot products, but scalar it took ~15% of the encoding time, hence a SIMD version.
//
// Fixed arithmetic, so that the scalar reference and the AVX2 kernel return the same bits (and
// the same codes and norms as the numpy encoder, python/drqindex/quantizer.py, for equal dots):
//     score_k = (dots[k] * (-2 scale)) + sq_norms[k]      (float32, two roundings, no FMA)
//     best = the first k of the smallest score (numpy.argmin; NaN scores are never chosen)
//     step_j = codebook[best][j] * scale  (float32);  residual_j -= step_j;  xhat_j += double(step_j)
//     norm = sum_j xhat_j^2 in float64 as 8 partial sums part[j % 8] (multiply, then add),
//            combined as ((p0 + p4) + (p2 + p6)) + ((p1 + p5) + (p3 + p7))
#pragma once

#include <cstddef>

#include "simd_level.h"

namespace drq {

//   dots:     K floats, <residual, codeword k>
//   sq_norms: K floats, ||scale * codeword k||^2
//   codebook: K * d floats (codeword k at codebook + k * d)
//   residual: d floats (in/out);  xhat: d doubles (in/out)
//   norm (out): ||xhat||^2 after the step.  Returns best.
using EncodeStepFn = size_t (*)(const float* dots, const float* sq_norms, size_t K, const float* codebook,
                                size_t d, float scale, float* residual, double* xhat, double* norm);

size_t encode_step_ref(const float* dots, const float* sq_norms, size_t K, const float* codebook, size_t d,
                       float scale, float* residual, double* xhat, double* norm);
#if defined(DRQ_HAVE_X86_SIMD)
size_t encode_step_avx2(const float* dots, const float* sq_norms, size_t K, const float* codebook, size_t d,
                        float scale, float* residual, double* xhat, double* norm);
#endif

// The kernel for a level (AVX-512 -> AVX2). The caller must have checked simd_level_supported(level).
EncodeStepFn encode_step_for(SimdLevel level);

}  // namespace drq
