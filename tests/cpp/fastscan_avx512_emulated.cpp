// Checks the AVX-512 fast-scan kernel against the scalar reference, bit for bit, on a CPU that
// may lack AVX-512: tests/test_avx512_emulated.py compiles csrc/drq/fastscan_avx512.cpp with
// tests/cpp/simde_shim first on the include path (SIMDe emulation) and links it with this driver
// and csrc/drq/fastscan_ref.cpp. Exit status 0 = all cases equal.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "drq/fastscan.h"

int main() {
    using namespace drq;
    std::mt19937 rng(4321);
    int failures = 0;
    int cases = 0;
    for (size_t stored_bytes : {1, 3, 8}) {
        for (size_t nblocks : {1, 2, 3, 6}) {  // odd counts exercise the single-block tail
            for (size_t nbytes = 0; nbytes <= stored_bytes; ++nbytes) {
                for (int with_extra = 0; with_extra < 2; ++with_extra) {
                  for (int with_shifts = 0; with_shifts < 2; ++with_shifts) {
                    const size_t stride = stored_bytes * 32;
                    std::vector<uint8_t> codes(nblocks * stride), extra(nblocks * 64);
                    for (auto& c : codes) c = static_cast<uint8_t>(rng() & 0xff);
                    for (auto& c : extra) c = static_cast<uint8_t>(rng() & 0xff);
                    for (size_t nq = 1; nq <= kFastScanMaxQueries; nq += 3) {  // 1 and 4
                        const size_t lut_stride = 2 * nbytes * 16;
                        std::vector<uint8_t> luts(nq * lut_stride);
                        for (auto& v : luts) v = static_cast<uint8_t>(rng() & 0xff);
                        const uint8_t* ex = with_extra ? extra.data() : nullptr;
                        // Factors up to 65535 make the norm term saturate; shifts up to 8 make
                        // the Horner sums wrap mod 2^16: both must match bit for bit.
                        std::vector<uint16_t> factors(nq);
                        for (auto& f : factors) f = static_cast<uint16_t>(rng() & 0xffff);
                        factors[0] = 65535;
                        std::vector<uint8_t> shifts(nq * nbytes + 1);
                        for (auto& v : shifts) v = static_cast<uint8_t>(rng() % 9);
                        const uint8_t* sh = with_shifts ? shifts.data() : nullptr;
                        const size_t acc_stride = nblocks * 32 + 16;
                        std::vector<uint16_t> expected(nq * acc_stride, 7), got(nq * acc_stride, 7);
                        fastscan_scan_ref(codes.data(), nblocks, stride, nbytes, ex, 64, factors.data(), sh,
                                          luts.data(), lut_stride, nq, expected.data(), acc_stride);
                        fastscan_scan_avx512(codes.data(), nblocks, stride, nbytes, ex, 64, factors.data(), sh,
                                             luts.data(), lut_stride, nq, got.data(), acc_stride);
                        ++cases;
                        if (std::memcmp(expected.data(), got.data(), expected.size() * sizeof(uint16_t))) {
                            ++failures;
                            std::printf("MISMATCH stored=%zu nblocks=%zu nbytes=%zu extra=%d shifts=%d nq=%zu\n",
                                        stored_bytes, nblocks, nbytes, with_extra, with_shifts, nq);
                        }
                    }
                  }
                }
            }
        }
    }
    // Candidate filter: masks of acc <= threshold.
    for (unsigned threshold : {0u, 1u, 200u, 65534u, 65535u}) {
        const size_t nblocks = 5;
        std::vector<uint16_t> acc(nblocks * 32);
        for (auto& v : acc) v = static_cast<uint16_t>(rng() % 400);
        acc[3] = 65535;
        acc[40] = static_cast<uint16_t>(threshold);
        std::vector<uint32_t> expected(nblocks), got(nblocks, 0xdeadbeef);
        fastscan_filter_ref(acc.data(), nblocks, static_cast<uint16_t>(threshold), expected.data());
        fastscan_filter_avx512(acc.data(), nblocks, static_cast<uint16_t>(threshold), got.data());
        ++cases;
        if (expected != got) {
            ++failures;
            std::printf("MISMATCH filter threshold=%u\n", threshold);
        }
    }
    std::printf("%d cases, %d mismatches\n", cases, failures);
    return failures == 0 ? 0 : 1;
}
