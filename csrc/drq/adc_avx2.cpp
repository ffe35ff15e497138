// AVX2 ADC kernel. Compiled with -mavx2 -mfma; called only when the CPU reports both.
// Deliberately includes no standard library headers with templates (see adc.h).
#include <immintrin.h>

#include "adc.h"

namespace drq {

void adc_scan_avx2(const uint8_t* codes, size_t nblocks, size_t block_stride, size_t m,
                   const float* lut, size_t lut_stride, const float* scales, float* acc) {
    static_assert(kBlockSize == 32, "the AVX2 kernel handles a block as four 8-lane vectors");
    for (size_t b = 0; b < nblocks; ++b) {
        const uint8_t* block = codes + b * block_stride;
        // Four independent accumulators (lanes 0-7, 8-15, 16-23, 24-31): four gathers in flight
        // hide most of the gather latency.
        __m256 acc0 = _mm256_setzero_ps();
        __m256 acc1 = _mm256_setzero_ps();
        __m256 acc2 = _mm256_setzero_ps();
        __m256 acc3 = _mm256_setzero_ps();
        for (size_t j = 0; j < m; ++j) {
            const uint8_t* code_row = block + j * kBlockSize;
            const float* table = lut + j * lut_stride;
            const __m256 scale = _mm256_set1_ps(scales[j]);
            // Widen 8 code bytes to 8 int32 table indices per accumulator.
            const __m128i bytes_lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(code_row));
            const __m128i bytes_hi =
                _mm_loadu_si128(reinterpret_cast<const __m128i*>(code_row + 16));
            const __m256i idx0 = _mm256_cvtepu8_epi32(bytes_lo);
            const __m256i idx1 = _mm256_cvtepu8_epi32(_mm_srli_si128(bytes_lo, 8));
            const __m256i idx2 = _mm256_cvtepu8_epi32(bytes_hi);
            const __m256i idx3 = _mm256_cvtepu8_epi32(_mm_srli_si128(bytes_hi, 8));
            const __m256 val0 = _mm256_i32gather_ps(table, idx0, 4);
            const __m256 val1 = _mm256_i32gather_ps(table, idx1, 4);
            const __m256 val2 = _mm256_i32gather_ps(table, idx2, 4);
            const __m256 val3 = _mm256_i32gather_ps(table, idx3, 4);
            // Separate multiply and add (not FMA): bit-identical to the scalar reference.
            acc0 = _mm256_add_ps(acc0, _mm256_mul_ps(val0, scale));
            acc1 = _mm256_add_ps(acc1, _mm256_mul_ps(val1, scale));
            acc2 = _mm256_add_ps(acc2, _mm256_mul_ps(val2, scale));
            acc3 = _mm256_add_ps(acc3, _mm256_mul_ps(val3, scale));
        }
        float* out = acc + b * kBlockSize;
        _mm256_storeu_ps(out, acc0);
        _mm256_storeu_ps(out + 8, acc1);
        _mm256_storeu_ps(out + 16, acc2);
        _mm256_storeu_ps(out + 24, acc3);
    }
}

}  // namespace drq
