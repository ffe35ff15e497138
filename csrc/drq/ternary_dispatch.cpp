// Maps a SIMD level to its encoder kernels (apart from the kernels, like adc_dispatch.cpp).
#include "ternary.h"

namespace drq {

TernaryDotFn ternary_dot_for(SimdLevel level) {
    switch (level) {
#if defined(DRQ_HAVE_X86_SIMD)
        case SimdLevel::AVX512:
            return ternary_dot_avx512;
        case SimdLevel::AVX2:
            return ternary_dot_avx2;
#endif
        default:
            return ternary_dot_ref;
    }
}

FloatDotFn float_dot_for(SimdLevel level) {
    switch (level) {
#if defined(DRQ_HAVE_X86_SIMD)
        case SimdLevel::AVX512:
        case SimdLevel::AVX2:
            return float_dot_avx2;
#endif
        default:
            return float_dot_ref;
    }
}

}  // namespace drq
