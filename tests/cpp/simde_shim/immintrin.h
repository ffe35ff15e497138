// Test-only stand-in for <immintrin.h>: lets tests/cpp/adc_avx512_emulated.cpp compile the real
// AVX-512 kernel source (csrc/drq/adc_avx512.cpp) against SIMDe's portable implementations of
// the intrinsics, so that kernel runs (slowly, but with AVX-512 semantics) on CPUs without
// AVX-512. Never used by the library build.
#pragma once
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>

#include <stdint.h>
#include <string.h>

// SIMDe 0.7.4 (Debian 12) lacks these two; emulated lane by lane with the Intel semantics.
#ifndef _mm512_i32gather_ps
// Lane i = *(float*)((char*)base + vindex[i] * scale).
static inline simde__m512 _mm512_i32gather_ps(simde__m512i vindex, const void* base, int scale) {
    int32_t index[16];
    float out[16];
    simde_mm512_storeu_si512(index, vindex);
    for (int i = 0; i < 16; ++i) {
        memcpy(&out[i], (const char*)base + (int64_t)index[i] * scale, sizeof(float));
    }
    return simde_mm512_loadu_ps(out);
}
#endif

#ifndef _mm512_cvtepu8_epi32
// Zero-extends the 16 bytes of a to 16 int32 lanes.
static inline simde__m512i _mm512_cvtepu8_epi32(simde__m128i a) {
    uint8_t bytes[16];
    int32_t out[16];
    simde_mm_storeu_si128((simde__m128i*)bytes, a);
    for (int i = 0; i < 16; ++i) out[i] = bytes[i];
    return simde_mm512_loadu_si512(out);
}
#endif
