// Exhaustive ADC search over a CodeStore at any prefix length.
//
// For query q and stored vector i, with ip = sum_{j<iters} scales[j] * table_j(q)[code_j(i)]
// (see adc.h for the exact operation order):
//     L2:            dist = (qnorms[q] + ||xhat_iters(i)||^2) - 2 * ip     (smallest first)
//     inner product: dist = ip                                              (largest first)
// Results follow the total order of topk.h (ties by id, then storage position), so they are
// identical for every SIMD level and thread count.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "codes.h"
#include "parallel.h"
#include "simd_level.h"
#include "topk.h"

namespace drq {

struct SearchParams {
    // Lookup tables, nq * tables_per_query * K floats. Query q's table for iteration j starts at
    // tables + (q * tables_per_query + (tables_per_query == 1 ? 0 : j)) * K.
    const float* tables = nullptr;
    size_t nq = 0;
    size_t K = 0;                 // entries per table, 1..256, above every stored code
    size_t tables_per_query = 1;  // 1: one table for all iterations; else >= iters, one each
    const float* qnorms = nullptr;  // nq floats, ||q||^2 (read for L2 only)
    const float* scales = nullptr;  // >= iters floats, the per-iteration factors
    size_t iters = 0;               // prefix length, 1..store.M()
    size_t k = 0;                   // results per query, >= 1
    Metric metric = Metric::L2;
    // Optional filter (faiss's IDSelector, evaluated by the caller over the stored ids):
    // nullptr searches every stored vector; else allowed_size must equal store.ntotal() and only
    // positions with allowed[pos] != 0 can be returned (fewer than k allowed: -1 padding).
    const uint8_t* allowed = nullptr;
    size_t allowed_size = 0;
};

// Throws std::invalid_argument when params do not fit the store.
void validate_search(const CodeStore& store, const SearchParams& params);

// distances (out): nq * k floats; labels (out): nq * k ids (-1 padding past ntotal).
// Uses the ADC kernel of `level` (which must be supported), up to nthreads threads: over queries
// when there are enough of them, else over database slices with a top-k merge.
// Throws drq::Interrupted when `interrupt` (called on this thread only) returns true.
void search(const CodeStore& store, const SearchParams& params, float* distances,
            int64_t* labels, const InterruptCallback& interrupt, int nthreads, SimdLevel level);

// Range search: for every query, each stored vector (allowed by the filter, if any) with
// dist < radius (L2) or dist > radius (inner product), with the same distances as search(), in
// the same total order (best first, ties by id then position). params.k is ignored. results
// (out) is resized to nq lists. Parallel over queries, or over database slices when nq is small.
void range_search(const CodeStore& store, const SearchParams& params, float radius,
                  std::vector<std::vector<Candidate>>& results, const InterruptCallback& interrupt,
                  int nthreads, SimdLevel level);

// Single-threaded, straightforward version for tests: per query, computes every distance with
// the same floating-point operations (no blocking, no heaps) and sorts them fully.
void search_reference(const CodeStore& store, const SearchParams& params, float* distances,
                      int64_t* labels);

}  // namespace drq
