// Forward pass of the hash encoder (docs: /shared contract TERNARY_ENCODER_SPEC, spec version 1):
// an MLP of ternary layers (weights in {+w_pos, 0, -w_neg}, stored as two bit masks per output
// row) and plain float layers, each followed by a per-output affine map and an optional ReLU.
//
// Ternary layers multiply no weights. The layer's input activations are quantised per sample to
// 8 bits (below), and the two integer sums
//     P[r] = sum_{j : pos[r, j]} q[j]        N[r] = sum_{j : neg[r, j]} q[j]
// are computed exactly in integers, so every kernel returns the same integers in any summation
// order, and the float epilogue is shared scalar code: ternary layers give bit-identical logits at
// every SIMD level and thread count.
//
// Two SIMD methods (ternary_avx2.cpp, ternary_avx512.cpp):
//   - look-up tables, for tiles of 16 samples: for each group of 6 consecutive inputs the kernel
//     builds the 64 subset sums of the tile's 6 activations per sample (int16, one lane per
//     sample: one 256-bit register), and P[r] over the group is one table entry selected by the
//     row's 6-bit pos pattern, added (N the same with the neg pattern). One entry covers 6 inputs
//     x 16 samples, against 2 multiplies + 2 adds per 32 inputs x 1 sample for the byte method.
//     Why 6: a row's loads per input fall as 1 / group size while the table build (64 stores of
//     32 bytes per group and tile) grows as 2^size; with 512 and 256 rows 6 minimises the sum
//     (4 needs a third more loads, 8 spends as much on building as it saves). The per-(row,
//     group) entry offsets are precomputed once per layer (ternary_lut_offsets), so the inner
//     loop is loads and adds only;
//   - byte products, for fewer than 5 samples (a table tile would be mostly padding): one signed
//     byte per weight, t = +1 (pos) / -1 (neg) / 0, T = sum q * t and P = sum q * max(t, 0) with
//     vpmaddubsw, N = P - T.
//
// Activation quantisation (per sample, per ternary layer; all float32):
//     lo = min_j a[j], hi = max_j a[j]
//     hi > lo:  step = (hi - lo) / 255,  q[j] = min(255, int((a[j] - lo) * (255 / (hi - lo)) + 0.5))
//     else:     step = 0,                q[j] = 0
// so a[j] ~= lo + step * q[j] (error <= step / 2), and, with cnt_pos[r] = popcount(pos[r, :]),
//     y[r] = (w_pos * (float(P[r]) * step + lo * cnt_pos[r])
//             - w_neg * (float(N[r]) * step + lo * cnt_neg[r])) * scale[r] + shift[r]
// evaluated in exactly this order, then y = max(y, 0) when the layer has ReLU. After a ReLU lo is
// usually 0 and 8 bits cover [0, max]; uint8 images with a uniform in_scale are quantised
// losslessly when they span 0..255.
//
// Float layers: y[r] = dot8(a, weight[r, :]) * scale[r] + shift[r] (then ReLU), where dot8 is
// the canonical 8-lane dot product: lane l sums a[j] * w[j] over j = l (mod 8) in increasing j
// (product rounded, then added; no FMA), and the lanes are combined as
//     ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)).
// The scalar reference performs exactly these operations, so float layers are bit-identical too.
//
// The per-ISA kernels (ternary_avx2.cpp, ternary_avx512.cpp) include no C++ standard library
// templates (see adc.h for why).
#pragma once

#include <cstddef>
#include <cstdint>

#include "simd_level.h"

namespace drq {

// Row strides of the kernels' inputs and weights are multiples of this (bytes for the quantised
// activations and the 0/1 masks, floats for float layers), zero padded: one AVX-512 register.
constexpr size_t kTernaryAlign = 64;

// Look-up-table layout: the d_in inputs that carry weights (the rest of stride is padding) are
// taken in groups of kLutGroupInputs = 6 (the last group may reach past d_in, even past stride:
// those inputs count as 0), and groups in chunks of kLutChunkGroups = 8 (48 inputs; the last
// chunk may have fewer groups). A chunk's tables are 8 groups * 64 entries (entry = subset of
// the group's inputs, bit k = input 6g + k) of kLutEntryBytes = 16 samples * int16 = 16 KB, which
// stays in L1 beside the offset and accumulator streams while every output row reads it (12
// groups, 24 KB, measured no faster); a chunk's sums, at most 48 * 255 = 12240, fit int16 lanes.
constexpr size_t kLutGroupInputs = 6;
constexpr size_t kLutPatterns = 64;
constexpr size_t kLutChunkGroups = 8;
constexpr size_t kLutEntryBytes = 32;

// Groups of a layer input of d_in values: ceil(d_in / kLutGroupInputs).
constexpr size_t ternary_lut_groups(size_t d_in) {
    return (d_in + kLutGroupInputs - 1) / kLutGroupInputs;
}

// Per-(row, group) byte offsets of the selected table entries inside the group's chunk:
//   t:        d_out * stride int8 signs (as below; 0 at inputs >= d_in)
//   offsets:  (out) d_out * ternary_lut_groups(d_in) * 2 uint16, chunk-major: for the chunk of
//             groups g0 .. g0 + gc - 1 (gc = 8, or fewer in the last chunk), row r, group
//             g = g0 + l,
//             offsets[(g0 * d_out + r * gc + l) * 2]     = (l * 64 + pos pattern) * 32,
//             offsets[(g0 * d_out + r * gc + l) * 2 + 1] = (l * 64 + neg pattern) * 32
//             (at most 16352). Chunk-major, so a kernel streams them sequentially while it
//             passes every row over one chunk's tables; uint16 halves the bytes it streams.
void ternary_lut_offsets(const int8_t* t, size_t d_out, size_t d_in, size_t stride, uint16_t* offsets);

// Ternary integer sums for `nsamples` quantised samples against `d_out` weight rows.
//   q:       nsamples * stride uint8, sample s at q + s * stride (padding bytes are 0)
//   t:       d_out * stride int8 in {-1, 0, +1} (padding 0); row r at t + r * stride
//   offsets: the layer's ternary_lut_offsets (read by the table kernels; the reference uses t)
//   d_in:    the inputs that carry weights (<= stride; t is 0 past them): the table kernels skip
//            the rest of the padding
//   stride:  a multiple of kTernaryAlign
//   P, N:    (out) nsamples * d_out int32, P[s * d_out + r] = sum_{j : t[r, j] = +1} q[s, j],
//            N[s * d_out + r] = sum_{j : t[r, j] = -1} q[s, j]
using TernaryDotFn = void (*)(const uint8_t* q, size_t nsamples, const int8_t* t,
                              const uint16_t* offsets, size_t d_out, size_t d_in, size_t stride,
                              int32_t* P, int32_t* N);

// Float layer dot products with the canonical 8-lane order (above).
//   x:   nsamples * stride floats (padding 0);  w: d_out * stride floats (padding 0)
//   out: (out) nsamples * d_out floats, out[s * d_out + r] = dot8(x[s, :], w[r, :])
using FloatDotFn = void (*)(const float* x, size_t nsamples, const float* w, size_t d_out,
                            size_t stride, float* out);

void ternary_dot_ref(const uint8_t* q, size_t nsamples, const int8_t* t, const uint16_t* offsets,
                     size_t d_out, size_t d_in, size_t stride, int32_t* P, int32_t* N);
void float_dot_ref(const float* x, size_t nsamples, const float* w, size_t d_out, size_t stride,
                   float* out);

#if defined(DRQ_HAVE_X86_SIMD)
void ternary_dot_avx2(const uint8_t* q, size_t nsamples, const int8_t* t, const uint16_t* offsets,
                      size_t d_out, size_t d_in, size_t stride, int32_t* P, int32_t* N);
void float_dot_avx2(const float* x, size_t nsamples, const float* w, size_t d_out, size_t stride,
                    float* out);
void ternary_dot_avx512(const uint8_t* q, size_t nsamples, const int8_t* t, const uint16_t* offsets,
                        size_t d_out, size_t d_in, size_t stride, int32_t* P, int32_t* N);
#endif

// The kernels for a level (which must be supported). Float layers use the AVX2 kernel at the
// AVX-512 level: they only appear in float exports, and 8 lanes is the canonical order anyway.
TernaryDotFn ternary_dot_for(SimdLevel level);
FloatDotFn float_dot_for(SimdLevel level);

}  // namespace drq
