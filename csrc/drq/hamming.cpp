#include "hamming.h"

#include <algorithm>
#include <climits>
#include <stdexcept>
#include <string>
#include <vector>

namespace drq {

HammingFilterFn hamming_filter_for(SimdLevel level) {
    switch (level) {
#if defined(DRQ_HAVE_X86_SIMD)
        case SimdLevel::AVX512:
            return cpu_has_avx512_vpopcntdq() ? hamming_filter_avx512 : hamming_filter_avx2;
        case SimdLevel::AVX2:
            return hamming_filter_avx2;
#endif
        default:
            return hamming_filter_ref;
    }
}

namespace {

// Codes per tile: the tile's words stay in L1 (16 KiB at W = 1) while a group of queries scans
// it.
constexpr size_t kTileCodes = 2048;
constexpr size_t kMaxQueryGroup = 8;
// Code words compared per worker below which another thread is not worth starting.
constexpr size_t kMinWordsPerWorker = size_t(1) << 20;
constexpr size_t kMinSliceCodes = 8192;
// Queries from which checking that the ids are sorted pays off (see hamming_search).
constexpr size_t kMinQueriesForIdCheck = 4;

struct HammingCandidate {
    uint32_t dist;
    size_t pos;
};

// Keeps every code that may still be among the k nearest of one query (see hamming.h).
//
// keep_ is the smallest distance with at least k candidates at or below it (nbits while there
// are fewer than k candidates): codes farther than keep_ can never be among the k best. When ids
// increase with storage position (`sorted`), codes arrive in increasing (id, position) order, so
// once k candidates are at distance <= keep_ a later code at distance keep_ ranks behind all of
// them: new codes must then be strictly closer (threshold() == keep_ - 1), and with k codes at
// distance 0 the query is done. This matters for clustered codes (learned hash codes of a few
// classes), where thousands of codes tie at keep_.
class HammingSelector {
public:
    void reset(size_t k, size_t nbits, bool sorted) {
        k_ = k;
        sorted_ = sorted;
        keep_ = static_cast<uint32_t>(nbits);
        at_or_below_ = 0;
        counts_.assign(nbits + 1, 0);
        candidates_.clear();
        compact_at_ = 2 * k + 1024;
    }

    // No later code can enter: skip the rest of the scan.
    bool done() const { return sorted_ && keep_ == 0 && full(); }

    // Codes with distance <= threshold() may still enter (the filter kernels' threshold); only
    // meaningful while !done().
    uint32_t threshold() const { return sorted_ && full() ? keep_ - 1 : keep_; }

    // Offers `count` codes that passed the filter at threshold(), in increasing position:
    // positions pos_base + pos[i], distances dist[i]. Counting the whole batch before appending
    // lowers keep_ once per batch, so a first tile where everything passes appends only its k
    // or so nearest codes.
    void offer(const uint32_t* pos, const uint16_t* dist, size_t count, size_t pos_base) {
        // Locals, not members: the compiler cannot tell that the counts_ stores leave the
        // members alone, and a member updated per code is a store-to-load chain.
        size_t* counts = counts_.data();
        const uint32_t keep = keep_;
        size_t added = 0;
        for (size_t i = 0; i < count; ++i) {  // branch-free: early tiles pass many codes
            const bool in = dist[i] <= keep;
            counts[dist[i]] += in;
            added += in;
        }
        at_or_below_ += added;
        lower();
        // Branch-free append into room for all `count` (a push_back per code reloads and
        // stores the vector's end pointer every time).
        const uint32_t lowered = keep_;
        const size_t size = candidates_.size();
        candidates_.resize(size + count);
        HammingCandidate* out = candidates_.data() + size;
        size_t appended = 0;
        for (size_t i = 0; i < count; ++i) {
            out[appended] = HammingCandidate{dist[i], pos_base + pos[i]};
            appended += dist[i] <= lowered;
        }
        candidates_.resize(size + appended);
        if (candidates_.size() >= compact_at_) compact();
    }

    // Adds the candidates of a selector over a later database slice (same k, nbits, sorted).
    void merge(const HammingSelector& other) {
        for (const HammingCandidate& c : other.candidates_) {
            if (c.dist <= other.keep_) count_one(c.dist);
        }
        lower();
        for (const HammingCandidate& c : other.candidates_) {
            if (c.dist <= other.keep_ && c.dist <= keep_) candidates_.push_back(c);
        }
        if (candidates_.size() >= compact_at_) compact();
    }

    // Writes the k best (distance, id, position) best first, with (INT32_MAX, -1) padding.
    // Leaves the selector to be reset.
    void write(const int64_t* ids, int32_t* distances, int64_t* labels) {
        const auto id_of = [ids](size_t pos) { return ids ? ids[pos] : static_cast<int64_t>(pos); };
        const size_t found = std::min(k_, at_or_below_);
        if (sorted_) {
            // Candidates are in increasing position, hence (id, position) order: a counting sort
            // by distance gives the final order. counts_[d] becomes the first slot of distance d.
            size_t slot = 0;
            for (uint32_t d = 0; d <= keep_; ++d) {
                const size_t c = counts_[d];
                counts_[d] = slot;
                slot += c;
            }
            for (const HammingCandidate& c : candidates_) {
                if (c.dist > keep_) continue;
                const size_t r = counts_[c.dist]++;
                if (r < k_) {
                    distances[r] = static_cast<int32_t>(c.dist);
                    labels[r] = id_of(c.pos);
                }
            }
        } else {
            const uint32_t t = keep_;
            candidates_.erase(std::remove_if(candidates_.begin(), candidates_.end(),
                                             [t](const HammingCandidate& c) { return c.dist > t; }),
                              candidates_.end());
            const auto before = [&](const HammingCandidate& a, const HammingCandidate& b) {
                if (a.dist != b.dist) return a.dist < b.dist;
                const int64_t ia = id_of(a.pos), ib = id_of(b.pos);
                if (ia != ib) return ia < ib;
                return a.pos < b.pos;
            };
            if (candidates_.size() > k_) {
                std::nth_element(candidates_.begin(), candidates_.begin() + static_cast<std::ptrdiff_t>(k_),
                                 candidates_.end(), before);
            }
            std::sort(candidates_.begin(), candidates_.begin() + static_cast<std::ptrdiff_t>(found), before);
            for (size_t r = 0; r < found; ++r) {
                distances[r] = static_cast<int32_t>(candidates_[r].dist);
                labels[r] = id_of(candidates_[r].pos);
            }
        }
        for (size_t r = found; r < k_; ++r) {
            distances[r] = INT32_MAX;
            labels[r] = -1;
        }
    }

private:
    // At least k candidates at distance <= keep_.
    bool full() const { return at_or_below_ >= k_; }

    // Branch-free: early tiles pass many codes at unpredictable distances.
    void count_one(uint32_t dist) {
        const bool in = dist <= keep_;
        counts_[dist] += in;
        at_or_below_ += in;
    }

    // Lowers keep_ while at least k candidates remain at distance <= keep_ - 1.
    void lower() {
        while (keep_ > 0 && at_or_below_ - counts_[keep_] >= k_) {
            at_or_below_ -= counts_[keep_];
            --keep_;
        }
    }

    // Drops the candidates above keep_ (their counts are never read again: keep_ only
    // decreases).
    void compact() {
        const uint32_t t = keep_;
        candidates_.erase(std::remove_if(candidates_.begin(), candidates_.end(),
                                         [t](const HammingCandidate& c) { return c.dist > t; }),
                          candidates_.end());
        // Many ties at keep_ (e.g. duplicate codes) can keep most candidates: compact again
        // only after the list doubles, so the cost stays linear.
        compact_at_ = std::max(2 * k_ + 1024, 2 * candidates_.size());
    }

    size_t k_ = 0;
    bool sorted_ = false;
    size_t compact_at_ = 0;
    uint32_t keep_ = 0;        // candidates with dist <= keep_ may be among the k best
    size_t at_or_below_ = 0;   // candidates with dist <= keep_
    std::vector<size_t> counts_;  // counts_[d]: candidates at distance d (exact for d <= keep_)
    std::vector<HammingCandidate> candidates_;  // in increasing position
};

uint64_t last_word_mask(size_t nbits) {
    const size_t rem = nbits % 64;
    return rem == 0 ? ~uint64_t{0} : (uint64_t{1} << rem) - 1;
}

}  // namespace

void validate_hamming_search(const HammingSearchParams& p) {
    if (p.W < 1) throw std::invalid_argument("hamming_search: W must be >= 1");
    if (p.nbits < 1 || p.nbits > 64 * p.W) {
        throw std::invalid_argument("hamming_search: nbits must be in 1.." + std::to_string(64 * p.W) +
                                    ", got " + std::to_string(p.nbits));
    }
    if (p.nbits > 65535) throw std::invalid_argument("hamming_search: nbits must be <= 65535");
    if (p.k < 1) throw std::invalid_argument("hamming_search: k must be >= 1");
    if (p.n > 0 && p.codes == nullptr) throw std::invalid_argument("hamming_search: no codes");
    if (p.nq > 0 && p.queries == nullptr) throw std::invalid_argument("hamming_search: no queries");
}

void hamming_search(const HammingSearchParams& p, int32_t* distances, int64_t* labels,
                    const InterruptCallback& interrupt, int nthreads, SimdLevel level) {
    validate_hamming_search(p);
    if (p.nq == 0) return;
    const HammingFilterFn kernel = hamming_filter_for(level);
    // Ties at the threshold are decided by position alone when ids increase with it (see
    // HammingSelector). Checking the ids costs about one query's scan (serial, even when the
    // scan is split over threads), so it is only done for several queries; with fewer, ties
    // are kept as for unsorted ids (same results, slower only when many codes tie).
    const bool sorted =
        p.ids == nullptr || (p.nq >= kMinQueriesForIdCheck && std::is_sorted(p.ids, p.ids + p.n));
    const size_t words = (p.nbits + 63) / 64;
    const uint64_t mask = last_word_mask(p.nbits);

    // Plan: parallel over query groups when there are enough queries, else over slices.
    const size_t work = std::max<size_t>(1, p.nq * p.n * words / kMinWordsPerWorker);
    const size_t nworkers = std::min<size_t>(static_cast<size_t>(std::max(1, nthreads)), work);
    size_t nslices = 1, group = 1;
    if (p.nq >= nworkers) {
        group = std::clamp<size_t>(p.nq / nworkers, 1, kMaxQueryGroup);
    } else {
        nslices = std::clamp<size_t>(p.n / kMinSliceCodes, 1, nworkers);
        group = std::min(p.nq, kMaxQueryGroup);
    }
    const size_t ngroups = (p.nq + group - 1) / group;
    const int workers = static_cast<int>(std::min(nworkers, ngroups * nslices));

    struct Scratch {
        std::vector<uint32_t> pos;
        std::vector<uint16_t> dist;
        std::vector<HammingSelector> selectors;  // nslices == 1: one per query of the group
    };
    std::vector<Scratch> scratch(static_cast<size_t>(workers));
    for (Scratch& s : scratch) {
        s.pos.resize(kTileCodes);
        s.dist.resize(kTileCodes);
        if (nslices == 1) s.selectors.resize(group);
    }
    std::vector<HammingSelector> slice_selectors(nslices > 1 ? nslices * p.nq : 0);

    Interrupter interrupter(interrupt);
    parallel_for(ngroups * nslices, workers, interrupter, [&](size_t item, int worker) {
        const size_t g = item / nslices;
        const size_t slice = item % nslices;
        const size_t q0 = g * group;
        const size_t q1 = std::min(p.nq, q0 + group);
        const size_t begin = slice * p.n / nslices;
        const size_t end = (slice + 1) * p.n / nslices;
        Scratch& s = scratch[static_cast<size_t>(worker)];
        HammingSelector* selectors =
            nslices == 1 ? s.selectors.data() : slice_selectors.data() + slice * p.nq + q0;
        for (size_t q = q0; q < q1; ++q) selectors[q - q0].reset(p.k, p.nbits, sorted);
        for (size_t tile = begin; tile < end; tile += kTileCodes) {
            if (interrupter.should_stop(worker)) return;
            const size_t count = std::min(kTileCodes, end - tile);
            for (size_t q = q0; q < q1; ++q) {
                HammingSelector& selector = selectors[q - q0];
                for (size_t at = tile; at < tile + count && !selector.done();) {
                    // The kernel filters a call's codes at the threshold of its start, and until
                    // k codes are kept everything passes. The first tile is therefore scanned in
                    // chunks that double (a few k codes, then as many as scanned so far): each
                    // chunk passes about k codes, instead of the whole tile passing.
                    const size_t len = std::min(tile + count - at, std::max({at - begin, 2 * p.k, size_t{256}}));
                    const size_t passed = kernel(p.codes + at * p.W, len, p.W, p.queries + q * p.W, words, mask,
                                                 selector.threshold(), s.pos.data(), s.dist.data());
                    selector.offer(s.pos.data(), s.dist.data(), passed, at);
                    at += len;
                }
            }
        }
        if (nslices == 1) {
            for (size_t q = q0; q < q1; ++q) {
                selectors[q - q0].write(p.ids, distances + q * p.k, labels + q * p.k);
            }
        }
    });

    if (nslices > 1) {
        HammingSelector merged;
        for (size_t q = 0; q < p.nq; ++q) {
            merged.reset(p.k, p.nbits, sorted);
            for (size_t slice = 0; slice < nslices; ++slice) merged.merge(slice_selectors[slice * p.nq + q]);
            merged.write(p.ids, distances + q * p.k, labels + q * p.k);
        }
    }
}

void hamming_search_reference(const HammingSearchParams& p, int32_t* distances, int64_t* labels) {
    validate_hamming_search(p);
    const size_t words = (p.nbits + 63) / 64;
    const uint64_t mask = last_word_mask(p.nbits);
    std::vector<uint32_t> pos(p.n);
    std::vector<uint16_t> dist(p.n);
    struct Entry {
        uint32_t dist;
        int64_t id;
        size_t pos;
    };
    std::vector<Entry> all(p.n);
    for (size_t q = 0; q < p.nq; ++q) {
        hamming_filter_ref(p.codes, p.n, p.W, p.queries + q * p.W, words, mask,
                           static_cast<uint32_t>(p.nbits), pos.data(), dist.data());
        for (size_t i = 0; i < p.n; ++i) {  // everything passed: pos[i] == i
            all[i] = Entry{dist[i], p.ids ? p.ids[i] : static_cast<int64_t>(i), i};
        }
        std::sort(all.begin(), all.end(), [](const Entry& a, const Entry& b) {
            if (a.dist != b.dist) return a.dist < b.dist;
            if (a.id != b.id) return a.id < b.id;
            return a.pos < b.pos;
        });
        for (size_t r = 0; r < p.k; ++r) {
            const bool found = r < p.n;
            distances[q * p.k + r] = found ? static_cast<int32_t>(all[r].dist) : INT32_MAX;
            labels[q * p.k + r] = found ? all[r].id : -1;
        }
    }
}

}  // namespace drq
