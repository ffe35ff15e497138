// Checks the AVX-512 ternary encoder and Hamming filter kernels against their scalar references,
// exactly, on a CPU that may lack AVX-512 (VPOPCNTDQ included): tests/test_avx512_emulated.py
// compiles csrc/drq/ternary_avx512.cpp and csrc/drq/hamming_avx512.cpp with tests/cpp/simde_shim
// first on the include path and links them with this driver and the reference kernels.
// Exit status 0 = all cases equal.
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "drq/hamming.h"
#include "drq/ternary.h"

int main() {
    using namespace drq;
    std::mt19937_64 rng(2026);
    int cases = 0, failures = 0;
    // Ternary sums: strides of 1, 2 and 40 chunks (40 * 64 bytes > the 16-bit flush bound of 64
    // chunks of 32 bytes), with d_in = stride (64) and d_in short of it (115, 2518: a last table
    // group reaching past d_in, partial table chunks, and more than kLutChunksPer16Bit chunks);
    // sample counts for the byte kernel (1, 4, 7: with and without a tail after the blocks of 4)
    // and the table kernel (full and partial tiles of 16, a byte-kernel tail).
    for (size_t stride : {size_t(64), size_t(128), size_t(2560)}) {
        const size_t d_in = stride == 64 ? 64 : (stride == 128 ? 115 : 2518);
        for (size_t ns : {size_t(1), size_t(4), size_t(7), size_t(12), size_t(17), size_t(33), size_t(64)}) {
            for (size_t d_out : {size_t(1), size_t(9), size_t(17)}) {
                std::vector<uint8_t> q(ns * stride, 0);
                std::vector<int8_t> t(d_out * stride, 0);
                for (size_t s = 0; s < ns; ++s) {
                    for (size_t j = 0; j < d_in; ++j) q[s * stride + j] = static_cast<uint8_t>(rng() & 0xff);
                }
                for (size_t r = 0; r < d_out; ++r) {
                    for (size_t j = 0; j < d_in; ++j) {
                        t[r * stride + j] = static_cast<int8_t>(static_cast<int>(rng() % 3) - 1);
                    }
                }
                std::vector<int32_t> P0(ns * d_out), N0(ns * d_out), P1(ns * d_out), N1(ns * d_out);
                std::vector<uint16_t> offsets(d_out * ternary_lut_groups(d_in) * 2);
                ternary_lut_offsets(t.data(), d_out, d_in, stride, offsets.data());
                ternary_dot_ref(q.data(), ns, t.data(), offsets.data(), d_out, d_in, stride, P0.data(), N0.data());
                ternary_dot_avx512(q.data(), ns, t.data(), offsets.data(), d_out, d_in, stride, P1.data(),
                                   N1.data());
                ++cases;
                if (P0 != P1 || N0 != N1) {
                    ++failures;
                    std::printf("MISMATCH ternary stride=%zu d_in=%zu ns=%zu d_out=%zu\n", stride, d_in, ns, d_out);
                }
            }
        }
    }
    // Hamming filter: W = 1 (plain loads) and W = 3 (gathers / multi-word), several prefixes and
    // thresholds, n not a multiple of 8.
    for (size_t W : {size_t(1), size_t(3)}) {
        const size_t n = 203;
        std::vector<uint64_t> codes(n * W), query(W);
        for (auto& v : codes) v = rng();
        for (auto& v : query) v = rng();
        for (size_t nbits : {size_t(8), size_t(16), size_t(64), size_t(100), size_t(192)}) {
            if (nbits > 64 * W) continue;
            const size_t words = (nbits + 63) / 64;
            const uint64_t mask = nbits % 64 ? (uint64_t{1} << (nbits % 64)) - 1 : ~uint64_t{0};
            for (uint32_t threshold : {0u, 3u, static_cast<uint32_t>(nbits / 2), static_cast<uint32_t>(nbits)}) {
                std::vector<uint32_t> pos0(n), pos1(n);
                std::vector<uint16_t> d0(n), d1(n);
                const size_t c0 = hamming_filter_ref(codes.data(), n, W, query.data(), words, mask, threshold,
                                                     pos0.data(), d0.data());
                const size_t c1 = hamming_filter_avx512(codes.data(), n, W, query.data(), words, mask, threshold,
                                                        pos1.data(), d1.data());
                pos0.resize(c0); d0.resize(c0); pos1.resize(c1); d1.resize(c1);
                ++cases;
                if (c0 != c1 || pos0 != pos1 || d0 != d1) {
                    ++failures;
                    std::printf("MISMATCH hamming W=%zu nbits=%zu threshold=%u (%zu vs %zu)\n", W, nbits,
                                threshold, c0, c1);
                }
            }
        }
    }
    std::printf("%d cases, %d mismatches\n", cases, failures);
    return failures == 0 ? 0 : 1;
}
