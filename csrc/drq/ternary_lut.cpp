// Table offsets of the look-up-table ternary kernels (layout in ternary.h), computed once per
// layer so that the kernels' inner loops only load and add.
#include "ternary.h"

namespace drq {

void ternary_lut_offsets(const int8_t* t, size_t d_out, size_t d_in, size_t stride, uint16_t* offsets) {
    const size_t ngroups = ternary_lut_groups(d_in);
    for (size_t g0 = 0; g0 < ngroups; g0 += kLutChunkGroups) {
        const size_t gc = g0 + kLutChunkGroups < ngroups ? kLutChunkGroups : ngroups - g0;
        for (size_t r = 0; r < d_out; ++r) {
            const int8_t* tr = t + r * stride;
            uint16_t* o = offsets + (g0 * d_out + r * gc) * 2;
            for (size_t gl = 0; gl < gc; ++gl) {
                const size_t j = (g0 + gl) * kLutGroupInputs;
                unsigned pos = 0, neg = 0;
                // The last group may reach past d_in: those inputs have no weight.
                for (size_t k = 0; k < kLutGroupInputs && j + k < d_in; ++k) {
                    pos |= (tr[j + k] > 0 ? 1u : 0u) << k;
                    neg |= (tr[j + k] < 0 ? 1u : 0u) << k;
                }
                o[2 * gl] = static_cast<uint16_t>((gl * kLutPatterns + pos) * kLutEntryBytes);
                o[2 * gl + 1] = static_cast<uint16_t>((gl * kLutPatterns + neg) * kLutEntryBytes);
            }
        }
    }
}

}  // namespace drq
