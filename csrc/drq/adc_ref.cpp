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

// The interleaved kernels' table layout, for every SIMD level: it runs once per query group and
// search, so plain loops suffice.
void interleave_tables(const float* const* luts, size_t nluts, size_t K, size_t ntables,
                       size_t lut_stride, float* lut8) {
    for (size_t t = 0; t < ntables; ++t) {
        float* out = lut8 + t * K * kInterleavedQueries;
        for (size_t c = 0; c < K; ++c) {
            for (size_t q = 0; q < kInterleavedQueries; ++q) {
                out[c * kInterleavedQueries + q] = q < nluts ? luts[q][t * lut_stride + c] : 0.0f;
            }
        }
    }
}

// Query by query, the order of adc_scan_ref: the interleaved kernels must produce these bits.
void adc_scan_interleaved_ref(const uint8_t* codes, size_t nblocks, size_t block_stride, size_t m,
                              const float* lut8, size_t lut8_stride, const float* scales,
                              const AdcDistanceParams& params, float* dist, size_t dist_stride,
                              uint8_t* block_masks) {
    for (size_t b = 0; b < nblocks; ++b) block_masks[b] = 0;
    for (size_t q = 0; q < kInterleavedQueries; ++q) {
        for (size_t b = 0; b < nblocks; ++b) {
            const uint8_t* block = codes + b * block_stride;
            float* out = dist + q * dist_stride + b * kBlockSize;
            for (size_t i = 0; i < kBlockSize; ++i) out[i] = 0.0f;
            for (size_t j = 0; j < m; ++j) {
                const uint8_t* code_row = block + j * kBlockSize;
                const float* table = lut8 + j * lut8_stride + q;
                const float scale = scales[j];
                for (size_t i = 0; i < kBlockSize; ++i) {
                    const float product = table[code_row[i] * kInterleavedQueries] * scale;
                    out[i] = out[i] + product;
                }
            }
            const float bound = params.bounds[q];
            bool any = false;
            for (size_t i = 0; i < kBlockSize; ++i) {
                if (params.norms != nullptr) {
                    out[i] = (params.qnorms[q] + params.norms[b * kBlockSize + i]) - 2.0f * out[i];
                    any = any || out[i] <= bound;
                } else {
                    any = any || out[i] >= bound;
                }
            }
            if (any) block_masks[b] = static_cast<uint8_t>(block_masks[b] | (1u << q));
        }
    }
}

}  // namespace drq
