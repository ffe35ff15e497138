// SIMD level selection for the drq kernels.
//
// The level is detected once per process from the CPU (and the OS support for the wider
// registers, which __builtin_cpu_supports checks), optionally overridden by the environment
// variable DRQ_SIMD_LEVEL=scalar|avx2|avx512 read once at first use, and can be changed at run
// time with set_simd_level(). Searches read the level once per call and pick a kernel function
// pointer from it, so changing the level never affects a call in flight.
#pragma once

#include <string>
#include <vector>

namespace drq {

enum class SimdLevel : int {
    Scalar = 0,  // portable reference kernels, any CPU
    AVX2 = 1,    // AVX2 + FMA (x86-64-v3)
    AVX512 = 2,  // AVX-512 F + BW
};

// "scalar" | "avx2" | "avx512"
const char* simd_level_name(SimdLevel level);

// Parses a level name (case-sensitive, as printed by simd_level_name).
// Throws std::invalid_argument for an unknown name.
SimdLevel parse_simd_level(const std::string& name);

// True when this build contains the kernels for `level` and this CPU (and OS) can run them.
bool simd_level_supported(SimdLevel level);

// The supported levels in increasing order; always starts with Scalar.
std::vector<SimdLevel> supported_simd_levels();

// The widest supported level.
SimdLevel best_simd_level();

// The level kernels use now.
SimdLevel get_simd_level();

// Forces a level. Throws std::invalid_argument when this CPU cannot run it.
void set_simd_level(SimdLevel level);

// True when this build has the AVX-512 kernels and the CPU also has AVX512_VPOPCNTDQ (Ice Lake,
// Zen 4 and later; not Skylake-X). Not a level of its own: kernels that need it (the Hamming
// scan) fall back to their AVX2 version at the AVX-512 level when this is false.
bool cpu_has_avx512_vpopcntdq();

}  // namespace drq
