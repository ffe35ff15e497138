// Top-k selection for searches: one bounded binary heap per query (and per database slice when
// the database is split between threads), then a merge.
//
// Ranking is a total order, so results do not depend on how the work was split:
//   L2:            smaller distance first
//   inner product: larger distance first
//   equal distances: smaller id first, then smaller storage position.
// NaN distances never rank (they are dropped). When fewer than k candidates exist, results are
// padded with id -1 and distance +inf (L2) / -inf (inner product).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

namespace drq {

enum class Metric : int {
    L2 = 0,            // squared Euclidean distance, ascending
    InnerProduct = 1,  // inner product, descending
};

struct Candidate {
    float dist;
    int64_t id;   // the id the search reports
    int64_t pos;  // storage position: breaks ties between equal ids
};

template <Metric metric>
struct Ranking {
    // True when a ranks strictly before b.
    static bool before(const Candidate& a, const Candidate& b) {
        if (a.dist != b.dist) {
            return metric == Metric::L2 ? a.dist < b.dist : a.dist > b.dist;
        }
        if (a.id != b.id) return a.id < b.id;
        return a.pos < b.pos;
    }

    // Distance reported for the padding of missing results.
    static float padding_distance() {
        return metric == Metric::L2 ? std::numeric_limits<float>::infinity()
                                    : -std::numeric_limits<float>::infinity();
    }

    // False when dist cannot enter a full heap whose last-ranked distance is `worst`: strictly
    // worse, or NaN. The hot-path test, before any tie-breaking.
    static bool may_enter(float dist, float worst) {
        return metric == Metric::L2 ? dist <= worst : dist >= worst;
    }
};

// The reference paths' top-k: sorts every candidate of one query and writes the best k into
// distances[0..k) / labels[0..k), padding with (padding_distance, -1). Candidates are reordered.
template <Metric metric>
inline void write_top_k_by_full_sort(std::vector<Candidate>& all, size_t k, float* distances,
                                     int64_t* labels) {
    std::sort(all.begin(), all.end(), Ranking<metric>::before);
    for (size_t r = 0; r < k; ++r) {
        const bool found = r < all.size();
        distances[r] = found ? all[r].dist : Ranking<metric>::padding_distance();
        labels[r] = found ? all[r].id : -1;
    }
}

// Keeps the `capacity` best candidates pushed so far.
// Storage is a max-heap under Ranking::before: heap_[0] is the kept candidate that ranks last,
// the one a better candidate replaces.
template <Metric metric>
class TopK {
public:
    using Rank = Ranking<metric>;

    explicit TopK(size_t capacity = 0) { set_capacity(capacity); }

    // Empties the heap and sets how many candidates it keeps (may allocate).
    void set_capacity(size_t capacity) {
        heap_.clear();
        heap_.reserve(capacity);
        capacity_ = capacity;
    }

    size_t size() const { return heap_.size(); }

    // Distance a candidate must reach (Ranking::may_enter) to have a chance of being kept: the
    // last-ranked kept distance when full, else the padding distance (any non-NaN enters).
    // Lets scans filter candidates with one comparison and call push only for the few that pass.
    float threshold() const {
        if (heap_.size() < capacity_) return Rank::padding_distance();
        // capacity 0: nothing may enter; NaN fails every comparison.
        return capacity_ == 0 ? std::numeric_limits<float>::quiet_NaN() : heap_[0].dist;
    }
    const std::vector<Candidate>& entries() const { return heap_; }

    void push(float dist, int64_t id, int64_t pos) {
        if (heap_.size() == capacity_) {
            if (capacity_ == 0 || !Rank::may_enter(dist, heap_[0].dist)) return;
            const Candidate candidate{dist, id, pos};
            if (Rank::before(candidate, heap_[0])) replace_last_ranked(candidate);
        } else {
            if (dist != dist) return;  // NaN: never ranks
            heap_.push_back(Candidate{dist, id, pos});  // within the reserved capacity
            std::push_heap(heap_.begin(), heap_.end(), Rank::before);
        }
    }

    // Pushes every candidate kept by `other` (merging the heaps of database slices).
    void merge(const TopK& other) {
        for (const Candidate& c : other.heap_) push(c.dist, c.id, c.pos);
    }

    // Writes k results best first into distances[0..k) and ids[0..k), padding with
    // (padding_distance, -1) past the kept candidates. Leaves the heap sorted, not a heap:
    // call set_capacity before reusing it.
    void write_sorted(size_t k, float* distances, int64_t* ids) {
        std::sort(heap_.begin(), heap_.end(), Rank::before);
        const size_t n = std::min(k, heap_.size());
        for (size_t r = 0; r < n; ++r) {
            distances[r] = heap_[r].dist;
            ids[r] = heap_[r].id;
        }
        for (size_t r = n; r < k; ++r) {
            distances[r] = Rank::padding_distance();
            ids[r] = -1;
        }
    }

private:
    std::vector<Candidate> heap_;
    size_t capacity_ = 0;

    // Replaces heap_[0] by `candidate` (which ranks before it) and sifts it down: one
    // root-to-leaf pass instead of a pop followed by a push.
    void replace_last_ranked(const Candidate& candidate) {
        const size_t n = heap_.size();
        size_t hole = 0;
        for (;;) {
            const size_t left = 2 * hole + 1;
            if (left >= n) break;
            const size_t right = left + 1;
            // The child that ranks later must move up to keep the max-heap property.
            const size_t later =
                (right < n && Rank::before(heap_[left], heap_[right])) ? right : left;
            if (!Rank::before(candidate, heap_[later])) break;
            heap_[hole] = heap_[later];
            hole = later;
        }
        heap_[hole] = candidate;
    }
};

}  // namespace drq
