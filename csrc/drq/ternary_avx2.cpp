// AVX2 encoder kernels. Compiled with -mavx2 -mfma; called only when the CPU reports both.
// Deliberately includes no C++ standard library templates (see adc.h).
//
// Ternary sums, look-up tables (ternary.h; the kernel is lut_dot in ternary_lut_x86.h): tiles of
// 16 samples (one register per table entry); per chunk of 8 groups of 6 inputs the tile's
// activations are transposed to one lane per sample and each group's 64 subset sums are built
// (64 stores per group, shared by all d_out rows); then each row adds one table entry per group
// and sign into int16 lanes, widened to int32 every fifth chunk.
//
// Ternary sums, byte products (tiles of fewer than kLutMinSamples samples, where a table tile
// would be mostly padding): vpmaddubsw(q, t) adds pairs of sign-selected activation bytes into
// 16-bit lanes (t in {-1, 0, +1}: a selected addition or subtraction, 32 bytes per instruction),
// giving T = P - N; vpmaddubsw(q, max(t, 0)) gives P. Four samples share each weight load
// (register blocking) and 8 output rows share each quantised sample while it is in L1.
#include <immintrin.h>

#include "ternary.h"
#include "ternary_lut_x86.h"

namespace drq {

namespace {

// 32-byte chunks accumulated in 16-bit lanes before widening: each vpmaddubsw lane is at most
// 2 * 255 = 510, and 64 * 510 = 32640 < 32768.
constexpr size_t kChunksPer16BitBlock = 64;

// Sums of the 8 int32 lanes of a0..a3 into the 4 lanes of the result (a0's sum in lane 0).
inline __m128i hsum4_epi32(__m256i a0, __m256i a1, __m256i a2, __m256i a3) {
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(a0, a1), _mm256_hadd_epi32(a2, a3));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

// P and N of samples q0..q3 (rows of `stride` bytes) over chunks [c0, c1) of one weight row,
// at most kChunksPer16BitBlock chunks: the 16-bit lanes cannot overflow. Adds to P4 / N4.
inline void dot_4_samples_block(const uint8_t* q, size_t stride, const int8_t* t, size_t c0, size_t c1,
                                int32_t* P4, int32_t* N4) {
    const __m256i zero = _mm256_setzero_si256();
    __m256i p0 = zero, p1 = zero, p2 = zero, p3 = zero;
    __m256i d0 = zero, d1 = zero, d2 = zero, d3 = zero;  // T = P - N
    for (size_t off = c0 * 32; off < c1 * 32; off += 32) {
        const __m256i wt = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t + off));
        const __m256i wp = _mm256_max_epi8(wt, zero);
        __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + off));
        p0 = _mm256_add_epi16(p0, _mm256_maddubs_epi16(x, wp));
        d0 = _mm256_add_epi16(d0, _mm256_maddubs_epi16(x, wt));
        x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + stride + off));
        p1 = _mm256_add_epi16(p1, _mm256_maddubs_epi16(x, wp));
        d1 = _mm256_add_epi16(d1, _mm256_maddubs_epi16(x, wt));
        x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 2 * stride + off));
        p2 = _mm256_add_epi16(p2, _mm256_maddubs_epi16(x, wp));
        d2 = _mm256_add_epi16(d2, _mm256_maddubs_epi16(x, wt));
        x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 3 * stride + off));
        p3 = _mm256_add_epi16(p3, _mm256_maddubs_epi16(x, wp));
        d3 = _mm256_add_epi16(d3, _mm256_maddubs_epi16(x, wt));
    }
    // Widen to 32 bits (vpmaddwd sign-extends, so negative T lanes are fine) and reduce.
    const __m256i ones = _mm256_set1_epi16(1);
    const __m128i sum_p = hsum4_epi32(_mm256_madd_epi16(p0, ones), _mm256_madd_epi16(p1, ones),
                                      _mm256_madd_epi16(p2, ones), _mm256_madd_epi16(p3, ones));
    const __m128i sum_t = hsum4_epi32(_mm256_madd_epi16(d0, ones), _mm256_madd_epi16(d1, ones),
                                      _mm256_madd_epi16(d2, ones), _mm256_madd_epi16(d3, ones));
    __m128i* p_out = reinterpret_cast<__m128i*>(P4);
    __m128i* n_out = reinterpret_cast<__m128i*>(N4);
    _mm_storeu_si128(p_out, _mm_add_epi32(_mm_loadu_si128(p_out), sum_p));
    _mm_storeu_si128(n_out, _mm_add_epi32(_mm_loadu_si128(n_out), _mm_sub_epi32(sum_p, sum_t)));
}

inline void dot_4_samples(const uint8_t* q, size_t stride, const int8_t* t, size_t nchunks,
                          int32_t* P4, int32_t* N4) {
    for (size_t i = 0; i < 4; ++i) P4[i] = N4[i] = 0;
    // One block for inputs up to 2048 wide; wider layers are summed block by block.
    for (size_t c0 = 0; c0 < nchunks; c0 += kChunksPer16BitBlock) {
        const size_t c1 = c0 + kChunksPer16BitBlock < nchunks ? c0 + kChunksPer16BitBlock : nchunks;
        dot_4_samples_block(q, stride, t, c0, c1, P4, N4);
    }
}

inline void dot_1_sample(const uint8_t* q, const int8_t* t, size_t nchunks, int32_t* p_out,
                         int32_t* n_out) {
    const __m256i zero = _mm256_setzero_si256();
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i total_p = zero, total_t = zero;
    for (size_t c0 = 0; c0 < nchunks; c0 += kChunksPer16BitBlock) {
        const size_t c1 = c0 + kChunksPer16BitBlock < nchunks ? c0 + kChunksPer16BitBlock : nchunks;
        __m256i p = zero, d = zero;
        for (size_t off = c0 * 32; off < c1 * 32; off += 32) {
            const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + off));
            const __m256i wt = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t + off));
            p = _mm256_add_epi16(p, _mm256_maddubs_epi16(x, _mm256_max_epi8(wt, zero)));
            d = _mm256_add_epi16(d, _mm256_maddubs_epi16(x, wt));
        }
        total_p = _mm256_add_epi32(total_p, _mm256_madd_epi16(p, ones));
        total_t = _mm256_add_epi32(total_t, _mm256_madd_epi16(d, ones));
    }
    const __m128i sums = hsum4_epi32(total_p, total_t, total_p, total_t);
    const int32_t p = _mm_cvtsi128_si32(sums);
    *p_out = p;
    *n_out = p - _mm_extract_epi32(sums, 1);
}

// The canonical combination of 8 float lanes (ternary.h): ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)).
inline float reduce8(__m256 v) {
    const __m128 half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 quarter = _mm_add_ps(half, _mm_movehl_ps(half, half));  // (l0+l4)+(l2+l6), (l1+l5)+(l3+l7)
    return _mm_cvtss_f32(_mm_add_ss(quarter, _mm_shuffle_ps(quarter, quarter, 1)));
}

// Byte-product sums of `nsamples` samples (the TernaryDotFn contract without offsets).
void byte_dot(const uint8_t* q, size_t nsamples, const int8_t* t, size_t d_out, size_t stride,
              int32_t* P, int32_t* N) {
    byte_dot_rows(q, nsamples, t, d_out, stride, stride / 32, P, N,
                  [](auto... a) { dot_4_samples(a...); }, [](auto... a) { dot_1_sample(a...); });
}


}  // namespace

void ternary_dot_avx2(const uint8_t* q, size_t nsamples, const int8_t* t, const uint16_t* offsets,
                      size_t d_out, size_t d_in, size_t stride, int32_t* P, int32_t* N) {
    const size_t s = lut_dot(q, nsamples, offsets, d_out, d_in, stride, P, N);
    if (s < nsamples) byte_dot(q + s * stride, nsamples - s, t, d_out, stride, P + s * d_out, N + s * d_out);
}

void float_dot_avx2(const float* x, size_t nsamples, const float* w, size_t d_out, size_t stride,
                    float* out) {
    // Separate multiply and add (no FMA): the canonical order of ternary.h.
    for (size_t r = 0; r < d_out; ++r) {
        const float* wr = w + r * stride;
        size_t s = 0;
        for (; s + 4 <= nsamples; s += 4) {
            const float* x0 = x + s * stride;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (size_t j = 0; j < stride; j += 8) {
                const __m256 wv = _mm256_loadu_ps(wr + j);
                a0 = _mm256_add_ps(a0, _mm256_mul_ps(_mm256_loadu_ps(x0 + j), wv));
                a1 = _mm256_add_ps(a1, _mm256_mul_ps(_mm256_loadu_ps(x0 + stride + j), wv));
                a2 = _mm256_add_ps(a2, _mm256_mul_ps(_mm256_loadu_ps(x0 + 2 * stride + j), wv));
                a3 = _mm256_add_ps(a3, _mm256_mul_ps(_mm256_loadu_ps(x0 + 3 * stride + j), wv));
            }
            out[s * d_out + r] = reduce8(a0);
            out[(s + 1) * d_out + r] = reduce8(a1);
            out[(s + 2) * d_out + r] = reduce8(a2);
            out[(s + 3) * d_out + r] = reduce8(a3);
        }
        for (; s < nsamples; ++s) {
            const float* xs = x + s * stride;
            __m256 a = _mm256_setzero_ps();
            for (size_t j = 0; j < stride; j += 8) {
                a = _mm256_add_ps(a, _mm256_mul_ps(_mm256_loadu_ps(xs + j), _mm256_loadu_ps(wr + j)));
            }
            out[s * d_out + r] = reduce8(a);
        }
    }
}

}  // namespace drq
