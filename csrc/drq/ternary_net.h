// The hash encoder network: input preprocessing plus a stack of ternary / float FC layers (the
// math and its exact evaluation order are in ternary.h), run over a batch of inputs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "parallel.h"
#include "simd_level.h"

namespace drq {

// One layer as given by the caller (arrays are copied by TernaryNet's constructor).
struct TernaryLayerSpec {
    bool ternary = true;
    size_t d_in = 0, d_out = 0;
    const uint8_t* pos = nullptr;  // ternary: d_out * d_in bytes, nonzero = weight +w_pos
    const uint8_t* neg = nullptr;  // ternary: d_out * d_in bytes, nonzero = weight -w_neg
    float w_pos = 0.0f, w_neg = 0.0f;  // ternary: >= 0
    const float* weight = nullptr;     // float: d_out * d_in, row-major
    const float* scale = nullptr;      // d_out
    const float* shift = nullptr;      // d_out
    bool relu = false;
};

class TernaryNet {
public:
    // in_scale, in_shift: d_in floats (x' = x * in_scale + in_shift). Throws
    // std::invalid_argument when layer sizes do not chain, pos & neg overlap, or w < 0.
    TernaryNet(size_t d_in, const float* in_scale, const float* in_shift,
               const std::vector<TernaryLayerSpec>& layers);

    size_t d_in() const { return d_in_; }
    size_t d_out() const { return layers_.back().d_out; }

    // out: n * d_out() floats, the last layer's outputs (the hash logits), for n inputs x of
    // d_in() values each (raw float32 or uint8, preprocessed here). Parallel over tiles of
    // samples on up to nthreads threads; results do not depend on nthreads or the level.
    // Throws drq::Interrupted when `interrupt` returns true.
    void forward(const float* x, size_t n, float* out, const InterruptCallback& interrupt,
                 int nthreads, SimdLevel level) const;
    void forward(const uint8_t* x, size_t n, float* out, const InterruptCallback& interrupt,
                 int nthreads, SimdLevel level) const;

private:
    struct Layer {
        bool ternary;
        size_t d_in, d_out, stride;     // stride: d_in rounded up to kTernaryAlign
        std::vector<int8_t> t;          // ternary: d_out * stride weights' signs (+1, 0, -1)
        std::vector<uint16_t> lut_offsets;  // ternary: d_out * ternary_lut_groups(d_in) * 2 (ternary_lut_offsets)
        std::vector<float> cnt_pos, cnt_neg;  // ternary: d_out, popcount of each mask row
        float w_pos, w_neg;
        std::vector<float> weight;  // float: d_out * stride
        std::vector<float> scale, shift;
        bool relu;
    };
    struct Scratch;

    template <class T>
    void forward_impl(const T* x, size_t n, float* out, const InterruptCallback& interrupt,
                      int nthreads, SimdLevel level) const;
    template <class T>
    void forward_tile(const T* x, size_t count, float* out, Scratch& scratch,
                      SimdLevel level) const;
    // forward_tile compiled with AVX2 enabled (ternary_net.cpp; x86 with GCC / Clang only).
    template <class T>
    void forward_tile_avx2(const T* x, size_t count, float* out, Scratch& scratch,
                           SimdLevel level) const;

    size_t d_in_;
    std::vector<float> in_scale_, in_shift_;
    std::vector<Layer> layers_;
    size_t max_width_ = 0;   // the widest activation (any layer's d_in or d_out)
    size_t max_stride_ = 0;  // the widest padded layer input
};

}  // namespace drq
