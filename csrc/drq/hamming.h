// Exhaustive Hamming search over binary codes (faiss IndexBinaryFlat semantics).
//
// Code layout: n codes of W uint64 words each, code i at codes + i * W; bit j of a code is bit
// (j % 64) of word j / 64 (the little-endian reading of faiss's LSB-first packed bytes). A
// search may use any prefix of nbits <= 64 * W bits: the words past ceil(nbits / 64) are not
// read and the last one read is masked.
//
// Results: for every query the k codes with the smallest distance, ordered by distance, then id,
// then storage position (a total order, so results never depend on the SIMD level, the thread
// count or how the database was split). Fewer than k codes: padding with distance INT32_MAX and
// id -1 (what faiss returns).
//
// Top-k selection exploits the small integer distances: each (query, database slice) keeps a
// candidate list and a count per distance value, and a threshold t with at least k kept
// candidates at distance <= t; only codes with distance <= t are ever appended (almost none once
// t has dropped), so there is no heap on the hot path. When ids increase with storage position
// (no ids, or sorted ids: checked once per search of >= 4 queries) a later code at distance t
// ranks behind the k kept ones, so the filter then takes distance <= t - 1 and a query with k
// codes at distance 0 stops scanning: duplicate and near-duplicate codes (learned hash codes of
// a few classes) no longer pass in masses. Unsorted ids keep every tie at t (exact results
// either way).
//
// The per-ISA distance kernels (hamming_avx2.cpp, hamming_avx512.cpp) include no C++ standard
// library templates (see adc.h).
#pragma once

#include <cstddef>
#include <cstdint>

#include "parallel.h"
#include "simd_level.h"

namespace drq {

// The distance of code i is the popcount of (codes[i * W + w] ^ query[w]) over words w < words,
// the last of them ANDed with last_mask (1 <= words <= W; nbits <= 65535 so distances fit uint16).
// A filter kernel appends (i, distance) for every i < n whose distance is <= threshold to
// pos_out / dist_out (room for n entries each), in increasing i, and returns how many. Fusing
// the threshold test into the scan means the selection only ever sees the few codes that pass.
using HammingFilterFn = size_t (*)(const uint64_t* codes, size_t n, size_t W,
                                   const uint64_t* query, size_t words, uint64_t last_mask,
                                   uint32_t threshold, uint32_t* pos_out, uint16_t* dist_out);

size_t hamming_filter_ref(const uint64_t* codes, size_t n, size_t W, const uint64_t* query,
                          size_t words, uint64_t last_mask, uint32_t threshold, uint32_t* pos_out,
                          uint16_t* dist_out);
#if defined(DRQ_HAVE_X86_SIMD)
// Used at the AVX2 level: for one-word codes stored one word each (W == 1, words == 1) a
// pshufb/vpsadbw popcount of 16 codes per step, else hardware popcnt (all AVX2 CPUs have POPCNT).
size_t hamming_filter_avx2(const uint64_t* codes, size_t n, size_t W, const uint64_t* query,
                           size_t words, uint64_t last_mask, uint32_t threshold, uint32_t* pos_out,
                           uint16_t* dist_out);
// VPOPCNTDQ, 8 codes per instruction, compress-stores: needs cpu_has_avx512_vpopcntdq().
size_t hamming_filter_avx512(const uint64_t* codes, size_t n, size_t W, const uint64_t* query,
                             size_t words, uint64_t last_mask, uint32_t threshold,
                             uint32_t* pos_out, uint16_t* dist_out);
#endif

// The kernel for a level (which must be supported). At the AVX-512 level without VPOPCNTDQ
// (e.g. Skylake-X) this is the AVX2 kernel.
HammingFilterFn hamming_filter_for(SimdLevel level);

struct HammingSearchParams {
    const uint64_t* codes = nullptr;  // n * W words
    size_t n = 0;
    size_t W = 0;                      // words per stored code, >= 1
    const int64_t* ids = nullptr;      // n ids, or nullptr: the id is the storage position
    const uint64_t* queries = nullptr;  // nq * W words, same layout as codes
    size_t nq = 0;
    size_t nbits = 0;  // bits compared, 1..64 * W
    size_t k = 0;      // results per query, >= 1
};

// Throws std::invalid_argument for inconsistent params.
void validate_hamming_search(const HammingSearchParams& params);

// distances (out): nq * k int32; labels (out): nq * k int64. Parallel over queries, or over
// database slices when there are fewer queries than threads. Throws drq::Interrupted when
// `interrupt` (called on this thread only) returns true.
void hamming_search(const HammingSearchParams& params, int32_t* distances, int64_t* labels,
                    const InterruptCallback& interrupt, int nthreads, SimdLevel level);

// Single-threaded, straightforward version for tests: every distance by the scalar kernel
// (threshold = nbits: everything passes), then a full sort per query.
void hamming_search_reference(const HammingSearchParams& params, int32_t* distances,
                              int64_t* labels);

}  // namespace drq
