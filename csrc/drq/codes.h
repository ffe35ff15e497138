// CodeStore: the database side of a DRQ index.
//
// Holds, for ntotal vectors with M iterations each:
//  - the codes, in blocks of kBlockSize vectors, iteration-major inside a block:
//        block b occupies M * kBlockSize bytes; byte j * kBlockSize + i is the code of vector
//        b * kBlockSize + i at iteration j.
//    A scan at prefix m reads only the first m * kBlockSize bytes of each block, so a shorter
//    prefix cuts memory traffic in proportion. The last block may be partial; its padding
//    slots hold code 0 (a valid table index) and are never reported.
//  - the per-prefix squared norms ||xhat_m||^2, prefix-major: one contiguous array of ntotal
//    floats per prefix m = 1..M, so a scan at prefix m reads one contiguous float array.
//  - one int64 id per vector (what searches report).
//
// Interfaces exchanging codes and norms with callers use the plain row-major layout:
// codes n * M bytes (codes[i * M + j]) and norms n * M floats (norms[i * M + m - 1]).
//
// Not thread-safe by itself: concurrent readers are fine, a mutation needs exclusive access
// (the Python binding holds a readers-writer lock).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "adc.h"

namespace drq {

class CodeStore {
public:
    // M >= 1 iterations (bytes) per vector. Throws std::invalid_argument otherwise.
    explicit CodeStore(size_t M);

    size_t M() const { return M_; }
    size_t ntotal() const { return ntotal_; }
    size_t nblocks() const { return (ntotal_ + kBlockSize - 1) / kBlockSize; }
    // Bytes between consecutive blocks: M * kBlockSize.
    size_t block_stride() const { return M_ * kBlockSize; }

    // Appends n vectors. codes: n * M bytes, norms: n * M floats (row-major, see above),
    // ids: n int64. All or nothing: memory is reserved before anything changes, so on failure
    // (std::bad_alloc, std::length_error) the store is as it was.
    void add(size_t n, const uint8_t* codes, const float* norms, const int64_t* ids);

    // Copies vectors [start, start + n) out in the row-major layout.
    // codes_out: n * M bytes; norms_out: n * M floats.
    // Throws std::out_of_range when the range is not inside [0, ntotal).
    void get_codes(size_t start, size_t n, uint8_t* codes_out) const;
    void get_norms(size_t start, size_t n, float* norms_out) const;

    // ntotal ids, in storage order.
    const int64_t* ids() const { return ids_.data(); }

    // Removes every vector i with remove_mask[i] != 0 (remove_mask: ntotal bytes), keeping the
    // order of the others. Returns how many were removed.
    size_t remove(const uint8_t* remove_mask);

    // Removes everything and releases the memory.
    void reset();

    // Bytes held by codes (blocks, padding included), norms and ids.
    size_t memory_usage() const;

    // Codes of block b: block_stride() bytes. b < nblocks().
    const uint8_t* block_codes(size_t b) const { return codes_.data() + b * block_stride(); }

    // ntotal floats ||xhat_m(i)||^2 for prefix length m, 1 <= m <= M.
    const float* prefix_norms(size_t m) const { return norms_[m - 1].data(); }

    // Largest code value stored so far (an upper bound after removals); 0 when empty.
    // Searches check it against the table size K before reading tables.
    uint8_t max_code() const { return max_code_; }

private:
    size_t M_;
    size_t ntotal_ = 0;
    std::vector<uint8_t> codes_;             // nblocks * M * kBlockSize
    std::vector<std::vector<float>> norms_;  // M arrays of ntotal floats
    std::vector<int64_t> ids_;               // ntotal
    uint8_t max_code_ = 0;

    void check_range(size_t start, size_t n) const;
};

}  // namespace drq
