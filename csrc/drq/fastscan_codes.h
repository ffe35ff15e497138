// FastScanStore: the database side of the 4-bit fast-scan index (IndexDRQFastScan).
//
// Codes: M iterations of 4 bits (values 0..15) per vector, two iterations per byte:
//     byte p of a vector = code[2p] | code[2p + 1] << 4        (p < nbytes = ceil(M / 2))
// An odd M leaves the high nibble of the last byte 0.
//
// Layout: vectors in blocks of kFastScanBlock = 32. Inside a block, byte-major: the 32 bytes
// number p of the block's 32 vectors are contiguous,
//     block b, byte p, vector i  ->  codes[b * code_stride + p * 32 + i]   (code_stride = nbytes * 32)
// so one 256-bit load brings byte p of all 32 vectors: its low nibbles index the table of
// iteration 2p, its high nibbles that of 2p + 1, each with one byte shuffle. A scan at prefix m
// reads only the first ceil(m / 2) * 32 bytes of each block (truncation = reading less).
// (faiss's PQ4 fast-scan packs 32 vectors per block too, but permutes the bytes inside the block to
// suit its accumulation; this layout keeps vector order and undoes the 16-bit lane interleave once
// per block at the end of the scan instead.)
//
// Norm bytes: for L2, the scan needs ||xhat_m||^2, which depends on the prefix m. The store keeps
// `nnorm` 8-bit quantised norms per vector (one per stored prefix, chosen by the caller), in the
// same blocked byte-major layout (norm_stride = nnorm * 32): slot s of block b is the 32 bytes at
// norms[b * norm_stride + s * 32]. A search reads one slot beside the code bytes and adds each
// level times a per-query 16-bit factor to the sums (fastscan.h), outside the uint8 tables.
//
// Padding slots of the last block hold code 0 and are never reported. Ids: one int64 per vector.
// Not thread-safe by itself (the Python binding holds a readers-writer lock).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace drq {

constexpr size_t kFastScanBlock = 32;

class FastScanStore {
public:
    // 1 <= M <= kFastScanMaxIters iterations, nnorm <= M norm slots. Throws std::invalid_argument.
    FastScanStore(size_t M, size_t nnorm);

    size_t M() const { return M_; }
    size_t nnorm() const { return nnorm_; }
    size_t nbytes() const { return (M_ + 1) / 2; }
    size_t ntotal() const { return ntotal_; }
    size_t nblocks() const { return (ntotal_ + kFastScanBlock - 1) / kFastScanBlock; }
    size_t code_stride() const { return nbytes() * kFastScanBlock; }
    size_t norm_stride() const { return nnorm_ * kFastScanBlock; }

    // Appends n vectors. codes: n * M values 0..15 (row-major, one per byte, unpacked);
    // norm_codes: n * nnorm bytes (row-major); ids: n int64. Throws std::invalid_argument for a
    // code > 15 (nothing changed). All or nothing on allocation failure.
    void add(size_t n, const uint8_t* codes, const uint8_t* norm_codes, const int64_t* ids);

    // Copies vectors [start, start + n) out, unpacked: codes_out n * M, norm_out n * nnorm.
    void get_codes(size_t start, size_t n, uint8_t* codes_out) const;
    void get_norm_codes(size_t start, size_t n, uint8_t* norm_out) const;

    // 4-bit code of vector `pos` at iteration j (used by re-ranking).
    uint8_t code_at(size_t pos, size_t j) const {
        const uint8_t byte = codes_[(pos / kFastScanBlock) * code_stride() +
                                    (j / 2) * kFastScanBlock + pos % kFastScanBlock];
        return (j & 1) ? uint8_t(byte >> 4) : uint8_t(byte & 15);
    }
    uint8_t norm_code_at(size_t pos, size_t slot) const {
        return norms_[(pos / kFastScanBlock) * norm_stride() + slot * kFastScanBlock +
                      pos % kFastScanBlock];
    }

    const uint8_t* block_codes(size_t b) const { return codes_.data() + b * code_stride(); }
    // Norm slot `slot` of block b (32 bytes); valid only when slot < nnorm.
    const uint8_t* block_norms(size_t b, size_t slot) const {
        return norms_.data() + b * norm_stride() + slot * kFastScanBlock;
    }
    const int64_t* ids() const { return ids_.data(); }

    // Removes every vector i with remove_mask[i] != 0 (ntotal bytes), keeping the order of the
    // others. Returns how many were removed.
    size_t remove(const uint8_t* remove_mask);
    void reset();
    size_t memory_usage() const;

private:
    size_t M_, nnorm_;
    size_t ntotal_ = 0;
    std::vector<uint8_t> codes_;  // nblocks * code_stride
    std::vector<uint8_t> norms_;  // nblocks * norm_stride
    std::vector<int64_t> ids_;    // ntotal

    void check_range(size_t start, size_t n) const;
    void set_vector(size_t pos, const uint8_t* codes, const uint8_t* norm_codes);
};

// Largest M: without shifts a scan sums 2 ceil(M / 2) code tables of values <= 255 in uint16
// (M = 254: 254 * 255 = 64770 <= 65535); kept at 254 so that files written before the norm left
// the tables stay within the same limit.
constexpr size_t kFastScanMaxIters = 254;

}  // namespace drq
