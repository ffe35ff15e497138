#include "ivf.h"

#include <algorithm>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>

#include "adc.h"

namespace drq {

// ------------------------------------------------------------------------------- InvertedLists

namespace {

CodeStore checked_store(size_t nlist, size_t M) {
    if (nlist == 0) throw std::invalid_argument("InvertedLists: nlist must be >= 1");
    return CodeStore(M);  // throws for M == 0
}

}  // namespace

InvertedLists::InvertedLists(size_t nlist, size_t M) : M_(M), lists_(nlist, checked_store(nlist, M)) {}

void InvertedLists::add(size_t n, const uint8_t* codes, const float* terms, const int64_t* ids,
                        const int64_t* list_nos) {
    if (n == 0) return;
    if (codes == nullptr || terms == nullptr || ids == nullptr || list_nos == nullptr) {
        throw std::invalid_argument("InvertedLists::add: null input array");
    }
    const size_t nl = nlist();
    std::vector<size_t> counts(nl, 0);
    for (size_t i = 0; i < n; ++i) {
        const int64_t l = list_nos[i];
        if (l < 0 || static_cast<uint64_t>(l) >= nl) {
            throw std::invalid_argument("InvertedLists::add: list_nos[" + std::to_string(i) + "] = " +
                                        std::to_string(l) + " is outside [0, nlist=" +
                                        std::to_string(nl) + ")");
        }
        ++counts[static_cast<size_t>(l)];
    }
    // Rows grouped by list (a counting sort keeps the input order inside each list).
    std::vector<size_t> start(nl + 1, 0);
    for (size_t l = 0; l < nl; ++l) start[l + 1] = start[l] + counts[l];
    std::vector<size_t> order(n);
    {
        std::vector<size_t> fill(start.begin(), start.end() - 1);
        for (size_t i = 0; i < n; ++i) order[fill[static_cast<size_t>(list_nos[i])]++] = i;
    }
    std::vector<size_t> old_sizes(nl);
    for (size_t l = 0; l < nl; ++l) old_sizes[l] = lists_[l].ntotal();

    std::vector<uint8_t> c;
    std::vector<float> t;
    std::vector<int64_t> d;
    size_t l = 0;
    try {
        for (l = 0; l < nl; ++l) {
            const size_t cnt = counts[l];
            if (cnt == 0) continue;
            c.resize(cnt * M_);
            t.resize(cnt * M_);
            d.resize(cnt);
            for (size_t r = 0; r < cnt; ++r) {
                const size_t i = order[start[l] + r];
                std::copy(codes + i * M_, codes + (i + 1) * M_, c.data() + r * M_);
                std::copy(terms + i * M_, terms + (i + 1) * M_, t.data() + r * M_);
                d[r] = ids[i];
            }
            lists_[l].add(cnt, c.data(), t.data(), d.data());
        }
    } catch (...) {
        // Cut the lists already extended back to their old sizes (CodeStore::add itself is
        // all-or-nothing, so list l is unchanged).
        for (size_t done = 0; done < l; ++done) {
            const size_t size = lists_[done].ntotal();
            if (size == old_sizes[done]) continue;
            std::vector<uint8_t> mask(size, 0);
            std::fill(mask.begin() + static_cast<std::ptrdiff_t>(old_sizes[done]), mask.end(), 1);
            lists_[done].remove(mask.data());
        }
        throw;
    }
    ntotal_ += n;
}

size_t InvertedLists::remove(const uint8_t* remove_mask) {
    if (ntotal_ == 0) return 0;
    if (remove_mask == nullptr) throw std::invalid_argument("InvertedLists::remove: null mask");
    size_t offset = 0, removed = 0;
    for (CodeStore& store : lists_) {
        const size_t size = store.ntotal();
        if (size != 0 && std::any_of(remove_mask + offset, remove_mask + offset + size,
                                     [](uint8_t v) { return v != 0; })) {
            removed += store.remove(remove_mask + offset);
        }
        offset += size;
    }
    ntotal_ -= removed;
    return removed;
}

std::vector<int64_t> InvertedLists::ids_in_list_order() const {
    std::vector<int64_t> out;
    out.reserve(ntotal_);
    for (const CodeStore& store : lists_) out.insert(out.end(), store.ids(), store.ids() + store.ntotal());
    return out;
}

void InvertedLists::reset() {
    for (CodeStore& store : lists_) store.reset();
    ntotal_ = 0;
}

size_t InvertedLists::memory_usage() const {
    size_t total = 0;
    for (const CodeStore& store : lists_) total += store.memory_usage();
    return total;
}

uint8_t InvertedLists::max_code() const {
    uint8_t m = 0;
    for (const CodeStore& store : lists_) m = std::max(m, store.max_code());
    return m;
}

// ------------------------------------------------------------------------------------- search

namespace {

constexpr size_t kTileCodeBytes = 64 * 1024;
constexpr size_t kMinTileBlocks = 4;
constexpr size_t kMaxTileBlocks = 128;
// Table lookups per worker below which another thread is not worth starting (as search.cpp).
constexpr size_t kMinLookupsPerWorker = size_t(1) << 18;

template <Metric metric>
inline float ivf_distance(float ip, float coarse, float term) {
    if (metric == Metric::L2) return (coarse + term) - 2.0f * ip;
    return coarse + ip;
}

inline int64_t position_of(size_t list, size_t offset) {
    return static_cast<int64_t>((static_cast<uint64_t>(list) << 32) | offset);
}

template <Metric metric>
inline bool any_may_enter(const float* dist, size_t count, float threshold) {
    int passing = 0;
    for (size_t i = 0; i < count; ++i) passing += Ranking<metric>::may_enter(dist[i], threshold);
    return passing != 0;
}

struct ListOffsets {
    std::vector<size_t> offset;  // nlist + 1: first position of each list in list order
};

const float* table_for(const IVFSearchParams& p, size_t q) {
    return p.tables + q * p.tables_per_query * p.K;
}

// Distance in floats between iteration j's table and iteration j+1's (adc.h): 0 shares one.
size_t lut_stride_of(const IVFSearchParams& p) { return p.tables_per_query == 1 ? 0 : p.K; }

// Scans list `l` for one query and offers its vectors to `heap`. Returns false when the
// interrupter asked to stop.
template <Metric metric>
bool scan_list(const InvertedLists& lists, size_t l, float coarse, const float* table,
               const IVFSearchParams& p, const uint8_t* allowed_list, AdcScanFn kernel,
               size_t tile_blocks, float* acc, TopK<metric>& heap, Interrupter& interrupter,
               int worker) {
    const CodeStore& store = lists.list(l);
    const size_t size = store.ntotal();
    if (size == 0) return true;
    const size_t nblocks = store.nblocks();
    const size_t stride = store.block_stride();
    const float* terms = store.prefix_norms(p.iters);
    const int64_t* ids = store.ids();
    for (size_t tile_begin = 0; tile_begin < nblocks; tile_begin += tile_blocks) {
        if (interrupter.should_stop(worker)) return false;
        const size_t tile_end = std::min(nblocks, tile_begin + tile_blocks);
        const size_t pos_begin = tile_begin * kBlockSize;
        const size_t count = std::min(tile_end * kBlockSize, size) - pos_begin;
        kernel(store.block_codes(tile_begin), tile_end - tile_begin, stride, p.iters, table,
               lut_stride_of(p), p.scales, acc);
        const float* tile_terms = terms + pos_begin;
        for (size_t i = 0; i < count; ++i) {
            acc[i] = ivf_distance<metric>(acc[i], coarse, metric == Metric::L2 ? tile_terms[i] : 0.0f);
        }
        if (allowed_list != nullptr) {
            const uint8_t* a = allowed_list + pos_begin;
            for (size_t i = 0; i < count; ++i) {
                acc[i] = a[i] != 0 ? acc[i] : std::numeric_limits<float>::quiet_NaN();
            }
        }
        float threshold = heap.threshold();
        if (!any_may_enter<metric>(acc, count, threshold)) continue;
        for (size_t i = 0; i < count; ++i) {
            if (Ranking<metric>::may_enter(acc[i], threshold)) {
                heap.push(acc[i], ids[pos_begin + i], position_of(l, pos_begin + i));
                threshold = heap.threshold();
            }
        }
    }
    return true;
}

template <Metric metric>
void ivf_search_with_metric(const InvertedLists& lists, const IVFSearchParams& p, float* distances,
                            int64_t* labels, const InterruptCallback& interrupt, int nthreads,
                            AdcScanFn kernel) {
    std::vector<size_t> offsets;
    if (p.allowed != nullptr) {
        offsets.resize(lists.nlist() + 1, 0);
        for (size_t l = 0; l < lists.nlist(); ++l) offsets[l + 1] = offsets[l] + lists.list(l).ntotal();
    }
    const size_t tile_blocks =
        std::clamp(kTileCodeBytes / (p.iters * kBlockSize), kMinTileBlocks, kMaxTileBlocks);
    const size_t avg_list = lists.ntotal() / lists.nlist() + 1;
    const size_t lookups = p.nq * p.nprobe * avg_list * p.iters;
    const size_t useful = std::max<size_t>(1, lookups / kMinLookupsPerWorker);
    const size_t nworkers = std::min<size_t>(static_cast<size_t>(std::max(1, nthreads)), useful);
    const bool split_probes = p.nq < nworkers && p.nprobe > 1;
    const size_t nitems = split_probes ? p.nq * p.nprobe : p.nq;

    std::vector<std::vector<float>> acc(nworkers, std::vector<float>(tile_blocks * kBlockSize));
    std::vector<TopK<metric>> heaps(split_probes ? nitems : nworkers);

    Interrupter interrupter(interrupt);
    parallel_for(nitems, static_cast<int>(nworkers), interrupter, [&](size_t item, int worker) {
        const size_t q = split_probes ? item / p.nprobe : item;
        const size_t probe_begin = split_probes ? item % p.nprobe : 0;
        const size_t probe_end = split_probes ? probe_begin + 1 : p.nprobe;
        TopK<metric>& heap = split_probes ? heaps[item] : heaps[static_cast<size_t>(worker)];
        heap.set_capacity(p.k);
        const float* table = table_for(p, q);
        for (size_t pr = probe_begin; pr < probe_end; ++pr) {
            const int64_t l = p.list_nos[q * p.nprobe + pr];
            if (l < 0) continue;
            const uint8_t* allowed_list =
                p.allowed != nullptr ? p.allowed + offsets[static_cast<size_t>(l)] : nullptr;
            if (!scan_list<metric>(lists, static_cast<size_t>(l), p.coarse[q * p.nprobe + pr],
                                   table, p, allowed_list, kernel, tile_blocks,
                                   acc[static_cast<size_t>(worker)].data(), heap, interrupter,
                                   worker)) {
                return;
            }
        }
        if (!split_probes) heap.write_sorted(p.k, distances + q * p.k, labels + q * p.k);
    });

    if (split_probes) {
        TopK<metric> merged;
        for (size_t q = 0; q < p.nq; ++q) {
            merged.set_capacity(p.k);
            for (size_t pr = 0; pr < p.nprobe; ++pr) merged.merge(heaps[q * p.nprobe + pr]);
            merged.write_sorted(p.k, distances + q * p.k, labels + q * p.k);
        }
    }
}

template <Metric metric>
void ivf_search_reference_with_metric(const InvertedLists& lists, const IVFSearchParams& p,
                                      float* distances, int64_t* labels) {
    std::vector<size_t> offsets(lists.nlist() + 1, 0);
    for (size_t l = 0; l < lists.nlist(); ++l) offsets[l + 1] = offsets[l] + lists.list(l).ntotal();
    const size_t lut_stride = lut_stride_of(p);
    std::vector<Candidate> all;
    for (size_t q = 0; q < p.nq; ++q) {
        const float* table = table_for(p, q);
        all.clear();
        for (size_t pr = 0; pr < p.nprobe; ++pr) {
            const int64_t l = p.list_nos[q * p.nprobe + pr];
            if (l < 0) continue;
            const CodeStore& store = lists.list(static_cast<size_t>(l));
            const float coarse = p.coarse[q * p.nprobe + pr];
            const float* terms = store.prefix_norms(p.iters);
            for (size_t pos = 0; pos < store.ntotal(); ++pos) {
                if (p.allowed != nullptr && p.allowed[offsets[static_cast<size_t>(l)] + pos] == 0) continue;
                const uint8_t* slot = store.block_codes(pos / kBlockSize) + pos % kBlockSize;
                float ip = 0.0f;
                for (size_t j = 0; j < p.iters; ++j) {
                    const float product = table[j * lut_stride + slot[j * kBlockSize]] * p.scales[j];
                    ip = ip + product;
                }
                const float dist =
                    ivf_distance<metric>(ip, coarse, metric == Metric::L2 ? terms[pos] : 0.0f);
                if (dist != dist) continue;
                all.push_back(Candidate{dist, store.ids()[pos], position_of(static_cast<size_t>(l), pos)});
            }
        }
        write_top_k_by_full_sort<metric>(all, p.k, distances + q * p.k, labels + q * p.k);
    }
}

}  // namespace

void validate_ivf_search(const InvertedLists& lists, const IVFSearchParams& p) {
    if (p.K == 0 || p.K > 256) {
        throw std::invalid_argument("ivf_search: tables must have K in [1, 256] entries, got " +
                                    std::to_string(p.K));
    }
    if (p.iters == 0 || p.iters > lists.M()) {
        throw std::invalid_argument("ivf_search: iters must be in [1, M=" + std::to_string(lists.M()) +
                                    "], got " + std::to_string(p.iters));
    }
    if (p.k == 0) throw std::invalid_argument("ivf_search: k must be >= 1");
    if (p.tables_per_query != 1 && p.tables_per_query < p.iters) {
        throw std::invalid_argument("ivf_search: " + std::to_string(p.tables_per_query) +
                                    " tables per query: need 1 (shared) or >= iters=" +
                                    std::to_string(p.iters));
    }
    if (p.nprobe == 0) throw std::invalid_argument("ivf_search: nprobe must be >= 1");
    if (p.metric != Metric::L2 && p.metric != Metric::InnerProduct) {
        throw std::invalid_argument("ivf_search: unknown metric");
    }
    if (lists.ntotal() > 0 && lists.max_code() >= p.K) {
        throw std::invalid_argument("ivf_search: stored codes go up to " +
                                    std::to_string(lists.max_code()) + " but tables have only K=" +
                                    std::to_string(p.K) + " entries");
    }
    if (p.allowed != nullptr && p.allowed_size != lists.ntotal()) {
        throw std::invalid_argument("ivf_search: the filter mask has " + std::to_string(p.allowed_size) +
                                    " entries, expected ntotal=" + std::to_string(lists.ntotal()));
    }
    if (p.nq > 0 && (p.tables == nullptr || p.scales == nullptr || p.coarse == nullptr ||
                     p.list_nos == nullptr)) {
        throw std::invalid_argument("ivf_search: null input array");
    }
    const size_t n = p.nq * p.nprobe;
    for (size_t i = 0; i < n; ++i) {
        const int64_t l = p.list_nos[i];
        if (l < -1 || (l >= 0 && static_cast<uint64_t>(l) >= lists.nlist())) {
            throw std::invalid_argument("ivf_search: list number " + std::to_string(l) +
                                        " is outside [0, nlist=" + std::to_string(lists.nlist()) +
                                        ") (and is not -1)");
        }
    }
}

void ivf_search(const InvertedLists& lists, const IVFSearchParams& params, float* distances,
                int64_t* labels, const InterruptCallback& interrupt, int nthreads, SimdLevel level) {
    validate_ivf_search(lists, params);
    if (!simd_level_supported(level)) {
        throw std::invalid_argument(std::string("ivf_search: SIMD level ") + simd_level_name(level) +
                                    " is not supported on this CPU");
    }
    if (params.nq == 0) return;
    const AdcScanFn kernel = adc_scan_for(level);
    if (params.metric == Metric::L2) {
        ivf_search_with_metric<Metric::L2>(lists, params, distances, labels, interrupt, nthreads, kernel);
    } else {
        ivf_search_with_metric<Metric::InnerProduct>(lists, params, distances, labels, interrupt,
                                                     nthreads, kernel);
    }
}

void ivf_search_reference(const InvertedLists& lists, const IVFSearchParams& params,
                          float* distances, int64_t* labels) {
    validate_ivf_search(lists, params);
    if (params.metric == Metric::L2) {
        ivf_search_reference_with_metric<Metric::L2>(lists, params, distances, labels);
    } else {
        ivf_search_reference_with_metric<Metric::InnerProduct>(lists, params, distances, labels);
    }
}

}  // namespace drq
