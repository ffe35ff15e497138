// Inverted lists over sequential DRQ codes (IndexIVFDRQ's database side) and their search.
//
// Each of the nlist lists is a CodeStore (codes.h): blocked, iteration-major codes, so a scan
// at prefix m reads m * kBlockSize bytes per block of the list; per-prefix floats; int64 ids.
//
// What the per-prefix float holds (the caller computes it when adding; "by residual" encoding,
// vector x in list l with centroid c_l, residual code reconstruction r^_m):
//     L2:            term_m = ||r^_m||^2 + 2 <c_l, r^_m>
//     inner product: not read (any value)
// so that, with the query's single shared table T = q C^T and ip_m = sum_{j<m} s_j T[b_j]
// (the adc.h kernel, bit-identical at every SIMD level):
//     L2:            ||q - c_l - r^_m||^2 = (||q - c_l||^2 + term_m) - 2 ip_m
//     inner product: <q, c_l + r^_m>      = <q, c_l> + ip_m
// ||q - c_l||^2 (or <q, c_l>) is the coarse quantizer's distance, given per probed list. This is
// IVF-PQ's "precomputed table" decomposition; with a shared codebook nothing per list is needed
// at search time: the same K-entry query table serves every probed list and every iteration.
// With one codebook per iteration (C_j), the query has one table per iteration instead,
// T_j = q C_j^T, and ip_m = sum_{j<m} s_j T_j[b_j]; the terms and the decomposition are unchanged
// (the caller computes <c_l, r^_m> with the per-iteration codebooks), and the tables still serve
// every probed list.
//
// Ranking: the total order of topk.h with storage position pos = (list << 32) | offset, so
// results are identical for every SIMD level and thread count.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "codes.h"
#include "parallel.h"
#include "simd_level.h"
#include "topk.h"

namespace drq {

class InvertedLists {
public:
    // nlist >= 1 lists of vectors with M >= 1 iterations. Throws std::invalid_argument otherwise.
    InvertedLists(size_t nlist, size_t M);

    size_t nlist() const { return lists_.size(); }
    size_t M() const { return M_; }
    size_t ntotal() const { return ntotal_; }
    const CodeStore& list(size_t l) const { return lists_[l]; }

    // Appends n vectors: codes n * M bytes, terms n * M floats (row-major, see above), ids n,
    // list_nos n values in [0, nlist). All or nothing (validation first; on allocation failure the
    // lists already extended are cut back).
    void add(size_t n, const uint8_t* codes, const float* terms, const int64_t* ids,
             const int64_t* list_nos);

    // remove_mask: ntotal bytes over the vectors in list order (list 0's vectors first, each list
    // in storage order), as ids_in_list_order() lists them. Returns how many were removed.
    size_t remove(const uint8_t* remove_mask);

    // ntotal ids in list order.
    std::vector<int64_t> ids_in_list_order() const;

    void reset();

    // Bytes held by all lists (codes with block padding, per-prefix floats, ids).
    size_t memory_usage() const;

    uint8_t max_code() const;

private:
    size_t M_;
    size_t ntotal_ = 0;
    std::vector<CodeStore> lists_;
};

struct IVFSearchParams {
    // Lookup tables, nq * tables_per_query * K floats. Query q's table for iteration j starts at
    // tables + (q * tables_per_query + (tables_per_query == 1 ? 0 : j)) * K (as SearchParams).
    const float* tables = nullptr;
    size_t nq = 0;
    size_t K = 0;                     // 1..256, above every stored code
    size_t tables_per_query = 1;      // 1: T = q C^T for all iterations; else >= iters, one each
    const float* coarse = nullptr;    // nq * nprobe: ||q - c_l||^2 (L2) or <q, c_l> (IP)
    const int64_t* list_nos = nullptr;  // nq * nprobe: probed lists, -1 = none (skipped)
    size_t nprobe = 0;
    const float* scales = nullptr;    // >= iters floats
    size_t iters = 0;                 // 1..M
    size_t k = 0;                     // >= 1
    Metric metric = Metric::L2;
    // Optional filter over the vectors in list order (as InvertedLists::remove): nullptr searches
    // everything; else allowed_size == ntotal and only vectors with a nonzero entry are returned.
    const uint8_t* allowed = nullptr;
    size_t allowed_size = 0;
};

// Throws std::invalid_argument when params do not fit the lists (including list numbers out of
// range).
void validate_ivf_search(const InvertedLists& lists, const IVFSearchParams& params);

// distances, labels (out): nq * k each; -1 / +inf (L2) / -inf (IP) padding.
// Parallel over queries (or over (query, probed list) pairs with a merge when nq < nthreads).
// Throws drq::Interrupted when `interrupt` (called on this thread only) returns true.
void ivf_search(const InvertedLists& lists, const IVFSearchParams& params, float* distances,
                int64_t* labels, const InterruptCallback& interrupt, int nthreads, SimdLevel level);

// Single-threaded, unblocked scalar version with a full sort (tests).
void ivf_search_reference(const InvertedLists& lists, const IVFSearchParams& params,
                          float* distances, int64_t* labels);

}  // namespace drq
