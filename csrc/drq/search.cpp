#include "search.h"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "adc.h"

namespace drq {

namespace {

// Code bytes one tile of blocks should read per query (prefix bytes only): the tile stays in
// L2 while a group of queries scans it, so the codes come from memory once per group.
constexpr size_t kTileCodeBytes = 64 * 1024;
// Bounds on blocks per tile; the upper bound also caps the accumulator buffer (16 KiB).
constexpr size_t kMinTileBlocks = 4;
constexpr size_t kMaxTileBlocks = 128;
// Queries scanning a tile together (one work item, when parallel over queries): one
// query-interleaved scan.
constexpr size_t kMaxQueryGroup = kInterleavedQueries;
// Smallest query group scanned with the query-interleaved kernel. It always computes
// kInterleavedQueries lanes (about 4.6 instructions per code byte whatever the group size); the
// multi-query kernel costs about 2-3 per code byte and query, so it stays the cheaper one for
// 1 or 2 queries (an estimate from the instruction counts of both loops).
constexpr size_t kMinInterleavedGroup = 3;
// Table lookups (nq * ntotal * iters) per worker below which another thread is not worth
// spawning (~0.1 ms of scanning vs tens of microseconds to start a thread).
constexpr size_t kMinLookupsPerWorker = size_t(1) << 18;
// Smallest database slice, in blocks, when the database is split between threads.
constexpr size_t kMinSliceBlocks = 16;

struct Plan {
    size_t tile_blocks;
    size_t query_group;
    size_t ngroups;
    size_t nslices;  // 1: parallel over queries; > 1: database split into slices
    int nworkers;
};

Plan make_plan(const CodeStore& store, const SearchParams& p, int nthreads) {
    Plan plan{};
    plan.tile_blocks = std::clamp(kTileCodeBytes / (p.iters * kBlockSize), kMinTileBlocks,
                                  kMaxTileBlocks);
    const size_t lookups = p.nq * store.ntotal() * p.iters;
    const size_t useful_workers = std::max<size_t>(1, lookups / kMinLookupsPerWorker);
    const size_t nworkers = std::min<size_t>(static_cast<size_t>(std::max(1, nthreads)), useful_workers);
    if (p.nq >= nworkers) {
        plan.nslices = 1;
        plan.query_group = std::clamp<size_t>(p.nq / nworkers, 1, kMaxQueryGroup);
    } else {
        plan.nslices = std::clamp<size_t>(store.nblocks() / kMinSliceBlocks, 1, nworkers);
        plan.query_group = std::min(p.nq, kMaxQueryGroup);
    }
    plan.ngroups = (p.nq + plan.query_group - 1) / plan.query_group;
    plan.nworkers = static_cast<int>(std::min(nworkers, plan.ngroups * plan.nslices));
    return plan;
}

const float* table_for(const SearchParams& p, size_t q) {
    return p.tables + q * p.tables_per_query * p.K;
}

size_t lut_stride_of(const SearchParams& p) { return p.tables_per_query == 1 ? 0 : p.K; }

// Distance of one stored vector from its accumulated inner product. Shared by the blocked search
// and the reference so both compute the same bits.
// Distance given to vectors the filter (SearchParams::allowed) excludes: NaN never ranks.
constexpr float kFilteredOut = std::numeric_limits<float>::quiet_NaN();

template <Metric metric>
inline float distance_from_ip(float ip, float qnorm, float vector_norm) {
    if (metric == Metric::L2) return (qnorm + vector_norm) - 2.0f * ip;
    return ip;
}

// True when any of the kBlockSize distances may enter a heap with this threshold. Branch-free
// so it vectorises: the common case (nothing passes) costs a few instructions per block.
template <Metric metric>
inline bool any_may_enter(const float* dist, float threshold) {
    int passing = 0;  // an int sum (not a bool or) is what GCC vectorises
    for (size_t i = 0; i < kBlockSize; ++i) passing += Ranking<metric>::may_enter(dist[i], threshold);
    return passing != 0;
}

// Offers the count <= kBlockSize candidates of one block: the passing slots are listed first
// without branches (which slot passes is unpredictable: a branch per slot mispredicts often),
// then only those are pushed; push() tests each against the heap's current threshold.
template <Metric metric>
void push_listed(TopK<metric>& heap, const float* dist, size_t count, size_t pos_begin) {
    const float threshold = heap.threshold();
    uint32_t passing[kBlockSize];
    size_t npassing = 0;
    for (size_t i = 0; i < count; ++i) {
        passing[npassing] = static_cast<uint32_t>(i);
        npassing += Ranking<metric>::may_enter(dist[i], threshold) ? 1 : 0;
    }
    for (size_t t = 0; t < npassing; ++t) {
        const size_t i = passing[t];
        heap.push_position(dist[i], static_cast<int64_t>(pos_begin + i));
    }
}

// Offers count candidates (distances dist, storage positions pos_begin + i) to the heap.
// Once the heap is full almost every candidate fails the threshold test, so whole blocks are
// rejected at once, and the blocks that pass are offered with push_listed.
template <Metric metric>
void push_candidates(TopK<metric>& heap, const float* dist, size_t count, size_t pos_begin) {
    for (size_t chunk = 0; chunk < count; chunk += kBlockSize) {
        const size_t chunk_end = std::min(count, chunk + kBlockSize);
        if (chunk_end - chunk == kBlockSize &&
            !any_may_enter<metric>(dist + chunk, heap.threshold())) {
            continue;
        }
        push_listed(heap, dist + chunk, chunk_end - chunk, pos_begin + chunk);
    }
}

// Filtered-out vectors get NaN, which never ranks: the heap code is unchanged and this pass is
// branch-free. dist, allowed: count entries.
inline void filter_out(float* dist, const uint8_t* allowed, size_t count) {
    for (size_t v = 0; v < count; ++v) dist[v] = allowed[v] != 0 ? dist[v] : kFilteredOut;
}

template <Metric metric>
void search_with_metric(const CodeStore& store, const SearchParams& p, float* distances,
                        int64_t* labels, const InterruptCallback& interrupt, int nthreads,
                        AdcScanQueriesFn kernel, AdcScanInterleavedFn interleaved_kernel) {
    const Plan plan = make_plan(store, p, nthreads);
    const size_t ntotal = store.ntotal();
    const size_t nblocks = store.nblocks();
    const size_t stride = store.block_stride();
    const size_t lut_stride = lut_stride_of(p);
    const float* norms = store.prefix_norms(p.iters);
    const int64_t* ids = store.ids();

    // Per-worker scratch, allocated up front so workers do not allocate per item.
    struct WorkerScratch {
        std::vector<float> acc;
        std::vector<float> lut8;          // the group's interleaved tables
        std::vector<float> norms;         // the last tile's norms, padded to whole blocks
        std::vector<uint8_t> block_masks;  // the interleaved kernel's flags, one per tile block
        std::vector<TopK<metric>> heaps;  // used when nslices == 1
    };
    const size_t ntables = lut_stride == 0 ? 1 : p.iters;
    const size_t lut8_stride = lut_stride == 0 ? 0 : p.K * kInterleavedQueries;
    std::vector<WorkerScratch> scratch(static_cast<size_t>(plan.nworkers));
    // One tile of sums (or distances) per query of a multi-query or interleaved scan.
    const size_t acc_stride = plan.tile_blocks * kBlockSize;
    for (auto& s : scratch) {
        s.acc.resize(std::max(kScanQueries, kInterleavedQueries) * acc_stride);
        s.lut8.resize(ntables * p.K * kInterleavedQueries);
        s.norms.resize(acc_stride);
        s.block_masks.resize(plan.tile_blocks);
        if (plan.nslices == 1) s.heaps.resize(plan.query_group);
    }
    // With database slices, every (slice, query) heap lives until the merge: slice-major.
    // Only used when nq < nthreads, so this stays small.
    std::vector<TopK<metric>> slice_heaps(plan.nslices > 1 ? plan.nslices * p.nq : 0);

    // One tile for the group q0..q1 with the interleaved kernel: distances and block flags from
    // the kernel, then only the flagged blocks are offered to each query's heap. The bounds are
    // the heaps' thresholds when the tile starts; pushes within the tile re-test against the
    // current, possibly tighter, threshold.
    auto scan_tile_interleaved = [&](const uint8_t* tile_codes, size_t tile_nblocks, size_t count,
                                     size_t pos_begin, const float* tile_norms,
                                     const uint8_t* tile_allowed, TopK<metric>* heaps, size_t q0,
                                     size_t q1, WorkerScratch& ws) {
        float qnorms[kInterleavedQueries];
        float bounds[kInterleavedQueries];
        for (size_t i = 0; i < kInterleavedQueries; ++i) {
            const bool real = q0 + i < q1;
            qnorms[i] = metric == Metric::L2 && real ? p.qnorms[q0 + i] : 0.0f;
            bounds[i] = real ? heaps[i].threshold() : kFilteredOut;  // NaN flags nothing
        }
        const float* padded_norms = tile_norms;
        if (metric == Metric::L2 && count < tile_nblocks * kBlockSize) {
            // Last tile: the kernel reads a norm for every slot of its last block.
            std::fill(ws.norms.begin(), ws.norms.end(), 0.0f);
            std::copy(tile_norms, tile_norms + count, ws.norms.begin());
            padded_norms = ws.norms.data();
        }
        const AdcDistanceParams dparams{metric == Metric::L2 ? padded_norms : nullptr, qnorms,
                                        bounds};
        interleaved_kernel(tile_codes, tile_nblocks, stride, p.iters, ws.lut8.data(), lut8_stride,
                           p.scales, dparams, ws.acc.data(), acc_stride, ws.block_masks.data());
        for (size_t q = q0; q < q1; ++q) {
            float* dist = ws.acc.data() + (q - q0) * acc_stride;
            if (tile_allowed != nullptr) filter_out(dist, tile_allowed, count);
            const unsigned bit = 1u << (q - q0);
            for (size_t b = 0; b < tile_nblocks; ++b) {
                if ((ws.block_masks[b] & bit) == 0) continue;
                const size_t begin = b * kBlockSize;
                push_listed(heaps[q - q0], dist + begin, std::min(count, begin + kBlockSize) - begin,
                            pos_begin + begin);
            }
        }
    };

    Interrupter interrupter(interrupt);
    parallel_for(plan.ngroups * plan.nslices, plan.nworkers, interrupter,
                 [&](size_t item, int worker) {
        const size_t group = item / plan.nslices;
        const size_t slice = item % plan.nslices;
        const size_t q0 = group * plan.query_group;
        const size_t q1 = std::min(p.nq, q0 + plan.query_group);
        const size_t b_begin = slice * nblocks / plan.nslices;
        const size_t b_end = (slice + 1) * nblocks / plan.nslices;
        const size_t slice_vectors = std::min(b_end * kBlockSize, ntotal) -
                                     std::min(b_begin * kBlockSize, ntotal);

        WorkerScratch& ws = scratch[static_cast<size_t>(worker)];
        TopK<metric>* heaps =
            plan.nslices == 1 ? ws.heaps.data() : slice_heaps.data() + slice * p.nq + q0;
        for (size_t q = q0; q < q1; ++q) {
            heaps[q - q0].set_capacity(std::min(p.k, slice_vectors), ids);
        }
        const bool interleaved = q1 - q0 >= kMinInterleavedGroup;
        if (interleaved) {
            const float* luts[kInterleavedQueries];
            for (size_t q = q0; q < q1; ++q) luts[q - q0] = table_for(p, q);
            interleave_tables(luts, q1 - q0, p.K, ntables, lut_stride, ws.lut8.data());
        }

        for (size_t tile_begin = b_begin; tile_begin < b_end; tile_begin += plan.tile_blocks) {
            if (interrupter.should_stop(worker)) return;
            const size_t tile_end = std::min(b_end, tile_begin + plan.tile_blocks);
            const size_t pos_begin = tile_begin * kBlockSize;
            const size_t count = std::min(tile_end * kBlockSize, ntotal) - pos_begin;
            const uint8_t* tile_codes = store.block_codes(tile_begin);
            const float* tile_norms = norms + pos_begin;
            const uint8_t* tile_allowed = p.allowed != nullptr ? p.allowed + pos_begin : nullptr;
            if (interleaved) {
                scan_tile_interleaved(tile_codes, tile_end - tile_begin, count, pos_begin,
                                      tile_norms, tile_allowed, heaps, q0, q1, ws);
                continue;
            }
            for (size_t qs = q0; qs < q1; qs += kScanQueries) {
                const size_t nscan = std::min(kScanQueries, q1 - qs);
                const float* luts[kScanQueries];
                for (size_t i = 0; i < nscan; ++i) luts[i] = table_for(p, qs + i);
                kernel(tile_codes, tile_end - tile_begin, stride, p.iters, luts, nscan, lut_stride,
                       p.scales, ws.acc.data(), acc_stride);
                for (size_t i = 0; i < nscan; ++i) {
                    const size_t q = qs + i;
                    float* acc = ws.acc.data() + i * acc_stride;
                    TopK<metric>& heap = heaps[q - q0];
                    if (metric == Metric::L2) {
                        // Separate pass: vectorises.
                        const float qnorm = p.qnorms[q];
                        for (size_t v = 0; v < count; ++v) {
                            acc[v] = distance_from_ip<metric>(acc[v], qnorm, tile_norms[v]);
                        }
                    }
                    if (tile_allowed != nullptr) filter_out(acc, tile_allowed, count);
                    push_candidates(heap, acc, count, pos_begin);
                }
            }
        }
        if (plan.nslices == 1) {
            for (size_t q = q0; q < q1; ++q) {
                heaps[q - q0].write_sorted(p.k, distances + q * p.k, labels + q * p.k);
            }
        }
    });

    if (plan.nslices > 1) {
        // nq < nthreads here: the merge is small, done on the calling thread.
        TopK<metric> merged;
        for (size_t q = 0; q < p.nq; ++q) {
            merged.set_capacity(std::min(p.k, ntotal));
            for (size_t slice = 0; slice < plan.nslices; ++slice) {
                merged.merge(slice_heaps[slice * p.nq + q]);
            }
            merged.write_sorted(p.k, distances + q * p.k, labels + q * p.k);
        }
    }
}

template <Metric metric>
inline bool inside_radius(float dist, float radius) {
    // NaN is never inside (both comparisons are false).
    return metric == Metric::L2 ? dist < radius : dist > radius;
}

template <Metric metric>
void range_search_with_metric(const CodeStore& store, const SearchParams& p, float radius,
                              std::vector<std::vector<Candidate>>& results,
                              const InterruptCallback& interrupt, int nthreads, AdcScanFn kernel) {
    const Plan plan = make_plan(store, p, nthreads);  // same tiles and split as search
    const size_t ntotal = store.ntotal();
    const size_t nblocks = store.nblocks();
    const size_t stride = store.block_stride();
    const size_t lut_stride = lut_stride_of(p);
    const float* norms = store.prefix_norms(p.iters);
    const int64_t* ids = store.ids();

    std::vector<std::vector<float>> acc(static_cast<size_t>(plan.nworkers),
                                        std::vector<float>(plan.tile_blocks * kBlockSize));
    // One list per (slice, query), concatenated in slice order afterwards.
    std::vector<std::vector<Candidate>> parts(plan.nslices * p.nq);

    Interrupter interrupter(interrupt);
    parallel_for(plan.ngroups * plan.nslices, plan.nworkers, interrupter,
                 [&](size_t item, int worker) {
        const size_t group = item / plan.nslices;
        const size_t slice = item % plan.nslices;
        const size_t q0 = group * plan.query_group;
        const size_t q1 = std::min(p.nq, q0 + plan.query_group);
        const size_t b_begin = slice * nblocks / plan.nslices;
        const size_t b_end = (slice + 1) * nblocks / plan.nslices;
        float* a = acc[static_cast<size_t>(worker)].data();
        for (size_t tile_begin = b_begin; tile_begin < b_end; tile_begin += plan.tile_blocks) {
            if (interrupter.should_stop(worker)) return;
            const size_t tile_end = std::min(b_end, tile_begin + plan.tile_blocks);
            const size_t pos_begin = tile_begin * kBlockSize;
            const size_t count = std::min(tile_end * kBlockSize, ntotal) - pos_begin;
            for (size_t q = q0; q < q1; ++q) {
                kernel(store.block_codes(tile_begin), tile_end - tile_begin, stride, p.iters,
                       table_for(p, q), lut_stride, p.scales, a);
                const float qnorm = metric == Metric::L2 ? p.qnorms[q] : 0.0f;
                std::vector<Candidate>& out = parts[slice * p.nq + q];
                for (size_t i = 0; i < count; ++i) {
                    const size_t pos = pos_begin + i;
                    if (p.allowed != nullptr && p.allowed[pos] == 0) continue;
                    const float dist = distance_from_ip<metric>(a[i], qnorm, norms[pos]);
                    if (inside_radius<metric>(dist, radius)) {
                        out.push_back(Candidate{dist, ids[pos], static_cast<int64_t>(pos)});
                    }
                }
            }
        }
    });

    results.assign(p.nq, {});
    for (size_t q = 0; q < p.nq; ++q) {
        std::vector<Candidate>& r = results[q];
        for (size_t slice = 0; slice < plan.nslices; ++slice) {
            std::vector<Candidate>& part = parts[slice * p.nq + q];
            r.insert(r.end(), part.begin(), part.end());
            std::vector<Candidate>().swap(part);
        }
        std::sort(r.begin(), r.end(), Ranking<metric>::before);
    }
}

template <Metric metric>
void search_reference_with_metric(const CodeStore& store, const SearchParams& p,
                                  float* distances, int64_t* labels) {
    const size_t ntotal = store.ntotal();
    const size_t lut_stride = lut_stride_of(p);
    const float* norms = store.prefix_norms(p.iters);
    const int64_t* ids = store.ids();
    std::vector<Candidate> all;
    all.reserve(ntotal);
    for (size_t q = 0; q < p.nq; ++q) {
        const float* table = table_for(p, q);
        const float qnorm = metric == Metric::L2 ? p.qnorms[q] : 0.0f;
        all.clear();
        for (size_t pos = 0; pos < ntotal; ++pos) {
            if (p.allowed != nullptr && p.allowed[pos] == 0) continue;
            const uint8_t* slot =
                store.block_codes(pos / kBlockSize) + pos % kBlockSize;
            float ip = 0.0f;
            for (size_t j = 0; j < p.iters; ++j) {
                const float product = table[j * lut_stride + slot[j * kBlockSize]] * p.scales[j];
                ip = ip + product;
            }
            const float dist = distance_from_ip<metric>(ip, qnorm, norms[pos]);
            if (dist != dist) continue;  // NaN never ranks
            all.push_back(Candidate{dist, ids[pos], static_cast<int64_t>(pos)});
        }
        write_top_k_by_full_sort<metric>(all, p.k, distances + q * p.k, labels + q * p.k);
    }
}

}  // namespace

void validate_search(const CodeStore& store, const SearchParams& p) {
    if (p.K == 0 || p.K > 256) {
        throw std::invalid_argument("search: tables must have K in [1, 256] entries, got " +
                                    std::to_string(p.K));
    }
    if (p.iters == 0 || p.iters > store.M()) {
        throw std::invalid_argument("search: iters must be in [1, M=" + std::to_string(store.M()) +
                                    "], got " + std::to_string(p.iters));
    }
    if (p.k == 0) throw std::invalid_argument("search: k must be >= 1");
    if (p.tables_per_query != 1 && p.tables_per_query < p.iters) {
        throw std::invalid_argument("search: " + std::to_string(p.tables_per_query) +
                                    " tables per query: need 1 (shared) or >= iters=" +
                                    std::to_string(p.iters));
    }
    if (p.metric != Metric::L2 && p.metric != Metric::InnerProduct) {
        throw std::invalid_argument("search: unknown metric");
    }
    if (store.ntotal() > 0 && store.max_code() >= p.K) {
        throw std::invalid_argument("search: stored codes go up to " +
                                    std::to_string(store.max_code()) + " but tables have only K=" +
                                    std::to_string(p.K) + " entries");
    }
    if (p.allowed != nullptr && p.allowed_size != store.ntotal()) {
        throw std::invalid_argument("search: the filter mask has " + std::to_string(p.allowed_size) +
                                    " entries, expected ntotal=" + std::to_string(store.ntotal()));
    }
    if (p.nq > 0 && (p.tables == nullptr || p.scales == nullptr ||
                     (p.metric == Metric::L2 && p.qnorms == nullptr))) {
        throw std::invalid_argument("search: null input array");
    }
}

void search(const CodeStore& store, const SearchParams& params, float* distances,
            int64_t* labels, const InterruptCallback& interrupt, int nthreads, SimdLevel level) {
    validate_search(store, params);
    if (!simd_level_supported(level)) {
        throw std::invalid_argument(std::string("search: SIMD level ") + simd_level_name(level) +
                                    " is not supported on this CPU");
    }
    if (params.nq == 0) return;
    if (store.ntotal() == 0) {
        // Nothing to scan: every result is padding (an empty heap writes only padding).
        for (size_t q = 0; q < params.nq; ++q) {
            float* d = distances + q * params.k;
            int64_t* l = labels + q * params.k;
            if (params.metric == Metric::L2) {
                TopK<Metric::L2>().write_sorted(params.k, d, l);
            } else {
                TopK<Metric::InnerProduct>().write_sorted(params.k, d, l);
            }
        }
        return;
    }
    const AdcScanQueriesFn queries_kernel = adc_scan_queries_for(level);
    const AdcScanInterleavedFn interleaved_kernel = adc_scan_interleaved_for(level);
    if (params.metric == Metric::L2) {
        search_with_metric<Metric::L2>(store, params, distances, labels, interrupt, nthreads,
                                       queries_kernel, interleaved_kernel);
    } else {
        search_with_metric<Metric::InnerProduct>(store, params, distances, labels, interrupt,
                                                 nthreads, queries_kernel, interleaved_kernel);
    }
}

void range_search(const CodeStore& store, const SearchParams& params, float radius,
                  std::vector<std::vector<Candidate>>& results, const InterruptCallback& interrupt,
                  int nthreads, SimdLevel level) {
    SearchParams p = params;
    p.k = 1;  // not used by a range search; keeps validate_search's k check meaningful for search
    validate_search(store, p);
    if (!simd_level_supported(level)) {
        throw std::invalid_argument(std::string("range_search: SIMD level ") + simd_level_name(level) +
                                    " is not supported on this CPU");
    }
    results.assign(p.nq, {});
    if (p.nq == 0 || store.ntotal() == 0) return;
    const AdcScanFn kernel = adc_scan_for(level);
    if (p.metric == Metric::L2) {
        range_search_with_metric<Metric::L2>(store, p, radius, results, interrupt, nthreads, kernel);
    } else {
        range_search_with_metric<Metric::InnerProduct>(store, p, radius, results, interrupt, nthreads,
                                                       kernel);
    }
}

void search_reference(const CodeStore& store, const SearchParams& params, float* distances,
                      int64_t* labels) {
    validate_search(store, params);
    if (params.metric == Metric::L2) {
        search_reference_with_metric<Metric::L2>(store, params, distances, labels);
    } else {
        search_reference_with_metric<Metric::InnerProduct>(store, params, distances, labels);
    }
}

}  // namespace drq
