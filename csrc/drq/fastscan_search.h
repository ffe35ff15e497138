// k-NN search over a FastScanStore: per-query uint8 tables, the fast-scan kernel, a reservoir of
// the best uint16 sums, and optional re-ranking of those candidates with the exact float tables.
// The float tables are either given or (queries + codebooks) computed per query group inside the
// parallel region (fastscan_tables.h), so that no BLAS call runs during a search.
//
// Metric-agnostic: the caller gives float tables whose sum is to be MINIMISED and a per-query
// bias and sign; the reported distance of a vector is sign * (bias + sum of its table entries
// [+ its norm level * norm_step]).
//   L2:             tables -2 <q, C_j[k]>, norm levels (value norm_step each), bias ||q||^2 + norm_min
//   inner product:  tables -<q, C_j[k]>, no norm, bias 0, sign -1 (reported descending)
//
// Table quantisation (per query): every code table t is shifted by its minimum; code byte p's two
// tables use the scale a_p = a 2^e_p, a = 255 / (largest table range), e_p the largest level
// (<= 8, non-decreasing in p) that keeps them in 0..255: Q_t[k] = round((T_t[k] - min_t) a_p).
// The kernel's Horner shifts (fastscan.h) bring every byte to the last byte's scale A = a_last,
// with E capped so that no sum can reach 2^16, and
//     sum of float entries ~= sum_t min_t + (uint16 sum) / A.
// (Residual tables shrink with the iteration: on Fashion-MNIST the last of 126 has ~1/30 of the
// first's range, so one scale for all left it ~8 levels.)
// The norm is not a table: its level l adds l * F >> 8 with F = round(256 a norm_step) (fastscan.h),
// so its wide range does not coarsen the code tables' scale (a is lowered only if F would exceed
// 65535, i.e. if the norm range is over 256 times the widest table's).
// Without re-ranking the reported distance is that estimate. With rerank = R > 0 the scan keeps
// max(k, R) candidates by the uint16 sum and their exact float sums pick the k reported (the
// stored norm stays the 8-bit quantised one, l * norm_step in float). R = k only
// re-sorts the k kept candidates: cheap (their code bytes are prefetched) and it fixes most of the
// rounding noise of the uint8 tables.
// Ties: equal uint16 sums (or equal re-ranked sums) rank by storage position, so results are
// the same for every SIMD level and thread count.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fastscan.h"
#include "fastscan_codes.h"
#include "fastscan_tables.h"
#include "parallel.h"

namespace drq {

struct FastScanSearchParams {
    size_t nq = 0;
    // nq * ntables * 16 floats, in kernel order: for each code byte p < ceil(m / 2) the table of
    // iteration 2p then that of 2p + 1 (zeros past m). ntables = 2 ceil(m / 2).
    // nullptr: the tables are computed per query group inside the search (fastscan_tables.h)
    // from `queries` and `codebooks_t`, with the `tables_fn` given to fastscan_search.
    const float* tables = nullptr;
    size_t ntables = 0;
    const float* queries = nullptr;      // nq * d (used when tables == nullptr)
    size_t d = 0;
    const float* codebooks_t = nullptr;  // >= iters * d * 16, fastscan_tables.h layout, metric factor folded in
    size_t codebook_iters = 0;           // iterations held by codebooks_t (>= iters)
    size_t iters = 0;        // m, 1..M
    long norm_slot = -1;     // norm byte slot scanned with the codes, or -1
    float norm_step = 0.0f;  // table units per norm level (finite, >= 0; used if norm_slot >= 0)
    const float* bias = nullptr;  // nq
    float sign = 1.0f;
    size_t k = 0;            // results per query, 1 <= k <= ntotal
    size_t rerank = 0;       // 0: report the quantised estimate; R > 0: re-rank max(k, R)
    const uint8_t* allowed = nullptr;  // nullptr or ntotal bytes: 0 excludes a vector
    size_t allowed_size = 0;
};

// distances, labels: nq * k (reported best first; -1 / +-inf padding if fewer candidates).
// tables_fn: required when p.tables is nullptr.
// Throws std::invalid_argument on inconsistent parameters, drq::Interrupted when interrupted.
void fastscan_search(const FastScanStore& store, const FastScanSearchParams& p, float* distances,
                     int64_t* labels, const InterruptCallback& interrupt, int nthreads,
                     FastScanFn kernel, FastScanFilterFn filter,
                     FastScanTablesFn tables_fn = nullptr);

// Quantises one query's tables (ntables * 16 floats, ntables even) to uint8 (ntables * 16) and
// Horner shifts (ntables / 2); returns the scale A of the uint16 sums (at most max_scale) and
// writes sum_t min_t to *offset.
float fastscan_quantize_tables(const float* tables, size_t ntables, uint8_t* out, uint8_t* shifts,
                               float* offset, float max_scale);

}  // namespace drq
