// Hamming filter with AVX-512 VPOPCNTDQ: 8 codes per instruction, passing codes appended with
// compress-stores. Compiled with -mavx512f -mavx512bw -mavx512vpopcntdq -mpopcnt; used only when
// the CPU has VPOPCNTDQ (see hamming_filter_for). No C++ standard library templates (see adc.h).
#include <immintrin.h>

#include "hamming.h"

namespace drq {

size_t hamming_filter_avx512(const uint64_t* codes, size_t n, size_t W, const uint64_t* query,
                             size_t words, uint64_t last_mask, uint32_t threshold,
                             uint32_t* pos_out, uint16_t* dist_out) {
    size_t count = 0;
    size_t i = 0;
    if (words == 1) {
        const __m512i q = _mm512_set1_epi64(static_cast<long long>(query[0]));
        const __m512i mask = _mm512_set1_epi64(static_cast<long long>(last_mask));
        const __m512i limit = _mm512_set1_epi64(static_cast<long long>(threshold));
        const long long w = static_cast<long long>(W);
        // Offsets of 8 consecutive codes' first words (a plain load when W == 1).
        const __m512i offsets = _mm512_setr_epi64(0, w, 2 * w, 3 * w, 4 * w, 5 * w, 6 * w, 7 * w);
        const __m512i lane = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
        for (; i + 8 <= n; i += 8) {
            const __m512i c = W == 1 ? _mm512_loadu_si512(codes + i)
                                     : _mm512_i64gather_epi64(offsets, codes + i * W, 8);
            const __m512i d = _mm512_popcnt_epi64(_mm512_and_si512(_mm512_xor_si512(c, q), mask));
            const unsigned pass = _mm512_cmple_epu64_mask(d, limit);
            if (pass == 0) continue;
            // Full 8-lane stores of the compressed lanes: count <= i, so they stay inside the
            // n-entry outputs, and the lanes past the passing ones are overwritten later.
            const __m512i pos = _mm512_add_epi64(lane, _mm512_set1_epi64(static_cast<long long>(i)));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(pos_out + count),
                                _mm512_cvtepi64_epi32(_mm512_maskz_compress_epi64(static_cast<__mmask8>(pass), pos)));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(dist_out + count),
                             _mm512_cvtepi64_epi16(_mm512_maskz_compress_epi64(static_cast<__mmask8>(pass), d)));
            count += static_cast<size_t>(__builtin_popcount(pass));
        }
    }
    for (; i < n; ++i) {
        const uint64_t* code = codes + i * W;
        uint64_t d = 0;
        for (size_t v = 0; v + 1 < words; ++v) d += static_cast<uint64_t>(__builtin_popcountll(code[v] ^ query[v]));
        d += static_cast<uint64_t>(__builtin_popcountll((code[words - 1] ^ query[words - 1]) & last_mask));
        pos_out[count] = static_cast<uint32_t>(i);
        dist_out[count] = static_cast<uint16_t>(d);
        count += d <= threshold;
    }
    return count;
}

}  // namespace drq
