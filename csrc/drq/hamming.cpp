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

struct HammingCandidate {
    uint32_t dist;
    size_t pos;
};

// Keeps every code that may still be among the k nearest of one query (see hamming.h).
class HammingSelector {
public:
    void reset(size_t k, size_t nbits) {
        k_ = k;
        threshold_ = static_cast<uint32_t>(nbits);
        below_ = 0;
        counts_.assign(nbits + 1, 0);
        candidates_.clear();
        compact_at_ = 2 * k + 1024;
    }

    // Codes with distance <= threshold() may still enter (the filter kernels' threshold).
    uint32_t threshold() const { return threshold_; }

    // Offers `count` codes that passed the filter: positions pos_base + pos[i], distances dist[i].
    void offer(const uint32_t* pos, const uint16_t* dist, size_t count, size_t pos_base) {
        for (size_t i = 0; i < count; ++i) {
            // The filter used the threshold of the tile's start; it may have dropped since.
            if (dist[i] <= threshold_) add(dist[i], pos_base + pos[i]);
        }
    }

    void merge(const HammingSelector& other) {
        for (const HammingCandidate& c : other.candidates_) {
            if (c.dist <= other.threshold_ && c.dist <= threshold_) add(c.dist, c.pos);
        }
    }

    // Writes the k best (distance, id, position) best first, with (INT32_MAX, -1) padding.
    void write(const int64_t* ids, int32_t* distances, int64_t* labels) {
        const uint32_t t = threshold_;
        candidates_.erase(std::remove_if(candidates_.begin(), candidates_.end(),
                                         [t](const HammingCandidate& c) { return c.dist > t; }),
                          candidates_.end());
        const auto id_of = [ids](size_t pos) { return ids ? ids[pos] : static_cast<int64_t>(pos); };
        const auto before = [&](const HammingCandidate& a, const HammingCandidate& b) {
            if (a.dist != b.dist) return a.dist < b.dist;
            const int64_t ia = id_of(a.pos), ib = id_of(b.pos);
            if (ia != ib) return ia < ib;
            return a.pos < b.pos;
        };
        const size_t found = std::min(k_, candidates_.size());
        if (candidates_.size() > k_) {
            std::nth_element(candidates_.begin(), candidates_.begin() + static_cast<std::ptrdiff_t>(k_),
                             candidates_.end(), before);
        }
        std::sort(candidates_.begin(), candidates_.begin() + static_cast<std::ptrdiff_t>(found), before);
        for (size_t r = 0; r < found; ++r) {
            distances[r] = static_cast<int32_t>(candidates_[r].dist);
            labels[r] = id_of(candidates_[r].pos);
        }
        for (size_t r = found; r < k_; ++r) {
            distances[r] = INT32_MAX;
            labels[r] = -1;
        }
    }

private:
    void add(uint32_t dist, size_t pos) {
        candidates_.push_back(HammingCandidate{dist, pos});
        ++counts_[dist];
        if (dist < threshold_) {
            ++below_;
            // Lower the threshold while at least k candidates are strictly below it: a code at
            // the old threshold can no longer be among the k best.
            while (below_ >= k_) {
                --threshold_;
                below_ -= counts_[threshold_];
            }
        }
        if (candidates_.size() >= compact_at_) compact();
    }

    // Drops the candidates above the threshold (their counts are never read again: the
    // threshold only decreases).
    void compact() {
        const uint32_t t = threshold_;
        candidates_.erase(std::remove_if(candidates_.begin(), candidates_.end(),
                                         [t](const HammingCandidate& c) { return c.dist > t; }),
                          candidates_.end());
        // Many ties at the threshold (e.g. duplicate codes) can keep most candidates: compact
        // again only after the list doubles, so the cost stays linear.
        compact_at_ = std::max(2 * k_ + 1024, 2 * candidates_.size());
    }

    size_t k_ = 0;
    size_t compact_at_ = 0;
    uint32_t threshold_ = 0;  // codes with dist <= threshold_ may enter
    size_t below_ = 0;        // candidates with dist < threshold_
    std::vector<size_t> counts_;
    std::vector<HammingCandidate> candidates_;
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
        for (size_t q = q0; q < q1; ++q) selectors[q - q0].reset(p.k, p.nbits);
        for (size_t tile = begin; tile < end; tile += kTileCodes) {
            if (interrupter.should_stop(worker)) return;
            const size_t count = std::min(kTileCodes, end - tile);
            for (size_t q = q0; q < q1; ++q) {
                HammingSelector& selector = selectors[q - q0];
                const size_t passed = kernel(p.codes + tile * p.W, count, p.W, p.queries + q * p.W, words,
                                             mask, selector.threshold(), s.pos.data(), s.dist.data());
                selector.offer(s.pos.data(), s.dist.data(), passed, tile);
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
            merged.reset(p.k, p.nbits);
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
