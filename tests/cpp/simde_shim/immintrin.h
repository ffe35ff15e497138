// Test-only stand-in for <immintrin.h>: lets tests/cpp/adc_avx512_emulated.cpp compile the real
// AVX-512 kernel source (csrc/drq/adc_avx512.cpp) against SIMDe's portable implementations of
// the intrinsics, so that kernel runs (slowly, but with AVX-512 semantics) on CPUs without
// AVX-512. Never used by the library build.
#pragma once
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>

#include <stdint.h>
#include <string.h>

// SIMDe 0.7.4 (Debian 12) lacks these; emulated lane by lane with the Intel semantics.
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

// Used by ternary_avx512.cpp / hamming_avx512.cpp (tests/cpp/hash_avx512_emulated.cpp).
// SIMDe 0.7.4's native alias for _mm512_madd_epi16 takes the masked variant's 4 arguments.
#undef _mm512_madd_epi16
#define _mm512_madd_epi16(a, b) simde_mm512_madd_epi16(a, b)

#ifndef _mm512_reduce_add_epi32
static inline int _mm512_reduce_add_epi32(simde__m512i a) {
    int32_t lanes[16];
    simde_mm512_storeu_si512(lanes, a);
    int32_t sum = 0;
    for (int i = 0; i < 16; ++i) sum += lanes[i];
    return sum;
}
#endif

#ifndef _mm512_i64gather_epi64
// Lane i = *(int64_t*)((char*)base + vindex[i] * scale).
static inline simde__m512i _mm512_i64gather_epi64(simde__m512i vindex, const void* base, int scale) {
    int64_t index[8], out[8];
    simde_mm512_storeu_si512(index, vindex);
    for (int i = 0; i < 8; ++i) memcpy(&out[i], (const char*)base + index[i] * scale, sizeof(int64_t));
    return simde_mm512_loadu_si512(out);
}
#endif

#ifndef _mm512_cvtepi64_epi16
// Truncates the 8 int64 lanes of a to 8 int16 lanes.
static inline simde__m128i _mm512_cvtepi64_epi16(simde__m512i a) {
    int64_t lanes[8];
    int16_t out[8];
    simde_mm512_storeu_si512(lanes, a);
    for (int i = 0; i < 8; ++i) out[i] = (int16_t)lanes[i];
    return simde_mm_loadu_si128(out);
}
#endif

#ifndef _mm512_cvtepu8_epi16
// Zero-extends the 32 bytes of a to 32 int16 lanes.
static inline simde__m512i _mm512_cvtepu8_epi16(simde__m256i a) {
    uint8_t bytes[32];
    int16_t out[32];
    simde_mm256_storeu_si256(bytes, a);
    for (int i = 0; i < 32; ++i) out[i] = (int16_t)bytes[i];
    return simde_mm512_loadu_si512(out);
}
#endif

#ifndef _mm512_cvtepu16_epi32
// Zero-extends the 16 uint16 lanes of a to 16 int32 lanes.
static inline simde__m512i _mm512_cvtepu16_epi32(simde__m256i a) {
    uint16_t words[16];
    int32_t out[16];
    simde_mm256_storeu_si256(words, a);
    for (int i = 0; i < 16; ++i) out[i] = (int32_t)words[i];
    return simde_mm512_loadu_si512(out);
}
#endif

#ifndef __mmask8
typedef simde__mmask8 __mmask8;
#endif

#ifndef _mm512_mulhi_epu16
// Lane i = (a[i] * b[i]) >> 16, unsigned 16-bit (SIMDe 0.7.4 lacks it; used by the fast-scan norm term).
static inline simde__m512i _mm512_mulhi_epu16(simde__m512i a, simde__m512i b) {
    uint16_t x[32], y[32], out[32];
    simde_mm512_storeu_si512(x, a);
    simde_mm512_storeu_si512(y, b);
    for (int i = 0; i < 32; ++i) out[i] = (uint16_t)(((uint32_t)x[i] * y[i]) >> 16);
    return simde_mm512_loadu_si512(out);
}
#endif
