// Maps a SIMD level to the per-iteration encoding kernels (apart from the kernels, as adc_dispatch.cpp).
#include "encode_dots.h"
#include "encode_step.h"

namespace drq {

// AVX-512 CPUs use the AVX2 kernels: the same bits, and no AVX-512 machine here to tune one on.
EncodeDotsFn encode_dots_for(SimdLevel level) {
    switch (level) {
#if defined(DRQ_HAVE_X86_SIMD)
        case SimdLevel::AVX512:
        case SimdLevel::AVX2:
            return encode_dots_avx2;
#endif
        default:
            return encode_dots_ref;
    }
}

EncodeStepFn encode_step_for(SimdLevel level) {
    switch (level) {
#if defined(DRQ_HAVE_X86_SIMD)
        case SimdLevel::AVX512:
        case SimdLevel::AVX2:
            return encode_step_avx2;
#endif
        default:
            return encode_step_ref;
    }
}

}  // namespace drq
