// AVX2 fast-scan kernel (fastscan.h). Compiled with -mavx2; runs only when the CPU has AVX2.
//
// Per block and code byte p: one 256-bit load brings byte p of the 32 vectors, split once into
// low and high nibbles; then, for each of the (up to 4) queries, the nibbles index its two
// 16-entry tables (broadcast to both 128-bit lanes) with one _mm256_shuffle_epi8 each.
// Widening the 32 uint8 results for free: viewed as 16 uint16 lanes, lane t holds vector 2t in
// its low byte and 2t + 1 in its high byte. One accumulator adds the lanes whole (low sums plus
// 256 x high sums, mod 2^16), another adds the high bytes (lane >> 8, computed with maddubs); at the end
// even = whole - (high << 8) mod 2^16 is exact because every true sum is below 2^16. The even /
// odd interleave is undone once per block when storing.
// The norm levels (extra) are widened to uint16 once per block for all queries; level * factor >> 8
// is one mulhi of (level << 8) by the factor, added with unsigned saturation (fastscan.h).
#include <immintrin.h>

#include "fastscan.h"
#include "fastscan_x86.h"

namespace drq {

namespace {

inline __m256i table_both_lanes(const uint8_t* table) {
    return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(table)));
}

// The high byte of each uint16 lane (the odd vector's entry) is taken with maddubs by the byte
// weights (0, 1) instead of a shift by 8: the same value (<= 255, no saturation), but on Zen 3 the
// shifts share the two pipes of the shuffles and maddubs does not (kernel alone, 64 x 4 queries
// per tile as the search, 1 thread, shared machine, min of 60: 2.38-2.39 vs 2.46-2.47 cycles per
// query x code byte x block at 63 B, 2.48 vs 2.57 at 15 B; noisier runs showed no difference).
inline void add_lookups(__m256i lo, __m256i hi, const uint8_t* tables, __m256i odd_weights,
                        __m256i& whole, __m256i& high) {
    const __m256i a = _mm256_shuffle_epi8(table_both_lanes(tables), lo);
    const __m256i c = _mm256_shuffle_epi8(table_both_lanes(tables + 16), hi);
    whole = _mm256_add_epi16(whole, _mm256_add_epi16(a, c));
    high = _mm256_add_epi16(high, _mm256_add_epi16(_mm256_maddubs_epi16(a, odd_weights),
                                                   _mm256_maddubs_epi16(c, odd_weights)));
}

inline void split_nibbles(const uint8_t* group, __m256i& lo, __m256i& hi) {
    const __m256i nibble = _mm256_set1_epi8(0x0f);
    const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(group));
    lo = _mm256_and_si256(bytes, nibble);
    hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), nibble);
}

// levels0, levels1: the 32 norm levels of the block as uint16 << 8 (vectors 0..15, 16..31), or
// unused when !with_extra.
inline void store_block(__m256i whole, __m256i high, bool with_extra, __m256i levels0,
                        __m256i levels1, uint16_t factor, uint16_t* out) {
    const __m256i even = _mm256_sub_epi16(whole, _mm256_slli_epi16(high, 8));  // lane t: vector 2t
    // unpack works per 128-bit lane: t0 = vectors 0..7 | 16..23, t1 = 8..15 | 24..31.
    const __m256i t0 = _mm256_unpacklo_epi16(even, high);
    const __m256i t1 = _mm256_unpackhi_epi16(even, high);
    __m256i r0 = _mm256_permute2x128_si256(t0, t1, 0x20);
    __m256i r1 = _mm256_permute2x128_si256(t0, t1, 0x31);
    if (with_extra) {
        const __m256i f = _mm256_set1_epi16(static_cast<short>(factor));
        r0 = _mm256_adds_epu16(r0, _mm256_mulhi_epu16(levels0, f));
        r1 = _mm256_adds_epu16(r1, _mm256_mulhi_epu16(levels1, f));
    }
    __m256i* dst = reinterpret_cast<__m256i*>(out);
    _mm256_storeu_si256(dst, r0);
    _mm256_storeu_si256(dst + 1, r1);
}

// The 32 norm levels of a block as uint16 << 8, in vector order.
inline void widen_levels(const uint8_t* group, __m256i& levels0, __m256i& levels1) {
    levels0 = _mm256_slli_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(group))), 8);
    levels1 = _mm256_slli_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(group + 16))), 8);
}

template <int NQ>
void scan_queries(DRQ_FASTSCAN_ARGS) {
    (void)nq;
    size_t points[kMaxShiftPoints];
    const size_t npoints = shift_points(shifts, nbytes, NQ, points);
    const __m256i odd_weights = _mm256_set1_epi16(0x0100);  // bytes (0, 1): maddubs -> high byte
    for (size_t b = 0; b < nblocks; ++b) {
        const uint8_t* block = codes + b * block_stride;
        // The next block's code bytes (one line per 2 bytes): blocks are code_stride apart, of
        // which a prefix reads only the first 32 nbytes, and the hardware prefetchers did not keep
        // up with that pattern (1 thread, shared machine: 5-8 % less search time at 8 / 16 B).
        if (b + 1 < nblocks) {
            for (size_t off = 0; off < 32 * nbytes; off += 64) {
                _mm_prefetch(reinterpret_cast<const char*>(block + block_stride + off), _MM_HINT_T0);
            }
        }
        __m256i whole[NQ], high[NQ];
        for (int q = 0; q < NQ; ++q) whole[q] = high[q] = _mm256_setzero_si256();
        __m256i lo, hi;
        for (size_t p = 0, s = 0; p < nbytes; ++s) {
            const size_t end = npoints != 0 ? points[s] : p + 1;
            for (; p < end; ++p) {
                split_nibbles(block + 32 * p, lo, hi);
                for (int q = 0; q < NQ; ++q) {
                    add_lookups(lo, hi, luts + q * lut_stride + 32 * p, odd_weights, whole[q], high[q]);
                }
            }
            if (p == nbytes || shifts == nullptr) continue;
            // Horner step before byte p (a count of 0 leaves a query's sums as they are); whole
            // and high both hold sums mod 2^16, so shifting both keeps even = whole - (high << 8) exact.
            for (int q = 0; q < NQ; ++q) {
                const __m128i count = _mm_cvtsi32_si128(shifts[q * nbytes + p]);
                whole[q] = _mm256_sll_epi16(whole[q], count);
                high[q] = _mm256_sll_epi16(high[q], count);
            }
        }
        __m256i levels0 = _mm256_setzero_si256(), levels1 = _mm256_setzero_si256();
        if (extra != nullptr) widen_levels(extra + b * extra_stride, levels0, levels1);
        for (int q = 0; q < NQ; ++q) {
            store_block(whole[q], high[q], extra != nullptr, levels0, levels1,
                        extra != nullptr ? extra_factors[q] : 0, acc + q * acc_stride + 32 * b);
        }
    }
}

}  // namespace

void fastscan_scan_avx2(DRQ_FASTSCAN_ARGS) {
    switch (nq) {
        case 1: return scan_queries<1>(codes, nblocks, block_stride, nbytes, extra, extra_stride, extra_factors, shifts, luts, lut_stride, nq, acc, acc_stride);
        case 2: return scan_queries<2>(codes, nblocks, block_stride, nbytes, extra, extra_stride, extra_factors, shifts, luts, lut_stride, nq, acc, acc_stride);
        case 3: return scan_queries<3>(codes, nblocks, block_stride, nbytes, extra, extra_stride, extra_factors, shifts, luts, lut_stride, nq, acc, acc_stride);
        default: return scan_queries<4>(codes, nblocks, block_stride, nbytes, extra, extra_stride, extra_factors, shifts, luts, lut_stride, nq, acc, acc_stride);
    }
}

// acc <= t as min(acc, t) == acc (AVX2 has no unsigned 16-bit compare); packs works per 128-bit
// lane, so the bytes come out as vectors 0-7, 16-23, 8-15, 24-31 and one qword permute restores
// the order before movemask.
void fastscan_filter_avx2(const uint16_t* acc, size_t nblocks, uint16_t threshold, uint32_t* masks) {
    const __m256i t = _mm256_set1_epi16(static_cast<short>(threshold));
    for (size_t b = 0; b < nblocks; ++b) {
        const __m256i a0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + 32 * b));
        const __m256i a1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + 32 * b + 16));
        const __m256i le0 = _mm256_cmpeq_epi16(_mm256_min_epu16(a0, t), a0);
        const __m256i le1 = _mm256_cmpeq_epi16(_mm256_min_epu16(a1, t), a1);
        const __m256i bytes = _mm256_permute4x64_epi64(_mm256_packs_epi16(le0, le1), 0xD8);
        masks[b] = static_cast<uint32_t>(_mm256_movemask_epi8(bytes));
    }
}

}  // namespace drq
