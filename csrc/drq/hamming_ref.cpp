// Scalar reference Hamming filter kernel (portable popcount, no ISA flags).
#include "hamming.h"

namespace drq {

namespace {

// Bit-sliced popcount (no POPCNT instruction needed, any CPU).
inline uint32_t popcount64(uint64_t x) {
    x = x - ((x >> 1) & 0x5555555555555555ULL);
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
    return static_cast<uint32_t>((x * 0x0101010101010101ULL) >> 56);
}

}  // namespace

size_t hamming_filter_ref(const uint64_t* codes, size_t n, size_t W, const uint64_t* query,
                          size_t words, uint64_t last_mask, uint32_t threshold, uint32_t* pos_out,
                          uint16_t* dist_out) {
    size_t count = 0;
    for (size_t i = 0; i < n; ++i) {
        const uint64_t* code = codes + i * W;
        uint32_t d = 0;
        for (size_t w = 0; w + 1 < words; ++w) d += popcount64(code[w] ^ query[w]);
        d += popcount64((code[words - 1] ^ query[words - 1]) & last_mask);
        if (d <= threshold) {
            pos_out[count] = static_cast<uint32_t>(i);
            dist_out[count] = static_cast<uint16_t>(d);
            ++count;
        }
    }
    return count;
}

}  // namespace drq
