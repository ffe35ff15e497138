// Hamming filter with the hardware POPCNT instruction. Compiled with -mavx2 -mfma -mpopcnt (every
// AVX2 CPU has POPCNT); used at the AVX2 level. No C++ standard library templates (see adc.h).
// Scalar popcnt is the right tool here: one instruction per 64-bit word (up to 4 per cycle on
// Zen 3), while a pshufb nibble count needs ~10 vector instructions per 4 words plus a reduction.
#include <immintrin.h>

#include "hamming.h"

namespace drq {

namespace {

inline uint32_t distance(const uint64_t* code, const uint64_t* query, size_t words, uint64_t last_mask) {
    uint64_t d = 0;
    for (size_t w = 0; w + 1 < words; ++w) d += _mm_popcnt_u64(code[w] ^ query[w]);
    d += _mm_popcnt_u64((code[words - 1] ^ query[words - 1]) & last_mask);
    return static_cast<uint32_t>(d);
}

}  // namespace

size_t hamming_filter_avx2(const uint64_t* codes, size_t n, size_t W, const uint64_t* query,
                           size_t words, uint64_t last_mask, uint32_t threshold, uint32_t* pos_out,
                           uint16_t* dist_out) {
    size_t count = 0;
    size_t i = 0;
    if (words == 1) {
        // The common case (<= 64 bits used): 4 codes per step and one well-predicted branch
        // (once the threshold has dropped, almost no code passes).
        const uint64_t q = query[0];
        for (; i + 4 <= n; i += 4) {
            const uint64_t* c = codes + i * W;
            const uint32_t d0 = static_cast<uint32_t>(_mm_popcnt_u64((c[0] ^ q) & last_mask));
            const uint32_t d1 = static_cast<uint32_t>(_mm_popcnt_u64((c[W] ^ q) & last_mask));
            const uint32_t d2 = static_cast<uint32_t>(_mm_popcnt_u64((c[2 * W] ^ q) & last_mask));
            const uint32_t d3 = static_cast<uint32_t>(_mm_popcnt_u64((c[3 * W] ^ q) & last_mask));
            const uint32_t m01 = d0 < d1 ? d0 : d1;
            const uint32_t m23 = d2 < d3 ? d2 : d3;
            if ((m01 < m23 ? m01 : m23) > threshold) continue;
            const uint32_t d[4] = {d0, d1, d2, d3};
            for (size_t j = 0; j < 4; ++j) {
                // Branch-free append.
                pos_out[count] = static_cast<uint32_t>(i + j);
                dist_out[count] = static_cast<uint16_t>(d[j]);
                count += d[j] <= threshold;
            }
        }
    }
    for (; i < n; ++i) {
        const uint32_t d = distance(codes + i * W, query, words, last_mask);
        pos_out[count] = static_cast<uint32_t>(i);
        dist_out[count] = static_cast<uint16_t>(d);
        count += d <= threshold;
    }
    return count;
}

}  // namespace drq
