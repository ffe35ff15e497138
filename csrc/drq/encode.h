// Greedy DRQ encoding with the shared-codebook Gram trick.
//
// For each vector x (given through its dot products with the K codewords, xc = x C^T) and
// M per-iteration scales s:
//     r_0 = x;  b_m = argmin_k ||r_{m-1} - s_m C_k||^2;  r_m = r_{m-1} - s_m C_{b_m}
// Expanding the square, argmin_k s_m^2 G[k,k] - 2 s_m <r_{m-1}, C_k> with G = C C^T, and the
// dot products cur_k = <r, C_k> are updated in O(K) per step: cur_k -= s_m G[b_m, k]. The
// squared norm of the reconstruction xhat_m = sum_{j<=m} s_j C_{b_j} follows the same way:
//     ||xhat_m||^2 = ||xhat_{m-1}||^2 + 2 s_m <xhat_{m-1}, C_b> + s_m^2 G[b,b],
//     <xhat_{m-1}, C_b> = xc[b] - cur_b.
// All of this runs in double precision, so M steps do not accumulate float32 drift. Ties go to
// the smallest codeword index (as numpy.argmin).
#pragma once

#include <cstddef>
#include <cstdint>

#include "parallel.h"

namespace drq {

// xc:     n * K floats, row i = <x_i, C_k> for k < K          (1 <= K <= 256)
// gram:   K * K floats, G = C C^T
// scales: M floats
// codes (out): n * M bytes, codes[i * M + m] = b_{m+1}(i)
// norms (out): n * M floats, norms[i * M + m] = ||xhat_{m+1}(i)||^2
// Runs on up to nthreads threads; throws drq::Interrupted if `interrupt` returns true.
void encode_greedy(size_t n, size_t K, size_t M, const float* xc, const float* gram,
                   const float* scales, uint8_t* codes, float* norms,
                   const InterruptCallback& interrupt, int nthreads);

}  // namespace drq
