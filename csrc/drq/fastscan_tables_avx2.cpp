// AVX2 + FMA kernel of the fast-scan float tables (fastscan_tables.h). Compiled with -mavx2 -mfma.
//
// Register block: up to 6 queries x the 16 codewords of one iteration = 12 accumulators of 8
// lanes; per dimension k, 2 loads of the codebook row (64 bytes) and 6 query broadcasts feed 12
// independent FMA chains (more chains than FMA latency x throughput, so the FMA units stay busy:
// 4 queries, 8 chains, measured 1.3-1.5x slower). Iterations are the outer loop so that iteration
// j's d x 16 codebook (50 KB at d = 784) is read from memory once per call and from L2 by the
// other query blocks.
//
// Zero coordinates: dimensions where every query of a register block is 0 are skipped. That
// leaves the bits of the full chain (fastscan_tables.h): fma(+-0, c, acc) = acc for a finite c
// and an acc that is never -0 (it starts at +0, and a rounded sum is -0 only when both terms
// are). The blocks are formed greedily among up to kGroupWindow queries so that their zeros
// coincide: each block starts with the query of most zeros and adds, 5 times, the query that
// keeps the most dimensions zero for all (the order changes no bits, only which entries run
// together). Fashion-MNIST (half of the pixels 0): 16 % of the dimensions are 0 for all 6
// queries of a block in input order, 36 % with the greedy blocks. 126-iteration tables of 128
// queries, 1 thread, shared machine, min of 40 runs, interleaved with the same queries + 1e-3
// (no zeros): 39.9 -> 33.5 us per query (3 runs: 0.84-0.87x; input-order blocks alone: 0.90x).
#include <immintrin.h>

#include <cstdint>

#include "fastscan_tables.h"

namespace drq {

namespace {

// Queries per register block: 12 accumulators + 2 codebook halves + 1 broadcast = 15 of the 16 ymm registers.
constexpr int kTableQueries = 6;
// Queries among which the blocks are formed (greedy: ~window^2 / 6 bitset intersections); the
// search calls with at most 128 (a query group).
constexpr size_t kGroupWindow = 128;
// Iterations from which the greedy grouping pays: it costs ~1 us per query (128 queries, d = 784)
// and saves ~20 % of the dimensions, ~0.07 us per iteration at d = 784 (estimate from the
// numbers above); below, blocks are the queries in input order (common zeros still skipped).
constexpr size_t kGroupMinIters = 32;

// Named accumulators instead of arrays: GCC 12 keeps an array of 5 or more __m256 in memory and
// stores it every iteration (measured 2x slower).
//   x: NQ query pointers (d floats each); dims: the n dimensions, increasing, where some of them
//   is non-zero; out: NQ pointers to the 16 entries of the iteration's table
template <int NQ>
void tables_block(const float* const* x, const uint32_t* dims, size_t n, const float* cb, float* const* out) {
    static_assert(NQ >= 1 && NQ <= kTableQueries, "1..kTableQueries queries");
    __m256 lo0 = _mm256_setzero_ps(), hi0 = lo0, lo1 = lo0, hi1 = lo0, lo2 = lo0, hi2 = lo0;
    __m256 lo3 = lo0, hi3 = lo0, lo4 = lo0, hi4 = lo0, lo5 = lo0, hi5 = lo0;
    const float* x0 = x[0];
    const float* x1 = NQ > 1 ? x[1] : x0;
    const float* x2 = NQ > 2 ? x[2] : x0;
    const float* x3 = NQ > 3 ? x[3] : x0;
    const float* x4 = NQ > 4 ? x[4] : x0;
    const float* x5 = NQ > 5 ? x[5] : x0;
    const float* const rows[kTableQueries] = {x0, x1, x2, x3, x4, x5};
    for (size_t i = 0; i < n; ++i) {
        const size_t k = dims[i];
        const __m256 c0 = _mm256_loadu_ps(cb + 16 * k);
        const __m256 c1 = _mm256_loadu_ps(cb + 16 * k + 8);
        const auto chain = [&](int q, __m256& lo, __m256& hi) {
            const __m256 x = _mm256_broadcast_ss(rows[q] + k);
            lo = _mm256_fmadd_ps(x, c0, lo);
            hi = _mm256_fmadd_ps(x, c1, hi);
        };
        chain(0, lo0, hi0);
        if constexpr (NQ > 1) chain(1, lo1, hi1);
        if constexpr (NQ > 2) chain(2, lo2, hi2);
        if constexpr (NQ > 3) chain(3, lo3, hi3);
        if constexpr (NQ > 4) chain(4, lo4, hi4);
        if constexpr (NQ > 5) chain(5, lo5, hi5);
    }
    const auto store = [&](int q, __m256 lo, __m256 hi) {
        _mm256_storeu_ps(out[q], lo);
        _mm256_storeu_ps(out[q] + 8, hi);
    };
    store(0, lo0, hi0);
    if constexpr (NQ > 1) store(1, lo1, hi1);
    if constexpr (NQ > 2) store(2, lo2, hi2);
    if constexpr (NQ > 3) store(3, lo3, hi3);
    if constexpr (NQ > 4) store(4, lo4, hi4);
    if constexpr (NQ > 5) store(5, lo5, hi5);
}

}  // namespace

void fastscan_tables_avx2(const float* queries, size_t nq, size_t d, const float* codebooks_t,
                          size_t iters, float* tables, size_t table_stride) {
    if (nq == 0 || d == 0) {
        for (size_t q = 0; q < nq; ++q) {
            for (size_t e = 0; e < iters * 16; ++e) tables[q * table_stride + e] = 0.0f;
        }
        return;
    }
    const size_t words = (d + 63) / 64;
    const size_t max_blocks = nq / kTableQueries + (nq + kGroupWindow - 1) / kGroupWindow;
    // new[]: no standard library templates in the SIMD files (fastscan.h).
    uint64_t* zero = new uint64_t[nq * words + words];  // bit k of query q: coordinate k is 0; + common
    uint32_t* order = new uint32_t[nq];                  // queries, block after block
    uint8_t* taken = new uint8_t[nq];
    size_t* block_start = new size_t[max_blocks];       // first position in order; block_size: count
    size_t* block_size = new size_t[max_blocks];
    size_t* block_dims = new size_t[max_blocks];
    uint32_t* dims = new uint32_t[max_blocks * d];       // block b's dimensions at dims + b * d
    uint64_t* common = zero + nq * words;
    for (size_t q = 0; q < nq; ++q) {
        taken[q] = 0;
        for (size_t w = 0; w < words; ++w) zero[q * words + w] = 0;
        for (size_t k = 0; k < d; ++k) zero[q * words + k / 64] |= uint64_t(queries[q * d + k] == 0.0f) << (k % 64);
    }
    const auto zeros_with = [&](size_t q, const uint64_t* mask) {
        size_t n = 0;
        for (size_t w = 0; w < words; ++w) n += static_cast<size_t>(__builtin_popcountll(zero[q * words + w] & mask[w]));
        return n;
    };
    bool any_zero = false;
    for (size_t e = 0; e < nq * words && !any_zero; ++e) any_zero = zero[e] != 0;
    const bool greedy = any_zero && iters >= kGroupMinIters;
    size_t nblocks = 0, pos = 0;
    for (size_t w0 = 0; w0 < nq; w0 += kGroupWindow) {
        const size_t w1 = nq < w0 + kGroupWindow ? nq : w0 + kGroupWindow;
        while (pos < w1) {
            block_start[nblocks] = pos;
            for (size_t w = 0; w < words; ++w) common[w] = ~uint64_t(0);
            size_t size = 0;
            for (; size < kTableQueries && pos < w1; ++size) {
                size_t best = w1, best_zeros = 0;
                for (size_t q = w0; q < w1 && (greedy || best == w1); ++q) {
                    if (taken[q]) continue;
                    const size_t z = greedy ? zeros_with(q, common) : 0;
                    if (best == w1 || z > best_zeros) { best = q; best_zeros = z; }
                }
                taken[best] = 1;
                order[pos++] = static_cast<uint32_t>(best);
                for (size_t w = 0; w < words; ++w) common[w] &= zero[best * words + w];
            }
            size_t n = 0;
            for (size_t k = 0; k < d; ++k) {
                if (((common[k / 64] >> (k % 64)) & 1) == 0) dims[nblocks * d + n++] = static_cast<uint32_t>(k);
            }
            block_size[nblocks] = size;
            block_dims[nblocks] = n;
            ++nblocks;
        }
    }
    for (size_t j = 0; j < iters; ++j) {
        const float* cb = codebooks_t + j * d * 16;
        for (size_t b = 0; b < nblocks; ++b) {
            const float* x[kTableQueries];
            float* out[kTableQueries];
            for (size_t i = 0; i < block_size[b]; ++i) {
                const size_t q = order[block_start[b] + i];
                x[i] = queries + q * d;
                out[i] = tables + q * table_stride + 16 * j;
            }
            const uint32_t* live = dims + b * d;
            const size_t n = block_dims[b];
            switch (block_size[b]) {
                case 1: tables_block<1>(x, live, n, cb, out); break;
                case 2: tables_block<2>(x, live, n, cb, out); break;
                case 3: tables_block<3>(x, live, n, cb, out); break;
                case 4: tables_block<4>(x, live, n, cb, out); break;
                case 5: tables_block<5>(x, live, n, cb, out); break;
                default: tables_block<kTableQueries>(x, live, n, cb, out); break;
            }
        }
    }
    delete[] dims;
    delete[] block_dims;
    delete[] block_size;
    delete[] block_start;
    delete[] taken;
    delete[] order;
    delete[] zero;
}

}  // namespace drq
