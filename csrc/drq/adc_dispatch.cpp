// Maps a SIMD level to its ADC kernel (kept apart from the kernels so each kernel file can be
// compiled and tested on its own).
#include "adc.h"

namespace drq {

AdcScanFn adc_scan_for(SimdLevel level) {
    switch (level) {
#if defined(DRQ_HAVE_X86_SIMD)
        case SimdLevel::AVX512:
            return adc_scan_avx512;
        case SimdLevel::AVX2:
            return adc_scan_avx2;
#endif
        default:
            return adc_scan_ref;
    }
}

AdcScanQueriesFn adc_scan_queries_for(SimdLevel level) {
    switch (level) {
#if defined(DRQ_HAVE_X86_SIMD)
        case SimdLevel::AVX512:
            return adc_scan_queries_avx512;
        case SimdLevel::AVX2:
            return adc_scan_queries_avx2;
#endif
        default:
            return adc_scan_queries_ref;
    }
}

AdcScanInterleavedFn adc_scan_interleaved_for(SimdLevel level) {
    switch (level) {
#if defined(DRQ_HAVE_X86_SIMD)
        case SimdLevel::AVX512:  // AVX-512 CPUs have AVX2; see adc.h
        case SimdLevel::AVX2:
            return adc_scan_interleaved_avx2;
#endif
        default:
            return adc_scan_interleaved_ref;
    }
}

}  // namespace drq
