// Top-k selection for searches: one bounded candidate buffer per query (and per database slice
// when the database is split between threads), then a merge.
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
#include <functional>
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
//
// Storage is a buffer of up to 2 * capacity + kSlack candidates, not a heap: a candidate that
// passes the threshold is appended (a few instructions), and when the buffer is full the
// capacity-th best distance becomes the threshold and the candidates behind it are dropped.
// A binary heap pays a log2(capacity)-level sift with unpredictable branches for every candidate
// that enters; with k = 100 over 60k vectors that was a third of an 8-byte scan's time.
// The threshold lags between compactions (it only filters less), so the kept set is the same.
//
// Ids: a scan that knows the ids by storage position (set_capacity's ids_by_position) pushes
// positions only (push_position) and the ids are read when candidates are ranked exactly (a
// compaction full of ties, merge, write_sorted): during a scan the ids array is cold, and one
// cache miss per entering candidate cost more than the rest of the top-k work.
template <Metric metric>
class TopK {
public:
    using Rank = Ranking<metric>;

    explicit TopK(size_t capacity = 0) { set_capacity(capacity); }

    // Empties the buffer and sets how many candidates it keeps (may allocate). ids_by_position,
    // if given, must outlive the pushes and cover every position pushed with push_position.
    void set_capacity(size_t capacity, const int64_t* ids_by_position = nullptr) {
        capacity_ = capacity;
        limit_ = 2 * capacity + kSlack;
        if (buffer_.size() < limit_) buffer_.resize(limit_);
        if (distances_.size() < limit_) distances_.resize(limit_);
        size_ = 0;
        ids_by_position_ = ids_by_position;
        // capacity 0: nothing may enter; NaN fails every comparison.
        threshold_ = capacity == 0 ? std::numeric_limits<float>::quiet_NaN()
                                   : Rank::padding_distance();
    }

    // Candidates kept (the best min(pushed, capacity) of those pushed).
    size_t size() const { return std::min(size_, capacity_); }

    // Distance a candidate must reach (Ranking::may_enter) to have a chance of being kept: the
    // padding distance (any non-NaN enters) until the first compaction, then the last-ranked
    // distance kept by the latest one. Lets scans filter candidates with one comparison and
    // call push only for the few that pass.
    float threshold() const { return threshold_; }

    void push(float dist, int64_t id, int64_t pos) {
        if (!Rank::may_enter(dist, threshold_)) return;  // also drops NaN
        buffer_[size_++] = Candidate{dist, id, pos};
        if (size_ == limit_) compact();
    }

    // push() with the id looked up later in ids_by_position[pos] (see the class comment).
    void push_position(float dist, int64_t pos) { push(dist, kIdNotRead, pos); }

    // Pushes every candidate kept by `other` (merging the results of database slices).
    void merge(const TopK& other) {
        for (size_t i = 0; i < other.size_; ++i) {
            const Candidate& c = other.buffer_[i];
            push(c.dist, other.id_of(c), c.pos);
        }
    }

    // Writes k results best first into distances[0..k) and ids[0..k), padding with
    // (padding_distance, -1) past the kept candidates. Leaves the buffer sorted: call
    // set_capacity before reusing it.
    void write_sorted(size_t k, float* distances, int64_t* ids) {
        keep_best_exactly();  // then sort only what is written
        std::sort(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(size_), Rank::before);
        const size_t n = std::min(k, size());
        for (size_t r = 0; r < n; ++r) {
            distances[r] = buffer_[r].dist;
            ids[r] = buffer_[r].id;
        }
        for (size_t r = n; r < k; ++r) {
            distances[r] = Rank::padding_distance();
            ids[r] = -1;
        }
    }

private:
    // Extra buffer room so that a small capacity (k = 1) does not compact every other push.
    static constexpr size_t kSlack = 32;
    // Placeholder id of a candidate pushed by position (never compared: read_ids runs first).
    static constexpr int64_t kIdNotRead = -2;

    std::vector<Candidate> buffer_;  // [0, size_) in use
    std::vector<float> distances_;   // compact()'s scratch
    size_t size_ = 0;
    size_t capacity_ = 0;
    size_t limit_ = kSlack;
    const int64_t* ids_by_position_ = nullptr;
    float threshold_ = std::numeric_limits<float>::quiet_NaN();

    int64_t id_of(const Candidate& c) const {
        return c.id == kIdNotRead ? ids_by_position_[c.pos] : c.id;
    }

    // Fills in the ids of candidates pushed by position, before any ranking that compares ids.
    void read_ids() {
        if (ids_by_position_ == nullptr) return;
        for (size_t i = 0; i < size_; ++i) buffer_[i].id = id_of(buffer_[i]);
    }

    // Tightens the threshold to the capacity_-th best distance and drops every candidate that
    // ranks after it. The selection runs on a float copy of the distances (plain comparisons,
    // less data moved) rather than on the candidates with their tie-breaking comparison;
    // candidates that tie with the new threshold are all kept (the final sort orders them).
    void compact() {
        for (size_t i = 0; i < size_; ++i) distances_[i] = buffer_[i].dist;
        const auto first = distances_.begin();
        const auto last = first + static_cast<std::ptrdiff_t>(size_);
        const auto nth = first + static_cast<std::ptrdiff_t>(capacity_ - 1);
        if (metric == Metric::L2) {
            std::nth_element(first, nth, last);
        } else {
            std::nth_element(first, nth, last, std::greater<float>());
        }
        threshold_ = *nth;
        const float threshold = threshold_;
        const auto kept_end = std::remove_if(
            buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(size_),
            [threshold](const Candidate& c) { return !Rank::may_enter(c.dist, threshold); });
        size_ = static_cast<size_t>(kept_end - buffer_.begin());
        // Many candidates tying with the threshold would leave the buffer nearly full and make
        // every later push compact again: rank those exactly and keep only capacity_.
        if (size_ > capacity_ + kSlack / 2) keep_best_exactly();
    }

    // The capacity_ best candidates under the full total order (ties by id, then position).
    void keep_best_exactly() {
        read_ids();
        if (size_ <= capacity_) return;
        std::nth_element(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(capacity_ - 1),
                         buffer_.begin() + static_cast<std::ptrdiff_t>(size_), Rank::before);
        size_ = capacity_;
    }
};

}  // namespace drq
