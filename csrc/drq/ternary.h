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
//   - look-up tables, for tiles of 32 samples: for each group of 4 consecutive inputs the kernel
//     builds the 16 subset sums of the tile's 4 activations per sample (int16, one lane per
//     sample: a 512-bit register or two 256-bit ones), and P[r] over the group is one table entry
//     selected by the row's 4-bit pos pattern, added (N the same with the neg pattern). One entry
//     covers 4 inputs x 32 samples, against 2 multiplies + 2 adds per 32 inputs x 1 sample for the
//     byte method; the per-(row, group) entry offsets are precomputed once per layer
//     (ternary_lut_offsets), so the inner loop is loads and adds only;
//   - byte products, for fewer than 12 samples (a table tile would be mostly padding): one signed
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

// Look-up-table layout: inputs are taken in groups of kLutGroupInputs = 4, and groups in chunks
// of kLutChunkGroups = 16 (64 inputs: stride, a multiple of 64, is whole chunks). A chunk's tables
// are 16 groups * 16 entries (entry = subset of the group's inputs, bit k = input 4g + k) of
// kLutEntryBytes = 32 samples * int16 = 16 KB, which stays in L1 while every output row reads it;
// a chunk's sums, at most 64 * 255 = 16320, fit int16 lanes before they are widened to int32.
constexpr size_t kLutGroupInputs = 4;
constexpr size_t kLutPatterns = 16;
constexpr size_t kLutChunkGroups = 16;
constexpr size_t kLutEntryBytes = 64;

// Per-(row, group) byte offsets of the selected table entries inside the group's chunk:
//   t:        d_out * stride int8 signs (as below)
//   offsets:  (out) d_out * (stride / kLutGroupInputs) * 2 uint16, chunk-major: for chunk c
//             (groups 16c .. 16c + 15), row r, group g = 16c + l,
//             offsets[((16c) * d_out + r * 16 + l) * 2]     = (l * 16 + pos pattern) * 64,
//             offsets[((16c) * d_out + r * 16 + l) * 2 + 1] = (l * 16 + neg pattern) * 64
//             (at most 16320). Chunk-major, so a kernel streams them sequentially while it
//             passes every row over one chunk's tables; uint16 halves the bytes it streams.
void ternary_lut_offsets(const int8_t* t, size_t d_out, size_t stride, uint16_t* offsets);

// Ternary integer sums for `nsamples` quantised samples against `d_out` weight rows.
//   q:       nsamples * stride uint8, sample s at q + s * stride (padding bytes are 0)
//   t:       d_out * stride int8 in {-1, 0, +1} (padding 0); row r at t + r * stride
//   offsets: the layer's ternary_lut_offsets (read by the table kernels; the reference uses t)
//   stride:  a multiple of kTernaryAlign
//   P, N:    (out) nsamples * d_out int32, P[s * d_out + r] = sum_{j : t[r, j] = +1} q[s, j],
//            N[s * d_out + r] = sum_{j : t[r, j] = -1} q[s, j]
using TernaryDotFn = void (*)(const uint8_t* q, size_t nsamples, const int8_t* t,
                              const uint16_t* offsets, size_t d_out, size_t stride, int32_t* P,
                              int32_t* N);

// Float layer dot products with the canonical 8-lane order (above).
//   x:   nsamples * stride floats (padding 0);  w: d_out * stride floats (padding 0)
//   out: (out) nsamples * d_out floats, out[s * d_out + r] = dot8(x[s, :], w[r, :])
using FloatDotFn = void (*)(const float* x, size_t nsamples, const float* w, size_t d_out,
                            size_t stride, float* out);

void ternary_dot_ref(const uint8_t* q, size_t nsamples, const int8_t* t, const uint16_t* offsets,
                     size_t d_out, size_t stride, int32_t* P, int32_t* N);
void float_dot_ref(const float* x, size_t nsamples, const float* w, size_t d_out, size_t stride,
                   float* out);

#if defined(DRQ_HAVE_X86_SIMD)
void ternary_dot_avx2(const uint8_t* q, size_t nsamples, const int8_t* t, const uint16_t* offsets,
                      size_t d_out, size_t stride, int32_t* P, int32_t* N);
void float_dot_avx2(const float* x, size_t nsamples, const float* w, size_t d_out, size_t stride,
                    float* out);
void ternary_dot_avx512(const uint8_t* q, size_t nsamples, const int8_t* t, const uint16_t* offsets,
                        size_t d_out, size_t stride, int32_t* P, int32_t* N);
#endif

// The kernels for a level (which must be supported). Float layers use the AVX2 kernel at the
// AVX-512 level: they only appear in float exports, and 8 lanes is the canonical order anyway.
TernaryDotFn ternary_dot_for(SimdLevel level);
FloatDotFn float_dot_for(SimdLevel level);

}  // namespace drq
