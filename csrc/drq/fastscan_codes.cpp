#include "fastscan_codes.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace drq {

FastScanStore::FastScanStore(size_t M, size_t nnorm) : M_(M), nnorm_(nnorm) {
    if (M < 1 || M > kFastScanMaxIters) {
        throw std::invalid_argument("FastScanStore: M must be in 1.." +
                                    std::to_string(kFastScanMaxIters) + ", got " + std::to_string(M));
    }
    if (nnorm > M) {
        throw std::invalid_argument("FastScanStore: nnorm must be <= M, got " + std::to_string(nnorm));
    }
}

void FastScanStore::set_vector(size_t pos, const uint8_t* codes, const uint8_t* norm_codes) {
    const size_t b = pos / kFastScanBlock, i = pos % kFastScanBlock;
    uint8_t* block = codes_.data() + b * code_stride();
    for (size_t p = 0; p < nbytes(); ++p) {
        const uint8_t lo = codes[2 * p];
        const uint8_t hi = 2 * p + 1 < M_ ? codes[2 * p + 1] : 0;
        block[p * kFastScanBlock + i] = uint8_t(lo | (hi << 4));
    }
    uint8_t* nblock = norms_.data() + b * norm_stride();
    for (size_t s = 0; s < nnorm_; ++s) nblock[s * kFastScanBlock + i] = norm_codes[s];
}

void FastScanStore::add(size_t n, const uint8_t* codes, const uint8_t* norm_codes,
                        const int64_t* ids) {
    for (size_t t = 0; t < n * M_; ++t) {
        if (codes[t] > 15) {
            throw std::invalid_argument("FastScanStore::add: code value " + std::to_string(codes[t]) +
                                        " at row " + std::to_string(t / M_) + " is not a 4-bit code (0..15)");
        }
    }
    const size_t new_total = ntotal_ + n;
    const size_t new_blocks = (new_total + kFastScanBlock - 1) / kFastScanBlock;
    // Reserve first: a bad_alloc leaves the store unchanged.
    codes_.reserve(new_blocks * code_stride());
    norms_.reserve(new_blocks * norm_stride());
    ids_.reserve(new_total);
    codes_.resize(new_blocks * code_stride(), 0);
    norms_.resize(new_blocks * norm_stride(), 0);
    for (size_t r = 0; r < n; ++r) set_vector(ntotal_ + r, codes + r * M_, norm_codes + r * nnorm_);
    ids_.insert(ids_.end(), ids, ids + n);
    ntotal_ = new_total;
}

void FastScanStore::check_range(size_t start, size_t n) const {
    if (start > ntotal_ || n > ntotal_ - start) {
        throw std::out_of_range("FastScanStore: range [" + std::to_string(start) + ", " +
                                std::to_string(start + n) + ") is outside [0, " +
                                std::to_string(ntotal_) + ")");
    }
}

void FastScanStore::get_codes(size_t start, size_t n, uint8_t* codes_out) const {
    check_range(start, n);
    for (size_t r = 0; r < n; ++r)
        for (size_t j = 0; j < M_; ++j) codes_out[r * M_ + j] = code_at(start + r, j);
}

void FastScanStore::get_norm_codes(size_t start, size_t n, uint8_t* norm_out) const {
    check_range(start, n);
    for (size_t r = 0; r < n; ++r)
        for (size_t s = 0; s < nnorm_; ++s) norm_out[r * nnorm_ + s] = norm_code_at(start + r, s);
}

size_t FastScanStore::remove(const uint8_t* remove_mask) {
    std::vector<uint8_t> codes(M_), norm_codes(nnorm_);
    size_t kept = 0;
    for (size_t pos = 0; pos < ntotal_; ++pos) {
        if (remove_mask[pos]) continue;
        if (kept != pos) {
            for (size_t j = 0; j < M_; ++j) codes[j] = code_at(pos, j);
            for (size_t s = 0; s < nnorm_; ++s) norm_codes[s] = norm_code_at(pos, s);
            set_vector(kept, codes.data(), norm_codes.data());
            ids_[kept] = ids_[pos];
        }
        ++kept;
    }
    const size_t removed = ntotal_ - kept;
    // Clear the slots past the new end so padding holds code 0 again.
    for (size_t pos = kept; pos < ntotal_; ++pos) {
        std::fill(codes.begin(), codes.end(), 0);
        std::fill(norm_codes.begin(), norm_codes.end(), 0);
        set_vector(pos, codes.data(), norm_codes.data());
    }
    ntotal_ = kept;
    ids_.resize(kept);
    codes_.resize(nblocks() * code_stride());
    norms_.resize(nblocks() * norm_stride());
    return removed;
}

void FastScanStore::reset() {
    ntotal_ = 0;
    std::vector<uint8_t>().swap(codes_);
    std::vector<uint8_t>().swap(norms_);
    std::vector<int64_t>().swap(ids_);
}

size_t FastScanStore::memory_usage() const {
    return codes_.size() + norms_.size() + ids_.size() * sizeof(int64_t);
}

}  // namespace drq
