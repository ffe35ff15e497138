// AVX-512 (F + BW) ternary kernel: ternary_avx2.cpp with one 512-bit register per table entry
// (32 int16 lanes, one per sample of the tile) and 64-byte chunks in the byte kernel. Compiled
// with -mavx512f -mavx512bw; called only when the CPU reports both. No C++ standard library
// templates (see adc.h). Float layers use the AVX2 kernel (ternary.h).
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


// 32 activation bytes (one input, 32 samples) as int16 lanes.
inline __m512i load_widen(const uint8_t* v) {
    return _mm512_cvtepu8_epi16(_mm256_load_si256(reinterpret_cast<const __m256i*>(v)));
}

// tab[g * 16 + pattern] = sum of the activations of group g's inputs k with bit k of pattern set,
// samples 0..31 (widened to int16 here).
inline void build_tables(const uint8_t* qt, __m512i* tab) {
    for (size_t g = 0; g < kLutChunkGroups; ++g) {
        const uint8_t* v = qt + g * kLutGroupInputs * kLutTile;
        __m512i* e = tab + g * kLutPatterns;
        const __m512i v0 = load_widen(v), v1 = load_widen(v + kLutTile);
        const __m512i v2 = load_widen(v + 2 * kLutTile), v3 = load_widen(v + 3 * kLutTile);
        const __m512i e3 = _mm512_add_epi16(v0, v1);
        const __m512i e5 = _mm512_add_epi16(v2, v0), e6 = _mm512_add_epi16(v2, v1);
        const __m512i e7 = _mm512_add_epi16(v2, e3);
        e[0] = _mm512_setzero_si512(); e[1] = v0; e[2] = v1; e[3] = e3;
        e[4] = v2; e[5] = e5; e[6] = e6; e[7] = e7;
        e[8] = v3; e[9] = _mm512_add_epi16(v3, v0); e[10] = _mm512_add_epi16(v3, v1);
        e[11] = _mm512_add_epi16(v3, e3); e[12] = _mm512_add_epi16(v3, v2);
        e[13] = _mm512_add_epi16(v3, e5); e[14] = _mm512_add_epi16(v3, e6);
        e[15] = _mm512_add_epi16(v3, e7);
    }
}

inline __m512i entry(const char* base, uint32_t offset) {
    return _mm512_load_si512(reinterpret_cast<const void*>(base + offset));
}

// Table sums of one tile of `count` <= 32 samples. acc: d_out * 64 int32 scratch, 64-byte aligned
// (row r: P of samples 0..31, then N).
void lut_tile(const uint8_t* q, size_t count, const uint16_t* offsets, size_t d_out, size_t stride,
              int32_t* P, int32_t* N, int32_t* acc) {
    alignas(64) __m512i tab[kLutChunkGroups * kLutPatterns];
    alignas(64) uint8_t qt[kChunkInputs * kLutTile];
    const size_t ngroups = stride / kLutGroupInputs;
    const char* base = reinterpret_cast<const char*>(tab);
    static_assert(kTernaryAlign % kChunkInputs == 0, "chunks must tile the padded input");
    for (size_t g0 = 0; g0 < ngroups; g0 += kLutChunkGroups) {
        transpose_chunk(q, stride, count, g0 * kLutGroupInputs, qt);
        build_tables(qt, tab);
        const uint16_t* o = offsets + g0 * d_out * 2;
        for (size_t r = 0; r < d_out; ++r, o += 2 * kLutChunkGroups) {
            __m512i p0 = _mm512_setzero_si512(), p1 = p0, n0 = p0, n1 = p0;
            for (size_t g = 0; g < kLutChunkGroups; g += 2) {
                uint32_t both0, both1;
                __builtin_memcpy(&both0, o + 2 * g, 4);
                __builtin_memcpy(&both1, o + 2 * g + 2, 4);
                p0 = _mm512_add_epi16(p0, entry(base, both0 & 0xffffu));
                n0 = _mm512_add_epi16(n0, entry(base, both0 >> 16));
                p1 = _mm512_add_epi16(p1, entry(base, both1 & 0xffffu));
                n1 = _mm512_add_epi16(n1, entry(base, both1 >> 16));
            }
            // Lanes are sums of at most 64 bytes (<= 16320): unsigned widening is exact.
            const __m512i p = _mm512_add_epi16(p0, p1), n = _mm512_add_epi16(n0, n1);
            const __m512i w[4] = {_mm512_cvtepu16_epi32(_mm512_castsi512_si256(p)),
                                  _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(p, 1)),
                                  _mm512_cvtepu16_epi32(_mm512_castsi512_si256(n)),
                                  _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(n, 1))};
            __m512i* a = reinterpret_cast<__m512i*>(acc + r * 2 * kLutTile);
            if (g0 == 0) {
                for (size_t k = 0; k < 4; ++k) _mm512_store_si512(a + k, w[k]);
            } else {
                for (size_t k = 0; k < 4; ++k) {
                    _mm512_store_si512(a + k, _mm512_add_epi32(_mm512_load_si512(a + k), w[k]));
                }
            }
        }
    }
    store_tile_sums(acc, count, d_out, P, N);
}

}  // namespace

void ternary_dot_avx512(const uint8_t* q, size_t nsamples, const int8_t* t, const uint16_t* offsets,
                        size_t d_out, size_t stride, int32_t* P, int32_t* N) {
    size_t s = 0;
    if (nsamples >= kLutMinSamples) {
        // 64-byte aligned (the rows are whole registers); new[] of an over-aligned type is C++17.
        __m512i* acc = new __m512i[d_out * 2 * kLutTile / 16];
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

}  // namespace drq
