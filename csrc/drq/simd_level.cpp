#include "simd_level.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

namespace drq {

namespace {

// DRQ_HAVE_X86_SIMD is defined by the build when the AVX2/AVX-512 kernel files are compiled in
// (x86 targets with GCC/Clang); elsewhere only the scalar kernels exist.
bool cpu_runs(SimdLevel level) {
    switch (level) {
        case SimdLevel::Scalar:
            return true;
#if defined(DRQ_HAVE_X86_SIMD)
        case SimdLevel::AVX2:
            // libgcc's cpu model also checks XCR0, so an OS that does not save YMM state reports
            // no AVX2 here even when CPUID has it.
            return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        case SimdLevel::AVX512:
            return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
#else
        case SimdLevel::AVX2:
        case SimdLevel::AVX512:
            return false;
#endif
    }
    return false;
}

SimdLevel initial_level() {
    const SimdLevel best = best_simd_level();
    const char* env = std::getenv("DRQ_SIMD_LEVEL");
    if (env == nullptr || *env == '\0') {
        return best;
    }
    // An environment override cannot raise (it is read during some unrelated first call), so
    // a bad or unsupported value falls back to the best level with a warning.
    try {
        const SimdLevel forced = parse_simd_level(env);
        if (simd_level_supported(forced)) {
            return forced;
        }
        std::fprintf(stderr,
                     "drqindex: DRQ_SIMD_LEVEL=%s is not supported on this CPU; using %s\n", env,
                     simd_level_name(best));
    } catch (const std::invalid_argument&) {
        std::fprintf(stderr,
                     "drqindex: DRQ_SIMD_LEVEL=%s is not one of scalar, avx2, avx512; using %s\n",
                     env, simd_level_name(best));
    }
    return best;
}

// Function-local static: initialised (and the environment read) exactly once, thread-safely.
std::atomic<int>& current_level() {
    static std::atomic<int> level{static_cast<int>(initial_level())};
    return level;
}

}  // namespace

const char* simd_level_name(SimdLevel level) {
    switch (level) {
        case SimdLevel::Scalar:
            return "scalar";
        case SimdLevel::AVX2:
            return "avx2";
        case SimdLevel::AVX512:
            return "avx512";
    }
    return "unknown";
}

SimdLevel parse_simd_level(const std::string& name) {
    if (name == "scalar") return SimdLevel::Scalar;
    if (name == "avx2") return SimdLevel::AVX2;
    if (name == "avx512") return SimdLevel::AVX512;
    throw std::invalid_argument("unknown SIMD level '" + name +
                                "': expected one of 'scalar', 'avx2', 'avx512'");
}

bool simd_level_supported(SimdLevel level) {
    // CPU features cannot change during a process: detect once.
    static const bool supported[3] = {cpu_runs(SimdLevel::Scalar), cpu_runs(SimdLevel::AVX2),
                                      cpu_runs(SimdLevel::AVX512)};
    const int index = static_cast<int>(level);
    return index >= 0 && index < 3 && supported[index];
}

std::vector<SimdLevel> supported_simd_levels() {
    std::vector<SimdLevel> levels;
    for (SimdLevel level : {SimdLevel::Scalar, SimdLevel::AVX2, SimdLevel::AVX512}) {
        if (simd_level_supported(level)) levels.push_back(level);
    }
    return levels;
}

SimdLevel best_simd_level() {
    if (simd_level_supported(SimdLevel::AVX512)) return SimdLevel::AVX512;
    if (simd_level_supported(SimdLevel::AVX2)) return SimdLevel::AVX2;
    return SimdLevel::Scalar;
}

SimdLevel get_simd_level() {
    return static_cast<SimdLevel>(current_level().load(std::memory_order_relaxed));
}

void set_simd_level(SimdLevel level) {
    if (!simd_level_supported(level)) {
        std::string supported;
        for (SimdLevel s : supported_simd_levels()) {
            if (!supported.empty()) supported += ", ";
            supported += simd_level_name(s);
        }
        throw std::invalid_argument(std::string("SIMD level '") + simd_level_name(level) +
                                    "' is not supported on this CPU (supported: " + supported +
                                    ")");
    }
    current_level().store(static_cast<int>(level), std::memory_order_relaxed);
}

bool cpu_has_avx512_vpopcntdq() {
#if defined(DRQ_HAVE_X86_SIMD)
    static const bool has = simd_level_supported(SimdLevel::AVX512) &&
                            __builtin_cpu_supports("avx512vpopcntdq");
    return has;
#else
    return false;
#endif
}

}  // namespace drq
