#include "fastscan_search.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace drq {

namespace {

// Code bytes of a tile per query: the tile stays in L1/L2 while a query group scans it.
constexpr size_t kTileBytes = 32 * 1024;
// Queries per work item: their tables are computed together (the codebooks, iters * d * 16
// floats, are read once per item) and each code tile is scanned for all of them while it is in
// cache. At 8 the codebook and database streams per item evicted each other from the shared L3
// (32 B, 1 thread: scan 2x slower); 32 and 64 brought them back to the speed with BLAS tables.
// 128 reads each codebook from L3 half as often as 64 (64 B: 126 iterations, 6 MB of codebooks;
// 1 thread, shared machine: drq / faiss q/s 1.08 -> 1.16); 256 was no better.
constexpr size_t kMaxQueryGroup = 128;
// Blocks whose candidate masks are computed with one threshold.
constexpr size_t kFilterBlocks = 8;
// Finest per-byte table scale, as a power of two over the widest table's (fastscan_quantize_tables).
constexpr int kFastScanMaxLevel = 8;
// Table lookups per worker below which another thread is not worth starting.
constexpr size_t kMinLookupsPerWorker = size_t(1) << 20;

}  // namespace

float fastscan_quantize_tables(const float* tables, size_t ntables, uint8_t* out, uint8_t* shifts,
                               float* offset, float max_scale) {
    const size_t nbytes = ntables / 2;
    double offset_sum = 0.0;
    std::vector<float> mins(ntables), byte_range(nbytes, 0.0f);
    float widest = 0.0f;
    for (size_t t = 0; t < ntables; ++t) {
        const float* table = tables + 16 * t;
        const float lo = *std::min_element(table, table + 16);
        const float hi = *std::max_element(table, table + 16);
        mins[t] = lo;
        offset_sum += lo;
        byte_range[t / 2] = std::max(byte_range[t / 2], hi - lo);
        widest = std::max(widest, hi - lo);
    }
    *offset = static_cast<float>(offset_sum);
    const float base = std::min(widest > 0.0f ? 255.0f / widest : 1.0f, max_scale);
    // Level e_p of byte p: its tables use scale base * 2^e_p, the finest that keeps them in 0..255,
    // made non-decreasing (suffix minimum) because the kernel's Horner shifts can only scale up.
    std::vector<int> level(nbytes);
    int next = kFastScanMaxLevel;
    for (size_t p = nbytes; p-- > 0;) {
        int e = kFastScanMaxLevel;
        if (byte_range[p] > 0.0f) {
            e = static_cast<int>(std::floor(std::log2(widest / byte_range[p])));
            e = std::clamp(e, 0, kFastScanMaxLevel);
        }
        next = std::min(next, e);
        level[p] = next;
    }
    // Cap the final level E so that the largest possible sum (every table at its maximum, each
    // byte scaled by 2^(E - e_p)) stays below 2^16, and so that the final scale stays <= max_scale.
    int top = nbytes > 0 ? level[nbytes - 1] : 0;
    for (;; --top) {
        uint64_t bound = 0;
        for (size_t p = 0; p < nbytes; ++p) {
            const int e = std::min(level[p], top);
            // Largest entry of the byte's two tables at scale base * 2^e (rounding may add 1).
            const double largest = std::min(255.0, std::ceil(double(byte_range[p]) * base * double(1u << e)) + 1.0);
            bound += static_cast<uint64_t>(2.0 * largest) << (top - e);
        }
        if (top == 0 || (bound <= 65535 && base * float(1u << top) <= max_scale)) break;
    }
    top = std::max(top, 0);
    int prev = 0;
    for (size_t p = 0; p < nbytes; ++p) {
        const int e = std::min(level[p], top);
        shifts[p] = static_cast<uint8_t>(p == 0 ? 0 : e - prev);
        prev = e;
        const float scale = base * float(1u << e);
        for (size_t t = 2 * p; t < 2 * p + 2; ++t) {
            for (size_t c = 0; c < 16; ++c) {
                // Round to nearest even as std::nearbyint (a libm call per entry, ~3 % of a 64 B
                // search), by adding and removing 2^23: exact for 0 <= v < 2^23, the only range
                // that matters (v >= 0: t >= min_t and scale > 0; larger v clamps to 255 either way).
                // The product is rounded before the add, as before (-ffp-contract=off: no FMA).
                const float v = ((tables[16 * t + c] - mins[t]) * scale + 0x1.0p23f) - 0x1.0p23f;
                out[16 * t + c] = static_cast<uint8_t>(std::min(std::max(v, 0.0f), 255.0f));
            }
        }
    }
    // The first byte's level is the unit the shifts start from; sums end in units of base * 2^top
    // (shifts[0] is ignored: the sum is 0 then).
    return base * float(1u << prev);
}

namespace {

// Number of the n sums in v that are <= t. No branch, and uint16 counts over chunks of < 2^16
// sums: the compiler vectorises the loop on 16-bit lanes (a size_t count widened every lane to
// 64 bits).
size_t count_at_most(const uint16_t* v, size_t n, uint16_t t) {
    size_t count = 0;
    for (size_t i0 = 0; i0 < n; i0 += 65535) {
        const size_t i1 = std::min(n, i0 + 65535);
        uint16_t chunk = 0;
        for (size_t i = i0; i < i1; ++i) chunk = static_cast<uint16_t>(chunk + (v[i] <= t ? 1 : 0));
        count += chunk;
    }
    return count;
}

// Smallest t in lo..hi with count_at_most(v, n, t) >= rank, given that hi has it and lo - 1 has
// not: the rank-th smallest of the n sums (what nth_element at rank - 1 finds), by a binary search
// of branch-free counting passes (nth_element's branches on random sums mispredict).
uint16_t rank_by_counting(const uint16_t* v, size_t n, size_t rank, uint32_t lo, uint32_t hi) {
    while (lo < hi) {
        const uint32_t mid = (lo + hi) / 2;
        if (count_at_most(v, n, static_cast<uint16_t>(mid)) >= rank) hi = mid; else lo = mid + 1;
    }
    return static_cast<uint16_t>(lo);
}

// Best `capacity` candidates of one query by key = (uint16 sum << 32) | storage position: smaller
// sum first, ties by position. A reservoir of 1.4 capacity keys instead of a heap: appending is
// O(1), and when it is full a selection keeps the best `capacity` and tightens the threshold
// (as faiss's ReservoirTopN; a binary heap cost more than the scan at k = 100).
// The result is exactly the best `capacity` keys among all offered, whatever the order of offers
// and the staleness of thresholds used to filter them: a key is only dropped when `capacity`
// smaller keys were seen.
// Selection by counting instead of nth_element (which profiled at ~7 % of a 16 B search: its
// branches on random keys mispredict): a binary search over the uint16 sums finds the sum t of
// the capacity-th best key, with a branch-free (vectorised) count per step over a separate uint16
// copy of the sums; one stable pass then keeps the keys with sum < t and the first keys with sum
// == t. The first are the smallest positions, because a query's keys are offered in increasing
// position order (the search scans tiles, blocks and mask bits in storage order) and the pass
// keeps that order; so the kept set is the one nth_element kept.
class Reservoir {
public:
    void reset(size_t capacity) {
        capacity_ = capacity;
        limit_ = shrink_at(capacity);
        // Fixed-size buffers and a count: an offer is two stores, without push_back's capacity
        // check and pointer updates in memory.
        keys_.resize(limit_);
        sums_.resize(limit_);
        size_ = 0;
        threshold_ = ~uint64_t(0);
    }
    // Keys >= threshold() cannot be among the best.
    uint64_t threshold() const { return threshold_; }
    // Starts an empty reservoir at threshold `sum` << 32: the caller guarantees that at least
    // `capacity` keys with a smaller sum will be offered, so nothing of the best is lost.
    void seed(uint64_t sum) {
        if (size_ == 0) threshold_ = std::min(threshold_, sum << 32);
    }
    // Keys must come in increasing position order (see above).
    void offer(uint64_t key) {
        if (key >= threshold_) return;
        keys_[size_] = key;
        sums_[size_] = static_cast<uint16_t>(key >> 32);
        if (++size_ == limit_) shrink();
    }
    // Sorts the kept keys, best first; returns them (at most capacity). reset() before reuse.
    const std::vector<uint64_t>& finish() {
        if (size_ > capacity_) shrink();
        sort_by_sum();
        keys_.resize(size_);
        return keys_;
    }

private:
    // Keys held before a selection: capacity + 40 %. A smaller slack selects more often but
    // tightens the threshold sooner, so fewer keys are offered at all; measured at 16 B, k = 100
    // (1 thread, search CPU time, busy shared machine, still with nth_element): 1.4 capacity
    // ~5 % faster than 2; 4 and 8 slower.
    static size_t shrink_at(size_t capacity) { return capacity + std::max<size_t>(1, (2 * capacity) / 5); }

    // Smallest held sum; branch-free, so the compiler vectorises it.
    uint16_t min_sum() const {
        uint16_t lowest = 65535;
        for (size_t i = 0; i < size_; ++i) lowest = sums_[i] < lowest ? sums_[i] : lowest;
        return lowest;
    }

    // Sorts the held keys. They are held in increasing position order (see above), so a stable
    // sort by sum alone sorts them by key: two counting passes (LSD radix, 8 bits of the sum
    // each) instead of std::sort's comparisons, whose branches mispredict (~2.5 % of a 16 B search).
    void sort_by_sum() {
        uint32_t low[257] = {}, high[257] = {};  // digit counts, then start offsets (entry d + 1)
        for (size_t i = 0; i < size_; ++i) {
            ++low[(sums_[i] & 255) + 1];
            ++high[(sums_[i] >> 8) + 1];
        }
        for (size_t d = 1; d < 257; ++d) {
            low[d] += low[d - 1];
            high[d] += high[d - 1];
        }
        sorted_.resize(size_);
        for (size_t i = 0; i < size_; ++i) sorted_[low[sums_[i] & 255]++] = keys_[i];
        for (size_t i = 0; i < size_; ++i) keys_[high[(sorted_[i] >> 40) & 255]++] = sorted_[i];
    }

    void shrink() {
        // Smallest t with count(sum <= t) >= capacity (exists: more than capacity keys are held).
        // Every held sum is <= the threshold's and >= the smallest held one (count(min - 1) = 0),
        // so the search starts from that range: fewer counting passes, the same t.
        const uint32_t t = rank_by_counting(sums_.data(), size_, capacity_, min_sum(),
                                            static_cast<uint32_t>(std::min<uint64_t>(65535, threshold_ >> 32)));
        // keys with sum t to keep
        size_t ties = capacity_ - (t == 0 ? 0 : count_at_most(sums_.data(), size_, static_cast<uint16_t>(t - 1)));
        size_t kept = 0;
        uint64_t last = 0;
        // Locals: stores through keys / sums could alias the members, which were re-read every step.
        uint64_t* keys = keys_.data();
        uint16_t* sums = sums_.data();
        const size_t n = size_;
        for (size_t i = 0; i < n; ++i) {
            const uint32_t sum = sums[i];
            const uint64_t key = keys[i];
            const bool tie = sum == t && ties > 0;
            const bool keep = sum < t || tie;
            ties -= tie ? 1 : 0;
            keys[kept] = key;
            sums[kept] = static_cast<uint16_t>(sum);
            last = tie ? key : last;
            kept += keep ? 1 : 0;
        }
        size_ = kept;
        threshold_ = last;  // the capacity-th best key: the last kept of sum t
    }
    size_t capacity_ = 0;
    size_t limit_ = 1;  // shrink_at(capacity_)
    uint64_t threshold_ = ~uint64_t(0);
    size_t size_ = 0;             // keys held: keys_[0..size_)
    std::vector<uint64_t> keys_;  // limit_ slots
    std::vector<uint16_t> sums_;  // keys_[i] >> 32, for the counting selection
    std::vector<uint64_t> sorted_;  // sort_by_sum scratch
};

constexpr uint64_t sum_of(uint64_t key) { return key >> 32; }
constexpr size_t position_of(uint64_t key) { return static_cast<size_t>(key & 0xffffffffu); }

// Offers the vectors of one scanned tile to `best`. acc: nblocks * 32 sums of the tile, whose
// first vector has storage position pos0 and of which the first `count` are real (the rest is
// padding); allowed: nullptr or the whole store's filter; masks: kFilterBlocks scratch words.
// Candidate masks are computed per kFilterBlocks blocks with the threshold of the moment.
// Positions grow during the scan, so a sum equal to the threshold's can never enter: the mask
// asks for sums strictly below it.
void collect_candidates(const uint16_t* acc, size_t nblocks, size_t count, size_t pos0,
                        const uint8_t* allowed, FastScanFilterFn filter, uint32_t* masks,
                        Reservoir& best) {
    for (size_t c0 = 0; c0 < nblocks; c0 += kFilterBlocks) {
        const size_t c1 = std::min(nblocks, c0 + kFilterBlocks);
        const uint64_t limit = sum_of(best.threshold());
        if (limit == 0) return;  // the best keys all have sum 0
        const uint16_t t16 = static_cast<uint16_t>(std::min<uint64_t>(limit - 1, 65535));
        filter(acc + c0 * kFastScanBlock, c1 - c0, t16, masks);
        for (size_t b = c0; b < c1; ++b) {
            uint32_t mask = masks[b - c0];
            // Padding slots of the last block: cleared once here instead of a test per bit.
            const size_t real = count - std::min(count, b * kFastScanBlock);
            if (real < kFastScanBlock) mask &= (uint32_t(1) << real) - 1;
            while (mask != 0) {
                const size_t i = b * kFastScanBlock + static_cast<size_t>(__builtin_ctz(mask));
                mask &= mask - 1;
                if (allowed != nullptr && allowed[pos0 + i] == 0) continue;
                best.offer((uint64_t(acc[i]) << 32) | uint64_t(pos0 + i));
            }
        }
    }
}

// Seeds an empty reservoir from the first scanned tile (acc: nblocks * 32 sums, the first `count`
// real; sample: scratch). With a threshold that starts at infinity the scan offers ~k (1 + ln(n / k))
// keys and runs ~10 selections per query (k = 100, 60k vectors: ~1000 offers), which profiled as
// much time as the filter and the kernel at m = 14. A sample of every 8th sum gives a candidate
// threshold t (its rank 2 capacity / 8, i.e. about 2 capacity sums of the tile lie below it); one
// SIMD filter pass counts the tile's sums strictly below t, and t is kept only if at least
// `capacity` are: they are all offered right after, so no key of the best is dropped and results
// are exactly those of an unseeded scan.
void seed_from_tile(const uint16_t* acc, size_t nblocks, size_t count, FastScanFilterFn filter,
                    uint32_t* masks, std::vector<uint16_t>& sample, size_t capacity, Reservoir& best) {
    if (count < 4 * capacity || count < nblocks * kFastScanBlock) return;  // small or padded tile
    sample.clear();
    for (size_t i = 0; i < count; i += 8) sample.push_back(acc[i]);
    // Rank 2 capacity / 8 of the sample: about 2 capacity sums of the tile are below it, so the
    // check below rarely fails while the threshold stays close to the final one.
    const size_t rank = std::min(sample.size() - 1, (2 * capacity) / 8);
    // The same value as nth_element at `rank`, by counting (nth_element: ~2 % of a 16 B search).
    const uint16_t t = rank_by_counting(sample.data(), sample.size(), rank + 1, 0, 65535);
    if (t == 0) return;
    size_t below = 0;
    for (size_t c0 = 0; c0 < nblocks; c0 += kFilterBlocks) {
        const size_t c1 = std::min(nblocks, c0 + kFilterBlocks);
        filter(acc + c0 * kFastScanBlock, c1 - c0, static_cast<uint16_t>(t - 1), masks);
        for (size_t b = 0; b < c1 - c0; ++b) below += static_cast<size_t>(__builtin_popcount(masks[b]));
    }
    if (below >= capacity) best.seed(t);
}

}  // namespace

void fastscan_search(const FastScanStore& store, const FastScanSearchParams& p, float* distances,
                     int64_t* labels, const InterruptCallback& interrupt, int nthreads,
                     FastScanFn kernel, FastScanFilterFn filter, FastScanTablesFn tables_fn) {
    const size_t ntotal = store.ntotal();
    if (ntotal >= (size_t(1) << 32)) {
        throw std::invalid_argument("fastscan_search: at most 2^32 - 1 vectors per store");
    }
    if (p.iters < 1 || p.iters > store.M()) {
        throw std::invalid_argument("iters must be in 1.." + std::to_string(store.M()) + ", got " +
                                    std::to_string(p.iters));
    }
    const size_t nbytes = (p.iters + 1) / 2;
    const bool with_norm = p.norm_slot >= 0;
    if (with_norm && static_cast<size_t>(p.norm_slot) >= store.nnorm()) {
        throw std::invalid_argument("norm_slot " + std::to_string(p.norm_slot) + " is outside 0.." +
                                    std::to_string(store.nnorm()) + " (stored norm slots)");
    }
    if (with_norm && !(p.norm_step >= 0.0f && std::isfinite(p.norm_step))) {
        throw std::invalid_argument("norm_step must be finite and >= 0, got " + std::to_string(p.norm_step));
    }
    if (p.ntables != 2 * nbytes) {
        throw std::invalid_argument("tables: expected " + std::to_string(2 * nbytes) +
                                    " tables for iters=" + std::to_string(p.iters) + ", got " +
                                    std::to_string(p.ntables));
    }
    if (p.tables == nullptr &&
        (p.queries == nullptr || p.codebooks_t == nullptr || p.d == 0 || tables_fn == nullptr)) {
        throw std::invalid_argument("fastscan_search: give either tables or queries, d, codebooks and a table kernel");
    }
    if (p.tables == nullptr && p.codebook_iters < p.iters) {
        throw std::invalid_argument("codebooks: " + std::to_string(p.codebook_iters) +
                                    " iterations, fewer than iters=" + std::to_string(p.iters));
    }
    if (p.k < 1 || p.k > ntotal) {
        throw std::invalid_argument("k must be in 1..ntotal=" + std::to_string(ntotal) + ", got " +
                                    std::to_string(p.k));
    }
    if (p.allowed != nullptr && p.allowed_size != ntotal) {
        throw std::invalid_argument("allowed: expected " + std::to_string(ntotal) + " entries, got " +
                                    std::to_string(p.allowed_size));
    }
    const size_t nblocks = store.nblocks();
    const size_t capacity = std::min(ntotal, std::max(p.k, p.rerank));
    const size_t scanned = nbytes + (with_norm ? 1 : 0);
    const size_t tile_blocks = std::clamp<size_t>(kTileBytes / (scanned * kFastScanBlock), 8, 512);
    const size_t lookups = p.nq * ntotal * scanned;
    const size_t nworkers = std::min<size_t>(static_cast<size_t>(std::max(1, nthreads)),
                                             std::max<size_t>(1, lookups / kMinLookupsPerWorker));
    const size_t group = std::clamp<size_t>(p.nq / std::max<size_t>(1, nworkers), 1, kMaxQueryGroup);
    const size_t ngroups = (p.nq + group - 1) / group;
    const int64_t* ids = store.ids();
    // ids 0..ntotal-1 in storage order (add() without ids, nothing removed): positions are the
    // ids, and the scattered id look-ups (~2 % of a 16 B search) are skipped. One O(ntotal) pass
    // per call, next to the O(nq ntotal bytes) scan.
    bool ids_are_positions = true;
    for (size_t i = 0; i < ntotal && ids_are_positions; ++i) ids_are_positions = ids[i] == static_cast<int64_t>(i);
    const size_t lut_bytes = p.ntables * 16;
    // The norm factor 256 a norm_step must fit 16 bits (fastscan.h).
    const float max_scale = with_norm && p.norm_step > 0.0f ? 65535.0f / (256.0f * p.norm_step)
                                                            : std::numeric_limits<float>::infinity();
    const float pad = p.sign > 0 ? std::numeric_limits<float>::infinity()
                                 : -std::numeric_limits<float>::infinity();

    struct Scratch {
        std::vector<uint16_t> acc;
        std::vector<uint32_t> masks;
        std::vector<uint8_t> luts;
        std::vector<float> tables;      // group * ntables * 16 when computed here (p.tables == nullptr)
        std::vector<float> scale, offset;
        std::vector<uint16_t> factors;  // norm level -> uint16 units, 8 fractional bits
        std::vector<uint8_t> shifts;    // group * nbytes Horner shifts (fastscan.h)
        std::vector<Reservoir> best;
        std::vector<uint16_t> sample;  // seed_from_tile scratch
        std::vector<std::pair<float, uint64_t>> reranked;  // (exact sum, key)
    };
    std::vector<Scratch> scratch(std::min(nworkers, ngroups));
    for (auto& s : scratch) {
        s.acc.resize(kFastScanMaxQueries * tile_blocks * kFastScanBlock);
        s.masks.resize(kFilterBlocks);
        s.luts.resize(group * lut_bytes);
        // Zeros past m stay: the kernel writes the first m tables of each query only.
        if (p.tables == nullptr) s.tables.assign(group * lut_bytes, 0.0f);
        s.scale.resize(group);
        s.offset.resize(group);
        s.factors.resize(group);
        s.shifts.resize(group * nbytes);
        s.best.resize(group);
    }

    Interrupter interrupter(interrupt);
    parallel_for(ngroups, static_cast<int>(scratch.size()), interrupter, [&](size_t item, int worker) {
        Scratch& s = scratch[static_cast<size_t>(worker)];
        const size_t q0 = item * group, q1 = std::min(p.nq, q0 + group);
        // Float tables of the group's queries: query q's at group_tables + (q - q0) * lut_bytes.
        const float* group_tables = s.tables.data();
        if (p.tables != nullptr) {
            group_tables = p.tables + q0 * lut_bytes;
        } else {
            tables_fn(p.queries + q0 * p.d, q1 - q0, p.d, p.codebooks_t, p.iters, s.tables.data(), lut_bytes);
        }
        for (size_t q = q0; q < q1; ++q) {
            s.scale[q - q0] = fastscan_quantize_tables(group_tables + (q - q0) * lut_bytes, p.ntables,
                                                       s.luts.data() + (q - q0) * lut_bytes,
                                                       s.shifts.data() + (q - q0) * nbytes,
                                                       &s.offset[q - q0], max_scale);
            s.factors[q - q0] = with_norm ? static_cast<uint16_t>(std::min(
                                                65535.0f, std::nearbyint(256.0f * s.scale[q - q0] * p.norm_step)))
                                          : 0;
            s.best[q - q0].reset(capacity);
        }
        for (size_t tb = 0; tb < nblocks; tb += tile_blocks) {
            if (interrupter.should_stop(worker)) return;
            const size_t te = std::min(nblocks, tb + tile_blocks);
            const size_t pos0 = tb * kFastScanBlock;
            const size_t count = std::min(te * kFastScanBlock, ntotal) - pos0;
            const uint8_t* extra = with_norm ? store.block_norms(tb, static_cast<size_t>(p.norm_slot)) : nullptr;
            // Up to kFastScanMaxQueries queries per kernel call share the code loads.
            for (size_t qk = q0; qk < q1; qk += kFastScanMaxQueries) {
                const size_t nk = std::min(kFastScanMaxQueries, q1 - qk);
                kernel(store.block_codes(tb), te - tb, store.code_stride(), nbytes, extra,
                       store.norm_stride(), s.factors.data() + (qk - q0),
                       s.shifts.data() + (qk - q0) * nbytes, s.luts.data() + (qk - q0) * lut_bytes, lut_bytes, nk,
                       s.acc.data(), tile_blocks * kFastScanBlock);
                for (size_t q = qk; q < qk + nk; ++q) {
                    // Only without a filter: `allowed` could exclude the seed's sums.
                    if (tb == 0 && p.allowed == nullptr) {
                        seed_from_tile(s.acc.data() + (q - qk) * tile_blocks * kFastScanBlock, te - tb,
                                       count, filter, s.masks.data(), s.sample, capacity, s.best[q - q0]);
                    }
                    collect_candidates(s.acc.data() + (q - qk) * tile_blocks * kFastScanBlock,
                                       te - tb, count, pos0, p.allowed, filter, s.masks.data(),
                                       s.best[q - q0]);
                }
            }
        }
        for (size_t q = q0; q < q1; ++q) {
            const std::vector<uint64_t>& keys = s.best[q - q0].finish();
            float* dq = distances + q * p.k;
            int64_t* lq = labels + q * p.k;
            if (p.rerank == 0) {
                const float inv = 1.0f / s.scale[q - q0];
                for (size_t r = 0; r < p.k; ++r) {
                    const bool found = r < keys.size();
                    dq[r] = found ? p.sign * (p.bias[q] + s.offset[q - q0] +
                                              static_cast<float>(sum_of(keys[r])) * inv)
                                  : pad;
                    lq[r] = found ? static_cast<int64_t>(position_of(keys[r])) : -1;
                }
                continue;
            }
            // Re-rank: exact float sums of the kept candidates (ties by position), visited in
            // storage order (keys sorted by position) so neighbouring candidates share cache lines.
            const float* tq = group_tables + (q - q0) * lut_bytes;
            s.reranked.clear();
            for (uint64_t key : keys) s.reranked.emplace_back(0.0f, key & 0xffffffffu);
            std::sort(s.reranked.begin(), s.reranked.end(),
                      [](const auto& a, const auto& b) { return a.second < b.second; });
            // The candidates' code bytes are scattered (one cache line per 2 code bytes of a
            // candidate): request them all first so the misses overlap.
            for (const auto& candidate : s.reranked) {
                const size_t pos = position_of(candidate.second);
                const uint8_t* block = store.block_codes(pos / kFastScanBlock) + pos % kFastScanBlock;
                for (size_t byte = 0; byte < nbytes; byte += 2) __builtin_prefetch(block + byte * kFastScanBlock);
                if (with_norm) {
                    __builtin_prefetch(store.block_norms(pos / kFastScanBlock, static_cast<size_t>(p.norm_slot)) +
                                       pos % kFastScanBlock);
                }
            }
            for (auto& candidate : s.reranked) {
                const size_t pos = position_of(candidate.second);
                const uint8_t* block = store.block_codes(pos / kFastScanBlock) + pos % kFastScanBlock;
                float sum = 0.0f;
                // Same order of additions as 2 nbytes tables: iteration by iteration (the padding
                // table of an odd m is all zeros and adds nothing).
                for (size_t byte = 0; byte < nbytes; ++byte) {
                    const uint8_t code = block[byte * kFastScanBlock];
                    sum += tq[32 * byte + (code & 15)];
                    sum += tq[32 * byte + 16 + (code >> 4)];
                }
                if (with_norm) {
                    const uint8_t nb = store.block_norms(pos / kFastScanBlock, static_cast<size_t>(p.norm_slot))[pos % kFastScanBlock];
                    sum += static_cast<float>(nb) * p.norm_step;
                }
                candidate.first = sum;
            }
            std::sort(s.reranked.begin(), s.reranked.end());
            for (size_t r = 0; r < p.k; ++r) {
                const bool found = r < s.reranked.size();
                dq[r] = found ? p.sign * (p.bias[q] + s.reranked[r].first) : pad;
                lq[r] = found ? static_cast<int64_t>(position_of(s.reranked[r].second)) : -1;
            }
        }
        // Positions -> ids for the whole group in one tight loop: the ids are scattered over
        // the id array, and with nothing else in the loop the cache misses overlap (looked up
        // per result they stalled the output loop: ~2 % of a 32 B search).
        int64_t* labels_group = labels + q0 * p.k;
        for (size_t r = 0; r < (q1 - q0) * p.k && !ids_are_positions; ++r) {
            if (labels_group[r] >= 0) labels_group[r] = ids[labels_group[r]];
        }
    });
}

}  // namespace drq
