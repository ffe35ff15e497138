// Hamming filter at the AVX2 level. Compiled with -mavx2 -mfma -mpopcnt (every AVX2 CPU has
// POPCNT). No C++ standard library templates (see adc.h).
//
// One-word codes stored contiguously (W == 1, words == 1: codes of <= 64 bits, the common case)
// use a vector popcount: XOR with the query, two pshufb nibble lookups and vpsadbw give 4
// distances per ymm register in 64-bit lanes; two packs bring 16 distances into one register for
// a single vpcmpgtw against the threshold. 16 codes take ~37 vector instructions spread over
// Zen 3's 4 vector pipes (~0.6 cycles per code), where scalar popcnt needs load, xor, and,
// popcnt and a compare per code on the 4 integer pipes (~1.5 cycles per code). Once the
// threshold has dropped almost no block of 16 codes has a passing code, so the append is a
// rarely taken branch. Longer codes keep scalar popcnt (one instruction per 64-bit word; a
// vector count needs a horizontal sum per code).
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

// Popcount of each 64-bit lane of x & mask, with lo_mask = mask & 0x0f.. and hi_mask =
// (mask >> 4) & 0x0f.. (16-bit lane shifts, like the shift of x): per-nibble counts from a
// 16-entry table, summed per lane by vpsadbw against zero. Folding the mask into the nibble
// masks saves an AND per register.
inline __m256i popcount_epi64(__m256i x, __m256i table, __m256i lo_mask, __m256i hi_mask) {
    const __m256i lo = _mm256_and_si256(x, lo_mask);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), hi_mask);
    const __m256i bytes = _mm256_add_epi8(_mm256_shuffle_epi8(table, lo), _mm256_shuffle_epi8(table, hi));
    return _mm256_sad_epu8(bytes, _mm256_setzero_si256());
}

// codes: n words (W == 1). Same contract as hamming_filter_avx2 for the first n codes, except
// that it stops at the last multiple of 16 and returns the codes scanned in *scanned.
size_t filter_one_word(const uint64_t* codes, size_t n, uint64_t query, uint64_t last_mask,
                       uint32_t threshold, uint32_t* pos_out, uint16_t* dist_out, size_t* scanned) {
    const __m256i q = _mm256_set1_epi64x(static_cast<long long>(query));
    const __m256i mask = _mm256_set1_epi64x(static_cast<long long>(last_mask));
    const __m256i low_nibbles = _mm256_set1_epi8(0x0f);
    const __m256i lo_mask = _mm256_and_si256(mask, low_nibbles);
    const __m256i hi_mask = _mm256_and_si256(_mm256_srli_epi16(mask, 4), low_nibbles);
    // Distances of one word are <= 64, so clamping the threshold to 64 changes nothing and makes
    // the signed 16-bit compare exact.
    const __m256i limit = _mm256_set1_epi16(static_cast<short>(threshold < 64 ? threshold : 64));
    const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                           0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    size_t count = 0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256i* c = reinterpret_cast<const __m256i*>(codes + i);
        __m256i d[4];
        for (int j = 0; j < 4; ++j) {
            d[j] = popcount_epi64(_mm256_xor_si256(_mm256_loadu_si256(c + j), q), table, lo_mask, hi_mask);
        }
        // 64-bit lanes -> 16 x 16 bits: one compare for 16 codes (instead of 4 compares and 3 ANDs).
        const __m256i packed = _mm256_packus_epi32(_mm256_packus_epi32(d[0], d[1]), _mm256_packus_epi32(d[2], d[3]));
        const unsigned above = static_cast<unsigned>(_mm256_movemask_epi8(_mm256_cmpgt_epi16(packed, limit)));
        if (above == 0xffffffffu) continue;  // no code of the 16 passes
        // The packs work within 128-bit lanes: lane L holds the 32-bit pairs of codes (0, 1),
        // (4, 5), (8, 9), (12, 13) shifted by 2 L. One permute restores code order, so element e
        // (mask bits 2e, 2e + 1) is code i + e and codes are appended in increasing position.
        const __m256i ordered = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        alignas(32) uint16_t dist[16];
        _mm256_store_si256(reinterpret_cast<__m256i*>(dist), ordered);
        unsigned pass = ~static_cast<unsigned>(_mm256_movemask_epi8(_mm256_cmpgt_epi16(ordered, limit))) & 0x55555555u;
        for (; pass != 0; pass &= pass - 1) {
            const unsigned e = static_cast<unsigned>(__builtin_ctz(pass)) / 2;
            pos_out[count] = static_cast<uint32_t>(i + e);
            dist_out[count] = dist[e];
            ++count;
        }
    }
    *scanned = i;
    return count;
}

}  // namespace

size_t hamming_filter_avx2(const uint64_t* codes, size_t n, size_t W, const uint64_t* query,
                           size_t words, uint64_t last_mask, uint32_t threshold, uint32_t* pos_out,
                           uint16_t* dist_out) {
    size_t count = 0;
    size_t i = 0;
    if (words == 1 && W == 1) {
        count = filter_one_word(codes, n, query[0], last_mask, threshold, pos_out, dist_out, &i);
    } else if (words == 1) {
        // One word read out of several per code: 4 codes per step and one well-predicted branch
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
