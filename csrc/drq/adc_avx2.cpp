// AVX2 ADC kernel. Compiled with -mavx2 -mfma; called only when the CPU reports both.
// Deliberately includes no C++ standard library templates (see adc.h).
//
// Table values are fetched with scalar loads assembled into 8-lane vectors, not with
// vpgatherdd: on the AMD Zen 3 development machine the gather version scanned 2.2 G lookups/s
// and this one 3.6 G lookups/s (one load per lookup, the code bytes come 8 at a time in one
// 64-bit load and are split with shifts). The arithmetic is vectorised either way.
//
// Splitting the code bytes into indices (shifts, zero-extensions, register copies) costs more
// instructions than the table loads themselves, so adc_scan_queries_avx2 splits each 8-byte
// group once and looks it up in the tables of up to four queries (1.2-1.4x the lookups/s of
// four single-query scans in a standalone timing on the development machine).
//
// Search scans groups of 3 to 8 queries with adc_scan_interleaved_avx2 instead (see adc.h):
// with the queries' tables interleaved, one 32-byte load per code byte serves all 8 queries,
// with no index splitting into lanes and no lane inserts.
#include <immintrin.h>

#include <cstring>

#include "adc.h"

namespace drq {

namespace {

// table[code byte e of `codes8`] for e = 0..7 (little-endian: byte e sits at bits 8e..8e+7).
inline __m256 lookup8(const float* table, uint64_t codes8) {
    return _mm256_setr_ps(table[codes8 & 0xff], table[(codes8 >> 8) & 0xff],
                          table[(codes8 >> 16) & 0xff], table[(codes8 >> 24) & 0xff],
                          table[(codes8 >> 32) & 0xff], table[(codes8 >> 40) & 0xff],
                          table[(codes8 >> 48) & 0xff], table[codes8 >> 56]);
}

// Asks for the first m rows (m * kBlockSize bytes) of a block ahead of use. A prefix scan of
// codes stored with M > m iterations reads m * 32 bytes and then jumps M * 32 bytes: a pattern
// the hardware prefetchers follow poorly (perf, 8-byte scan of a 64-byte Fashion-MNIST store:
// 38% of the kernel's samples sat on the first code load of each block without this).
inline void prefetch_prefix(const uint8_t* block, size_t m) {
    for (size_t offset = 0; offset < m * kBlockSize; offset += 64) {
        __builtin_prefetch(block + offset);
    }
}

inline uint64_t load_u64(const uint8_t* p) {
    uint64_t value;
    std::memcpy(&value, p, sizeof(value));  // unaligned-safe; compiles to one load
    return value;
}

}  // namespace

void adc_scan_avx2(const uint8_t* codes, size_t nblocks, size_t block_stride, size_t m,
                   const float* lut, size_t lut_stride, const float* scales, float* acc) {
    static_assert(kBlockSize == 32, "the AVX2 kernel handles a block as four 8-lane vectors");
    for (size_t b = 0; b < nblocks; ++b) {
        const uint8_t* block = codes + b * block_stride;
        if (b + 2 < nblocks) prefetch_prefix(block + 2 * block_stride, m);
        // Four independent accumulators (lanes 0-7, 8-15, 16-23, 24-31) keep the add latency
        // off the critical path.
        __m256 acc0 = _mm256_setzero_ps();
        __m256 acc1 = _mm256_setzero_ps();
        __m256 acc2 = _mm256_setzero_ps();
        __m256 acc3 = _mm256_setzero_ps();
        for (size_t j = 0; j < m; ++j) {
            const uint8_t* code_row = block + j * kBlockSize;
            const float* table = lut + j * lut_stride;
            const __m256 scale = _mm256_set1_ps(scales[j]);
            const __m256 val0 = lookup8(table, load_u64(code_row));
            const __m256 val1 = lookup8(table, load_u64(code_row + 8));
            const __m256 val2 = lookup8(table, load_u64(code_row + 16));
            const __m256 val3 = lookup8(table, load_u64(code_row + 24));
            // Separate multiply and add (not FMA): bit-identical to the scalar reference.
            acc0 = _mm256_add_ps(acc0, _mm256_mul_ps(val0, scale));
            acc1 = _mm256_add_ps(acc1, _mm256_mul_ps(val1, scale));
            acc2 = _mm256_add_ps(acc2, _mm256_mul_ps(val2, scale));
            acc3 = _mm256_add_ps(acc3, _mm256_mul_ps(val3, scale));
        }
        float* out = acc + b * kBlockSize;
        _mm256_storeu_ps(out, acc0);
        _mm256_storeu_ps(out + 8, acc1);
        _mm256_storeu_ps(out + 16, acc2);
        _mm256_storeu_ps(out + 24, acc3);
    }
}

namespace {

// Q queries over every block, one 8-lane column (lanes lane0 .. lane0 + 7) at a time: per
// column Q accumulators, one per query, and the indices of the 8 code bytes shared by all Q.
template <int Q>
void scan_queries_fixed(const uint8_t* codes, size_t nblocks, size_t block_stride, size_t m,
                        const float* const* luts, size_t lut_stride, const float* scales,
                        float* acc, size_t acc_stride) {
    for (size_t b = 0; b < nblocks; ++b) {
        const uint8_t* block = codes + b * block_stride;
        if (b + 2 < nblocks) prefetch_prefix(block + 2 * block_stride, m);
        for (size_t lane0 = 0; lane0 < kBlockSize; lane0 += 8) {
            __m256 sum[Q];
            for (int q = 0; q < Q; ++q) sum[q] = _mm256_setzero_ps();
            for (size_t j = 0; j < m; ++j) {
                const uint64_t codes8 = load_u64(block + j * kBlockSize + lane0);
                // 32-bit halves: the byte extraction needs fewer register copies.
                const uint32_t lo = static_cast<uint32_t>(codes8);
                const uint32_t hi = static_cast<uint32_t>(codes8 >> 32);
                const uint32_t i0 = lo & 0xff, i1 = (lo >> 8) & 0xff, i2 = (lo >> 16) & 0xff,
                               i3 = lo >> 24;
                const uint32_t i4 = hi & 0xff, i5 = (hi >> 8) & 0xff, i6 = (hi >> 16) & 0xff,
                               i7 = hi >> 24;
                const __m256 scale = _mm256_set1_ps(scales[j]);
                for (int q = 0; q < Q; ++q) {
                    const float* t = luts[q] + j * lut_stride;
                    const __m256 val =
                        _mm256_setr_ps(t[i0], t[i1], t[i2], t[i3], t[i4], t[i5], t[i6], t[i7]);
                    // Separate multiply and add (not FMA): bit-identical to the reference.
                    sum[q] = _mm256_add_ps(sum[q], _mm256_mul_ps(val, scale));
                }
            }
            for (int q = 0; q < Q; ++q) {
                _mm256_storeu_ps(acc + q * acc_stride + b * kBlockSize + lane0, sum[q]);
            }
        }
    }
}

}  // namespace

void adc_scan_queries_avx2(const uint8_t* codes, size_t nblocks, size_t block_stride, size_t m,
                           const float* const* luts, size_t nluts, size_t lut_stride,
                           const float* scales, float* acc, size_t acc_stride) {
    size_t q = 0;
    for (; q + 4 <= nluts; q += 4) {
        scan_queries_fixed<4>(codes, nblocks, block_stride, m, luts + q, lut_stride, scales,
                              acc + q * acc_stride, acc_stride);
    }
    switch (nluts - q) {
        case 3:
            scan_queries_fixed<3>(codes, nblocks, block_stride, m, luts + q, lut_stride, scales,
                                  acc + q * acc_stride, acc_stride);
            break;
        case 2:
            scan_queries_fixed<2>(codes, nblocks, block_stride, m, luts + q, lut_stride, scales,
                                  acc + q * acc_stride, acc_stride);
            break;
        case 1:
            // One query: the single-query kernel keeps four independent accumulators in flight.
            adc_scan_avx2(codes, nblocks, block_stride, m, luts[q], lut_stride, scales,
                          acc + q * acc_stride);
            break;
        default:
            break;
    }
}

namespace {

// In place: r[i] lane q -> r[q] lane i (8 x 8 floats). Moves bits only, so exactness is kept.
inline void transpose8x8(__m256 r[8]) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]);
    const __m256 t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]);
    const __m256 t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]);
    const __m256 t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]);
    const __m256 t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

}  // namespace

namespace {

// Interleaved scan for one metric and table layout (templates: no per-vector branch on them).
// kShared (lut8_stride = 0) lets the compiler address the table as lut8 + index * 32 in the
// load itself; with a per-iteration table offset every lookup needs one more add (8 more
// instructions per 8 lookups in a loop of about 45).
template <bool kL2, bool kShared>
void scan_interleaved(const uint8_t* codes, size_t nblocks, size_t block_stride, size_t m,
                      const float* lut8, size_t lut8_stride, const float* scales,
                      const AdcDistanceParams& params, float* dist, size_t dist_stride,
                      uint8_t* block_masks) {
    const __m256 bounds = _mm256_loadu_ps(params.bounds);
    const __m256 qnorms = kL2 ? _mm256_loadu_ps(params.qnorms) : _mm256_setzero_ps();
    const __m256 two = _mm256_set1_ps(2.0f);
    for (size_t b = 0; b < nblocks; ++b) {
        const uint8_t* block = codes + b * block_stride;
        if (b + 2 < nblocks) prefetch_prefix(block + 2 * block_stride, m);
        __m256 passing = _mm256_setzero_ps();  // lane q: all ones once a slot may enter for q
        // Eight database vectors at a time: eight accumulators (lanes = queries) are eight
        // independent add chains, enough to hide the add latency, and leave registers free.
        for (size_t lane0 = 0; lane0 < kBlockSize; lane0 += 8) {
            __m256 sum[8];
            for (int i = 0; i < 8; ++i) sum[i] = _mm256_setzero_ps();
            const uint8_t* column = block + lane0;
            for (size_t j = 0; j < m; ++j) {
                const uint8_t* code_row = column + j * kBlockSize;
                const float* table = kShared ? lut8 : lut8 + j * lut8_stride;
                const __m256 scale = _mm256_set1_ps(scales[j]);
                for (int i = 0; i < 8; ++i) {
                    const __m256 val = _mm256_loadu_ps(
                        table + static_cast<size_t>(code_row[i]) * kInterleavedQueries);
                    // Separate multiply and add (not FMA): bit-identical to the reference.
                    sum[i] = _mm256_add_ps(sum[i], _mm256_mul_ps(val, scale));
                }
            }
            for (int i = 0; i < 8; ++i) {
                if (kL2) {
                    const __m256 norm = _mm256_set1_ps(params.norms[b * kBlockSize + lane0 + i]);
                    sum[i] = _mm256_sub_ps(_mm256_add_ps(qnorms, norm), _mm256_mul_ps(two, sum[i]));
                    passing = _mm256_or_ps(passing, _mm256_cmp_ps(sum[i], bounds, _CMP_LE_OQ));
                } else {
                    passing = _mm256_or_ps(passing, _mm256_cmp_ps(sum[i], bounds, _CMP_GE_OQ));
                }
            }
            transpose8x8(sum);  // now sum[q] holds query q's distances of the 8 vectors
            float* out = dist + b * kBlockSize + lane0;
            for (int q = 0; q < 8; ++q) _mm256_storeu_ps(out + q * dist_stride, sum[q]);
        }
        block_masks[b] = static_cast<uint8_t>(_mm256_movemask_ps(passing));
    }
}

}  // namespace

void adc_scan_interleaved_avx2(const uint8_t* codes, size_t nblocks, size_t block_stride,
                               size_t m, const float* lut8, size_t lut8_stride,
                               const float* scales, const AdcDistanceParams& params, float* dist,
                               size_t dist_stride, uint8_t* block_masks) {
    static_assert(kInterleavedQueries == 8, "one 8-lane vector holds the 8 queries' values");
    const bool l2 = params.norms != nullptr;
    const auto scan = l2 ? (lut8_stride == 0 ? scan_interleaved<true, true>
                                             : scan_interleaved<true, false>)
                         : (lut8_stride == 0 ? scan_interleaved<false, true>
                                             : scan_interleaved<false, false>);
    scan(codes, nblocks, block_stride, m, lut8, lut8_stride, scales, params, dist, dist_stride,
         block_masks);
}

}  // namespace drq
