// Scalar reference of the fast-scan kernel (fastscan.h): the definition the SIMD kernels must
// match bit for bit.
#include "fastscan.h"

namespace drq {

void fastscan_scan_ref(DRQ_FASTSCAN_ARGS) {
    constexpr size_t kB = 32;
    for (size_t q = 0; q < nq; ++q) {
        const uint8_t* lut = luts + q * lut_stride;
        uint16_t* out = acc + q * acc_stride;
        for (size_t b = 0; b < nblocks; ++b) {
            const uint8_t* block = codes + b * block_stride;
            for (size_t i = 0; i < kB; ++i) {
                unsigned sum = 0;
                for (size_t p = 0; p < nbytes; ++p) {
                    const uint8_t byte = block[p * kB + i];
                    if (shifts != nullptr) sum = (sum << shifts[q * nbytes + p]) & 0xffffu;
                    sum = (sum + lut[32 * p + (byte & 15)] + lut[32 * p + 16 + (byte >> 4)]) & 0xffffu;
                }
                if (extra != nullptr) sum += (unsigned(extra[b * extra_stride + i]) * extra_factors[q]) >> 8;
                out[b * kB + i] = static_cast<uint16_t>(sum < 65535u ? sum : 65535u);
            }
        }
    }
}

void fastscan_filter_ref(const uint16_t* acc, size_t nblocks, uint16_t threshold, uint32_t* masks) {
    for (size_t b = 0; b < nblocks; ++b) {
        uint32_t mask = 0;
        for (size_t i = 0; i < 32; ++i) mask |= uint32_t(acc[32 * b + i] <= threshold) << i;
        masks[b] = mask;
    }
}

}  // namespace drq
