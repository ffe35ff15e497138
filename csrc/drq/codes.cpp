#include "codes.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

namespace drq {

CodeStore::CodeStore(size_t M) : M_(M), norms_(M) {
    if (M == 0) {
        throw std::invalid_argument("CodeStore: M (iterations per vector) must be >= 1");
    }
}

void CodeStore::add(size_t n, const uint8_t* codes, const float* norms, const int64_t* ids) {
    if (n == 0) return;
    if (codes == nullptr || norms == nullptr || ids == nullptr) {
        throw std::invalid_argument("CodeStore::add: null input array");
    }
    if (n > std::numeric_limits<size_t>::max() / 2 - ntotal_ ||
        n > static_cast<size_t>(std::numeric_limits<int64_t>::max()) - ntotal_) {
        throw std::length_error("CodeStore::add: too many vectors");
    }
    const size_t new_ntotal = ntotal_ + n;
    const size_t new_nblocks = (new_ntotal + kBlockSize - 1) / kBlockSize;
    if (new_nblocks > std::numeric_limits<size_t>::max() / block_stride()) {
        throw std::length_error("CodeStore::add: code storage size overflows");
    }

    // Phase 1: everything that can throw (allocation). Reserving never changes the contents, so
    // a failure here leaves the store untouched. Capacity grows geometrically so repeated small
    // adds stay amortised O(n).
    auto grow = [](auto& vec, size_t needed) {
        if (needed > vec.capacity()) vec.reserve(std::max(needed, vec.capacity() + vec.capacity() / 2));
    };
    grow(codes_, new_nblocks * block_stride());
    for (auto& prefix : norms_) grow(prefix, new_ntotal);
    grow(ids_, new_ntotal);

    // Phase 2: cannot throw (sizes within the reserved capacity, trivially copyable elements).
    // New blocks start zeroed: padding slots of the last block must hold a valid code.
    codes_.resize(new_nblocks * block_stride(), 0);
    uint8_t max_code = max_code_;
    const size_t stride = block_stride();
    for (size_t i = 0; i < n; ++i) {
        const size_t slot = ntotal_ + i;
        uint8_t* dst = codes_.data() + (slot / kBlockSize) * stride + slot % kBlockSize;
        const uint8_t* src = codes + i * M_;
        for (size_t j = 0; j < M_; ++j) {
            dst[j * kBlockSize] = src[j];
            max_code = std::max(max_code, src[j]);
        }
    }
    for (size_t m = 0; m < M_; ++m) {
        std::vector<float>& prefix = norms_[m];
        prefix.resize(new_ntotal);
        float* dst = prefix.data() + ntotal_;
        for (size_t i = 0; i < n; ++i) dst[i] = norms[i * M_ + m];
    }
    ids_.insert(ids_.end(), ids, ids + n);
    max_code_ = max_code;
    ntotal_ = new_ntotal;
}

void CodeStore::check_range(size_t start, size_t n) const {
    if (start > ntotal_ || n > ntotal_ - start) {
        throw std::out_of_range("CodeStore: vectors [start=" + std::to_string(start) +
                                ", start + n=" + std::to_string(start) + " + " +
                                std::to_string(n) + ") are not inside [0, ntotal=" +
                                std::to_string(ntotal_) + ")");
    }
}

void CodeStore::get_codes(size_t start, size_t n, uint8_t* codes_out) const {
    check_range(start, n);
    const size_t stride = block_stride();
    for (size_t i = 0; i < n; ++i) {
        const size_t slot = start + i;
        const uint8_t* src = codes_.data() + (slot / kBlockSize) * stride + slot % kBlockSize;
        uint8_t* dst = codes_out + i * M_;
        for (size_t j = 0; j < M_; ++j) dst[j] = src[j * kBlockSize];
    }
}

void CodeStore::get_norms(size_t start, size_t n, float* norms_out) const {
    check_range(start, n);
    for (size_t m = 0; m < M_; ++m) {
        const float* src = norms_[m].data() + start;
        for (size_t i = 0; i < n; ++i) norms_out[i * M_ + m] = src[i];
    }
}

size_t CodeStore::remove(const uint8_t* remove_mask) {
    if (ntotal_ == 0) return 0;
    if (remove_mask == nullptr) throw std::invalid_argument("CodeStore::remove: null mask");
    // Stable in-place compaction: slot `kept` <= `slot` always, and slot `kept` was already read
    // when it was visited, so moving forward never overwrites an unread vector.
    const size_t stride = block_stride();
    size_t kept = 0;
    for (size_t slot = 0; slot < ntotal_; ++slot) {
        if (remove_mask[slot] != 0) continue;
        if (kept != slot) {
            const uint8_t* src = codes_.data() + (slot / kBlockSize) * stride + slot % kBlockSize;
            uint8_t* dst = codes_.data() + (kept / kBlockSize) * stride + kept % kBlockSize;
            for (size_t j = 0; j < M_; ++j) dst[j * kBlockSize] = src[j * kBlockSize];
            for (auto& prefix : norms_) prefix[kept] = prefix[slot];
            ids_[kept] = ids_[slot];
        }
        ++kept;
    }
    const size_t removed = ntotal_ - kept;
    if (removed == 0) return 0;

    ntotal_ = kept;
    const size_t new_nblocks = nblocks();
    codes_.resize(new_nblocks * stride);
    // Re-zero the padding slots of the (now) last block: they held moved-out vectors.
    const size_t used_in_last = ntotal_ % kBlockSize;
    if (used_in_last != 0) {
        uint8_t* last = codes_.data() + (new_nblocks - 1) * stride;
        for (size_t j = 0; j < M_; ++j) {
            std::memset(last + j * kBlockSize + used_in_last, 0, kBlockSize - used_in_last);
        }
    }
    for (auto& prefix : norms_) prefix.resize(ntotal_);
    ids_.resize(ntotal_);
    if (ntotal_ == 0) max_code_ = 0;

    // Give memory back after large removals; shrink_to_fit reallocates, so keep it for the case
    // where at least half of the capacity is unused.
    if (codes_.capacity() > 2 * codes_.size()) {
        codes_.shrink_to_fit();
        for (auto& prefix : norms_) prefix.shrink_to_fit();
        ids_.shrink_to_fit();
    }
    return removed;
}

void CodeStore::reset() {
    // Swapping with empty vectors releases the memory (clear() would keep the capacity).
    std::vector<uint8_t>().swap(codes_);
    for (auto& prefix : norms_) std::vector<float>().swap(prefix);
    std::vector<int64_t>().swap(ids_);
    ntotal_ = 0;
    max_code_ = 0;
}

size_t CodeStore::memory_usage() const {
    return codes_.size() * sizeof(uint8_t) + M_ * ntotal_ * sizeof(float) +
           ids_.size() * sizeof(int64_t);
}

}  // namespace drq
