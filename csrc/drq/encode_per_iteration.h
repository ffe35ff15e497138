// Greedy encoding with one codebook per iteration (the per-iteration DRQ form, see
// python/drqindex/quantizer.py):
//     r_0 = x;  b_m = argmin_k ||r_{m-1} - s_m C_m[k]||^2;  r_m = r_{m-1} - s_m C_m[k = b_m]
// with argmin_k ||s_m C_m[k]||^2 - 2 s_m <r_{m-1}, C_m[k]> (no Gram trick: every iteration has
// its own codewords, so each step costs K * d multiply-adds per vector, done by encode_dots.h).
//
// The arithmetic follows the numpy encoder it replaces (DRQQuantizer._encode_per_iteration_reference),
// step by step, in float32 (encode_step.h):
//     score_k = (dot_k * (-2 s_m)) + sq_norms[m][k]     (two roundings, no fused multiply-add)
//     b = first k of the smallest score (numpy.argmin)
//     step = C_m[b] * s_m;  r -= step;  xhat += double(step)   (xhat in float64)
//     norms[m] = float(sum_j xhat_j^2 in float64)
// Only the dot products are summed in another order than numpy's BLAS, so a code can differ
// where two scores are within float rounding of each other (on the 60000 Fashion-MNIST IVF
// residuals, M = 64: none did, and the norms were bit-equal). Each vector's result depends only
// on the vector: not on the thread count, the block size or the SIMD level.
#pragma once

#include <cstddef>
#include <cstdint>

#include "parallel.h"
#include "simd_level.h"

namespace drq {

// x:         n * d floats (vector i at x + i * d)
// codebooks: M * K * d floats, iteration m's codeword k at codebooks + (m * K + k) * d  (K <= 256)
// scales:    M floats, s_m
// sq_norms:  M * K floats, ||s_m C_m[k]||^2 (as float32; the caller's rounding is kept)
// codes (out): n * M bytes, codes[i * M + m] = b_{m+1}(i)
// norms (out): n * M floats, norms[i * M + m] = ||xhat_{m+1}(i)||^2
// Runs on up to nthreads threads; throws drq::Interrupted if `interrupt` returns true.
void encode_per_iteration(size_t n, size_t d, size_t K, size_t M, const float* x,
                          const float* codebooks, const float* scales, const float* sq_norms,
                          uint8_t* codes, float* norms, const InterruptCallback& interrupt,
                          int nthreads, SimdLevel level);

}  // namespace drq
