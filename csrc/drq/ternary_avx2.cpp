// AVX2 encoder kernels. Compiled with -mavx2 -mfma; called only when the CPU reports both.
// Deliberately includes no C++ standard library templates (see adc.h).
//
// Ternary sums, look-up tables (ternary.h): tiles of 32 samples (two registers per table entry,
// so that each offset load serves 32 samples); per chunk of 16 groups of 4 inputs the tile's
// activations are transposed to one lane per sample and each group's 16 subset sums are built
// (11 adds, 16 stores per group and half, shared by all d_out rows); then each row adds one table
// entry per group and sign into int16 lanes, widened to int32 once per chunk.
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


// 16 activation bytes (one input, 16 samples) as int16 lanes.
inline __m256i load_widen(const uint8_t* v) {
    return _mm256_cvtepu8_epi16(_mm_load_si128(reinterpret_cast<const __m128i*>(v)));
}

// tab[(g * 16 + pattern) * 2 + half] = sum of the activations of group g's inputs k with bit k of
// pattern set, samples 16 * half .. 16 * half + 15 (widened to int16 here).
inline void build_tables(const uint8_t* qt, __m256i* tab) {
    for (size_t g = 0; g < kLutChunkGroups; ++g) {
        for (size_t h = 0; h < 2; ++h) {
            const uint8_t* v = qt + g * kLutGroupInputs * kLutTile + 16 * h;
            __m256i* e = tab + g * kLutPatterns * 2 + h;
            const __m256i v0 = load_widen(v), v1 = load_widen(v + kLutTile);
            const __m256i v2 = load_widen(v + 2 * kLutTile), v3 = load_widen(v + 3 * kLutTile);
            const __m256i e3 = _mm256_add_epi16(v0, v1);
            const __m256i e5 = _mm256_add_epi16(v2, v0), e6 = _mm256_add_epi16(v2, v1);
            const __m256i e7 = _mm256_add_epi16(v2, e3);
            e[0] = _mm256_setzero_si256(); e[2] = v0; e[4] = v1; e[6] = e3;
            e[8] = v2; e[10] = e5; e[12] = e6; e[14] = e7;
            e[16] = v3; e[18] = _mm256_add_epi16(v3, v0); e[20] = _mm256_add_epi16(v3, v1);
            e[22] = _mm256_add_epi16(v3, e3); e[24] = _mm256_add_epi16(v3, v2);
            e[26] = _mm256_add_epi16(v3, e5); e[28] = _mm256_add_epi16(v3, e6);
            e[30] = _mm256_add_epi16(v3, e7);
        }
    }
}

inline __m256i entry(const char* base, uint32_t offset, size_t half) {
    return _mm256_load_si256(reinterpret_cast<const __m256i*>(base + offset) + half);
}

// Table sums of one tile of `count` <= 32 samples. acc: d_out * 64 int32 scratch (row r: P of
// samples 0..31, then N).
void lut_tile(const uint8_t* q, size_t count, const uint16_t* offsets, size_t d_out, size_t stride,
              int32_t* P, int32_t* N, int32_t* acc) {
    alignas(32) __m256i tab[kLutChunkGroups * kLutPatterns * 2];
    alignas(32) uint8_t qt[kChunkInputs * kLutTile];
    const size_t ngroups = stride / kLutGroupInputs;
    const char* base = reinterpret_cast<const char*>(tab);
    // stride is a multiple of kTernaryAlign = 64 inputs, so every chunk has kLutChunkGroups groups
    // and the group loop below has a constant trip count.
    static_assert(kTernaryAlign % kChunkInputs == 0, "chunks must tile the padded input");
    for (size_t g0 = 0; g0 < ngroups; g0 += kLutChunkGroups) {
        transpose_chunk(q, stride, count, g0 * kLutGroupInputs, qt);
        build_tables(qt, tab);
        const uint16_t* o = offsets + g0 * d_out * 2;
        for (size_t r = 0; r < d_out; ++r, o += 2 * kLutChunkGroups) {
            __m256i p0 = _mm256_setzero_si256(), p1 = p0, n0 = p0, n1 = p0;
            // Two groups per iteration, their four offsets from one 64-bit load (the loads, not
            // the adds, bound this loop); not unrolled further: that spills the offsets.
#pragma GCC unroll 1
            for (size_t g = 0; g < kLutChunkGroups; g += 2) {
                uint64_t four;
                __builtin_memcpy(&four, o + 2 * g, 8);
                const uint32_t op0 = four & 0xffffu, on0 = (four >> 16) & 0xffffu;
                const uint32_t op1 = (four >> 32) & 0xffffu, on1 = four >> 48;
                p0 = _mm256_add_epi16(p0, entry(base, op0, 0));
                p1 = _mm256_add_epi16(p1, entry(base, op0, 1));
                n0 = _mm256_add_epi16(n0, entry(base, on0, 0));
                n1 = _mm256_add_epi16(n1, entry(base, on0, 1));
                p0 = _mm256_add_epi16(p0, entry(base, op1, 0));
                p1 = _mm256_add_epi16(p1, entry(base, op1, 1));
                n0 = _mm256_add_epi16(n0, entry(base, on1, 0));
                n1 = _mm256_add_epi16(n1, entry(base, on1, 1));
            }
            // Lanes are sums of at most 64 bytes (<= 16320): unsigned widening is exact.
            const __m256i w[8] = {_mm256_cvtepu16_epi32(_mm256_castsi256_si128(p0)),
                                  _mm256_cvtepu16_epi32(_mm256_extracti128_si256(p0, 1)),
                                  _mm256_cvtepu16_epi32(_mm256_castsi256_si128(p1)),
                                  _mm256_cvtepu16_epi32(_mm256_extracti128_si256(p1, 1)),
                                  _mm256_cvtepu16_epi32(_mm256_castsi256_si128(n0)),
                                  _mm256_cvtepu16_epi32(_mm256_extracti128_si256(n0, 1)),
                                  _mm256_cvtepu16_epi32(_mm256_castsi256_si128(n1)),
                                  _mm256_cvtepu16_epi32(_mm256_extracti128_si256(n1, 1))};
            __m256i* a = reinterpret_cast<__m256i*>(acc + r * 2 * kLutTile);
            if (g0 == 0) {
                for (size_t k = 0; k < 8; ++k) _mm256_store_si256(a + k, w[k]);
            } else {
                for (size_t k = 0; k < 8; ++k) {
                    _mm256_store_si256(a + k, _mm256_add_epi32(_mm256_load_si256(a + k), w[k]));
                }
            }
        }
    }
    store_tile_sums(acc, count, d_out, P, N);
}

}  // namespace

void ternary_dot_avx2(const uint8_t* q, size_t nsamples, const int8_t* t, const uint16_t* offsets,
                      size_t d_out, size_t stride, int32_t* P, int32_t* N) {
    size_t s = 0;
    if (nsamples >= kLutMinSamples) {
        // 32-byte aligned (the rows are whole registers); new[] of a over-aligned type is C++17.
        __m256i* acc = new __m256i[d_out * 2 * kLutTile / 8];
        for (; s + kLutMinSamples <= nsamples; s += kLutTile) {
            const size_t count = nsamples - s < kLutTile ? nsamples - s : kLutTile;
            lut_tile(q + s * stride, count, offsets, d_out, stride, P + s * d_out, N + s * d_out,
                     reinterpret_cast<int32_t*>(acc));
        }
        delete[] acc;
        if (s > nsamples) s = nsamples;
    }
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
