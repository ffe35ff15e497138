// AVX-512 (F + BW) ternary kernel: ternary_avx2.cpp with 64-byte chunks in the byte kernel. The
// table kernel is the same lut_dot (ternary_lut_x86.h, 256-bit entries of 16 samples) compiled
// with these flags: 512-bit entries of 32 samples would need 32 KB of tables per chunk of 8
// groups of 6, more than the L1 of most AVX-512 cores leaves beside the offset stream (not
// timed on AVX-512 hardware: the development CPU has none). Compiled with -mavx512f -mavx512bw; called only when the
// CPU reports both. No C++ standard library templates (see adc.h). Float layers use the AVX2
// kernel (ternary.h).
#include <immintrin.h>

#include "ternary.h"
#include "ternary_lut_x86.h"

namespace drq {

namespace {

// Each vpmaddubsw lane is at most 2 * 255 = 510; 64 * 510 < 32768 (see ternary_avx2.cpp).
constexpr size_t kChunksPer16BitBlock = 64;

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

void byte_dot(const uint8_t* q, size_t nsamples, const int8_t* t, size_t d_out, size_t stride,
              int32_t* P, int32_t* N) {
    byte_dot_rows(q, nsamples, t, d_out, stride, stride / 64, P, N,
                  [](auto... a) { dot_4_samples(a...); }, [](auto... a) { dot_1_sample(a...); });
}


}  // namespace

void ternary_dot_avx512(const uint8_t* q, size_t nsamples, const int8_t* t, const uint16_t* offsets,
                        size_t d_out, size_t d_in, size_t stride, int32_t* P, int32_t* N) {
    const size_t s = lut_dot(q, nsamples, offsets, d_out, d_in, stride, P, N);
    if (s < nsamples) byte_dot(q + s * stride, nsamples - s, t, d_out, stride, P + s * d_out, N + s * d_out);
}

}  // namespace drq
