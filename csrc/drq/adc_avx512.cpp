// AVX-512 ADC kernel. Compiled with -mavx512f -mavx512bw; called only when the CPU reports both.
// Deliberately includes no standard library headers with templates (see adc.h).
// GCC 12 warns "may be used uninitialized" inside its own _mm512_cvtepu8_epi32 and
// _mm512_i32gather_ps (their deliberately undefined pass-through operand; GCC bug 105593,
// fixed in GCC 13). Silenced for this file only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "adc.h"

namespace drq {

namespace {

// One iteration j of one block: two 16-lane halves.
inline void accumulate_block_row(const uint8_t* code_row, const float* table, __m512 scale,
                                 __m512& acc_lo, __m512& acc_hi) {
    // 16 code bytes widened to 16 int32 indices per half.
    const __m512i idx_lo =
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(code_row)));
    const __m512i idx_hi =
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(code_row + 16)));
    const __m512 val_lo = _mm512_i32gather_ps(idx_lo, table, 4);
    const __m512 val_hi = _mm512_i32gather_ps(idx_hi, table, 4);
    // Separate multiply and add (not FMA): bit-identical to the scalar reference.
    acc_lo = _mm512_add_ps(acc_lo, _mm512_mul_ps(val_lo, scale));
    acc_hi = _mm512_add_ps(acc_hi, _mm512_mul_ps(val_hi, scale));
}

}  // namespace

void adc_scan_avx512(const uint8_t* codes, size_t nblocks, size_t block_stride, size_t m,
                     const float* lut, size_t lut_stride, const float* scales, float* acc) {
    static_assert(kBlockSize == 32, "the AVX-512 kernel handles a block as two 16-lane vectors");
    size_t b = 0;
    // Two blocks at a time: four independent gathers in flight, as in the AVX2 kernel.
    for (; b + 2 <= nblocks; b += 2) {
        const uint8_t* block0 = codes + b * block_stride;
        const uint8_t* block1 = block0 + block_stride;
        __m512 acc0_lo = _mm512_setzero_ps();
        __m512 acc0_hi = _mm512_setzero_ps();
        __m512 acc1_lo = _mm512_setzero_ps();
        __m512 acc1_hi = _mm512_setzero_ps();
        for (size_t j = 0; j < m; ++j) {
            const float* table = lut + j * lut_stride;
            const __m512 scale = _mm512_set1_ps(scales[j]);
            accumulate_block_row(block0 + j * kBlockSize, table, scale, acc0_lo, acc0_hi);
            accumulate_block_row(block1 + j * kBlockSize, table, scale, acc1_lo, acc1_hi);
        }
        float* out = acc + b * kBlockSize;
        _mm512_storeu_ps(out, acc0_lo);
        _mm512_storeu_ps(out + 16, acc0_hi);
        _mm512_storeu_ps(out + 32, acc1_lo);
        _mm512_storeu_ps(out + 48, acc1_hi);
    }
    if (b < nblocks) {
        const uint8_t* block = codes + b * block_stride;
        __m512 acc_lo = _mm512_setzero_ps();
        __m512 acc_hi = _mm512_setzero_ps();
        for (size_t j = 0; j < m; ++j) {
            accumulate_block_row(block + j * kBlockSize, lut + j * lut_stride,
                                 _mm512_set1_ps(scales[j]), acc_lo, acc_hi);
        }
        float* out = acc + b * kBlockSize;
        _mm512_storeu_ps(out, acc_lo);
        _mm512_storeu_ps(out + 16, acc_hi);
    }
}

namespace {

// Asks for the first m rows of a block ahead of use (see prefetch_prefix in adc_avx2.cpp).
inline void prefetch_prefix(const uint8_t* block, size_t m) {
    for (size_t offset = 0; offset < m * kBlockSize; offset += 64) __builtin_prefetch(block + offset);
}

// Q queries over every block, one 16-lane half at a time: the 16 code bytes are widened to
// indices once and gathered from the tables of all Q queries.
template <int Q>
void scan_queries_fixed(const uint8_t* codes, size_t nblocks, size_t block_stride, size_t m,
                        const float* const* luts, size_t lut_stride, const float* scales,
                        float* acc, size_t acc_stride) {
    for (size_t b = 0; b < nblocks; ++b) {
        const uint8_t* block = codes + b * block_stride;
        if (b + 2 < nblocks) prefetch_prefix(block + 2 * block_stride, m);
        for (size_t lane0 = 0; lane0 < kBlockSize; lane0 += 16) {
            __m512 sum[Q];
            for (int q = 0; q < Q; ++q) sum[q] = _mm512_setzero_ps();
            for (size_t j = 0; j < m; ++j) {
                const __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(
                    reinterpret_cast<const __m128i*>(block + j * kBlockSize + lane0)));
                const __m512 scale = _mm512_set1_ps(scales[j]);
                for (int q = 0; q < Q; ++q) {
                    const __m512 val = _mm512_i32gather_ps(idx, luts[q] + j * lut_stride, 4);
                    // Separate multiply and add (not FMA): bit-identical to the reference.
                    sum[q] = _mm512_add_ps(sum[q], _mm512_mul_ps(val, scale));
                }
            }
            for (int q = 0; q < Q; ++q) {
                _mm512_storeu_ps(acc + q * acc_stride + b * kBlockSize + lane0, sum[q]);
            }
        }
    }
}

}  // namespace

void adc_scan_queries_avx512(const uint8_t* codes, size_t nblocks, size_t block_stride, size_t m,
                             const float* const* luts, size_t nluts, size_t lut_stride,
                             const float* scales, float* acc, size_t acc_stride) {
    size_t q = 0;
    for (; q + 4 <= nluts; q += 4) {
        scan_queries_fixed<4>(codes, nblocks, block_stride, m, luts + q, lut_stride, scales,
                              acc + q * acc_stride, acc_stride);
    }
    switch (nluts - q) {
        case 3:
            scan_queries_fixed<3>(codes, nblocks, block_stride, m, luts + q, lut_stride, scales,
                                  acc + q * acc_stride, acc_stride);
            break;
        case 2:
            scan_queries_fixed<2>(codes, nblocks, block_stride, m, luts + q, lut_stride, scales,
                                  acc + q * acc_stride, acc_stride);
            break;
        case 1:
            adc_scan_avx512(codes, nblocks, block_stride, m, luts[q], lut_stride, scales,
                            acc + q * acc_stride);
            break;
        default:
            break;
    }
}

}  // namespace drq
