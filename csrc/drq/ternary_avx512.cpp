// AVX-512 (F + BW) ternary kernel: ternary_avx2.cpp with 64-byte chunks. Compiled with
// -mavx512f -mavx512bw; called only when the CPU reports both. No C++ standard library
// templates (see adc.h). Float layers use the AVX2 kernel (ternary.h).
#include <immintrin.h>

#include "ternary.h"

namespace drq {

namespace {

// Each vpmaddubsw lane is at most 2 * 255 = 510; 64 * 510 < 32768 (see ternary_avx2.cpp).
constexpr size_t kChunksPer16BitBlock = 64;
constexpr size_t kRowBlock = 8;

inline int32_t widen_sum(__m512i acc16) {
    return _mm512_reduce_add_epi32(_mm512_madd_epi16(acc16, _mm512_set1_epi16(1)));
}

// See ternary_avx2.cpp: T = sum q * t, P = sum q * max(t, 0), N = P - T.
inline void dot_4_samples(const uint8_t* q, size_t stride, const int8_t* t, size_t nchunks,
                          int32_t* P4, int32_t* N4) {
    for (size_t i = 0; i < 4; ++i) P4[i] = N4[i] = 0;
    const __m512i zero = _mm512_setzero_si512();
    for (size_t c0 = 0; c0 < nchunks; c0 += kChunksPer16BitBlock) {
        const size_t c1 = c0 + kChunksPer16BitBlock < nchunks ? c0 + kChunksPer16BitBlock : nchunks;
        __m512i p0 = zero, p1 = zero, p2 = zero, p3 = zero;
        __m512i d0 = zero, d1 = zero, d2 = zero, d3 = zero;
        for (size_t off = c0 * 64; off < c1 * 64; off += 64) {
            const __m512i wt = _mm512_loadu_si512(t + off);
            const __m512i wp = _mm512_max_epi8(wt, zero);
            const __m512i x0 = _mm512_loadu_si512(q + off);
            const __m512i x1 = _mm512_loadu_si512(q + stride + off);
            const __m512i x2 = _mm512_loadu_si512(q + 2 * stride + off);
            const __m512i x3 = _mm512_loadu_si512(q + 3 * stride + off);
            p0 = _mm512_add_epi16(p0, _mm512_maddubs_epi16(x0, wp));
            d0 = _mm512_add_epi16(d0, _mm512_maddubs_epi16(x0, wt));
            p1 = _mm512_add_epi16(p1, _mm512_maddubs_epi16(x1, wp));
            d1 = _mm512_add_epi16(d1, _mm512_maddubs_epi16(x1, wt));
            p2 = _mm512_add_epi16(p2, _mm512_maddubs_epi16(x2, wp));
            d2 = _mm512_add_epi16(d2, _mm512_maddubs_epi16(x2, wt));
            p3 = _mm512_add_epi16(p3, _mm512_maddubs_epi16(x3, wp));
            d3 = _mm512_add_epi16(d3, _mm512_maddubs_epi16(x3, wt));
        }
        const int32_t s0 = widen_sum(p0), s1 = widen_sum(p1), s2 = widen_sum(p2), s3 = widen_sum(p3);
        P4[0] += s0; P4[1] += s1; P4[2] += s2; P4[3] += s3;
        N4[0] += s0 - widen_sum(d0); N4[1] += s1 - widen_sum(d1);
        N4[2] += s2 - widen_sum(d2); N4[3] += s3 - widen_sum(d3);
    }
}

inline void dot_1_sample(const uint8_t* q, const int8_t* t, size_t nchunks, int32_t* p_out,
                         int32_t* n_out) {
    const __m512i zero = _mm512_setzero_si512();
    int32_t total_p = 0, total_n = 0;
    for (size_t c0 = 0; c0 < nchunks; c0 += kChunksPer16BitBlock) {
        const size_t c1 = c0 + kChunksPer16BitBlock < nchunks ? c0 + kChunksPer16BitBlock : nchunks;
        __m512i p = zero, d = zero;
        for (size_t off = c0 * 64; off < c1 * 64; off += 64) {
            const __m512i x = _mm512_loadu_si512(q + off);
            const __m512i wt = _mm512_loadu_si512(t + off);
            p = _mm512_add_epi16(p, _mm512_maddubs_epi16(x, _mm512_max_epi8(wt, zero)));
            d = _mm512_add_epi16(d, _mm512_maddubs_epi16(x, wt));
        }
        const int32_t sp = widen_sum(p);
        total_p += sp;
        total_n += sp - widen_sum(d);
    }
    *p_out = total_p;
    *n_out = total_n;
}

}  // namespace

void ternary_dot_avx512(const uint8_t* q, size_t nsamples, const int8_t* t, size_t d_out,
                        size_t stride, int32_t* P, int32_t* N) {
    const size_t nchunks = stride / 64;
    for (size_t r0 = 0; r0 < d_out; r0 += kRowBlock) {
        const size_t r1 = r0 + kRowBlock < d_out ? r0 + kRowBlock : d_out;
        size_t s = 0;
        for (; s + 4 <= nsamples; s += 4) {
            for (size_t r = r0; r < r1; ++r) {
                int32_t p4[4], n4[4];
                dot_4_samples(q + s * stride, stride, t + r * stride, nchunks, p4, n4);
                for (size_t i = 0; i < 4; ++i) {
                    P[(s + i) * d_out + r] = p4[i];
                    N[(s + i) * d_out + r] = n4[i];
                }
            }
        }
        for (; s < nsamples; ++s) {
            for (size_t r = r0; r < r1; ++r) {
                dot_1_sample(q + s * stride, t + r * stride, nchunks, &P[s * d_out + r], &N[s * d_out + r]);
            }
        }
    }
}

}  // namespace drq
