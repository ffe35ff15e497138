// AVX-512 (F + BW) fast-scan kernel (fastscan.h). Compiled with -mavx512f -mavx512bw; runs only
// when the CPU has both.
//
// Two blocks per 512-bit register: byte p of block b goes to the low 256 bits, byte p of block
// b + 1 to the high 256 bits (the blocks are not adjacent in memory at equal p, so two loads and
// an insert). Both halves use the same tables, broadcast to all four 128-bit lanes, so each
// shuffle serves 64 vectors. Up to 4 queries share each load and nibble split; accumulation as
// in the AVX2 kernel (whole uint16 lanes mod 2^16 plus high bytes); an odd last block takes the
// 256-bit path. Norm levels (extra): one block's 32 levels widen to one 512-bit register of
// uint16 << 8; level * factor >> 8 is a mulhi by the factor, added with unsigned saturation.
// GCC 12's avx512fintrin.h implements unmasked intrinsics (inserti64x4, broadcast_i32x4, ...)
// through masked builtins with an undefined pass-through operand, which -Wmaybe-uninitialized
// reports once inlined here: a false positive in the compiler's header, silenced for this file.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "fastscan.h"
#include "fastscan_x86.h"

namespace drq {

namespace {

// The four 128-bit lanes all equal to the 16-byte table at `table`.
inline __m512i table_all_lanes(const uint8_t* table) {
    return _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(table)));
}

inline void split_nibbles_x2(const uint8_t* group0, const uint8_t* group1, __m512i& lo, __m512i& hi) {
    const __m512i nibble = _mm512_set1_epi32(0x0f0f0f0f);
    const __m512i bytes = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(group0))),
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(group1)), 1);
    lo = _mm512_and_si512(bytes, nibble);
    hi = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), nibble);
}

inline void add_lookups_x2(__m512i lo, __m512i hi, const uint8_t* tables, __m512i& whole, __m512i& high) {
    const __m512i a = _mm512_shuffle_epi8(table_all_lanes(tables), lo);
    const __m512i c = _mm512_shuffle_epi8(table_all_lanes(tables + 16), hi);
    whole = _mm512_add_epi16(whole, _mm512_add_epi16(a, c));
    high = _mm512_add_epi16(high, _mm512_add_epi16(_mm512_srli_epi16(a, 8), _mm512_srli_epi16(c, 8)));
}

inline void split_nibbles_x1(const uint8_t* group, __m256i& lo, __m256i& hi) {
    const __m256i nibble = _mm256_set1_epi32(0x0f0f0f0f);
    const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(group));
    lo = _mm256_and_si256(bytes, nibble);
    hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), nibble);
}

inline void add_lookups_x1(__m256i lo, __m256i hi, const uint8_t* tables, __m256i& whole, __m256i& high) {
    const __m256i ta = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tables)));
    const __m256i tc = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tables + 16)));
    const __m256i a = _mm256_shuffle_epi8(ta, lo);
    const __m256i c = _mm256_shuffle_epi8(tc, hi);
    whole = _mm256_add_epi16(whole, _mm256_add_epi16(a, c));
    high = _mm256_add_epi16(high, _mm256_add_epi16(_mm256_srli_epi16(a, 8), _mm256_srli_epi16(c, 8)));
}

// The 32 norm levels of a block as uint16 << 8, in vector order.
inline __m512i widen_levels(const uint8_t* group) {
    return _mm512_slli_epi16(_mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(group))), 8);
}

template <int NQ>
void scan_queries(DRQ_FASTSCAN_ARGS) {
    (void)nq;
    size_t points[kMaxShiftPoints];
    const size_t npoints = shift_points(shifts, nbytes, NQ, points);
    // Qword indices that turn (unpacklo, unpackhi) of the even / odd lanes back into vector
    // order: 128-bit lane L of unpacklo holds 8 consecutive vectors, as in the AVX2 kernel.
    const __m512i first = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0);
    const __m512i second = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
    size_t b = 0;
    for (; b + 2 <= nblocks; b += 2) {
        const uint8_t* block0 = codes + b * block_stride;
        const uint8_t* block1 = block0 + block_stride;
        // Next pair's code bytes, as in the AVX2 kernel (untimed here: no AVX-512 CPU at hand).
        if (b + 4 <= nblocks) {
            for (size_t off = 0; off < 32 * nbytes; off += 64) {
                _mm_prefetch(reinterpret_cast<const char*>(block0 + 2 * block_stride + off), _MM_HINT_T0);
                _mm_prefetch(reinterpret_cast<const char*>(block0 + 3 * block_stride + off), _MM_HINT_T0);
            }
        }
        __m512i whole[NQ], high[NQ];
        for (int q = 0; q < NQ; ++q) whole[q] = high[q] = _mm512_setzero_si512();
        __m512i lo, hi;
        // Bytes between two shift points without a shift test, as in the AVX2 kernel.
        for (size_t p = 0, s = 0; p < nbytes; ++s) {
            const size_t end = npoints != 0 ? points[s] : p + 1;
            for (; p < end; ++p) {
                split_nibbles_x2(block0 + 32 * p, block1 + 32 * p, lo, hi);
                for (int q = 0; q < NQ; ++q) add_lookups_x2(lo, hi, luts + q * lut_stride + 32 * p, whole[q], high[q]);
            }
            if (p == nbytes || shifts == nullptr) continue;
            // Horner step before byte p (fastscan.h; a count of 0 changes nothing).
            for (int q = 0; q < NQ; ++q) {
                const __m128i count = _mm_cvtsi32_si128(shifts[q * nbytes + p]);
                whole[q] = _mm512_sll_epi16(whole[q], count);
                high[q] = _mm512_sll_epi16(high[q], count);
            }
        }
        __m512i levels0 = _mm512_setzero_si512(), levels1 = _mm512_setzero_si512();
        if (extra != nullptr) {
            levels0 = widen_levels(extra + b * extra_stride);
            levels1 = widen_levels(extra + (b + 1) * extra_stride);
        }
        for (int q = 0; q < NQ; ++q) {
            const __m512i even = _mm512_sub_epi16(whole[q], _mm512_slli_epi16(high[q], 8));
            const __m512i t0 = _mm512_unpacklo_epi16(even, high[q]);
            const __m512i t1 = _mm512_unpackhi_epi16(even, high[q]);
            __m512i r0 = _mm512_permutex2var_epi64(t0, first, t1);
            __m512i r1 = _mm512_permutex2var_epi64(t0, second, t1);
            if (extra != nullptr) {
                const __m512i f = _mm512_set1_epi16(static_cast<short>(extra_factors[q]));
                r0 = _mm512_adds_epu16(r0, _mm512_mulhi_epu16(levels0, f));
                r1 = _mm512_adds_epu16(r1, _mm512_mulhi_epu16(levels1, f));
            }
            uint16_t* out = acc + q * acc_stride + 32 * b;
            _mm512_storeu_si512(out, r0);
            _mm512_storeu_si512(out + 32, r1);
        }
    }
    if (b < nblocks) {
        const uint8_t* block = codes + b * block_stride;
        __m256i whole[NQ], high[NQ];
        for (int q = 0; q < NQ; ++q) whole[q] = high[q] = _mm256_setzero_si256();
        __m256i lo, hi;
        for (size_t p = 0; p < nbytes; ++p) {
            split_nibbles_x1(block + 32 * p, lo, hi);
            for (int q = 0; q < NQ; ++q) {
                if (shifts != nullptr && shifts[q * nbytes + p] != 0) {
                    const __m128i count = _mm_cvtsi32_si128(shifts[q * nbytes + p]);
                    whole[q] = _mm256_sll_epi16(whole[q], count);
                    high[q] = _mm256_sll_epi16(high[q], count);
                }
                add_lookups_x1(lo, hi, luts + q * lut_stride + 32 * p, whole[q], high[q]);
            }
        }
        const __m512i levels = extra != nullptr ? widen_levels(extra + b * extra_stride) : _mm512_setzero_si512();
        for (int q = 0; q < NQ; ++q) {
            const __m256i even = _mm256_sub_epi16(whole[q], _mm256_slli_epi16(high[q], 8));
            const __m256i t0 = _mm256_unpacklo_epi16(even, high[q]);
            const __m256i t1 = _mm256_unpackhi_epi16(even, high[q]);
            // One block = 32 uint16 = one 512-bit register in vector order.
            __m512i r = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_permute2x128_si256(t0, t1, 0x20)),
                                           _mm256_permute2x128_si256(t0, t1, 0x31), 1);
            if (extra != nullptr) {
                r = _mm512_adds_epu16(r, _mm512_mulhi_epu16(levels, _mm512_set1_epi16(static_cast<short>(extra_factors[q]))));
            }
            _mm512_storeu_si512(acc + q * acc_stride + 32 * b, r);
        }
    }
}

}  // namespace

void fastscan_scan_avx512(DRQ_FASTSCAN_ARGS) {
    switch (nq) {
        case 1: return scan_queries<1>(codes, nblocks, block_stride, nbytes, extra, extra_stride, extra_factors, shifts, luts, lut_stride, nq, acc, acc_stride);
        case 2: return scan_queries<2>(codes, nblocks, block_stride, nbytes, extra, extra_stride, extra_factors, shifts, luts, lut_stride, nq, acc, acc_stride);
        case 3: return scan_queries<3>(codes, nblocks, block_stride, nbytes, extra, extra_stride, extra_factors, shifts, luts, lut_stride, nq, acc, acc_stride);
        default: return scan_queries<4>(codes, nblocks, block_stride, nbytes, extra, extra_stride, extra_factors, shifts, luts, lut_stride, nq, acc, acc_stride);
    }
}

void fastscan_filter_avx512(const uint16_t* acc, size_t nblocks, uint16_t threshold, uint32_t* masks) {
    const __m512i t = _mm512_set1_epi16(static_cast<short>(threshold));
    for (size_t b = 0; b < nblocks; ++b) {
        masks[b] = static_cast<uint32_t>(_mm512_cmple_epu16_mask(_mm512_loadu_si512(acc + 32 * b), t));
    }
}

}  // namespace drq
