// Maps a SIMD level to its fast-scan kernels (apart from the kernels, as adc_dispatch.cpp).
#include "fastscan.h"
#include "fastscan_tables.h"

namespace drq {

FastScanFn fastscan_scan_for(SimdLevel level) {
    switch (level) {
#if defined(DRQ_HAVE_X86_SIMD)
        case SimdLevel::AVX512:
            return fastscan_scan_avx512;
        case SimdLevel::AVX2:
            return fastscan_scan_avx2;
#endif
        default:
            return fastscan_scan_ref;
    }
}

FastScanFilterFn fastscan_filter_for(SimdLevel level) {
    switch (level) {
#if defined(DRQ_HAVE_X86_SIMD)
        case SimdLevel::AVX512:
            return fastscan_filter_avx512;
        case SimdLevel::AVX2:
            return fastscan_filter_avx2;
#endif
        default:
            return fastscan_filter_ref;
    }
}

FastScanTablesFn fastscan_tables_for(SimdLevel level) {
    switch (level) {
#if defined(DRQ_HAVE_X86_SIMD)
        case SimdLevel::AVX512:
        case SimdLevel::AVX2:
            return fastscan_tables_avx2;
#endif
        default:
            return fastscan_tables_ref;
    }
}

}  // namespace drq
