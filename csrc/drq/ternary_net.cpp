#include "ternary_net.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "ternary.h"

#if defined(__SSE2__)
#include <emmintrin.h>  // baseline on x86-64: the min / max scan of quantise
#endif

// The per-tile scalar code (preprocessing, quantisation, epilogues: elementwise float maths the
// compiler vectorises) is compiled twice on x86 with GCC / Clang: for the baseline (SSE2) and, as
// forward_tile_avx2, with AVX2 enabled (8 floats per instruction), chosen by the SIMD level.
// Elementwise operations in the same order (and -ffp-contract=off: no FMA) give the same floats
// at any vector width, so the results stay bit-identical across levels.
#if defined(DRQ_HAVE_X86_SIMD) && defined(__GNUC__)
#define DRQ_TILE_INLINE __attribute__((always_inline)) inline
#define DRQ_TILE_AVX2 1
#else
#define DRQ_TILE_INLINE inline
#endif

namespace drq {

namespace {

// Samples per work item: the masks of a layer stream from L2/L3 once per tile, so larger tiles
// read them less often; 64 keeps a tile's activations (64 * width floats) in L2.
constexpr size_t kTileSamples = 64;

size_t round_up(size_t value, size_t multiple) { return (value + multiple - 1) / multiple * multiple; }

// The per-sample 8-bit quantisation of ternary.h. Scalar code shared by every SIMD level, so the
// quantised bytes (and hence P and N) are identical at every level.
DRQ_TILE_INLINE void quantise(const float* a, size_t d, size_t stride, uint8_t* q, float* lo_out,
                              float* step_out) {
    // 8 lanes of running min / max (no serial dependency through one register). min / max are
    // exact in any order (x first: like std::min(lo, x), a NaN x is skipped); where -0 and +0
    // tie, either lo gives the same q (a - lo is +-0, +0.5 rounds to 0) and the same epilogue
    // sums (P * step is >= +0, and +0 + -0 = +0).
    float lo = a[0], hi = a[0];
    size_t j = 0;
#if defined(__SSE2__)
    __m128 lo4a = _mm_set1_ps(a[0]), hi4a = lo4a, lo4b = lo4a, hi4b = lo4a;
    for (; j + 8 <= d; j += 8) {
        const __m128 x0 = _mm_loadu_ps(a + j), x1 = _mm_loadu_ps(a + j + 4);
        lo4a = _mm_min_ps(x0, lo4a);
        hi4a = _mm_max_ps(x0, hi4a);
        lo4b = _mm_min_ps(x1, lo4b);
        hi4b = _mm_max_ps(x1, hi4b);
    }
    alignas(16) float lanes_lo[4], lanes_hi[4];
    _mm_store_ps(lanes_lo, _mm_min_ps(lo4a, lo4b));
    _mm_store_ps(lanes_hi, _mm_max_ps(hi4a, hi4b));
    for (size_t l = 0; l < 4; ++l) {
        lo = std::min(lo, lanes_lo[l]);
        hi = std::max(hi, lanes_hi[l]);
    }
#endif
    for (; j < d; ++j) {
        lo = std::min(lo, a[j]);
        hi = std::max(hi, a[j]);
    }
    if (hi > lo) {
        const float range = hi - lo;
        const float inv = 255.0f / range;
        for (size_t j = 0; j < d; ++j) {
            const float v = (a[j] - lo) * inv + 0.5f;  // >= 0.5: truncation rounds to nearest
            const int level = static_cast<int>(v);
            q[j] = static_cast<uint8_t>(level > 255 ? 255 : level);
        }
        *step_out = range / 255.0f;
    } else {
        std::fill(q, q + d, uint8_t{0});
        *step_out = 0.0f;
    }
    std::fill(q + d, q + stride, uint8_t{0});
    *lo_out = lo;
}

}  // namespace

struct TernaryNet::Scratch {
    std::vector<float> act, next;   // kTileSamples * max_width
    std::vector<float> padded;      // kTileSamples * max_stride (float layer inputs)
    std::vector<uint8_t> q;         // kTileSamples * max_stride
    std::vector<float> lo, step;    // kTileSamples
    std::vector<int32_t> P, N;      // kTileSamples * max_width
};

TernaryNet::TernaryNet(size_t d_in, const float* in_scale, const float* in_shift,
                       const std::vector<TernaryLayerSpec>& layers)
    : d_in_(d_in), in_scale_(in_scale, in_scale + d_in), in_shift_(in_shift, in_shift + d_in) {
    if (d_in == 0) throw std::invalid_argument("TernaryNet: d_in must be >= 1");
    if (layers.empty()) throw std::invalid_argument("TernaryNet: at least one layer is needed");
    size_t width = d_in;
    max_width_ = d_in;
    for (size_t li = 0; li < layers.size(); ++li) {
        const TernaryLayerSpec& spec = layers[li];
        const std::string name = "layer " + std::to_string(li);
        if (spec.d_in != width) {
            throw std::invalid_argument(name + ": d_in=" + std::to_string(spec.d_in) +
                                        " does not match the previous width " + std::to_string(width));
        }
        if (spec.d_out == 0) throw std::invalid_argument(name + ": d_out must be >= 1");
        Layer layer;
        layer.ternary = spec.ternary;
        layer.d_in = spec.d_in;
        layer.d_out = spec.d_out;
        layer.stride = round_up(spec.d_in, kTernaryAlign);
        layer.relu = spec.relu;
        layer.scale.assign(spec.scale, spec.scale + spec.d_out);
        layer.shift.assign(spec.shift, spec.shift + spec.d_out);
        layer.w_pos = spec.w_pos;
        layer.w_neg = spec.w_neg;
        if (spec.ternary) {
            if (!(spec.w_pos >= 0.0f) || !(spec.w_neg >= 0.0f)) {
                throw std::invalid_argument(name + ": w_pos and w_neg must be >= 0");
            }
            layer.t.assign(spec.d_out * layer.stride, 0);
            layer.cnt_pos.assign(spec.d_out, 0.0f);
            layer.cnt_neg.assign(spec.d_out, 0.0f);
            for (size_t r = 0; r < spec.d_out; ++r) {
                size_t np = 0, nn = 0;
                for (size_t j = 0; j < spec.d_in; ++j) {
                    const bool p = spec.pos[r * spec.d_in + j] != 0;
                    const bool m = spec.neg[r * spec.d_in + j] != 0;
                    if (p && m) {
                        throw std::invalid_argument(name + ": pos and neg are both set at (" +
                                                    std::to_string(r) + ", " + std::to_string(j) + ")");
                    }
                    layer.t[r * layer.stride + j] = static_cast<int8_t>(p ? 1 : (m ? -1 : 0));
                    np += p;
                    nn += m;
                }
                layer.cnt_pos[r] = static_cast<float>(np);
                layer.cnt_neg[r] = static_cast<float>(nn);
            }
            layer.lut_offsets.resize(spec.d_out * ternary_lut_groups(spec.d_in) * 2);
            ternary_lut_offsets(layer.t.data(), spec.d_out, spec.d_in, layer.stride, layer.lut_offsets.data());
        } else {
            layer.weight.assign(spec.d_out * layer.stride, 0.0f);
            for (size_t r = 0; r < spec.d_out; ++r) {
                std::copy(spec.weight + r * spec.d_in, spec.weight + (r + 1) * spec.d_in,
                          layer.weight.begin() + static_cast<std::ptrdiff_t>(r * layer.stride));
            }
        }
        max_width_ = std::max(max_width_, spec.d_out);
        max_stride_ = std::max(max_stride_, layer.stride);
        width = spec.d_out;
        layers_.push_back(std::move(layer));
    }
}

template <class T>
DRQ_TILE_INLINE void TernaryNet::forward_tile(const T* x, size_t count, float* out, Scratch& s,
                                              SimdLevel level) const {
    const TernaryDotFn ternary_dot = ternary_dot_for(level);
    const FloatDotFn float_dot = float_dot_for(level);
    // Preprocessing x' = x * in_scale + in_shift into the activation buffer.
    size_t width = d_in_;
    for (size_t i = 0; i < count; ++i) {
        const T* xi = x + i * d_in_;
        float* a = s.act.data() + i * width;
        for (size_t j = 0; j < width; ++j) a[j] = static_cast<float>(xi[j]) * in_scale_[j] + in_shift_[j];
    }
    for (size_t li = 0; li < layers_.size(); ++li) {
        const Layer& L = layers_[li];
        const bool last = li + 1 == layers_.size();
        float* y = last ? out : s.next.data();
        if (L.ternary) {
            for (size_t i = 0; i < count; ++i) {
                quantise(s.act.data() + i * width, width, L.stride, s.q.data() + i * L.stride,
                         &s.lo[i], &s.step[i]);
            }
            ternary_dot(s.q.data(), count, L.t.data(), L.lut_offsets.data(), L.d_out, L.d_in, L.stride,
                        s.P.data(), s.N.data());
            for (size_t i = 0; i < count; ++i) {
                const float lo = s.lo[i], step = s.step[i];
                const int32_t* P = s.P.data() + i * L.d_out;
                const int32_t* N = s.N.data() + i * L.d_out;
                float* yi = y + i * L.d_out;
                for (size_t r = 0; r < L.d_out; ++r) {
                    const float sum_pos = static_cast<float>(P[r]) * step + lo * L.cnt_pos[r];
                    const float sum_neg = static_cast<float>(N[r]) * step + lo * L.cnt_neg[r];
                    const float v = (L.w_pos * sum_pos - L.w_neg * sum_neg) * L.scale[r] + L.shift[r];
                    yi[r] = L.relu ? std::max(v, 0.0f) : v;
                }
            }
        } else {
            for (size_t i = 0; i < count; ++i) {
                float* row = s.padded.data() + i * L.stride;
                std::copy(s.act.data() + i * width, s.act.data() + (i + 1) * width, row);
                std::fill(row + width, row + L.stride, 0.0f);
            }
            float_dot(s.padded.data(), count, L.weight.data(), L.d_out, L.stride, y);
            for (size_t i = 0; i < count; ++i) {
                float* yi = y + i * L.d_out;
                for (size_t r = 0; r < L.d_out; ++r) {
                    const float v = yi[r] * L.scale[r] + L.shift[r];
                    yi[r] = L.relu ? std::max(v, 0.0f) : v;
                }
            }
        }
        if (!last) std::swap(s.act, s.next);
        width = L.d_out;
    }
}

#if defined(DRQ_TILE_AVX2)
template <class T>
__attribute__((target("avx2"))) void TernaryNet::forward_tile_avx2(const T* x, size_t count,
                                                                  float* out, Scratch& s,
                                                                  SimdLevel level) const {
    forward_tile(x, count, out, s, level);
}
#endif

template <class T>
void TernaryNet::forward_impl(const T* x, size_t n, float* out, const InterruptCallback& interrupt,
                              int nthreads, SimdLevel level) const {
    if (n == 0) return;
    const size_t ntiles = (n + kTileSamples - 1) / kTileSamples;
    const int nworkers = static_cast<int>(std::min<size_t>(ntiles, static_cast<size_t>(std::max(1, nthreads))));
    // Scratch for at most one tile per worker; small batches (e.g. one image) get small buffers,
    // so a call costs no megabyte of zeroed memory.
    const size_t tile = std::min(kTileSamples, std::max<size_t>(n, 1));
    std::vector<Scratch> scratch(static_cast<size_t>(std::max(1, nworkers)));
    for (Scratch& s : scratch) {
        s.act.resize(tile * max_width_);
        s.next.resize(tile * max_width_);
        s.padded.resize(tile * max_stride_);
        s.q.resize(tile * max_stride_);
        s.lo.resize(tile);
        s.step.resize(tile);
        s.P.resize(tile * max_width_);
        s.N.resize(tile * max_width_);
    }
    Interrupter interrupter(interrupt);
    parallel_for(ntiles, nworkers, interrupter, [&](size_t tile, int worker) {
        const size_t begin = tile * kTileSamples;
        const size_t count = std::min(kTileSamples, n - begin);
        Scratch& s = scratch[static_cast<size_t>(worker)];
#if defined(DRQ_TILE_AVX2)
        if (level != SimdLevel::Scalar) {
            forward_tile_avx2(x + begin * d_in_, count, out + begin * d_out(), s, level);
            return;
        }
#endif
        forward_tile(x + begin * d_in_, count, out + begin * d_out(), s, level);
    });
}

void TernaryNet::forward(const float* x, size_t n, float* out, const InterruptCallback& interrupt,
                         int nthreads, SimdLevel level) const {
    forward_impl(x, n, out, interrupt, nthreads, level);
}

void TernaryNet::forward(const uint8_t* x, size_t n, float* out, const InterruptCallback& interrupt,
                         int nthreads, SimdLevel level) const {
    forward_impl(x, n, out, interrupt, nthreads, level);
}

}  // namespace drq
