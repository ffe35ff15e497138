// Checks the AVX-512 ADC kernel against the scalar reference, bit for bit, on a CPU that may
// lack AVX-512: tests/test_avx512_emulated.py compiles csrc/drq/adc_avx512.cpp with
// tests/cpp/simde_shim first on the include path (SIMDe emulation of the intrinsics) and links
// it with this driver and csrc/drq/adc_ref.cpp. Exit status 0 = all cases equal. Covers the
// single-query kernel and the multi-query one (adc_scan_queries_avx512).
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "drq/adc.h"

int main() {
    using namespace drq;
    std::mt19937 rng(12345);
    std::uniform_real_distribution<float> uniform(-2.0f, 2.0f);
    int failures = 0;
    int cases = 0;
    const size_t K = 256;
    for (size_t M : {1, 5, 16}) {
        for (size_t nblocks : {1, 2, 3, 6}) {  // odd counts exercise the single-block tail
            for (size_t lut_stride : {size_t(0), K}) {
                for (size_t m = 1; m <= M; m += (M > 4 ? 3 : 1)) {
                    std::vector<uint8_t> codes(nblocks * M * kBlockSize);
                    for (auto& c : codes) c = static_cast<uint8_t>(rng() & 0xff);
                    std::vector<float> lut((lut_stride ? M : 1) * K);
                    for (auto& v : lut) v = uniform(rng);
                    std::vector<float> scales(M);
                    for (auto& v : scales) v = uniform(rng);
                    std::vector<float> expected(nblocks * kBlockSize), got(nblocks * kBlockSize);
                    adc_scan_ref(codes.data(), nblocks, M * kBlockSize, m, lut.data(), lut_stride,
                                 scales.data(), expected.data());
                    adc_scan_avx512(codes.data(), nblocks, M * kBlockSize, m, lut.data(),
                                    lut_stride, scales.data(), got.data());
                    ++cases;
                    if (std::memcmp(expected.data(), got.data(), expected.size() * sizeof(float))) {
                        ++failures;
                        std::printf("MISMATCH M=%zu nblocks=%zu lut_stride=%zu m=%zu\n", M,
                                    nblocks, lut_stride, m);
                    }
                }
            }
        }
    }
    // Multi-query kernel: every query count from 1 to 6 (groups of 4 plus each remainder).
    for (size_t nluts = 1; nluts <= 6; ++nluts) {
        for (size_t lut_stride : {size_t(0), K}) {
            const size_t M = 7, nblocks = 3, m = 5;
            std::vector<uint8_t> codes(nblocks * M * kBlockSize);
            for (auto& c : codes) c = static_cast<uint8_t>(rng() & 0xff);
            std::vector<float> lut(nluts * (lut_stride ? M : 1) * K);
            for (auto& v : lut) v = uniform(rng);
            std::vector<const float*> luts(nluts);
            for (size_t q = 0; q < nluts; ++q) luts[q] = lut.data() + q * (lut_stride ? M : 1) * K;
            std::vector<float> scales(M);
            for (auto& v : scales) v = uniform(rng);
            const size_t acc_stride = nblocks * kBlockSize + 8;  // not a multiple of a block
            std::vector<float> expected(nluts * acc_stride), got(nluts * acc_stride);
            adc_scan_queries_ref(codes.data(), nblocks, M * kBlockSize, m, luts.data(), nluts,
                                 lut_stride, scales.data(), expected.data(), acc_stride);
            adc_scan_queries_avx512(codes.data(), nblocks, M * kBlockSize, m, luts.data(), nluts,
                                    lut_stride, scales.data(), got.data(), acc_stride);
            ++cases;
            for (size_t q = 0; q < nluts; ++q) {
                if (std::memcmp(expected.data() + q * acc_stride, got.data() + q * acc_stride,
                                nblocks * kBlockSize * sizeof(float))) {
                    ++failures;
                    std::printf("MISMATCH queries nluts=%zu lut_stride=%zu q=%zu\n", nluts,
                                lut_stride, q);
                }
            }
        }
    }
    std::printf("%d cases, %d mismatches\n", cases, failures);
    return failures == 0 ? 0 : 1;
}
