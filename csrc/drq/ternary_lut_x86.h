// The look-up-table ternary kernel (method and layout in ternary.h), shared by ternary_avx2.cpp
// and ternary_avx512.cpp, with its byte and int32 transposes between the sample-major
// activations / results and the sample-in-lane tables, and the byte kernel's row loop.
// Everything has internal linkage (anonymous namespace): each per-ISA file gets its own copy
// compiled with its own flags, so the AVX-512 build of a helper can never be linked into an AVX2
// caller. Needs AVX2 (implied by the AVX-512 flags).
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "ternary.h"

namespace drq {
namespace {

// Samples per table tile: one table entry is kLutEntryBytes of int16 lanes (one AVX2 register).
constexpr size_t kLutTile = kLutEntryBytes / 2;

// The fewest samples worth a (zero padded) table tile of kLutTile: below, the byte kernel is
// faster (measured on the 784-512-256-64 encoder: a tile costs about as much as 4 samples of byte
// products).
constexpr size_t kLutMinSamples = 5;

// Chunks whose int16 row sums (each lane <= kChunkInputs * 255) are added in 16 bits before
// they are widened to int32: the total stays below 65536, exact as unsigned.
constexpr size_t kLutChunksPer16Bit = 65535 / (kLutChunkGroups * kLutGroupInputs * 255);
static_assert(kLutChunksPer16Bit >= 1, "a chunk's sums must fit 16 bits");

// Output rows whose masks stay in L1 while every sample of the call passes over them.
constexpr size_t kByteDotRowBlock = 8;

// One sample against rows [r0, r1) with dot1: P[r], N[r]. A function of its own so that its
// registers are allocated apart from the 4-sample loop: inlined there, GCC 12 spilled an
// operand of this loop on every step (batch 1, which runs only this loop, was 30% slower).
template <class Dot1>
__attribute__((noinline)) void byte_dot_sample(const uint8_t* qs, const int8_t* t, size_t r0, size_t r1,
                                               size_t stride, size_t nchunks, int32_t* P, int32_t* N, Dot1 dot1) {
    for (size_t r = r0; r < r1; ++r) dot1(qs, t + r * stride, nchunks, &P[r], &N[r]);
}

// Byte-product sums of `nsamples` samples (the TernaryDotFn contract without offsets), shared by
// the per-ISA files: rows in blocks of kByteDotRowBlock, 4 samples per pass; then the last
// nsamples % 4 samples one at a time over all rows (one call each: the masks stream from L2
// once per such sample either way).
// dot4(q, stride, t_row, nchunks, p4, n4) and dot1(q, t_row, nchunks, &p, &n) are the ISA kernels
// (lambdas, so each file's instantiation inlines its own).
template <class Dot4, class Dot1>
inline void byte_dot_rows(const uint8_t* q, size_t nsamples, const int8_t* t, size_t d_out, size_t stride,
                          size_t nchunks, int32_t* P, int32_t* N, Dot4 dot4, Dot1 dot1) {
    const size_t nblocked = nsamples / 4 * 4;
    for (size_t r0 = 0; r0 < d_out; r0 += kByteDotRowBlock) {
        const size_t r1 = r0 + kByteDotRowBlock < d_out ? r0 + kByteDotRowBlock : d_out;
        for (size_t s = 0; s < nblocked; s += 4) {
            for (size_t r = r0; r < r1; ++r) {
                int32_t p4[4], n4[4];
                dot4(q + s * stride, stride, t + r * stride, nchunks, p4, n4);
                for (size_t i = 0; i < 4; ++i) {
                    P[(s + i) * d_out + r] = p4[i];
                    N[(s + i) * d_out + r] = n4[i];
                }
            }
        }
    }
    for (size_t s = nblocked; s < nsamples; ++s) {
        byte_dot_sample(q + s * stride, t, 0, d_out, stride, nchunks, P + s * d_out, N + s * d_out, dot1);
    }
}

constexpr size_t kChunkInputs = kLutChunkGroups * kLutGroupInputs;

// Transposes 16 rows of 16 bytes: dst[c * dst_stride + i] = row i's byte c (rows i >= count
// are 0). Four rounds of interleaves (bytes, words, dwords, qwords), 32 shuffles in all.
inline void transpose_16x16(const uint8_t* src, size_t src_stride, size_t count, uint8_t* dst,
                            size_t dst_stride) {
    __m128i a[16], b[16];
    for (size_t i = 0; i < 16; ++i) {
        a[i] = i < count ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i * src_stride))
                         : _mm_setzero_si128();
    }
    // b[i]: rows 2i, 2i + 1 as byte pairs, columns 0..7; b[i + 8]: columns 8..15.
    for (size_t i = 0; i < 8; ++i) {
        b[i] = _mm_unpacklo_epi8(a[2 * i], a[2 * i + 1]);
        b[i + 8] = _mm_unpackhi_epi8(a[2 * i], a[2 * i + 1]);
    }
    // a[4 * cq + i]: rows 4i..4i+3, columns 4cq..4cq+3 (4-byte units).
    for (size_t i = 0; i < 4; ++i) {
        a[i] = _mm_unpacklo_epi16(b[2 * i], b[2 * i + 1]);
        a[4 + i] = _mm_unpackhi_epi16(b[2 * i], b[2 * i + 1]);
        a[8 + i] = _mm_unpacklo_epi16(b[8 + 2 * i], b[8 + 2 * i + 1]);
        a[12 + i] = _mm_unpackhi_epi16(b[8 + 2 * i], b[8 + 2 * i + 1]);
    }
    // b[2 * cp + h]: rows 8h..8h+7, columns 2cp, 2cp+1 (8-byte units).
    for (size_t cq = 0; cq < 4; ++cq) {
        for (size_t h = 0; h < 2; ++h) {
            b[2 * (2 * cq) + h] = _mm_unpacklo_epi32(a[4 * cq + 2 * h], a[4 * cq + 2 * h + 1]);
            b[2 * (2 * cq + 1) + h] = _mm_unpackhi_epi32(a[4 * cq + 2 * h], a[4 * cq + 2 * h + 1]);
        }
    }
    for (size_t cp = 0; cp < 8; ++cp) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + (2 * cp) * dst_stride),
                         _mm_unpacklo_epi64(b[2 * cp], b[2 * cp + 1]));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + (2 * cp + 1) * dst_stride),
                         _mm_unpackhi_epi64(b[2 * cp], b[2 * cp + 1]));
    }
}

// qt[j * 16 + i] = q[i, j0 + j] for j < kChunkInputs, i < 16 (samples i >= count and inputs
// j0 + j >= stride are 0). j0 and stride are multiples of 16, so a block of 16 inputs is either
// wholly inside the rows or wholly past them.
static_assert(kChunkInputs % 16 == 0 && kTernaryAlign % 16 == 0, "transpose_chunk takes whole blocks of 16");
inline void transpose_chunk(const uint8_t* q, size_t stride, size_t count, size_t j0, uint8_t* qt) {
    for (size_t j = 0; j < kChunkInputs; j += 16) {
        if (j0 + j < stride) {
            transpose_16x16(q + j0 + j, stride, count, qt + j * kLutTile, kLutTile);
        } else {
            for (size_t k = 0; k < 16 * kLutTile; k += 32) {
                _mm256_storeu_si256(reinterpret_cast<__m256i*>(qt + j * kLutTile + k), _mm256_setzero_si256());
            }
        }
    }
}

// dst[m * dst_stride + k] = src[k * src_stride + m] for k < 8, m < nrows (<= 8): an 8 x 8 int32
// transpose (unpacks within 128-bit lanes, then lane permutes).
inline void transpose_store_8x8(const int32_t* src, size_t src_stride, int32_t* dst, size_t dst_stride,
                                size_t nrows) {
    __m256i a[8], t[8], u[8];
    for (size_t k = 0; k < 8; ++k) {
        a[k] = _mm256_load_si256(reinterpret_cast<const __m256i*>(src + k * src_stride));
    }
    for (size_t k = 0; k < 8; k += 2) {
        t[k] = _mm256_unpacklo_epi32(a[k], a[k + 1]);
        t[k + 1] = _mm256_unpackhi_epi32(a[k], a[k + 1]);
    }
    // u[4h + c]: rows 4h..4h+3 of columns c (low lane) and c + 4 (high lane).
    for (size_t h = 0; h < 2; ++h) {
        u[4 * h] = _mm256_unpacklo_epi64(t[4 * h], t[4 * h + 2]);
        u[4 * h + 1] = _mm256_unpackhi_epi64(t[4 * h], t[4 * h + 2]);
        u[4 * h + 2] = _mm256_unpacklo_epi64(t[4 * h + 1], t[4 * h + 3]);
        u[4 * h + 3] = _mm256_unpackhi_epi64(t[4 * h + 1], t[4 * h + 3]);
    }
    for (size_t c = 0; c < 4; ++c) {
        if (c < nrows) {
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + c * dst_stride),
                                _mm256_permute2x128_si256(u[c], u[4 + c], 0x20));
        }
        if (c + 4 < nrows) {
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + (c + 4) * dst_stride),
                                _mm256_permute2x128_si256(u[c], u[4 + c], 0x31));
        }
    }
}

// Writes a tile's sums: acc (d_out * 32 int32, row r: P of samples 0..15, then N; 32-byte
// aligned) to P and N (count * d_out, by sample) with 8 x 8 transposes for whole blocks of 8 rows.
inline void store_tile_sums(const int32_t* acc, size_t count, size_t d_out, int32_t* P, int32_t* N) {
    size_t r0 = 0;
    for (; r0 + 8 <= d_out; r0 += 8) {
        for (size_t i0 = 0; i0 < count; i0 += 8) {
            const size_t rows = count - i0 < 8 ? count - i0 : 8;
            transpose_store_8x8(acc + r0 * 2 * kLutTile + i0, 2 * kLutTile, P + i0 * d_out + r0, d_out,
                                rows);
            transpose_store_8x8(acc + r0 * 2 * kLutTile + kLutTile + i0, 2 * kLutTile, N + i0 * d_out + r0,
                                d_out, rows);
        }
    }
    for (size_t i = 0; i < count; ++i) {
        for (size_t r = r0; r < d_out; ++r) {
            P[i * d_out + r] = acc[r * 2 * kLutTile + i];
            N[i * d_out + r] = acc[r * 2 * kLutTile + kLutTile + i];
        }
    }
}

// 16 activation bytes (one input, the tile's 16 samples) as int16 lanes.
inline __m256i load_widen(const uint8_t* v) {
    return _mm256_cvtepu8_epi16(_mm_load_si128(reinterpret_cast<const __m128i*>(v)));
}

// tab[l * 64 + pattern] = sum over the set bits k of pattern of input 6l + k of the chunk, per
// sample (qt: the chunk transposed by transpose_chunk), for groups l < ngroups. The 8 subsets
// of inputs 0..2 and the 8 of inputs 3..5 are formed in registers (8 adds), so each of the 56
// other entries is one add and one store, and nothing is read back.
inline void build_tables(const uint8_t* qt, size_t ngroups, __m256i* tab) {
    for (size_t l = 0; l < ngroups; ++l) {
        const uint8_t* v = qt + l * kLutGroupInputs * kLutTile;
        const __m256i zero = _mm256_setzero_si256();
        const __m256i x0 = load_widen(v), x1 = load_widen(v + kLutTile), x2 = load_widen(v + 2 * kLutTile);
        const __m256i x3 = load_widen(v + 3 * kLutTile), x4 = load_widen(v + 4 * kLutTile);
        const __m256i x5 = load_widen(v + 5 * kLutTile);
        const __m256i x01 = _mm256_add_epi16(x0, x1), x34 = _mm256_add_epi16(x3, x4);
        const __m256i lo[8] = {zero, x0, x1, x01, x2, _mm256_add_epi16(x2, x0), _mm256_add_epi16(x2, x1),
                               _mm256_add_epi16(x2, x01)};
        const __m256i hi[8] = {zero, x3, x4, x34, x5, _mm256_add_epi16(x5, x3), _mm256_add_epi16(x5, x4),
                               _mm256_add_epi16(x5, x34)};
        __m256i* e = tab + l * kLutPatterns;
        for (size_t p = 0; p < 8; ++p) _mm256_store_si256(e + p, lo[p]);
        for (size_t h = 1; h < 8; ++h) {
            for (size_t p = 0; p < 8; ++p) _mm256_store_si256(e + 8 * h + p, _mm256_add_epi16(hi[h], lo[p]));
        }
    }
}

inline __m256i lut_entry(const char* tab, uint32_t offset) {
    return _mm256_load_si256(reinterpret_cast<const __m256i*>(tab + offset));
}

// One chunk of G groups for rows 0..d_out-1 (o: the chunk's offsets, row r at o + 2 G r): each
// row's P and N over the chunk in int16 lanes, added to acc16 (row r: P, N; `first16`
// overwrites). With `widen` the 16-bit sums are instead widened and added to acc32 (row r: P of
// samples 0..7, 8..15, then N; `first32` overwrites). Loads and instructions both limit this
// loop (2 G table entries, G / 2 offset loads and 2 accumulator loads per row; more offset loads
// or fewer loads with more instructions each measured slower), so accumulators stay in 16 bits
// for kLutChunksPer16Bit chunks and widening costs only every fifth pass.
template <size_t G>
inline void lut_rows(const char* tab, const uint16_t* o, size_t d_out, __m256i* acc16, __m256i* acc32,
                     bool first16, bool widen, bool first32) {
    for (size_t r = 0; r < d_out; ++r, o += 2 * G) {
        __m256i p0 = _mm256_setzero_si256(), p1 = p0, n0 = p0, n1 = p0;
        size_t g = 0;
        // Two groups per step, their four offsets from one 64-bit load (cheaper here than two
        // 32-bit loads or one vector load moved to general registers: measured).
        for (; g + 2 <= G; g += 2) {
            uint64_t four;
            __builtin_memcpy(&four, o + 2 * g, 8);
            p0 = _mm256_add_epi16(p0, lut_entry(tab, four & 0xffffu));
            n0 = _mm256_add_epi16(n0, lut_entry(tab, (four >> 16) & 0xffffu));
            p1 = _mm256_add_epi16(p1, lut_entry(tab, (four >> 32) & 0xffffu));
            n1 = _mm256_add_epi16(n1, lut_entry(tab, four >> 48));
        }
        if (G % 2 != 0) {
            uint32_t two;
            __builtin_memcpy(&two, o + 2 * g, 4);
            p0 = _mm256_add_epi16(p0, lut_entry(tab, two & 0xffffu));
            n0 = _mm256_add_epi16(n0, lut_entry(tab, two >> 16));
        }
        __m256i p = _mm256_add_epi16(p0, p1), n = _mm256_add_epi16(n0, n1);
        __m256i* a16 = acc16 + 2 * r;
        if (!first16) {
            p = _mm256_add_epi16(p, _mm256_load_si256(a16));
            n = _mm256_add_epi16(n, _mm256_load_si256(a16 + 1));
        }
        if (!widen) {
            _mm256_store_si256(a16, p);
            _mm256_store_si256(a16 + 1, n);
            continue;
        }
        // Lanes are below 65536 (kLutChunksPer16Bit): unsigned widening is exact.
        const __m256i w[4] = {_mm256_cvtepu16_epi32(_mm256_castsi256_si128(p)),
                              _mm256_cvtepu16_epi32(_mm256_extracti128_si256(p, 1)),
                              _mm256_cvtepu16_epi32(_mm256_castsi256_si128(n)),
                              _mm256_cvtepu16_epi32(_mm256_extracti128_si256(n, 1))};
        __m256i* a32 = acc32 + 4 * r;
        for (size_t k = 0; k < 4; ++k) {
            _mm256_store_si256(a32 + k, first32 ? w[k] : _mm256_add_epi32(_mm256_load_si256(a32 + k), w[k]));
        }
    }
}

// lut_rows<gc> for a runtime gc in 1..G: a constant group count per instantiation, so the group
// loop unrolls completely (only the last chunk of a layer has fewer than kLutChunkGroups).
template <size_t G>
inline void lut_rows_dispatch(size_t gc, const char* tab, const uint16_t* o, size_t d_out, __m256i* acc16,
                              __m256i* acc32, bool first16, bool widen, bool first32) {
    if (gc == G) {
        lut_rows<G>(tab, o, d_out, acc16, acc32, first16, widen, first32);
    } else if constexpr (G > 1) {
        lut_rows_dispatch<G - 1>(gc, tab, o, d_out, acc16, acc32, first16, widen, first32);
    }
}

// Table sums of one tile of `count` <= 16 samples (the TernaryDotFn contract for the tile).
// acc16: d_out * 2, acc32: d_out * 4 registers of scratch.
inline void lut_tile(const uint8_t* q, size_t count, const uint16_t* offsets, size_t d_out, size_t d_in,
                     size_t stride, int32_t* P, int32_t* N, __m256i* acc16, __m256i* acc32) {
    alignas(32) __m256i tab[kLutChunkGroups * kLutPatterns];
    alignas(32) uint8_t qt[kChunkInputs * kLutTile];
    const size_t ngroups = ternary_lut_groups(d_in);
    const char* base = reinterpret_cast<const char*>(tab);
    size_t chunk = 0;
    for (size_t g0 = 0; g0 < ngroups; g0 += kLutChunkGroups, ++chunk) {
        const size_t gc = g0 + kLutChunkGroups < ngroups ? kLutChunkGroups : ngroups - g0;
        transpose_chunk(q, stride, count, g0 * kLutGroupInputs, qt);
        build_tables(qt, gc, tab);
        const uint16_t* o = offsets + g0 * d_out * 2;
        const bool first16 = chunk % kLutChunksPer16Bit == 0;
        const bool widen = chunk % kLutChunksPer16Bit == kLutChunksPer16Bit - 1 || g0 + gc == ngroups;
        const bool first32 = chunk < kLutChunksPer16Bit;
        lut_rows_dispatch<kLutChunkGroups>(gc, base, o, d_out, acc16, acc32, first16, widen, first32);
    }
    store_tile_sums(reinterpret_cast<const int32_t*>(acc32), count, d_out, P, N);
}

// Table sums of the samples [0, s) for the largest s that the table kernel is worth (whole tiles,
// and a last partial tile of at least kLutMinSamples); returns s. The caller's byte kernel does
// the rest.
inline size_t lut_dot(const uint8_t* q, size_t nsamples, const uint16_t* offsets, size_t d_out,
                      size_t d_in, size_t stride, int32_t* P, int32_t* N) {
    size_t s = 0;
    if (nsamples < kLutMinSamples) return 0;
    // 32-byte aligned (the rows are whole registers); new[] of an over-aligned type is C++17.
    __m256i* acc = new __m256i[d_out * 6];
    for (; s + kLutMinSamples <= nsamples; s += kLutTile) {
        const size_t count = nsamples - s < kLutTile ? nsamples - s : kLutTile;
        lut_tile(q + s * stride, count, offsets, d_out, d_in, stride, P + s * d_out, N + s * d_out, acc,
                 acc + 2 * d_out);
    }
    delete[] acc;
    return s < nsamples ? s : nsamples;
}

}  // namespace
}  // namespace drq
