// Helpers shared by the look-up-table ternary kernels (ternary_avx2.cpp, ternary_avx512.cpp):
// byte and int32 transposes between the sample-major activations / results and the
// sample-in-lane tables. Everything has internal linkage (anonymous namespace): each per-ISA file
// gets its own copy compiled with its own flags, so the AVX-512 build of a helper can never be
// linked into an AVX2 caller. Needs AVX2 (implied by the AVX-512 flags).
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "ternary.h"

namespace drq {
namespace {

// Samples per table tile: one table entry is kLutEntryBytes of int16 lanes.
constexpr size_t kLutTile = kLutEntryBytes / 2;

// The fewest samples worth a (zero padded) table tile of kLutTile: below, the byte kernel is faster.
constexpr size_t kLutMinSamples = 12;

// Output rows whose masks stay in L1 while every sample of the call passes over them.
constexpr size_t kByteDotRowBlock = 8;

// Byte-product sums of `nsamples` samples (the TernaryDotFn contract without offsets), shared by
// the per-ISA files: rows in blocks of kByteDotRowBlock, 4 samples per pass, then one at a time.
// dot4(q, stride, t_row, nchunks, p4, n4) and dot1(q, t_row, nchunks, &p, &n) are the ISA kernels
// (lambdas, so each file's instantiation inlines its own).
template <class Dot4, class Dot1>
inline void byte_dot_rows(const uint8_t* q, size_t nsamples, const int8_t* t, size_t d_out, size_t stride,
                          size_t nchunks, int32_t* P, int32_t* N, Dot4 dot4, Dot1 dot1) {
    for (size_t r0 = 0; r0 < d_out; r0 += kByteDotRowBlock) {
        const size_t r1 = r0 + kByteDotRowBlock < d_out ? r0 + kByteDotRowBlock : d_out;
        size_t s = 0;
        for (; s + 4 <= nsamples; s += 4) {
            for (size_t r = r0; r < r1; ++r) {
                int32_t p4[4], n4[4];
                dot4(q + s * stride, stride, t + r * stride, nchunks, p4, n4);
                for (size_t i = 0; i < 4; ++i) {
                    P[(s + i) * d_out + r] = p4[i];
                    N[(s + i) * d_out + r] = n4[i];
                }
            }
        }
        for (; s < nsamples; ++s) {
            for (size_t r = r0; r < r1; ++r) {
                dot1(q + s * stride, t + r * stride, nchunks, &P[s * d_out + r], &N[s * d_out + r]);
            }
        }
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

// qt[j * 32 + i] = q[i, j0 + j] for j < kChunkInputs, i < 32 (samples i >= count are 0).
inline void transpose_chunk(const uint8_t* q, size_t stride, size_t count, size_t j0, uint8_t* qt) {
    for (size_t i0 = 0; i0 < kLutTile; i0 += 16) {
        const size_t rows = count > i0 ? count - i0 : 0;
        for (size_t j = 0; j < kChunkInputs; j += 16) {
            transpose_16x16(q + i0 * stride + j0 + j, stride, rows, qt + j * kLutTile + i0, kLutTile);
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

// Writes a tile's sums: acc (d_out * 64 int32, row r: P of samples 0..31, then N; 32-byte
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

}  // namespace
}  // namespace drq
