// Scalar reference ADC kernel. Any CPU runs it; the SIMD kernels are tested against it bit for
// bit.
#include "adc.h"

namespace drq {

void adc_scan_ref(const uint8_t* codes, size_t nblocks, size_t block_stride, size_t m,
                  const float* lut, size_t lut_stride, const float* scales, float* acc) {
    for (size_t b = 0; b < nblocks; ++b) {
        const uint8_t* block = codes + b * block_stride;
        float* out = acc + b * kBlockSize;
        for (size_t i = 0; i < kBlockSize; ++i) out[i] = 0.0f;
        // Iteration-outer, lane-inner: the same per-lane order as the SIMD kernels and a
        // contiguous read of the block.
        for (size_t j = 0; j < m; ++j) {
            const uint8_t* code_row = block + j * kBlockSize;
            const float* table = lut + j * lut_stride;
            const float scale = scales[j];
            for (size_t i = 0; i < kBlockSize; ++i) {
                const float product = table[code_row[i]] * scale;
                out[i] = out[i] + product;
            }
        }
    }
}

// One query after the other: the multi-query kernels must produce exactly these bits.
void adc_scan_queries_ref(const uint8_t* codes, size_t nblocks, size_t block_stride, size_t m,
                          const float* const* luts, size_t nluts, size_t lut_stride,
                          const float* scales, float* acc, size_t acc_stride) {
    for (size_t q = 0; q < nluts; ++q) {
        adc_scan_ref(codes, nblocks, block_stride, m, luts[q], lut_stride, scales,
                     acc + q * acc_stride);
    }
}

}  // namespace drq
